"""One train step per method: onehot, kd, tgt_random, tgt_gradient, tgt_prior.

Every step has the signature

    step(state, teachers, batch, rng) -> (state, metrics)

where `state` is the student's `TrainState`, `teachers` the frozen variables
of the labeler, generator and encoder (passed as arguments, not closed over,
so large teachers are never baked into the compiled program as constants),
`batch` a dict of uint8 images and int labels, and `rng` a base key folded
with the step number so every random draw is a function of (seed, step).

Only the student is differentiated; the teachers run in inference mode. The
labeler and the student see the same (real or generated) image, each through
its own resize and normalisation.
"""

import dataclasses
from typing import Any, Callable, Optional

import flax.linen as nn
from flax import struct
import jax
import jax.numpy as jnp
import ml_collections
import optax

from tgt_jax import exploration
from tgt_jax import image_ops
from tgt_jax import losses

METHODS = ('onehot', 'kd', 'tgt_random', 'tgt_gradient', 'tgt_prior')

StepFn = Callable[..., tuple[Any, dict[str, jax.Array]]]


class TrainState(struct.PyTreeNode):
  """Everything a classifier's training carries from step to step."""
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  # State of an add-on trained beside the student in the same step (e.g.
  # embedding_distill's teacher transformation); None when there is none.
  # Kept here so that checkpoints hold it and resume stays exact.
  aux: Any = None


def create_train_state(model: nn.Module, tx: optax.GradientTransformation,
                       input_shape: tuple[int, ...],
                       rng: jax.Array) -> TrainState:
  """Initialises a classifier for inputs of shape [N, *input_shape]."""
  variables = model.init(rng, jnp.zeros((1, *input_shape), jnp.float32),
                         train=False)
  params = variables['params']
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    batch_stats=variables.get('batch_stats', {}),
                    opt_state=tx.init(params))


def create_optimizer(name: str, peak_learning_rate: float, warmup_steps: int,
                     num_steps: int, weight_decay: float,
                     momentum: float = 0.9
                     ) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """Linear warm-up then cosine decay; decay on kernels only (not BN/bias)."""
  schedule = optax.warmup_cosine_decay_schedule(
      0.0, peak_learning_rate, min(warmup_steps, num_steps - 1) if num_steps > 1
      else 0, max(num_steps, 1))
  kernels_only = lambda params: jax.tree.map(lambda p: p.ndim > 1, params)
  if name == 'sgd':
    tx = optax.chain(
        optax.add_decayed_weights(weight_decay, mask=kernels_only),
        optax.sgd(schedule, momentum=momentum, nesterov=True))
  elif name == 'adamw':
    tx = optax.adamw(schedule, weight_decay=weight_decay, mask=kernels_only)
  else:
    raise ValueError(f"Unknown optimizer {name!r}; use 'sgd' or 'adamw'.")
  return tx, schedule


@dataclasses.dataclass(frozen=True)
class StepModels:
  """The static parts a step closes over: modules and their input recipes."""
  student: nn.Module
  student_config: ml_collections.ConfigDict
  tx: optax.GradientTransformation
  labeler: Optional[nn.Module] = None
  labeler_config: Optional[ml_collections.ConfigDict] = None
  generator: Optional[nn.Module] = None
  encoder: Optional[nn.Module] = None
  encoder_image_size: int = 0
  # Replaces `_apply_loss` as the student's update when an add-on (e.g.
  # embedding_distill) needs to change it; see `_update_student`.
  student_update: Optional[Callable[..., tuple[Any, dict]]] = None

  def student_input(self, unit_images):
    c = self.student_config
    return image_ops.classifier_input(unit_images, c.image_size, c.mean, c.std)

  def labeler_logits(self, teachers, unit_images):
    return self.labeler_outputs(teachers, unit_images)[0]

  def labeler_outputs(self, teachers, unit_images):
    """The frozen labeler's (logits, pooled pre-logit embedding)."""
    c = self.labeler_config
    images = image_ops.classifier_input(unit_images, c.image_size, c.mean,
                                        c.std)
    outputs = self.labeler.apply(teachers['labeler'], images, train=False)
    return jax.lax.stop_gradient(outputs)

  def encode(self, teachers, unit_images):
    """z_mean = E(x): reconstructions and exploration start from the mean."""
    z_mean, _ = self.encoder.apply(
        teachers['encoder'],
        image_ops.encoder_input(unit_images, self.encoder_image_size),
        train=False)
    return z_mean

  def generate(self, teachers, z):
    """G(z) in the unit range; differentiable in z."""
    return image_ops.generated_to_unit(
        self.generator.apply(teachers['generator'], z, train=False))


