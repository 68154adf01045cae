"""The frozen teachers as one object: label, encode, generate.

`Teachers` holds the teacher labeler h, BigBiGAN's encoder E and generator G
(each a network and its variables) and, optionally, a latent cache: E(x) of
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
from tgt_jax.models import build
from tgt_jax.models import classifier as classifier_lib


class Teachers(struct.PyTreeNode):
  """Frozen labeler, encoder and generator; any of them may be absent.

  Attributes:
    labeler_network: the labeler `Classifier` (static).
    labeler: its variables.
    encoder_network: BigBiGAN's `Encoder` (static).
    encoder_image_size: the encoder's input side (static).
    encoder: its variables.
    generator_network: BigBiGAN's `Generator` with baked spectral norm
      (static).
    generator: its variables.
    latents: E(x) of every student training image [N, latent_dim], or None
      to encode each batch in the step.
  """
  labeler_network: Optional[classifier_lib.Classifier] = struct.field(
      pytree_node=False, default=None)
  labeler: Any = None
  encoder_network: Any = struct.field(pytree_node=False, default=None)
  encoder_image_size: int = struct.field(pytree_node=False, default=0)
  encoder: Any = None
  generator_network: Any = struct.field(pytree_node=False, default=None)
  generator: Any = None
  latents: Optional[jax.Array] = None

  def label(self, unit_images: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The labeler's (logits, pooled embedding) of [0, 1] images."""
    return self.labeler_network.apply(self.labeler, unit_images, train=False)

  def encode(self, unit_images: jax.Array) -> jax.Array:
    """z_mean = E(x) [ours: the colab reconstructs from z_sample; the mean
    is the deterministic point that exploration moves from]."""
    z_mean, _ = self.encoder_network.apply(
        self.encoder,
        image_ops.encoder_input(unit_images, self.encoder_image_size),
        train=False)
    return z_mean

  def encoder_features(self, unit_images: jax.Array) -> jax.Array:
    """E's pooled backbone features of [0, 1] images (BigBiGAN's
    `avepool_feat`): a representation learnt without labels."""
    _, _, features = self.encoder_network.apply(
        self.encoder,
        image_ops.encoder_input(unit_images, self.encoder_image_size),
        train=False, with_features=True)
    return features

  def generate(self, latents: jax.Array) -> jax.Array:
    """G(z) in the unit range, differentiable in z."""
    return image_ops.generated_to_unit(
        self.generator_network.apply(self.generator, latents, train=False))

  def real_latents(self, batch: dict[str, jax.Array],
                   unit_images: jax.Array) -> jax.Array:
    """E(x) of a student batch: gathered from the cache if there is one."""
    if self.latents is not None:
      return self.latents[batch['index']]
    return self.encode(unit_images)

  @property
  def latent_dim(self) -> int:
    return self.generator_network.latent_dim


def encode_fn(teachers: Teachers):
  """A jitted uint8 images -> E(x), e.g. to fill the latent cache."""
  return jax.jit(lambda images: teachers.encode(
      image_ops.uint8_to_unit(images)))


def random_variables(module, input_shape: tuple[int, ...],
                     seed: int) -> dict[str, Any]:
  """Variables shaped like `module.init`'s, filled with NumPy, no compile.

  For benchmarks and tests, where teachers need the right shapes but no
  training: jitting a network's init costs seconds of XLA compilation on a
  CPU. In the spirit of Flax's defaults: kernels LeCun-normal (variance
  1 / fan-in), BatchNorm scales and running variances 1, running means 0,
  and small random biases, offsets and gains (so that no path is off).
  """
  abstract = jax.eval_shape(
      lambda k: module.init(k, jnp.zeros(input_shape), train=False),
      jax.random.PRNGKey(0))
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


def random_teachers(config, num_classes: int, channels: int,
                    seed: int = 0) -> Teachers:
  """Teachers of a resolved config's shapes with random weights (see
  `random_variables`), for benchmarks and tests: timing and FLOPs do not
  depend on the values."""
  gen_cfg = config.teacher_generator
  dtype = build.compute_dtype(config)
  labeler = build.classifier(config.teacher_labeler, num_classes, dtype)
  encoder = build.encoder(gen_cfg, dtype)
  generator = build.generator(gen_cfg, spectral_norm=False, dtype=dtype)
  size, enc_size = labeler.image_size, gen_cfg.encoder_image_size
  return Teachers(
      labeler_network=labeler,
      labeler=random_variables(
          labeler.network, (1, size, size, channels), seed=seed * 5 + 1),
      encoder_network=encoder, encoder_image_size=enc_size,
      encoder=random_variables(
          encoder, (1, enc_size, enc_size, channels), seed=seed * 5 + 2),
      generator_network=generator,
      generator=random_variables(
          generator, (1, gen_cfg.latent_dim), seed=seed * 5 + 3))
