"""One ResNet family for the student, the teacher labeler and the encoder.

The same definition covers ResNet-v1 (post-activation, He et al. 2016a) for
the classifiers and ResNet-v2 (pre-activation, He et al. 2016b) for the
BigBiGAN encoder backbone, with basic (18/34) or bottleneck (50/101/152)
blocks, an ImageNet stem or a small-image stem, and a width multiplier.

The defaults are the layout this codebase trains (ResNet v1.5: the stride
on the 3x3 conv of the first unit of a stage, lax 'SAME' padding, no conv
biases, BatchNorm epsilon 1e-5). A few options describe other published
layouts, so that their weights load into this one definition and compute
the same function:
  * torchvision: ours with `strided_padding='symmetric'`;
  * Keras ResNet50/101/152 (v1): `strided_conv='1x1'`, `conv_bias=True`,
    `batch_norm_epsilon=1.001e-5` (no 3x3 conv strides, so the padding
    option does not matter);
  * TF-slim resnet_v2 (pre-activation): `stride_placement='last'`,
    `strided_padding='symmetric'`, except that its stem max-pool pads
    'VALID' where ours pads 1. Keras ResNetV2 has the same strides but
    biases on some convs only, which these options do not describe.

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

# Where each stage's stride-2 unit sits: 'first' puts it in the first unit
# of every stage but the first (ours, torchvision, Keras v1); 'last' in the
# last unit of every stage but the last (TF-slim resnet_v2, Keras ResNetV2).
# Both downsample 3 times; they differ in which convs see which resolution.
STRIDE_PLACEMENTS = ('first', 'last')
# Which conv of a bottleneck block carries its stride: '3x3' (ResNet v1.5,
# ours, torchvision, TF-slim) or '1x1', the first conv (the original Caffe
# ResNet and Keras ResNet50/101/152).
STRIDED_CONVS = ('3x3', '1x1')
# Padding of strided convs: 'same' is lax 'SAME' (on an even input a 3x3/2
# conv pads 0 before and 1 after); 'symmetric' pads (k - 1) // 2 on both
# sides (TF-slim `conv2d_same`, Keras `ZeroPadding2D`, torchvision). Stride-1
# convs pad symmetrically either way.
STRIDED_PADDINGS = ('same', 'symmetric')

# depth -> (blocks per stage, bottleneck blocks?)
RESNET_DEPTHS = {
    18: ((2, 2, 2, 2), False),
    34: ((3, 4, 6, 3), False),
    50: ((3, 4, 6, 3), True),
    101: ((3, 4, 23, 3), True),
    152: ((3, 8, 36, 3), True),
}

_BOTTLENECK_EXPANSION = 4


def _conv(dtype: Any, use_bias: bool = False, **kwargs) -> nn.Conv:
  # BatchNorm follows every conv, so a conv bias is redundant; it exists only
  # so that layouts that have one (Keras v1) load.
  return nn.Conv(use_bias=use_bias, dtype=dtype, param_dtype=jnp.float32,
                 **kwargs)


def _batch_norm(train: bool, epsilon: float = BATCH_NORM_EPSILON,
                **kwargs) -> nn.BatchNorm:
  # float32 normalisation keeps low-precision runs numerically stable; the
  # next conv casts back to the compute dtype.
  return nn.BatchNorm(use_running_average=not train,
                      momentum=BATCH_NORM_MOMENTUM, epsilon=epsilon,
                      dtype=jnp.float32, param_dtype=jnp.float32, **kwargs)


def _conv_padding(kernel_size: int, strides: int,
                  strided_padding: str) -> Any:
  """Flax padding of a square conv; see STRIDED_PADDINGS."""
  if strides == 1 or strided_padding == 'same':
    return 'SAME'
  pad = (kernel_size - 1) // 2
  return ((pad, pad), (pad, pad))


def _check_choice(name: str, value: str, choices: Sequence[str]) -> None:
  if value not in choices:
    raise ValueError(f'{name}={value!r}; choose one of {tuple(choices)}.')


class ResidualBlock(nn.Module):
  """A basic (two 3x3 convs) or bottleneck (1x1, 3x3, 1x1) residual block.

  Attributes:
    filters: channels of the 3x3 conv; the block outputs `filters` channels
      (basic) or `4 * filters` (bottleneck).
    strides: spatial stride, applied by one conv of the residual branch (see
      `strided_conv`) and by the shortcut.
    bottleneck: bottleneck instead of basic block.
    preactivation: ResNet-v2 ordering (BN-ReLU before each conv, identity
      path untouched) instead of ResNet-v1 (conv-BN, ReLU after the add).
    strided_conv: bottleneck blocks only: which conv strides, '3x3' or '1x1'
      (STRIDED_CONVS).
    strided_padding: padding of strided convs (STRIDED_PADDINGS).
    conv_bias: give every conv a bias.
    subsample_shortcut: a strided block whose width does not change takes
      `x[:, ::s, ::s]` as its shortcut (TF-slim's `subsample`, Keras V2's
      1x1 max-pool) instead of a projection conv. Only the 'last' stride
      placement builds such blocks.
    batch_norm_epsilon: epsilon of every BatchNorm.
    dtype: compute dtype of the convs.
  """
  filters: int
  strides: int
  bottleneck: bool
  preactivation: bool
  strided_conv: str = '3x3'
  strided_padding: str = 'same'
  conv_bias: bool = False
  subsample_shortcut: bool = False
  batch_norm_epsilon: float = BATCH_NORM_EPSILON
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    out_channels = self.filters * (
        _BOTTLENECK_EXPANSION if self.bottleneck else 1)
    same_width = x.shape[-1] == out_channels
    subsample = self.subsample_shortcut and same_width and self.strides != 1
    needs_projection = not same_width or (self.strides != 1 and
                                          not subsample)

    def conv(features: int, kernel: int, strides: int, name: str) -> nn.Conv:
      return _conv(self.dtype, use_bias=self.conv_bias, features=features,
                   kernel_size=(kernel, kernel), strides=strides,
                   padding=_conv_padding(kernel, strides,
                                         self.strided_padding),
                   name=name)

    norm = functools.partial(_batch_norm, train,
                             epsilon=self.batch_norm_epsilon)
    if self.bottleneck:
      stride_1x1 = self.strides if self.strided_conv == '1x1' else 1
      stride_3x3 = self.strides if self.strided_conv == '3x3' else 1
      conv_specs = [(self.filters, 1, stride_1x1),
                    (self.filters, 3, stride_3x3),
                    (out_channels, 1, 1)]
    else:
      conv_specs = [(self.filters, 3, self.strides),
                    (out_channels, 3, 1)]

    def identity_shortcut(y: jax.Array) -> jax.Array:
      return y[:, ::self.strides, ::self.strides] if subsample else y

    if self.preactivation:
      preactivated = nn.relu(norm(name='preact_bn')(x))
      # v2 projects the pre-activated input so that the shortcut also sees a
      # normalised signal; an identity shortcut keeps the raw stream.
      shortcut = (conv(out_channels, 1, self.strides,
                       'shortcut_conv')(preactivated)
                  if needs_projection else identity_shortcut(x))
      y = preactivated
      for index, (features, kernel, strides) in enumerate(conv_specs):
        if index > 0:
          y = nn.relu(norm(name=f'bn{index}')(y))
        y = conv(features, kernel, strides, f'conv{index + 1}')(y)
      return shortcut + y

    y = x
    last = len(conv_specs) - 1
    for index, (features, kernel, strides) in enumerate(conv_specs):
      y = conv(features, kernel, strides, f'conv{index + 1}')(y)
      # Zero-initialising the last BN scale makes every block start as the
      # identity, so a deep net trains like a shallow one at first (Goyal et
      # al. 2017); this helps with large learning rates and few epochs.
      scale_init = (nn.initializers.zeros if index == last
                    else nn.initializers.ones)
      y = norm(scale_init=scale_init, name=f'bn{index + 1}')(y)
      if index != last:
        y = nn.relu(y)
    if needs_projection:
      shortcut = conv(out_channels, 1, self.strides, 'shortcut_conv')(x)
      shortcut = norm(name='shortcut_bn')(shortcut)
    else:
      shortcut = identity_shortcut(x)
    return nn.relu(shortcut + y)


class ResNet(nn.Module):
  """ResNet returning (logits, global-average-pooled embedding).

  Attributes:
    stage_sizes: residual blocks per stage, e.g. (2, 2, 2, 2) for ResNet-18.
    bottleneck: bottleneck blocks (ResNet-50/101/152) instead of basic
      (18/34).
    num_classes: size of the 'classifier' layer; None builds no head and the
      returned logits are None (e.g. the BigBiGAN encoder backbone).
    width: channels of the first stage; stage i has `width * 2**i` (times 4
      for bottleneck outputs).
    small_image_stem: a 3x3 stride-1 conv without max-pool, for 8x8..32x32
      inputs that the ImageNet stem (7x7/2 conv, 3x3/2 max-pool) would shrink
      to almost nothing.
    preactivation: ResNet-v2 blocks, as the BigBiGAN encoder uses.
    stride_placement: which unit of a stage strides (STRIDE_PLACEMENTS).
    strided_conv: which conv of a bottleneck block strides (STRIDED_CONVS);
      must be '3x3' for basic blocks, which have no 1x1 conv.
    strided_padding: padding of strided convs (STRIDED_PADDINGS).
    conv_bias: give every conv a bias (Keras v1 weights have them).
    batch_norm_epsilon: epsilon of every BatchNorm (Keras: 1.001e-5).
    dtype: compute dtype; params, BatchNorm and outputs stay float32.
  """
  stage_sizes: Sequence[int]
  bottleneck: bool
  num_classes: Optional[int]
  width: int = 64
  small_image_stem: bool = False
  preactivation: bool = False
  stride_placement: str = 'first'
  strided_conv: str = '3x3'
  strided_padding: str = 'same'
  conv_bias: bool = False
  batch_norm_epsilon: float = BATCH_NORM_EPSILON
  dtype: Any = jnp.float32

  def block_strides(self) -> list[list[int]]:
    """The stride of every unit, [stage][unit], for `stride_placement`."""
    _check_choice('stride_placement', self.stride_placement,
                  STRIDE_PLACEMENTS)
    num_stages = len(self.stage_sizes)
    strides = [[1] * num_blocks for num_blocks in self.stage_sizes]
    for stage in range(num_stages - 1):
      # The downsampling between stage s and s + 1 opens stage s + 1
      # ('first') or closes stage s ('last').
      if self.stride_placement == 'first':
        strides[stage + 1][0] = 2
      else:
        strides[stage][-1] = 2
    return strides

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
    _check_choice('strided_conv', self.strided_conv, STRIDED_CONVS)
    _check_choice('strided_padding', self.strided_padding, STRIDED_PADDINGS)
    if self.strided_conv != '3x3' and not self.bottleneck:
      raise ValueError(f'strided_conv={self.strided_conv!r} needs bottleneck '
                       "blocks (depth >= 50); basic blocks stride their "
                       "first 3x3 conv: use strided_conv='3x3'.")
    block_strides = self.block_strides()
    if self.small_image_stem:
      x = _conv(self.dtype, use_bias=self.conv_bias, features=self.width,
                kernel_size=(3, 3), name='stem_conv')(x)
    else:
      x = _conv(self.dtype, use_bias=self.conv_bias, features=self.width,
                kernel_size=(7, 7), strides=2, padding=((3, 3), (3, 3)),
                name='stem_conv')(x)
    # v2 normalises at the start of each block instead, so its stem is a
    # bare conv.
    if not self.preactivation:
      x = nn.relu(_batch_norm(train, epsilon=self.batch_norm_epsilon,
                              name='stem_bn')(x))
    if not self.small_image_stem:
      x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))

    for stage, num_blocks in enumerate(self.stage_sizes):
      for block in range(num_blocks):
        x = ResidualBlock(filters=self.width * 2**stage,
                          strides=block_strides[stage][block],
                          bottleneck=self.bottleneck,
                          preactivation=self.preactivation,
                          strided_conv=self.strided_conv,
                          strided_padding=self.strided_padding,
                          conv_bias=self.conv_bias,
                          subsample_shortcut=self.stride_placement == 'last',
                          batch_norm_epsilon=self.batch_norm_epsilon,
                          dtype=self.dtype,
                          name=f'stage{stage + 1}_block{block + 1}')(x, train)
    if self.preactivation:
      # v2 blocks end in a conv; the features need a final BN-ReLU.
      x = nn.relu(_batch_norm(train, epsilon=self.batch_norm_epsilon,
                              name='final_bn')(x))

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
                  name: Optional[str] = None,
                  *,
                  stride_placement: str = 'first',
                  strided_conv: str = '3x3',
                  strided_padding: str = 'same',
                  conv_bias: bool = False,
                  batch_norm_epsilon: float = BATCH_NORM_EPSILON) -> ResNet:
  """Builds ResNet-`depth` with `round(64 * width_multiplier)` base channels.

  Args:
    depth: 18, 34, 50, 101 or 152.
    num_classes: classifier size, or None for a headless backbone.
    width_multiplier: scales every stage's channels (at least 1 channel).
    small_image_stem: see `ResNet.small_image_stem`.
    preactivation: ResNet-v2 blocks.
    dtype: compute dtype.
    name: module name, for use as a submodule (e.g. 'backbone').
    stride_placement: 'first' or 'last' unit of a stage strides
      (STRIDE_PLACEMENTS).
    strided_conv: '3x3' or '1x1' conv of a bottleneck block strides.
    strided_padding: 'same' or 'symmetric' padding of strided convs.
    conv_bias: every conv has a bias.
    batch_norm_epsilon: epsilon of every BatchNorm.

  Returns:
    The (unbound) ResNet module.

  Raises:
    ValueError: for an unsupported depth or option value.
  """
  if depth not in RESNET_DEPTHS:
    raise ValueError(f'Unsupported ResNet depth {depth}; allowed depths are '
                     f'{sorted(RESNET_DEPTHS)}.')
  _check_choice('stride_placement', stride_placement, STRIDE_PLACEMENTS)
  _check_choice('strided_conv', strided_conv, STRIDED_CONVS)
  _check_choice('strided_padding', strided_padding, STRIDED_PADDINGS)
  stage_sizes, bottleneck = RESNET_DEPTHS[depth]
  if strided_conv != '3x3' and not bottleneck:
    raise ValueError(f'strided_conv={strided_conv!r} needs bottleneck blocks '
                     f'(depth >= 50), not ResNet-{depth}; basic blocks stride '
                     "their first 3x3 conv: use strided_conv='3x3'.")
  return ResNet(stage_sizes=stage_sizes, bottleneck=bottleneck,
                num_classes=num_classes,
                width=max(1, round(64 * width_multiplier)),
                small_image_stem=small_image_stem,
                preactivation=preactivation,
                stride_placement=stride_placement, strided_conv=strided_conv,
                strided_padding=strided_padding, conv_bias=conv_bias,
                batch_norm_epsilon=batch_norm_epsilon, dtype=dtype, name=name)