def _student_forward(models: StepModels, params, batch_stats, unit_images,
                     train: bool):
  """Student logits and updated BN statistics on unit-range image batches.

  `unit_images` is one batch or a list of batches of any sizes; each is
  brought to the student's input first, then all go through in one pass.
  """
  logits, _, batch_stats = _student_outputs(models, params, batch_stats,
                                            unit_images, train)
  return logits, batch_stats


def _student_outputs(models: StepModels, params, batch_stats, unit_images,
                     train: bool):
  """`_student_forward` with the pooled pre-logit embedding in the middle."""
  if not isinstance(unit_images, (list, tuple)):
    unit_images = [unit_images]
  inputs = jnp.concatenate([models.student_input(x) for x in unit_images])
  variables = {'params': params, 'batch_stats': batch_stats}
  if train:
    (logits, embedding), updates = models.student.apply(
        variables, inputs, train=True, mutable=['batch_stats'])
    return logits, embedding, updates['batch_stats']
  logits, embedding = models.student.apply(variables, inputs, train=False)
  return logits, embedding, batch_stats


def _apply_loss(models: StepModels, state: TrainState, loss_fn):
  """One optimiser update of the student on `loss_fn(params)`.

  `loss_fn(params) -> (loss, (metrics, batch_stats, student_embedding))`.
  """
  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
  (loss, (metrics, batch_stats, _)), grads = grad_fn(state.params)
  updates, opt_state = models.tx.update(grads, state.opt_state, state.params)
  new_state = state.replace(
      step=state.step + 1, params=optax.apply_updates(state.params, updates),
      batch_stats=batch_stats, opt_state=opt_state)
  return new_state, {'loss': loss, **metrics}


def _update_student(models: StepModels, state: TrainState, loss_fn, teachers,
                    unit_images: list[jax.Array], labels: jax.Array):
  """`_apply_loss`, or `models.student_update` when an add-on sets one.

  The add-on gets what the step's one student pass saw (its unit-range image
  batches in order, real images first, and the real images' labels) so that
  it can add terms on the same images without any step knowing about it:
  `student_update(state, teachers, loss_fn, unit_images, labels)`.
  """
  if models.student_update is None:
    return _apply_loss(models, state, loss_fn)
  return models.student_update(state, teachers, loss_fn, unit_images, labels)


def make_onehot_step(models: StepModels, config) -> StepFn:
  """Plain cross-entropy on the real (long-tail) labels."""
  del config

  def step(state, teachers, batch, rng):
    del rng
    images = image_ops.uint8_to_unit(batch['image'])

    def loss_fn(params):
      logits, embedding, batch_stats = _student_outputs(
          models, params, state.batch_stats, images, train=True)
      accuracy = jnp.mean(losses.top1_correct(batch['label'], logits))
      return (losses.onehot_cross_entropy(batch['label'], logits),
              ({'accuracy': accuracy}, batch_stats, embedding))

    return _update_student(models, state, loss_fn, teachers, [images],
                           batch['label'])

  return step


def make_kd_step(models: StepModels, config) -> StepFn:
  """Standard distillation: the labeler's soft labels on real images."""
  alpha, temperature = config.distill.alpha, config.distill.temperature

  def step(state, teachers, batch, rng):
    del rng
    images = image_ops.uint8_to_unit(batch['image'])
    teacher_logits = models.labeler_logits(teachers, images)

    def loss_fn(params):
      logits, embedding, batch_stats = _student_outputs(
          models, params, state.batch_stats, images, train=True)
      loss = losses.mixed_target_loss(batch['label'], teacher_logits, logits,
                                      alpha, temperature)
      accuracy = jnp.mean(losses.top1_correct(batch['label'], logits))
      return loss, ({'accuracy': accuracy}, batch_stats, embedding)

    return _update_student(models, state, loss_fn, teachers, [images],
                           batch['label'])

  return step



def real_latents(models: StepModels, teachers, batch, real_images):
  """E(x) of the batch: its cached 'latent' rows if it carries them.

  Cached latents are E of the un-augmented image, computed once per image
  (train._latent_cache); exact only where the encoder would see that image.
  """
  if 'latent' in batch:
    return batch['latent']
  return models.encode(teachers, real_images)


