"""What TGT needs of a teacher generator, whatever its family.

The frozen teachers (teachers.py) and the explorers (methods.py) see a
generator only through `TeacherGenerator`:

  encode(variables, images) -> z        E(x) of [0, 1] images (optional: a
                                        family without an encoder supports
                                        `tgt_prior` only)
  encoder_features(variables, images)   E's pooled features (embedding
                                        distillation's `source=encoder`)
  generate(variables, z) -> images      G(z) in [0, 1], differentiable in z
  latent_dim, sample_prior(rng, n)      the latent space and its prior

A `TeacherGenerator` is static (its networks and sizes; hashable, so a
jitted step takes it as part of the `Teachers` treedef); its variables are
a separate pytree, so one compiled program serves any weights of the same
shapes. Training one in the pipeline adds a `Trainer`: its initial state,
its train step (the family's objective) and the frozen variables of a
state, which the generator stage of train.py drives through the same loop
as every stage (resume, validation, best/last, TensorBoard).

A family is one module implementing both and one row of
`generators/families.py`.
"""

import abc
import dataclasses
from typing import Any, Callable, ClassVar, Optional

import jax
import jax.numpy as jnp

from tgt_jax import exploration
from tgt_jax import image_ops

Variables = Any  # A family's frozen variables: a pytree of arrays.


class TeacherGenerator(abc.ABC):
  """A frozen generator family's networks and sizes (no weights).

  `has_encoder`: False for a family without E; `encode` and
  `encoder_features` then raise, and the config check refuses every
  method and loss term that needs them, before any compute.
  """
  has_encoder: ClassVar[bool] = True

  @classmethod
  @abc.abstractmethod
  def from_config(cls, gen_config: Any,
                  dtype: Any = jnp.float32) -> 'TeacherGenerator':
    """The frozen teacher of a resolved `teacher_generator` section, whose
    networks compute in `dtype` (parameters stay float32)."""

  @property
  @abc.abstractmethod
  def latent_dim(self) -> int:
    """The size of z."""

  @abc.abstractmethod
  def abstract_variables(self) -> dict[str, Any]:
    """{part: the variables' shapes}, as `jax.ShapeDtypeStruct`s, no FLOPs.

    The parts are what the family keeps apart (e.g. 'encoder' and
    'generator'); random teachers fill each with its own seed."""

  @abc.abstractmethod
  def generate(self, variables: Variables, latents: jax.Array) -> jax.Array:
    """G(z) [N, R, R, C] in [0, 1], float32, differentiable in z."""

  def encode(self, variables: Variables, unit_images: jax.Array) -> jax.Array:
    """E(x) [N, latent_dim] of [0, 1] images of any size."""
    raise NotImplementedError(f'{type(self).__name__} has no encoder.')

  def encoder_features(self, variables: Variables,
                       unit_images: jax.Array) -> jax.Array:
    """E's pooled features [N, D] of [0, 1] images (learnt without
    labels)."""
    raise NotImplementedError(f'{type(self).__name__} has no encoder.')

  def sample_prior(self, rng: jax.Array, num: int) -> jax.Array:
    """`num` latents from the prior, N(0, I) unless a family says else."""
    return exploration.sample_prior(rng, (num, self.latent_dim))


class GaussianEncoder(TeacherGenerator):
  """A family whose encoder predicts a Gaussian q(z | x) from x resized to
  `encoder_image_size` in [-1, 1]: E(x) is its mean [ours: the deterministic
  point exploration moves from; BigBiGAN's colab reconstructs from a
  sample]. Subclasses have fields `encoder` (the module) and
  `encoder_image_size`."""

  def apply_encoder(self, variables: Variables, images: jax.Array,
                    with_features: bool):
    """The encoder module on images already at its size and range:
    (mean, spread) [N, latent_dim], and with `with_features` its pooled
    features [N, D]."""
    return self.encoder.apply(variables['encoder'], images,
                              with_features=with_features)

  def posterior(self, variables: Variables, unit_images: jax.Array,
                with_features: bool = False):
    """`apply_encoder` of [0, 1] images of any size."""
    return self.apply_encoder(
        variables,
        image_ops.encoder_input(unit_images, self.encoder_image_size),
        with_features)

  def encode(self, variables: Variables, unit_images: jax.Array) -> jax.Array:
    return self.posterior(variables, unit_images)[0]

  def encoder_features(self, variables: Variables,
                       unit_images: jax.Array) -> jax.Array:
    return self.posterior(variables, unit_images, with_features=True)[2]


@dataclasses.dataclass(frozen=True)
class Trainer:
  """How the pipeline trains a family from images alone.

  Attributes:
    init: rng -> the initial train state (a pytree the loop checkpoints).
    step: (state, {'image': uint8 [N, H, W, C]}, rng) -> (state, metrics),
      jit-able; metrics hold at least 'loss'.
    frozen_variables: state -> the variables `generate` and `encode` read.
  """
  init: Callable[[jax.Array], Any]
  step: Callable[[Any, dict[str, jax.Array], jax.Array],
                 tuple[Any, dict[str, jax.Array]]]
  frozen_variables: Callable[[Any], Variables]


def shapes_of_init(init: Callable[..., Any], *inputs: jax.ShapeDtypeStruct,
                   **kwargs: Any) -> Any:
  """The shapes `init(rng, *inputs, **kwargs)` returns, without running it
  (a network's init would cost seconds of XLA compilation on a CPU)."""
  return jax.eval_shape(
      lambda rng, *xs: init(rng, *xs, **kwargs), jax.random.PRNGKey(0),
      *inputs)


def image_shape(size: int, channels: int) -> jax.ShapeDtypeStruct:
  """One float32 image of side `size`, for `shapes_of_init`."""
  return jax.ShapeDtypeStruct((1, size, size, channels), jnp.float32)


def latent_shape(latent_dim: int) -> jax.ShapeDtypeStruct:
  """One float32 latent, for `shapes_of_init`."""
  return jax.ShapeDtypeStruct((1, latent_dim), jnp.float32)


@dataclasses.dataclass(frozen=True)
class Family:
  """A row of the family table (generators/families.py).

  Attributes:
    model: the family's `TeacherGenerator` class (`from_config` builds the
      frozen teacher).
    trainer: teacher_generator section -> `Trainer`; None if the family
      cannot be trained here.
    converted: whether `teacher_generator.pretrained_checkpoint` (a
      converted checkpoint, `pretrained.load_pretrained_teacher_generator`)
      can hold this family.
  """
  model: type
  trainer: Optional[Callable[[Any], Trainer]] = None
  converted: bool = False
