"""One ResNet family for the student, the teacher labeler and the encoder.

The same definition covers ResNet-v1 (post-activation, He et al. 2016a) for
the classifiers and ResNet-v2 (pre-activation, He et al. 2016b) for the
BigBiGAN encoder backbone, with basic (18/34) or bottleneck (50/101) blocks,
an ImageNet stem or a small-image stem, and a width multiplier.

Parallelism is `jax.jit` over a sharded batch, so BatchNorm statistics cover
the global batch without a `pmean`; there is deliberately no `axis_name`.
"""

import functools
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

BATCH_NORM_MOMENTUM = 0.9
BATCH_NORM_EPSILON = 1e-5

# depth -> (blocks per stage, bottleneck blocks?)
RESNET_DEPTHS = {
    18: ((2, 2, 2, 2), False),
    34: ((3, 4, 6, 3), False),
    50: ((3, 4, 6, 3), True),
    101: ((3, 4, 23, 3), True),
}

_BOTTLENECK_EXPANSION = 4


def _conv(dtype: Any, **kwargs) -> nn.Conv:
  # BatchNorm follows every conv, so a conv bias would be redundant.
  return nn.Conv(use_bias=False, dtype=dtype, param_dtype=jnp.float32,
                 **kwargs)


def _batch_norm(train: bool, **kwargs) -> nn.BatchNorm:
  # float32 normalisation keeps low-precision runs numerically stable; the
  # next conv casts back to the compute dtype.
  return nn.BatchNorm(use_running_average=not train,
                      momentum=BATCH_NORM_MOMENTUM,
                      epsilon=BATCH_NORM_EPSILON,
                      dtype=jnp.float32, param_dtype=jnp.float32, **kwargs)


class ResidualBlock(nn.Module):
  """A basic (two 3x3 convs) or bottleneck (1x1, 3x3, 1x1) residual block.

  Attributes:
    filters: channels of the 3x3 conv; the block outputs `filters` channels
      (basic) or `4 * filters` (bottleneck).
    strides: spatial stride, applied by the (first) 3x3 conv and the
      projection shortcut.
    bottleneck: bottleneck instead of basic block.
    preactivation: ResNet-v2 ordering (BN-ReLU before each conv, identity
      path untouched) instead of ResNet-v1 (conv-BN, ReLU after the add).
    dtype: compute dtype of the convs.
  """
  filters: int
  strides: int
  bottleneck: bool
  preactivation: bool
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    out_channels = self.filters * (
        _BOTTLENECK_EXPANSION if self.bottleneck else 1)
    needs_projection = x.shape[-1] != out_channels or self.strides != 1
    conv = functools.partial(_conv, self.dtype)
    norm = functools.partial(_batch_norm, train)
    if self.bottleneck:
      conv_specs = [(self.filters, (1, 1), 1),
                    (self.filters, (3, 3), self.strides),
                    (out_channels, (1, 1), 1)]
    else:
      conv_specs = [(self.filters, (3, 3), self.strides),
                    (out_channels, (3, 3), 1)]

    if self.preactivation:
      preactivated = nn.relu(norm(name='preact_bn')(x))
      # v2 projects the pre-activated input so that the shortcut also sees a
      # normalised signal; an identity shortcut keeps the raw stream.
      shortcut = (conv(features=out_channels, kernel_size=(1, 1),
                       strides=self.strides, name='shortcut_conv')(preactivated)
                  if needs_projection else x)
      y = preactivated
      for index, (features, kernel, strides) in enumerate(conv_specs):
        if index > 0:
          y = nn.relu(norm(name=f'bn{index}')(y))
        y = conv(features=features, kernel_size=kernel, strides=strides,
                 name=f'conv{index + 1}')(y)
      return shortcut + y

    y = x
    last = len(conv_specs) - 1
    for index, (features, kernel, strides) in enumerate(conv_specs):
      y = conv(features=features, kernel_size=kernel, strides=strides,
               name=f'conv{index + 1}')(y)
      # Zero-initialising the last BN scale makes every block start as the
      # identity, so a deep net trains like a shallow one at first (Goyal et
      # al. 2017); this helps with large learning rates and few epochs.
      scale_init = (nn.initializers.zeros if index == last
                    else nn.initializers.ones)
      y = norm(scale_init=scale_init, name=f'bn{index + 1}')(y)
      if index != last:
        y = nn.relu(y)
    if needs_projection:
      shortcut = conv(features=out_channels, kernel_size=(1, 1),
                      strides=self.strides, name='shortcut_conv')(x)
      shortcut = norm(name='shortcut_bn')(shortcut)
    else:
      shortcut = x
    return nn.relu(shortcut + y)