# Exploration: (models, state, teachers, z = E(x), rng, config) -> latents.
def _explore_random(models, state, teachers, z, rng, config):
  del models, state, teachers
  return exploration.perturb_latent(z, rng, config.exploration.sigma)


def _explore_prior(models, state, teachers, z, rng, config):
  # z is unused, so XLA drops the encoder pass from the compiled step.
  del models, state, teachers
  return exploration.sample_prior(
      rng, (z.shape[0], config.teacher_generator.latent_dim))


def _explore_gradient(models, state, teachers, z, rng, config):
  """Ascends CE(labeler, student) on G(z), starting from z = E(x)."""
  cfg = config.exploration
  if cfg.init_sigma > 0:
    z = exploration.perturb_latent(z, rng, cfg.init_sigma)

  def disagreement(latent):
    generated = models.generate(teachers, latent)
    teacher_probs = jax.nn.softmax(
        models.labeler_logits(teachers, generated) /
        config.distill.temperature)
    # [ours] The student runs in train mode (batch statistics, updates
    # dropped): that is the function the next update will change, and its
    # running averages are meaningless early in training.
    student_logits, _ = _student_forward(
        models, state.params, state.batch_stats, generated, train=True)
    return losses.soft_cross_entropy(
        teacher_probs, student_logits / config.distill.temperature)

  return exploration.ascend_latent(z, disagreement, cfg.step_size,
                                   cfg.num_steps, cfg.normalize)


def make_tgt_step(models: StepModels, config, explore) -> StepFn:
  """TGT: the kd loss on real images + lambda * distillation on G(z~)."""
  alpha, temperature = config.distill.alpha, config.distill.temperature
  generated_weight = config.distill.generated_weight

  def step(state, teachers, batch, rng):
    rng = jax.random.fold_in(rng, state.step)
    real = image_ops.uint8_to_unit(batch['image'])
    latents = explore(models, state, teachers,
                      real_latents(models, teachers, batch, real), rng, config)
    generated = jax.lax.stop_gradient(models.generate(teachers, latents))
    teacher_real = models.labeler_logits(teachers, real)
    teacher_generated = models.labeler_logits(teachers, generated)
    num_real = real.shape[0]

    def loss_fn(params):
      # One student pass over real and generated together: BatchNorm sees the
      # mixture the student is trained on.
      logits, embedding, batch_stats = _student_outputs(
          models, params, state.batch_stats,
          [real, generated], train=True)
      logits_real, logits_generated = logits[:num_real], logits[num_real:]
      real_loss = losses.mixed_target_loss(
          batch['label'], teacher_real, logits_real, alpha, temperature)
      generated_loss = losses.distillation_loss(
          teacher_generated, logits_generated, temperature)
      metrics = {
          'accuracy': jnp.mean(
              losses.top1_correct(batch['label'], logits_real)),
          'real_loss': real_loss,
          'generated_loss': generated_loss,
          'generated_agreement': jnp.mean(
              jnp.argmax(logits_generated, -1) ==
              jnp.argmax(teacher_generated, -1)),
      }
      return real_loss + generated_weight * generated_loss, (
          metrics, batch_stats, embedding)

    return _update_student(models, state, loss_fn, teachers,
                           [real, generated], batch['label'])

  return step


def make_train_step(method: str, models: StepModels, config) -> StepFn:
  """The (unjitted) step of `method`; a ValueError lists the known ones."""
  builders = {
      'onehot': make_onehot_step,
      'kd': make_kd_step,
      'tgt_random': lambda m, c: make_tgt_step(m, c, _explore_random),
      'tgt_gradient': lambda m, c: make_tgt_step(m, c, _explore_gradient),
      'tgt_prior': lambda m, c: make_tgt_step(m, c, _explore_prior),
  }
  if method not in builders:
    raise ValueError(f'Unknown method {method!r} in config.methods; choose '
                     f'from {METHODS}.')
  return builders[method](models, config)


def explore_latents(method: str, models: StepModels, state: TrainState,
                    teachers, unit_images, rng, config) -> jax.Array:
  """The latents a TGT method would decode for these real images."""
  explore = {'tgt_random': _explore_random, 'tgt_gradient': _explore_gradient,
             'tgt_prior': _explore_prior}[method]
  return explore(models, state, teachers,
                 models.encode(teachers, unit_images), rng, config)
