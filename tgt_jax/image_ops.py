"""Getting images into each model's own size and normalisation.

Real images live as uint8 in [0, 255]; the generator speaks [-1, 1]. Every
model sees an image converted from the unit range [0, 1] by its own recipe, so
the student and the labeler see the same (real or generated) picture, each
resized and normalised for itself.
"""

from typing import Sequence

import jax
import jax.numpy as jnp


def uint8_to_unit(images: jax.Array) -> jax.Array:
  return images.astype(jnp.float32) / 255.0


def generated_to_unit(images: jax.Array) -> jax.Array:
  """Generator output in [-1, 1] to [0, 1]."""
  return jnp.clip((images.astype(jnp.float32) + 1.0) / 2.0, 0.0, 1.0)


def resize(images: jax.Array, image_size: int) -> jax.Array:
  """Bilinear (antialiased when shrinking) resize of NHWC images to square."""
  n, h, w, c = images.shape
  if (h, w) == (image_size, image_size):
    return images
  return jax.image.resize(images, (n, image_size, image_size, c), 'bilinear',
                          antialias=True)


def classifier_input(unit_images: jax.Array, image_size: int,
                     mean: Sequence[float], std: Sequence[float],
                     channel_order: str = 'rgb') -> jax.Array:
  """[0, 1] images to a classifier's size and per-channel normalisation.

  `channel_order='bgr'` reverses the channels first (Caffe-style
  checkpoints); `mean` and `std` are then in BGR order.
  """
  images = resize(unit_images, image_size)
  if channel_order == 'bgr':
    images = images[..., ::-1]
  return (images - jnp.asarray(mean)) / jnp.asarray(std)


def encoder_input(unit_images: jax.Array, image_size: int) -> jax.Array:
  """[0, 1] images to the BigBiGAN encoder's size and range [-1, 1]."""
  return resize(unit_images, image_size) * 2.0 - 1.0
