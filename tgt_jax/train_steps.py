"""The one train step of every method, and the optimiser it updates with.

`make_train_step(method, student, tx, config, terms)` builds

    step(state, teachers, batch, rng) -> (state, metrics)

for any row of the method table (methods.py): `state` is the student's
`TrainState`, `teachers` the frozen `Teachers` (an argument, not a
constant, so large teachers never become part of the compiled program),
`batch` this process's rows of uint8 images, int labels and (in memory)
example indices, and `rng` a base key folded with the step number, so every
random draw is a function of (seed, step). `jit_train_step` jits it over a
device mesh; a student's whole setup (loss terms, long-tail adjustment,
optimiser, state and step) is built by `student_setup.create`, which
training, the benchmark and the tests call.

One step, for a real batch (x, y) and labeler h, generator G:

    x        = lam x + (1 - lam) x[perm]  (a mixup method; y mixed alike)
    images   = [x]                      (+ G(z~) when the method explores)
    loss     = (1 - alpha) CE(onehot(y), f(x))           (onehot: alone)
               + alpha tau^2 CE(softmax(h(x) / tau), f(x) / tau)
               + lambda tau^2 CE(softmax(h(G(z~)) / tau), f(G(z~)) / tau)
    objective = (1 - sum w_k) * loss + sum_k w_k * term_k   (loss terms)

Only the student is differentiated: the teachers' outputs are fixed targets.
The student sees all images of the step in one pass, so its BatchNorm
statistics are those of the mixture it is trained on.
"""

import dataclasses
from typing import Any, Callable, Sequence

from flax import struct
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from tgt_jax import embedding_distill
from tgt_jax import image_ops
from tgt_jax import losses
from tgt_jax import methods
from tgt_jax import sharding
from tgt_jax.models import classifier as classifier_lib

StepFn = Callable[..., tuple[Any, dict[str, jax.Array]]]

# fold_in(step key, MIXUP_STREAM) is the mixup's key: the explorers use the
# step key itself, so mixing leaves their draws as they were.
MIXUP_STREAM = 1

# Loss terms a config can add to any method: config section -> the terms it
# asks for (empty when off). Adding a term: write it (see
# embedding_distill.EmbeddingDistillation for the interface) and add a row.
LOSS_TERMS: dict[str, Callable[[ml_collections.ConfigDict, int], Sequence]] = {
    'embedding_distill': embedding_distill.from_config,
}

SCHEDULES = ('cosine', 'step', 'constant')
OPTIMIZERS = ('sgd', 'adamw')


class TrainState(struct.PyTreeNode):
  """Everything a classifier's training carries from step to step.

  `terms` holds the state of each loss term (by its name), so checkpoints
  hold it and resume stays exact; {} when there is none.
  """
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  terms: Any = struct.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class LongTailAdjustment:
  """`config.long_tail_loss`: log priors added to the student's logits inside
  its losses, so that training on long-tailed data fits the balanced
  posterior (predictions use the plain logits).

  The one-hot part is adjusted by the student's train split (logit
  adjustment, Menon et al. 2021: tau * log pi, tau = 1 [paper]; Balanced
  Softmax, Ren et al. 2020: log n). [ours] The distillation parts (real and
  generated images) are adjusted by the prior of the data the labeler was
  trained on: its soft labels p_T(y|x) carry that prior, so the student's
  adjusted softmax(f + log pi_T) matches them exactly when f is the
  balanced posterior; a labeler trained on balanced data needs (and gets)
  no adjustment.
  """
  name: str
  onehot_offset: tuple[float, ...]
  distill_offset: tuple[float, ...]

  @classmethod
  def create(cls, name: str, student_counts, teacher_counts
             ) -> 'LongTailAdjustment | None':
    if name == 'none':
      return None
    if name not in losses.LONG_TAIL_LOSSES:
      raise ValueError(f'long_tail_loss={name!r}; choose from '
                       f'{losses.LONG_TAIL_LOSSES}.')
    logs = []
    for counts in (student_counts, teacher_counts):
      counts = np.maximum(np.asarray(counts, np.float64), 1.0)
      # log pi for logit adjustment, log n for Balanced Softmax.
      logs.append(tuple(np.log(counts / counts.sum() if name ==
                               'logit_adjusted' else counts).tolist()))
    return cls(name, *logs)


def loss_terms(config: ml_collections.ConfigDict,
               num_classes: int) -> tuple[Any, ...]:
  """Every loss term the config asks for, in LOSS_TERMS order."""
  return tuple(term for make in LOSS_TERMS.values()
               for term in make(config, num_classes))


