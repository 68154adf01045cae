"""Embedding distillation: a teacher embedding guides the student's features.

Ding & Lerch, "Embedding Compression for Teacher-to-Student Knowledge
Transfer" (2024), on top of their EAsT ("Audio Embeddings as Teachers", 2023).
A frozen teacher embedding e (the labeler's pooled pre-logit features) guides
the student's pooled pre-logit features f through a relational distance D.
It is a loss term added to any method's objective (train_steps.py):

    loss = (1 - w) * task loss + w * D(f, stop_gradient(t(e)))

where t depends on `embedding_distill.mode`:

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

[ours] One D covers every image of the step's student pass, real and (for
TGT) generated together, so the relations between real and generated images
count too. D is relational, so it depends on the batch: it is computed over
the global batch (under jit with a sharded batch, a plain implementation
sees all rows), never per device.

The term's state (g and h, their optimiser state) lives in the student's
`TrainState.terms`, so checkpoints hold it and a resumed run continues
exactly.
"""

import dataclasses
from typing import Any, Callable, Iterable

from absl import logging
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from tgt_jax import config_lib
from tgt_jax import image_ops
from tgt_jax import losses
from tgt_jax import methods
from tgt_jax import teachers as teachers_lib

MODES = ('none', 'raw', 'compressed', 'random_projection')
# Whose embedding guides the student: the labeler's pooled pre-logit
# features (supervised) or BigBiGAN's encoder's pooled backbone features
# (`avepool_feat`, learnt without labels: the setting Ding & Lerch's
# compression was proposed for).
SOURCES = config_lib.CHOICES['embedding_distill.source']
DISTANCES = config_lib.CHOICES['embedding_distill.distance']

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


DISTANCE_FUNCTIONS: dict[str, Callable[[jax.Array, jax.Array], jax.Array]] = {
    'distance_correlation': distance_correlation_loss,
    'cosine_gram': cosine_gram_loss,
}


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


def _teacher_loss(transformation_params, module: TeacherTransformation,
                  teacher_embedding: jax.Array, target_probs: jax.Array):
  """Mean CE(target_probs, h(g(e))) and h(g(e))'s logits."""
  _, logits = module.apply({'params': transformation_params},
                           teacher_embedding)
  return jnp.mean(losses.soft_cross_entropy(target_probs, logits)), logits


