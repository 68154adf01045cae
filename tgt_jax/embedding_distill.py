"""Embedding distillation: the labeler's embedding guides the student's features.

Ding & Lerch, "Embedding Compression for Teacher-to-Student Knowledge
Transfer" (2024), on top of their EAsT ("Audio Embeddings as Teachers", 2023).
The frozen labeler's pooled pre-logit embedding e guides the student's pooled
pre-logit features f (the ResNet's embedding output: its last feature stage,
pooled, before the classifier) through a relational distance D:

    student loss = (1 - w) * task loss + w * D(f, stop_gradient(t(e)))

where t depends on `config.embedding_distill.mode`:

- 'none': no embedding term; the methods train as in train_steps.
- 'raw' (EAsT): t(e) = e.
- 'compressed' (Ding & Lerch): t = g, a trainable Dense to d_c. A head h
  (Dense to the classes) on g(e) gives the teacher loss: cross-entropy
  against the labels on real images and the labeler's own soft labels on
  generated ones. Only g and h move under it; the labeler stays frozen. g and
  h train in the same jitted step as the student (joint, `pretrain_steps`
  = 0), or for `pretrain_steps` steps before the student and are then frozen.
- 'random_projection' [ours, ablation]: t = a fixed random Dense to d_c,
  i.e. g at initialisation and never trained: compression without the
  teacher loss.

The task loss is whatever the wrapped method (onehot, kd, tgt_*) minimises.
[ours] One D covers every image of the step's one student pass, real and (for
TGT) generated together, so the relations between real and generated images
count too. D is relational, so it depends on the batch: it is computed over
the global batch (under jit with a sharded batch, a plain implementation
sees all rows), never per device.

Everything g/h (and the optional student projection of 'projected_mse')
carries lives in `TrainState.aux` as an `EmbeddingDistillState`, so orbax
checkpoints hold it and a resumed run continues exactly.
"""

import dataclasses
import functools
from typing import Any, Callable

from absl import logging
from flax import struct
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from tgt_jax import exploration
from tgt_jax import image_ops
from tgt_jax import losses
from tgt_jax import train_steps

MODES = ('none', 'raw', 'compressed', 'random_projection')
DISTANCES = ('distance_correlation', 'cosine_gram', 'projected_mse')

# [paper] EAsT's epsilons: inside the square root of the squared distances
# (a finite gradient at zero distance) and in dCor's denominator.
_DISTANCE_EPSILON = 1e-12
_CORRELATION_EPSILON = 1e-9


# ---------------------------------------------------------------------------
# Relational distances D(student features [N, Ds], teacher targets [N, Dt]).
# ---------------------------------------------------------------------------


def _pairwise_distances(x: jax.Array) -> jax.Array:
  """Euclidean distance matrix [N, N] of the rows of `x`.

  Written through the Gram matrix, not x[:, None] - x[None], so that memory
  is N^2 rather than N^2 * D at paper-scale batches. The diagonal is set to
  exactly zero: rounding there would otherwise meet the steep square root.
  """
  squared_norms = jnp.sum(x * x, axis=-1)
  squared = (squared_norms[:, None] + squared_norms[None, :] -
             2.0 * x @ x.T)
  squared = jnp.where(jnp.eye(x.shape[0], dtype=bool), 0.0,
                      jnp.maximum(squared, 0.0))
  return jnp.sqrt(squared + _DISTANCE_EPSILON)


def _double_centred(distances: jax.Array) -> jax.Array:
  return (distances - jnp.mean(distances, axis=0, keepdims=True) -
          jnp.mean(distances, axis=1, keepdims=True) + jnp.mean(distances))


def distance_correlation_loss(features: jax.Array,
                              targets: jax.Array) -> jax.Array:
  """1 - dCor^2(features, targets) over the batch, in [0, 1].

  dCor^2 = dCov^2(X, Y) / sqrt(dVar^2(X) dVar^2(Y)) from the double-centred
  distance matrices (Szekely et al. 2007), as EAsT computes it. It compares
  the two batches' geometries only, so the dimensions may differ, and it is
  invariant to rotations, translations and scalings of either side.
  """
  a = _double_centred(_pairwise_distances(features.astype(jnp.float32)))
  b = _double_centred(_pairwise_distances(targets.astype(jnp.float32)))
  squared_correlation = jnp.mean(a * b) / jnp.sqrt(
      jnp.mean(a * a) * jnp.mean(b * b) + _CORRELATION_EPSILON)
  return 1.0 - squared_correlation