def result_key(method: str, terms: Sequence[Any] = (),
               long_tail: 'LongTailAdjustment | None' = None) -> str:
  """A student's name in results.json and students/: e.g. 'kd+emb_raw',
  'tgt_gradient+logit_adjusted'; `method` as methods.trained_name says,
  e.g. 'tgt_random+mixup'."""
  return '+'.join([method, *([long_tail.name] if long_tail else []),
                   *(term.name for term in terms)])


def create_train_state(variables: dict[str, Any],
                       tx: optax.GradientTransformation,
                       terms: dict[str, Any] | None = None) -> TrainState:
  """A state at step 0 from initial variables ({'params', 'batch_stats'})."""
  params = variables['params']
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    batch_stats=variables.get('batch_stats', {}),
                    opt_state=tx.init(params), terms=terms or {})


# ---------------------------------------------------------------------------
# Optimiser and learning-rate schedule (Table 6 rows).
# ---------------------------------------------------------------------------


def learning_rate_schedule(recipe: ml_collections.ConfigDict,
                           steps_per_epoch: float,
                           num_steps: int) -> optax.Schedule:
  """Linear warm-up from 0 to the peak, then `recipe.schedule`.

  'cosine' decays to 0 at the last step; 'step' multiplies the rate by
  `decay_factor` at each of `decay_epochs` (piecewise constant, as in many
  long-tail papers); 'constant' keeps the peak.
  """
  peak = recipe.peak_learning_rate
  warmup = int(recipe.warmup_epochs * steps_per_epoch)
  warmup = min(warmup, num_steps - 1) if num_steps > 1 else 0
  if recipe.schedule == 'cosine':
    return optax.warmup_cosine_decay_schedule(0.0, peak, warmup,
                                              max(num_steps, 1))
  if recipe.schedule == 'step':
    boundaries = {int(round(epoch * steps_per_epoch)) - warmup:
                  recipe.decay_factor for epoch in recipe.decay_epochs}
    after_warmup = optax.piecewise_constant_schedule(peak, boundaries)
  elif recipe.schedule == 'constant':
    after_warmup = optax.constant_schedule(peak)
  else:
    raise ValueError(f'schedule={recipe.schedule!r}; choose from '
                     f'{SCHEDULES}.')
  if not warmup:
    return after_warmup
  return optax.join_schedules(
      [optax.linear_schedule(0.0, peak, warmup), after_warmup], [warmup])


def create_optimizer(recipe: ml_collections.ConfigDict, steps_per_epoch: float,
                     num_steps: int) -> optax.GradientTransformation:
  """The recipe's optimiser; weight decay on kernels only (not BN, biases)."""
  schedule = learning_rate_schedule(recipe, steps_per_epoch, num_steps)
  kernels_only = lambda params: jax.tree.map(lambda p: p.ndim > 1, params)
  if recipe.optimizer == 'sgd':
    return optax.chain(
        optax.add_decayed_weights(recipe.weight_decay, mask=kernels_only),
        optax.sgd(schedule, momentum=recipe.momentum, nesterov=True))
  if recipe.optimizer == 'adamw':
    return optax.adamw(schedule, weight_decay=recipe.weight_decay,
                       mask=kernels_only)
  raise ValueError(f'optimizer={recipe.optimizer!r}; choose from '
                   f'{OPTIMIZERS}.')


# ---------------------------------------------------------------------------
# The step.
# ---------------------------------------------------------------------------


def _split(array: jax.Array, sizes: Sequence[int]) -> list[jax.Array]:
  return jnp.split(array, np.cumsum(sizes)[:-1])


