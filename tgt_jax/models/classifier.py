"""A classifier network together with the input recipe it was built for.

The student and the teacher labeler are both a `Classifier`: the one ResNet
family (resnet.py) plus the size, normalisation and channel order its input
needs. Every caller hands it unit-range images ([0, 1], any size), real or
generated, and it brings them to its own input; so the student and the
labeler always see the same picture, each in its own format.
"""

import dataclasses
from typing import Any, Sequence

import jax

from tgt_jax import image_ops


@dataclasses.dataclass(frozen=True)
class Classifier:
  """A network returning (logits, embedding), and its input recipe.

  Hashable and immutable, so it can be a static part of a jitted step.
  """
  network: Any  # resnet.ResNet
  image_size: int
  mean: Sequence[float]
  std: Sequence[float]
  channel_order: str = 'rgb'

  def inputs(self, unit_images) -> jax.Array:
    """The network's input for one batch or a list of batches (any sizes,
    each resized first, then concatenated: one pass sees them all)."""
    if not isinstance(unit_images, (list, tuple)):
      unit_images = [unit_images]
    return jax.numpy.concatenate([
        image_ops.classifier_input(x, self.image_size, self.mean, self.std,
                                   self.channel_order) for x in unit_images])

  def init(self, rng: jax.Array, channels: int) -> dict[str, Any]:
    """Variables ({'params', 'batch_stats'}) for `channels`-channel images."""
    return self.network.init(
        rng, jax.numpy.zeros((1, self.image_size, self.image_size, channels)),
        train=False)

  def apply(self, variables, unit_images, train: bool = False):
    """(logits, embedding), and in train mode also the new batch_stats.

    `unit_images`: one batch, or a list of batches that go through together.

    Train mode normalises with the batch's statistics and returns
    `(logits, embedding), batch_stats`; inference mode uses the running
    averages, so each example's output depends on that example alone.
    """
    inputs = self.inputs(unit_images)
    if not train:
      return self.network.apply(variables, inputs, train=False)
    outputs, updates = self.network.apply(variables, inputs, train=True,
                                          mutable=['batch_stats'])
    return outputs, updates['batch_stats']