def _cosine_gram(x: jax.Array) -> jax.Array:
  unit = x * jax.lax.rsqrt(jnp.sum(x * x, axis=-1, keepdims=True) +
                           _DISTANCE_EPSILON)
  return unit @ unit.T


def cosine_gram_loss(features: jax.Array, targets: jax.Array) -> jax.Array:
  """Mean |S_f - S_t| of the batches' cosine-similarity matrices (EAsT)."""
  return jnp.mean(jnp.abs(_cosine_gram(features.astype(jnp.float32)) -
                          _cosine_gram(targets.astype(jnp.float32))))


def projected_mse_loss(projected_features: jax.Array,
                       targets: jax.Array) -> jax.Array:
  """Mean squared error; the caller projects the student to the target size.

  The ablation of the dimension-agnostic distances: it needs a trainable
  student projection (`EmbeddingDistillState.projection`).
  """
  return jnp.mean(jnp.square(projected_features.astype(jnp.float32) -
                             targets.astype(jnp.float32)))


DISTANCE_FUNCTIONS: dict[str, Callable[[jax.Array, jax.Array], jax.Array]] = {
    'distance_correlation': distance_correlation_loss,
    'cosine_gram': cosine_gram_loss,
    'projected_mse': projected_mse_loss,
}


# ---------------------------------------------------------------------------
# The teacher transformation g, its head h and the teacher loss.
# ---------------------------------------------------------------------------


