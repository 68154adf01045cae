"""A convolutional VAE's networks: a Gaussian encoder and a decoder.

Small and free of normalisation layers [ours]: no batch statistics, so the
train and the frozen functions are one function, each example is decoded
independently of its batch (which gradient exploration needs, methods.py),
and a CPU trains it within a minute on the digits demo. SiLU activations
[ours]: smooth, so d G(z) / dz, which `tgt_gradient` ascends, is
continuous.

The decoder mirrors BigBiGAN's generator layout (a dense seed at 4x4, one
doubling block per `widths[1:]`), so one derived `teacher_generator`
schema (image_size, channel_multipliers, latent_dim) fits both families.
"""

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


def _conv(features: int, strides: int, dtype: Any, name: str) -> nn.Conv:
  return nn.Conv(features, (3, 3), strides=(strides, strides),
                 padding='SAME', dtype=dtype, name=name)


class Encoder(nn.Module):
  """q(z | x) = N(mean, exp(log_var)): conv stages, then a dense head.

  Attributes:
    widths: channels of each stage; every stage after the first halves the
      resolution (a stride-2 conv), then a stride-1 conv.
    latent_dim: size of z.
    dtype: compute dtype of the convs and dense layers.
  """
  widths: Sequence[int]
  latent_dim: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, with_features: bool = False):
    """Returns (mean, log_var), each [N, latent_dim] float32; with
    `with_features` also the stages' globally pooled output [N, widths[-1]].

    Args:
      x: images [N, H, W, C] in [-1, 1].
      with_features: also return the pooled features.
    """
    h = x
    for index, width in enumerate(self.widths):
      h = nn.silu(_conv(width, 1 if index == 0 else 2, self.dtype,
                        f'stage_{index}_down')(h))
      h = nn.silu(_conv(width, 1, self.dtype, f'stage_{index}_conv')(h))
    h = h.astype(jnp.float32)
    # The head reads every position (flattened), not their mean: where a
    # stroke sits is what a digit is.
    gaussian = nn.Dense(2 * self.latent_dim, dtype=self.dtype,
                        name='head')(h.reshape(h.shape[0], -1))
    mean, log_var = jnp.split(gaussian.astype(jnp.float32), 2, axis=-1)
    if with_features:
      return mean, log_var, jnp.mean(h, axis=(1, 2))
    return mean, log_var


class Decoder(nn.Module):
  """p(x | z): a dense 4x4 seed, then one doubling block per `widths[1:]`.

  Attributes:
    widths: widths[0] channels of the 4x4 seed; widths[i >= 1] those of
      the block that doubles to 4 * 2^i.
    output_channels: image channels.
    dtype: compute dtype.
  """
  widths: Sequence[int]
  output_channels: int
  dtype: Any = jnp.float32

  @property
  def resolution(self) -> int:
    """Side of the decoded image."""
    return 4 * 2**(len(self.widths) - 1)

  @nn.compact
  def __call__(self, z: jax.Array) -> jax.Array:
    """Logits [N, R, R, output_channels] float32 of the pixel means (the
    image is their sigmoid)."""
    seed = self.widths[0]
    h = nn.Dense(4 * 4 * seed, dtype=self.dtype, name='seed')(
        z.astype(jnp.float32))
    h = nn.silu(h).reshape(z.shape[0], 4, 4, seed)
    for index, width in enumerate(self.widths[1:]):
      h = jnp.repeat(jnp.repeat(h, 2, axis=1), 2, axis=2)
      h = nn.silu(_conv(width, 1, self.dtype, f'block_{index}_up')(h))
      h = nn.silu(_conv(width, 1, self.dtype, f'block_{index}_conv')(h))
    logits = _conv(self.output_channels, 1, self.dtype, 'out')(h)
    return logits.astype(jnp.float32)
