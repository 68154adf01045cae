"""The frozen teachers as one object: label, encode, generate.

`Teachers` holds the teacher labeler h and the teacher generator (its
family's `TeacherGenerator`, E and G, see generators/interface.py), each a
static network and its variables, and, optionally, a latent cache: E(x) of
every student training image, indexed by the example's position in the
student subset (`batch['index']`) and gathered inside the step. It is a
pytree whose leaves are the variables and the cache, so a jitted step takes
it as an argument: large teachers are never baked into the compiled program
as constants, and the same program serves any teacher of the same shapes.

Nothing here is trained and nothing stops gradients: `label` and `generate`
are differentiable in their inputs, which gradient exploration needs
(d/dz of the labeler's output on G(z)). Callers that use a teacher's output
as a fixed target stop its gradient themselves (`losses`).
"""

from typing import Any, Optional

from flax import struct
import jax
import jax.numpy as jnp
import numpy as np

from tgt_jax import image_ops
from tgt_jax.generators import families
from tgt_jax.generators import interface
from tgt_jax.models import build
from tgt_jax.models import classifier as classifier_lib


class Teachers(struct.PyTreeNode):
  """Frozen labeler and generator; either may be absent.

  Attributes:
    labeler_network: the labeler `Classifier` (static).
    labeler: its variables.
    generator_model: the teacher generator's family model (static), e.g.
      BigBiGAN's E and G with baked spectral norm.
    generator: its variables (None: no generator).
    latents: E(x) of every student training image [N, latent_dim], or None
      to encode each batch in the step.
  """
  labeler_network: Optional[classifier_lib.Classifier] = struct.field(
      pytree_node=False, default=None)
  labeler: Any = None
  generator_model: Optional[interface.TeacherGenerator] = struct.field(
      pytree_node=False, default=None)
  generator: Any = None
  latents: Optional[jax.Array] = None

  def label(self, unit_images: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The labeler's (logits, pooled embedding) of [0, 1] images."""
    return self.labeler_network.apply(self.labeler, unit_images, train=False)

  def encode(self, unit_images: jax.Array) -> jax.Array:
    """E(x) of [0, 1] images (the family's deterministic point, e.g.
    BigBiGAN's z_mean)."""
    return self.generator_model.encode(self.generator, unit_images)

  def encoder_features(self, unit_images: jax.Array) -> jax.Array:
    """E's pooled features of [0, 1] images: a representation learnt
    without labels."""
    return self.generator_model.encoder_features(self.generator, unit_images)

  def generate(self, latents: jax.Array) -> jax.Array:
    """G(z) in the unit range, differentiable in z."""
    return self.generator_model.generate(self.generator, latents)

  def sample_prior(self, rng: jax.Array, num: int) -> jax.Array:
    """`num` latents from the generator's prior."""
    return self.generator_model.sample_prior(rng, num)

  def real_latents(self, batch: dict[str, jax.Array],
                   unit_images: jax.Array) -> jax.Array:
    """E(x) of a student batch: gathered from the cache if there is one."""
    if self.latents is not None:
      return self.latents[batch['index']]
    return self.encode(unit_images)

  @property
  def latent_dim(self) -> int:
    return self.generator_model.latent_dim


def encode_fn(teachers: Teachers):
  """A jitted uint8 images -> E(x), e.g. to fill the latent cache."""
  return jax.jit(lambda images: teachers.encode(
      image_ops.uint8_to_unit(images)))


def random_variables(module, input_shape: tuple[int, ...],
                     seed: int) -> dict[str, Any]:
  """Variables shaped like `module.init`'s, filled with NumPy, no compile
  (see `random_like`)."""
  return random_like(interface.shapes_of_init(
      module.init, jax.ShapeDtypeStruct(input_shape, jnp.float32),
      train=False), seed)


def random_like(abstract: Any, seed: int) -> Any:
  """A tree of arrays shaped like `abstract`'s, filled with NumPy.

  For benchmarks and tests, where teachers need the right shapes but no
  training: jitting a network's init costs seconds of XLA compilation on a
  CPU. In the spirit of Flax's defaults: kernels LeCun-normal (variance
  1 / fan-in), BatchNorm scales and running variances 1, running means 0,
  and small random biases, offsets and gains (so that no path is off).
  """
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    name = path[-1].key
    if leaf.ndim >= 2:
      fan_in = int(np.prod(leaf.shape[:-1]))
      value = rng.normal(size=leaf.shape) / np.sqrt(fan_in)
    elif name in ('scale', 'var'):
      value = np.ones(leaf.shape)
    elif name == 'mean':
      value = np.zeros(leaf.shape)
    else:
      value = 0.1 * rng.normal(size=leaf.shape)
    return jnp.asarray(value, leaf.dtype)

  return jax.tree_util.tree_map_with_path(fill, abstract)


def random_generator_variables(model: interface.TeacherGenerator,
                               seed: int) -> dict[str, Any]:
  """A family's variables (see `random_like`), each part from its own seed
  (seed, seed + 1, ... in the parts' sorted order)."""
  abstract = model.abstract_variables()
  return {part: random_like(abstract[part], seed + index)
          for index, part in enumerate(sorted(abstract))}


def random_teachers(config, num_classes: int, channels: int,
                    seed: int = 0) -> Teachers:
  """Teachers of a resolved config's shapes with random weights (see
  `random_like`), for benchmarks and tests: timing and FLOPs do not
  depend on the values."""
  dtype = build.compute_dtype(config)
  labeler = build.classifier(config.teacher_labeler, num_classes, dtype)
  generator = families.model(config.teacher_generator, dtype)
  size = labeler.image_size
  return Teachers(
      labeler_network=labeler,
      labeler=random_variables(
          labeler.network, (1, size, size, channels), seed=seed * 5 + 1),
      generator_model=generator,
      generator=random_generator_variables(generator, seed=seed * 5 + 2))