class TeacherTransformation(nn.Module):
  """g: teacher embedding -> d_c (linear, as in the paper); h: d_c -> logits.

  Parameters: {'transformation': g's Dense, 'head': h's Dense}.
  """
  compressed_dim: int
  num_classes: int

  def setup(self):
    self.transformation = nn.Dense(self.compressed_dim)
    self.head = nn.Dense(self.num_classes)

  def __call__(self, embedding: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(g(e) [N, d_c], h(g(e)) [N, num_classes])."""
    compressed = self.transformation(embedding)
    return compressed, self.head(compressed)


class _StudentProjection(nn.Module):
  """A linear map of the student's features to the target size (MSE only)."""
  features: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    return nn.Dense(self.features, name='projection')(x)


class EmbeddingDistillState(struct.PyTreeNode):
  """What embedding distillation trains or keeps beside the student.

  Attributes:
    transformation: TeacherTransformation parameters ('compressed'), only
      g's ('random_projection', fixed), or None ('raw').
    transformation_opt_state: Adam state of g and h ('compressed'), else None.
    projection: the student-side projection ('projected_mse'), else None.
    projection_opt_state: its optimiser state (the student's optimiser).
  """
  transformation: Any = None
  transformation_opt_state: Any = None
  projection: Any = None
  projection_opt_state: Any = None


def mode_of(config: ml_collections.ConfigDict) -> str:
  """The config's mode; 'none' for configs without the section."""
  section = config.get('embedding_distill')
  return 'none' if section is None else section.mode


def result_key(method: str, mode: str) -> str:
  """'kd' for mode 'none', else e.g. 'kd+emb_compressed' (results.json key)."""
  return method if mode == 'none' else f'{method}+emb_{mode}'


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Fails before any compute on what `config.embedding_distill` cannot mean."""
  mode = mode_of(config)
  if mode not in MODES:
    raise ValueError(f'Unknown embedding_distill.mode {mode!r}; choose from '
                     f'{MODES}.')
  if mode == 'none':
    return
  cfg = config.embedding_distill
  if cfg.distance not in DISTANCES:
    raise ValueError(f'Unknown embedding_distill.distance {cfg.distance!r}; '
                     f'choose from {DISTANCES}.')
  if not 0.0 <= cfg.weight <= 1.0:
    raise ValueError(f'embedding_distill.weight={cfg.weight} must lie in '
                     '[0, 1]: the loss is (1 - w) * task + w * distance.')
  if cfg.compressed_dim < 1:
    raise ValueError('embedding_distill.compressed_dim must be positive, got '
                     f'{cfg.compressed_dim}.')
  if cfg.pretrain_steps < 0:
    raise ValueError('embedding_distill.pretrain_steps must be >= 0 (0 trains '
                     f'g jointly), got {cfg.pretrain_steps}.')


def _transformation_module(config, num_classes: int) -> TeacherTransformation:
  return TeacherTransformation(
      compressed_dim=config.embedding_distill.compressed_dim,
      num_classes=num_classes)


def _teacher_optimizer(config) -> optax.GradientTransformation:
  # [ours] Adam at a constant rate: g and h are a linear probe, small next to
  # the student, and need no schedule.
  return optax.adam(config.embedding_distill.teacher_learning_rate)


def trains_transformation_jointly(config) -> bool:
  """g and h update in every student step ('compressed', no pre-training)."""
  cfg = config.embedding_distill
  return cfg.mode == 'compressed' and cfg.pretrain_steps == 0


def embedding_target(mode: str, transformation_params,
                     teacher_embedding: jax.Array) -> jax.Array:
  """stop_gradient(t(e)): what the student's features are matched to.

  The stop-gradient is here, at the one place a target is made, so that no
  gradient of the student's loss can reach g whoever calls it.
  """
  if mode == 'raw':
    target = teacher_embedding
  else:
    g_params = transformation_params['transformation']
    target = nn.Dense(g_params['kernel'].shape[-1]).apply(
        {'params': g_params}, teacher_embedding)
  return jax.lax.stop_gradient(target)


def teacher_loss(transformation_params, module: TeacherTransformation,
                 teacher_embedding: jax.Array,
                 target_probs: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Mean CE(target_probs, h(g(e))) and h(g(e))'s logits."""
  _, logits = module.apply({'params': transformation_params},
                           teacher_embedding)
  return jnp.mean(losses.soft_cross_entropy(target_probs, logits)), logits


def teacher_targets(labels: jax.Array,
                    labeler_logits: list[jax.Array]) -> jax.Array:
  """Teacher-loss targets for [real, *generated] batches, concatenated.

  One-hot labels on the real images (the first batch), the labeler's own
  soft labels (temperature 1) on the generated ones, which have no label.
  """
  num_classes = labeler_logits[0].shape[-1]
  targets = [jax.nn.one_hot(labels, num_classes)]
  targets += [jax.nn.softmax(logits) for logits in labeler_logits[1:]]
  return jnp.concatenate(targets)


def _project(projection_params, features: jax.Array) -> jax.Array:
  if projection_params is None:
    return features
  size = projection_params['projection']['kernel'].shape[-1]
  return _StudentProjection(size).apply({'params': projection_params},
                                        features)


def student_objective(student_params, projection_params,
                      transformation_params, *, loss_fn, teacher_embedding,
                      mode: str, distance: str, weight: float):
  """(1 - w) * task + w * D(f, stop_gradient(t(e))) and its parts.

  Differentiable in all three parameter sets, so that a test can check on
  the gradient tree that nothing reaches g; the step differentiates only the
  student's (and its projection's).

  Args:
    student_params: the student's parameters, fed to `loss_fn`.
    projection_params: the student-side projection ('projected_mse') or
      None.
    transformation_params: g's (and h's) parameters, or None in 'raw'.
    loss_fn: the wrapped method's `params -> (task loss, (metrics,
      batch_stats, student embedding))`.
    teacher_embedding: the labeler's embedding of the same images, in order.
    mode: 'raw', 'compressed' or 'random_projection'.
    distance: a key of DISTANCE_FUNCTIONS.
    weight: w.

  Returns:
    (loss, (metrics, batch_stats, task_loss, embedding_distance)).
  """
  target = embedding_target(mode, transformation_params, teacher_embedding)
  task, (metrics, batch_stats, student_embedding) = loss_fn(student_params)
  features = _project(projection_params, student_embedding)
  embedding_distance = DISTANCE_FUNCTIONS[distance](features, target)
  loss = (1.0 - weight) * task + weight * embedding_distance
  return loss, (metrics, batch_stats, task, embedding_distance)


def _labeler_outputs(models: train_steps.StepModels, teachers,
                     unit_images: list[jax.Array]):
  """Labeler logits per batch and the embeddings of all, concatenated.

  Batch by batch, as the methods' own steps call the labeler, so that XLA can
  merge the identical computations instead of running the labeler twice.
  """
  outputs = [models.labeler_outputs(teachers, x) for x in unit_images]
  logits = [o[0] for o in outputs]
  return logits, jnp.concatenate([o[1] for o in outputs])


# ---------------------------------------------------------------------------
# State, pre-training and the wrapped train step.
# ---------------------------------------------------------------------------


def create_state(models: train_steps.StepModels, config,
                 teachers, unit_image_shape: tuple[int, ...],
                 rng: jax.Array) -> EmbeddingDistillState:
  """Initial g/h (or random projection) and projection, for the config's mode.

  Args:
    models: the step's modules, with labeler, student and the student's tx.
    config: the experiment config (its `embedding_distill` section).
    teachers: the frozen teachers' variables (for the labeler's shapes).
    unit_image_shape: one image's (H, W, C), as the train set holds it.
    rng: initialisation key.
  """
  cfg = config.embedding_distill
  probe = jnp.zeros((1, *unit_image_shape), jnp.float32)
  logits_shape, embedding_shape = jax.eval_shape(
      lambda x: models.labeler_outputs(teachers, x), probe)
  num_classes, teacher_dim = logits_shape.shape[-1], embedding_shape.shape[-1]
  transform_rng, projection_rng = jax.random.split(rng)
  state = EmbeddingDistillState()

  target_dim = teacher_dim
  if cfg.mode in ('compressed', 'random_projection'):
    params = _transformation_module(config, num_classes).init(
        transform_rng, jnp.zeros((1, teacher_dim), jnp.float32))['params']
    if cfg.mode == 'compressed':
      state = state.replace(
          transformation=params,
          transformation_opt_state=_teacher_optimizer(config).init(params))
    else:
      # Fixed: only g, at its (LeCun-normal) initialisation.
      state = state.replace(
          transformation={'transformation': params['transformation']})
    target_dim = cfg.compressed_dim

  if cfg.distance == 'projected_mse':
    student_inputs = models.student_input(probe)
    (_, student_embedding), _ = jax.eval_shape(
        lambda x: models.student.init_with_output(
            jax.random.PRNGKey(0), x, train=False), student_inputs)
    projection = _StudentProjection(target_dim).init(
        projection_rng,
        jnp.zeros((1, student_embedding.shape[-1]), jnp.float32))['params']
    state = state.replace(projection=projection,
                          projection_opt_state=models.tx.init(projection))
  return state


def make_pretrain_step(method: str, models: train_steps.StepModels, config):
  """g and h alone on the teacher loss: step(aux, teachers, batch, rng).

  For TGT methods the teacher loss also sees generated images, as in the
  joint step; there is no student yet to explore against, so [ours] they are
  G(E(x) + sigma * eps), the random exploration, for every TGT method.
  """
  uses_generated = method.startswith('tgt_')
  tx = _teacher_optimizer(config)

  def step(aux: EmbeddingDistillState, teachers, batch, rng):
    real = image_ops.uint8_to_unit(batch['image'])
    images = [real]
    if uses_generated:
      latents = exploration.perturb_latent(
          train_steps.real_latents(models, teachers, batch, real), rng,
          config.exploration.sigma)
      images.append(jax.lax.stop_gradient(models.generate(teachers, latents)))
    labeler_logits, teacher_embedding = _labeler_outputs(models, teachers,
                                                         images)
    module = _transformation_module(config, labeler_logits[0].shape[-1])
    (loss, logits), grads = jax.value_and_grad(teacher_loss, has_aux=True)(
        aux.transformation, module, teacher_embedding,
        teacher_targets(batch['label'], labeler_logits))
    updates, opt_state = tx.update(grads, aux.transformation_opt_state,
                                   aux.transformation)
    aux = aux.replace(
        transformation=optax.apply_updates(aux.transformation, updates),
        transformation_opt_state=opt_state)
    accuracy = jnp.mean(losses.top1_correct(batch['label'],
                                            logits[:real.shape[0]]))
    return aux, {'teacher_loss': loss, 'teacher_accuracy': accuracy}

  return step


def initial_state(method: str, models: train_steps.StepModels, config,
                  teachers, unit_image_shape: tuple[int, ...],
                  batch_for_step: Callable[[int], Any],
                  rng: jax.Array) -> EmbeddingDistillState:
  """`create_state`, then `pretrain_steps` of g/h training when asked.

  Pre-training reads the student's first batches (`batch_for_step(i)`), so
  it is a pure function of the seed like the rest of the run. A resumed run
  repeats it (seconds) and then restores the checkpointed state over it.
  """
  init_rng, pretrain_rng = jax.random.split(rng)
  aux = create_state(models, config, teachers, unit_image_shape, init_rng)
  cfg = config.embedding_distill
  if cfg.mode != 'compressed' or cfg.pretrain_steps == 0:
    return aux
  step = jax.jit(make_pretrain_step(method, models, config))
  metrics = {}
  for i in range(cfg.pretrain_steps):
    aux, metrics = step(aux, teachers, batch_for_step(i),
                        jax.random.fold_in(pretrain_rng, i))
  logging.info('[%s] teacher transformation pre-trained for %d steps: %s',
               method, cfg.pretrain_steps,
               {k: float(np.mean(v)) for k, v in
                jax.device_get(metrics).items()})
  return aux


def make_student_update(models: train_steps.StepModels, config):
  """The `StepModels.student_update` hook that adds the embedding term.

  In one step: the student (and its projection) on (1 - w) * task + w * D,
  and g and h on the teacher loss when they train jointly. The two gradients
  are taken separately, each with respect to its own parameters only.
  """
  cfg = config.embedding_distill
  mode, distance, weight = cfg.mode, cfg.distance, cfg.weight
  joint = trains_transformation_jointly(config)
  teacher_tx = _teacher_optimizer(config)

  def student_update(state: train_steps.TrainState, teachers, loss_fn,
                     unit_images: list[jax.Array], labels: jax.Array):
    aux: EmbeddingDistillState = state.aux
    labeler_logits, teacher_embedding = _labeler_outputs(models, teachers,
                                                         unit_images)
    objective = functools.partial(
        student_objective, loss_fn=loss_fn,
        teacher_embedding=teacher_embedding, mode=mode, distance=distance,
        weight=weight)
    (loss, (metrics, batch_stats, task, embedding_distance)), (
        grads, projection_grads) = jax.value_and_grad(
            objective, argnums=(0, 1), has_aux=True)(
                state.params, aux.projection, aux.transformation)
    updates, opt_state = models.tx.update(grads, state.opt_state,
                                          state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {'loss': loss, **metrics, 'task_loss': task,
               'embedding_distance': embedding_distance}

    if aux.projection is not None:
      updates, projection_opt_state = models.tx.update(
          projection_grads, aux.projection_opt_state, aux.projection)
      aux = aux.replace(
          projection=optax.apply_updates(aux.projection, updates),
          projection_opt_state=projection_opt_state)

    if mode == 'compressed':
      # Reported in frozen mode too: it shows what the frozen g still knows.
      module = _transformation_module(config, labeler_logits[0].shape[-1])
      (teacher_value, teacher_logits), teacher_grads = jax.value_and_grad(
          teacher_loss, has_aux=True)(
              aux.transformation, module, teacher_embedding,
              teacher_targets(labels, labeler_logits))
      metrics['teacher_loss'] = teacher_value
      metrics['teacher_accuracy'] = jnp.mean(losses.top1_correct(
          labels, teacher_logits[:labels.shape[0]]))
      if joint:
        updates, transformation_opt_state = teacher_tx.update(
            teacher_grads, aux.transformation_opt_state, aux.transformation)
        aux = aux.replace(
            transformation=optax.apply_updates(aux.transformation, updates),
            transformation_opt_state=transformation_opt_state)

    new_state = state.replace(step=state.step + 1, params=params,
                              batch_stats=batch_stats, opt_state=opt_state,
                              aux=aux)
    return new_state, metrics

  return student_update


def make_train_step(method: str, models: train_steps.StepModels,
                    config) -> train_steps.StepFn:
  """`method`'s step with the config's embedding distillation (one jit each).

  For mode 'none' this is `train_steps.make_train_step` unchanged. Otherwise
  the state's `aux` must be an `EmbeddingDistillState` (`initial_state`).
  """
  if mode_of(config) == 'none':
    return train_steps.make_train_step(method, models, config)
  if models.labeler is None:
    raise ValueError('Embedding distillation needs the teacher labeler in '
                     'StepModels (its embedding is the teacher).')
  models = dataclasses.replace(
      models, student_update=make_student_update(models, config))
  return train_steps.make_train_step(method, models, config)