class ResNet(nn.Module):
  """ResNet returning (logits, global-average-pooled embedding).

  Attributes:
    stage_sizes: residual blocks per stage, e.g. (2, 2, 2, 2) for ResNet-18.
    bottleneck: bottleneck blocks (ResNet-50/101) instead of basic (18/34).
    num_classes: size of the 'classifier' layer; None builds no head and the
      returned logits are None (e.g. the BigBiGAN encoder backbone).
    width: channels of the first stage; stage i has `width * 2**i` (times 4
      for bottleneck outputs).
    small_image_stem: a 3x3 stride-1 conv without max-pool, for 8x8..32x32
      inputs that the ImageNet stem (7x7/2 conv, 3x3/2 max-pool) would shrink
      to almost nothing.
    preactivation: ResNet-v2 blocks, as the BigBiGAN encoder uses.
    dtype: compute dtype; params, BatchNorm and outputs stay float32.
  """
  stage_sizes: Sequence[int]
  bottleneck: bool
  num_classes: Optional[int]
  width: int = 64
  small_image_stem: bool = False
  preactivation: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array,
               train: bool) -> tuple[Optional[jax.Array], jax.Array]:
    """Runs the network.

    Args:
      x: images [N, H, W, C].
      train: use batch statistics and update the running ones (the
        'batch_stats' collection must then be mutable).

    Returns:
      (logits [N, num_classes] float32 or None, embedding [N, D] float32),
      where the embedding is the pooled pre-logit feature vector.
    """
    if self.small_image_stem:
      x = _conv(self.dtype, features=self.width, kernel_size=(3, 3),
                name='stem_conv')(x)
    else:
      x = _conv(self.dtype, features=self.width, kernel_size=(7, 7),
                strides=2, padding=((3, 3), (3, 3)), name='stem_conv')(x)
    # v2 normalises at the start of each block instead, so its stem is a
    # bare conv.
    if not self.preactivation:
      x = nn.relu(_batch_norm(train, name='stem_bn')(x))
    if not self.small_image_stem:
      x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))

    for stage, num_blocks in enumerate(self.stage_sizes):
      for block in range(num_blocks):
        strides = 2 if stage > 0 and block == 0 else 1
        x = ResidualBlock(filters=self.width * 2**stage, strides=strides,
                          bottleneck=self.bottleneck,
                          preactivation=self.preactivation, dtype=self.dtype,
                          name=f'stage{stage + 1}_block{block + 1}')(x, train)
    if self.preactivation:
      # v2 blocks end in a conv; the features need a final BN-ReLU.
      x = nn.relu(_batch_norm(train, name='final_bn')(x))

    embedding = jnp.mean(x.astype(jnp.float32), axis=(1, 2))
    if self.num_classes is None:
      return None, embedding
    logits = nn.Dense(self.num_classes, dtype=self.dtype,
                      param_dtype=jnp.float32, name='classifier')(embedding)
    return logits.astype(jnp.float32), embedding


def create_resnet(depth: int,
                  num_classes: Optional[int],
                  width_multiplier: float = 1.0,
                  small_image_stem: bool = False,
                  preactivation: bool = False,
                  dtype: Any = jnp.float32,
                  name: Optional[str] = None) -> ResNet:
  """Builds ResNet-`depth` with `round(64 * width_multiplier)` base channels.

  Args:
    depth: 18, 34, 50 or 101.
    num_classes: classifier size, or None for a headless backbone.
    width_multiplier: scales every stage's channels (at least 1 channel).
    small_image_stem: see `ResNet.small_image_stem`.
    preactivation: ResNet-v2 blocks.
    dtype: compute dtype.
    name: module name, for use as a submodule (e.g. 'backbone').

  Returns:
    The (unbound) ResNet module.

  Raises:
    ValueError: for an unsupported depth.
  """
  if depth not in RESNET_DEPTHS:
    raise ValueError(f'Unsupported ResNet depth {depth}; allowed depths are '
                     f'{sorted(RESNET_DEPTHS)}.')
  stage_sizes, bottleneck = RESNET_DEPTHS[depth]
  return ResNet(stage_sizes=stage_sizes, bottleneck=bottleneck,
                num_classes=num_classes,
                width=max(1, round(64 * width_multiplier)),
                small_image_stem=small_image_stem,
                preactivation=preactivation, dtype=dtype, name=name)