@dataclasses.dataclass(frozen=True)
class EmbeddingDistillation:
  """The loss term of `config.embedding_distill` (a mode other than 'none').

  The step calls `prepare` once (outside the student's gradient: the
  teacher embedding, the target, the teacher loss's inputs), `loss` inside
  the student's objective, and `update` for the term's own training.
  """
  mode: str
  source: str
  distance: str
  weight: float
  compressed_dim: int
  pretrain_steps: int
  teacher_learning_rate: float
  num_classes: int

  @property
  def name(self) -> str:
    """The key of its state and of results: e.g. 'kd+emb_compressed', or
    'kd+emb_encoder_compressed' for the encoder's embedding."""
    source = '' if self.source == 'labeler' else f'{self.source}_'
    return f'emb_{source}{self.mode}'

  @property
  def trains_jointly(self) -> bool:
    return self.mode == 'compressed' and self.pretrain_steps == 0

  def _module(self) -> TeacherTransformation:
    return TeacherTransformation(self.compressed_dim, self.num_classes)

  def _optimizer(self) -> optax.GradientTransformation:
    # [ours] Adam at a constant rate: g and h are a linear probe, small next
    # to the student, and need no schedule.
    return optax.adam(self.teacher_learning_rate)

  def embeddings(self, teachers: teachers_lib.Teachers,
                 images: list[jax.Array], labeler_outputs) -> jax.Array:
    """The source's embeddings of the step's image batches, concatenated."""
    if self.source == 'encoder':
      return jnp.concatenate([teachers.encoder_features(x) for x in images])
    return jnp.concatenate([e for _, e in labeler_outputs])

  def init(self, rng: jax.Array, teachers: teachers_lib.Teachers,
           image_shape: tuple[int, ...]) -> dict[str, Any]:
    """Initial g and h (or the fixed random g); {} for 'raw'."""
    if self.mode == 'raw':
      return {}
    image = jnp.zeros((1, *image_shape), jnp.float32)
    embedding = jax.eval_shape(
        lambda x: self.embeddings(teachers, [x], [teachers.label(x)]), image)
    params = self._module().init(
        rng, jnp.zeros((1, embedding.shape[-1]), jnp.float32))['params']
    if self.mode == 'random_projection':
      # Fixed: only g, at its (LeCun-normal) initialisation.
      return {'transformation': {'transformation': params['transformation']}}
    return {'transformation': params,
            'opt_state': self._optimizer().init(params)}

  def prepare(self, state, teachers: teachers_lib.Teachers,
              images: list[jax.Array],
              labeler_outputs: list[tuple[jax.Array, jax.Array]],
              labels: jax.Array) -> dict[str, jax.Array]:
    """What `loss` and `update` need, for the step's image batches
    ([real, *generated], in the student's order) and the labeler's outputs
    on them (its logits are the teacher loss's targets on generated ones)."""
    embedding = jax.lax.stop_gradient(
        self.embeddings(teachers, images, labeler_outputs))
    prepared = {'target': embedding_target(
        self.mode, state.get('transformation'), embedding)}
    if self.mode == 'compressed':
      prepared['embedding'] = jax.lax.stop_gradient(embedding)
      prepared['teacher_targets'] = jax.lax.stop_gradient(teacher_targets(
          labels, [logits for logits, _ in labeler_outputs]))
      prepared['labels'] = labels
    return prepared

  def loss(self, prepared, student_features: jax.Array) -> jax.Array:
    """D(student features, t(e)) over the whole (global) batch."""
    return DISTANCE_FUNCTIONS[self.distance](student_features,
                                             prepared['target'])

  def update(self, state, prepared) -> tuple[dict, dict[str, jax.Array]]:
    """g and h on the teacher loss (jointly trained 'compressed' only);
    the teacher loss is reported whenever there is a head."""
    if self.mode != 'compressed':
      return state, {}
    (value, logits), grads = jax.value_and_grad(_teacher_loss, has_aux=True)(
        state['transformation'], self._module(), prepared['embedding'],
        prepared['teacher_targets'])
    labels = prepared['labels']
    metrics = {'teacher_loss': value, 'teacher_accuracy': jnp.mean(
        losses.top1_correct(labels, logits[:labels.shape[0]]))}
    if self.trains_jointly:
      updates, opt_state = self._optimizer().update(
          grads, state['opt_state'], state['transformation'])
      state = {'transformation': optax.apply_updates(
          state['transformation'], updates), 'opt_state': opt_state}
    return state, metrics

  def pretrain(self, state, method: str, teachers: teachers_lib.Teachers,
               batches: Callable[[int], Any], config: ml_collections.ConfigDict,
               rng: jax.Array) -> dict[str, Any]:
    """`pretrain_steps` of g and h alone on the teacher loss, then frozen.

    Reads the student's first batches (`batches(i)`, on device), so it is a
    pure function of the seed like the rest of the run; a resumed run
    repeats it (seconds) before its checkpoint is restored over it. For a
    TGT method the teacher loss also sees generated images, as in the joint
    step; with no student yet to explore against, [ours] they are the
    random exploration G(E(x) + sigma * eps) for every TGT method.
    """
    if self.mode != 'compressed' or not self.pretrain_steps:
      return state
    generates = methods.get(method).uses_generator
    joint = dataclasses.replace(self, pretrain_steps=0)

    @jax.jit
    def step(state, teachers, batch, rng):
      real = image_ops.uint8_to_unit(batch['image'])
      images = [real]
      if generates:
        inputs = methods.ExploreInputs(teachers, None, rng, real.shape[0],
                                       config)
        latents = methods.explore_random(
            teachers.real_latents(batch, real), inputs)
        images.append(teachers.generate(latents))
      outputs = [teachers.label(x) for x in images]
      return joint.update(state, joint.prepare(state, teachers, images,
                                               outputs, batch['label']))

    metrics = {}
    for i in range(self.pretrain_steps):
      state, metrics = step(state, teachers, batches(i),
                            jax.random.fold_in(rng, i))
    logging.info('[%s] teacher transformation pre-trained for %d steps: %s',
                 method, self.pretrain_steps,
                 {k: float(np.mean(v)) for k, v in
                  jax.device_get(metrics).items()})
    return state


def from_config(config: ml_collections.ConfigDict,
                num_classes: int) -> Iterable[EmbeddingDistillation]:
  """The config's embedding term, as a tuple of zero or one loss terms."""
  cfg = config.embedding_distill
  if cfg.mode == 'none':
    return ()
  return (EmbeddingDistillation(
      mode=cfg.mode, source=cfg.source, distance=cfg.distance,
      weight=cfg.weight,
      compressed_dim=cfg.compressed_dim, pretrain_steps=cfg.pretrain_steps,
      teacher_learning_rate=cfg.teacher_learning_rate,
      num_classes=num_classes),)


def config_errors(config: ml_collections.ConfigDict) -> list[str]:
  """What `config.embedding_distill` cannot mean, by field."""
  cfg = config.embedding_distill
  if cfg.mode not in MODES:
    return [f'embedding_distill.mode={cfg.mode!r}: choose from {MODES}.']
  if cfg.mode == 'none':
    return []
  errors = []
  if cfg.source not in SOURCES:
    errors.append(f'embedding_distill.source={cfg.source!r}: choose from '
                  f'{SOURCES}.')
  if cfg.distance not in DISTANCES:
    errors.append(f'embedding_distill.distance={cfg.distance!r}: choose '
                  f'from {DISTANCES}.')
  if not 0.0 <= cfg.weight <= 1.0:
    errors.append(f'embedding_distill.weight={cfg.weight} must lie in '
                  '[0, 1]: the loss is (1 - w) * task + w * distance.')
  if cfg.compressed_dim < 1:
    errors.append('embedding_distill.compressed_dim must be positive, got '
                  f'{cfg.compressed_dim}.')
  if cfg.pretrain_steps < 0:
    errors.append('embedding_distill.pretrain_steps must be >= 0 (0 trains '
                  f'g jointly), got {cfg.pretrain_steps}.')
  return errors