def make_train_step(method_name: str, student: classifier_lib.Classifier,
                    tx: optax.GradientTransformation,
                    config: ml_collections.ConfigDict,
                    terms: Sequence[Any] = (),
                    long_tail: LongTailAdjustment | None = None) -> StepFn:
  """The (unjitted) step of `method_name` with the given loss terms and
  long-tail adjustment."""
  method = methods.in_run(method_name, config)
  distill = config.distill
  alpha, temperature = distill.alpha, distill.temperature
  task_weight = 1.0 - sum(term.weight for term in terms)
  onehot_offset = distill_offset = 0.0
  if long_tail is not None:
    onehot_offset = np.asarray(long_tail.onehot_offset, np.float32)
    distill_offset = np.asarray(long_tail.distill_offset, np.float32)

  def step(state: TrainState, teachers, batch, rng):
    rng = jax.random.fold_in(rng, state.step)
    real = image_ops.uint8_to_unit(batch['image'])
    labels = batch['label']
    images = [real]
    if method.mixup:
      # The student, the labeler and a loss term see the mixed images (a
      # term's one-hot targets stay y, each one's dominant label [ours]);
      # an explorer starts from the unmixed ones (methods.Method).
      mixed = methods.mixup(jax.random.fold_in(rng, MIXUP_STREAM), real,
                            config.mixup.concentration)
      images = [mixed.images]
    if method.explore is not None:
      frozen_student = jax.lax.stop_gradient(
          {'params': state.params, 'batch_stats': state.batch_stats})
      latents = explore(method_name, student, frozen_student, teachers,
                        batch, real, rng, config)
      images.append(jax.lax.stop_gradient(teachers.generate(latents)))
    sizes = [x.shape[0] for x in images]
    labeler_outputs = ([jax.lax.stop_gradient(teachers.label(x))
                        for x in images]
                       if method.uses_labeler or terms else None)
    prepared = [term.prepare(state.terms[term.name], teachers, images,
                             labeler_outputs, labels) for term in terms]

    def objective(params):
      (logits, features), batch_stats = student.apply(
          {'params': params, 'batch_stats': state.batch_stats}, images,
          train=True)
      logits = _split(logits, sizes)
      # The one-hot part is against y, or a mixed image's mixed label.
      targets = (mixed.label_probs(labels, logits[0].shape[-1])
                 if method.mixup else labels)
      if method.soft_targets:
        task = losses.mixed_target_loss(targets, labeler_outputs[0][0],
                                        logits[0], alpha, temperature,
                                        onehot_offset, distill_offset)
      else:
        task = losses.onehot_cross_entropy(targets, logits[0] + onehot_offset)
      # On mixed images: agreement with y, each one's dominant label.
      metrics = {'accuracy': jnp.mean(losses.top1_correct(labels, logits[0]))}
      if method.mixup:
        metrics['mixup_lambda'] = mixed.lam
      if method.explore is not None:
        teacher_generated = labeler_outputs[1][0]
        generated_loss = losses.distillation_loss(
            teacher_generated, logits[1] + distill_offset, temperature)
        metrics.update(
            real_loss=task, generated_loss=generated_loss,
            generated_agreement=jnp.mean(
                jnp.argmax(logits[1], -1) == jnp.argmax(teacher_generated,
                                                        -1)))
        task = task + distill.generated_weight * generated_loss
      total = task_weight * task
      for term, term_inputs in zip(terms, prepared):
        value = term.loss(term_inputs, features)
        metrics[f'{term.name}/distance'] = value
        total = total + term.weight * value
      if terms:
        metrics['task_loss'] = task
      return total, (metrics, batch_stats)

    (loss, (metrics, batch_stats)), grads = jax.value_and_grad(
        objective, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    term_states = dict(state.terms)
    for term, term_inputs in zip(terms, prepared):
      term_states[term.name], term_metrics = term.update(
          state.terms[term.name], term_inputs)
      metrics.update({f'{term.name}/{k}': v for k, v in term_metrics.items()})
    new_state = state.replace(
        step=state.step + 1, params=optax.apply_updates(state.params, updates),
        batch_stats=batch_stats, opt_state=opt_state, terms=term_states)
    return new_state, {'loss': loss, **metrics}

  return step


def jit_train_step(method_name: str, student: classifier_lib.Classifier,
                   tx: optax.GradientTransformation,
                   config: ml_collections.ConfigDict, mesh,
                   terms: Sequence[Any] = (), donate: bool = True,
                   long_tail: LongTailAdjustment | None = None) -> StepFn:
  """`make_train_step`, jitted over `mesh` (see `jit_step`)."""
  return jit_step(make_train_step(method_name, student, tx, config, terms,
                                  long_tail), mesh, donate)


def jit_step(step: StepFn, mesh, donate: bool = True) -> StepFn:
  """A step jitted over `mesh`: replicated state and outputs, the batch
  split along 'data'; the input state is donated unless told."""
  replicated = sharding.replicated(mesh)
  return jax.jit(step, out_shardings=(replicated, replicated),
                 donate_argnums=0 if donate else ())


def explore(method_name: str, student: classifier_lib.Classifier,
            variables: dict[str, Any], teachers, batch: dict[str, jax.Array],
            unit_images: jax.Array, rng: jax.Array,
            config: ml_collections.ConfigDict) -> jax.Array:
  """The latents `method_name` decodes for a batch of real images.

  The step's own exploration (also used for sample grids and tests): the
  student (`variables`, held fixed) runs in inference mode, so each
  example's latent depends on that example alone. `batch` supplies the
  example indices for a latent cache.
  """
  method = methods.get(method_name)
  inputs = methods.ExploreInputs(
      teachers=teachers,
      student_logits=lambda x: student.apply(variables, x, train=False)[0],
      rng=rng, num_examples=unit_images.shape[0], config=config)
  start = (teachers.real_latents(batch, unit_images) if method.encodes
           else None)
  return method.explore(start, inputs)
