"""BigBiGAN's networks (Donahue & Simonyan 2019): generator and encoder.

One definition serves two teachers:
  * the paper-scale teacher, converted from TF-Hub
    `deepmind/bigbigan-resnet50/1` (BigGAN-128 generator, ResNet-v2-50
    encoder on 256x256) -- the defaults of `Generator` and `Encoder`;
  * the tiny demo teacher (16x16 grayscale digits) trained in-repo, which
    sets the widths, resolution, latent size and channels as module fields.

Spectral normalisation. Spectrally normalised layers (`SpectralDense`,
`SpectralConv`) own exactly the params of `nn.Dense` / `nn.Conv` ('kernel',
'bias'); the power-iteration vector `u` lives in its own 'spectral'
collection so that 'batch_stats' holds BatchNorm statistics only. With
`spectral_norm=True` (training) each call runs one power iteration; with
`spectral_norm=False` (a frozen teacher) the kernels are used as they are,
and `bake_spectral_norm` turns SN-trained params into such plain params.

What only training or conversion needs lives with the family
(tgt_jax/generators/): the joint discriminator and the objective in
`generators/bigbigan.py`, the TF-Hub name tables in
`generators/convert_bigbigan.py`.
"""

from typing import Any, Callable, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from tgt_jax.models import resnet

# BigGAN's epsilon inside the power-iteration normalisation.
SPECTRAL_NORM_EPSILON = 1e-4
# The BigGAN generator trains with standing statistics; for in-repo training
# we keep running averages with the same momentum as the ResNets.
GENERATOR_BN_MOMENTUM = 0.9
# Keeps the encoder's predicted scale away from 0 so sampling never
# collapses to the mean and log-densities stay finite.
MIN_LATENT_SCALE = 1e-4

# BigGAN initialises its (spectrally normalised) layers orthogonally.
_default_kernel_init = nn.initializers.orthogonal()

Initializer = Callable[..., jax.Array]


# ---------------------------------------------------------------------------
# Spectral normalisation.
# ---------------------------------------------------------------------------


def _l2_normalize(vector: jax.Array) -> jax.Array:
  return vector / (jnp.linalg.norm(vector) + SPECTRAL_NORM_EPSILON)


def spectral_normalize_kernel(kernel: jax.Array,
                              u: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Divides a kernel by its largest singular value, by one power iteration.

  The kernel is viewed as the matrix K = kernel.reshape(-1, out) (dense
  [in, out]; conv HWIO -> [H*W*I, O], as TF's BigGAN does), i.e. W = K^T in
  the usual y = W x notation:
    v = normalize(W^T u) = normalize(K u),  u' = normalize(W v),
    sigma = u'^T W v,  eps 1e-4 in each normalisation.
  u and v are not differentiated (BigGAN), sigma is.

  Args:
    kernel: a Dense [in, out] or Conv [..., in, out] kernel.
    u: the current estimate of the top left-singular vector of W, [out]
      (TF's `u0` is [1, out]: reshape it).

  Returns:
    (kernel / sigma with the kernel's shape and dtype, updated u [out]).
  """
  kernel_f32 = kernel.astype(jnp.float32)
  matrix = kernel_f32.reshape(-1, kernel.shape[-1])
  u = jax.lax.stop_gradient(u.astype(jnp.float32).reshape(-1))
  v = jax.lax.stop_gradient(_l2_normalize(matrix @ u))
  new_u = jax.lax.stop_gradient(_l2_normalize(v @ matrix))
  sigma = v @ matrix @ new_u
  return (kernel_f32 / sigma).astype(kernel.dtype), new_u


def bake_spectral_norm(params: Mapping[str, Any],
                       spectral: Mapping[str, Any]) -> dict[str, Any]:
  """Params of an SN-trained module -> params of it with spectral_norm=False.

  Every kernel with a stored `u` (same module path in `spectral`) becomes
  kernel / sigma, sigma from one power iteration from that u -- exactly what
  the SN module computes in eval mode (train=False), so the plain module
  reproduces its outputs.

  Args:
    params: the 'params' collection.
    spectral: the 'spectral' collection of the same module.

  Returns:
    A new params tree with the same structure and shapes.
  """
  baked = dict(params)
  for name, value in spectral.items():
    if name == 'u':
      baked['kernel'], _ = spectral_normalize_kernel(params['kernel'], value)
    else:
      baked[name] = bake_spectral_norm(params[name], value)
  return baked


def _random_unit_vector(rng: jax.Array, size: int) -> jax.Array:
  return _l2_normalize(jax.random.normal(rng, (size,), jnp.float32))


def _maybe_spectral_normalize(module: nn.Module, kernel: jax.Array,
                              train: bool) -> jax.Array:
  """Returns the kernel to use; keeps `u` in module's 'spectral' collection."""
  if not module.spectral_norm:
    return kernel
  u = module.variable('spectral', 'u',
                      lambda: _random_unit_vector(module.make_rng('params'),
                                                  kernel.shape[-1]))
  normalized_kernel, new_u = spectral_normalize_kernel(kernel, u.value)
  # Eval mode (and read-only calls such as a loss that must not touch the
  # state) reuse the stored u, so outputs are reproducible and bakeable.
  if train and module.is_mutable_collection('spectral'):
    u.value = new_u
  return normalized_kernel


class SpectralDense(nn.Module):
  """`nn.Dense` (same params) with optional spectral normalisation."""
  features: int
  use_bias: bool = True
  spectral_norm: bool = True
  kernel_init: Initializer = _default_kernel_init
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    kernel = self.param('kernel', self.kernel_init,
                        (x.shape[-1], self.features), jnp.float32)
    kernel = _maybe_spectral_normalize(self, kernel, train)
    y = jnp.dot(x.astype(self.dtype), kernel.astype(self.dtype))
    if self.use_bias:
      bias = self.param('bias', nn.initializers.zeros, (self.features,),
                        jnp.float32)
      y = y + bias.astype(self.dtype)
    return y


class SpectralConv(nn.Module):
  """`nn.Conv` (same params; stride 1, SAME padding) with optional SN."""
  features: int
  kernel_size: int = 3
  use_bias: bool = True
  spectral_norm: bool = True
  kernel_init: Initializer = _default_kernel_init
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    kernel_shape = (self.kernel_size, self.kernel_size, x.shape[-1],
                    self.features)
    kernel = self.param('kernel', self.kernel_init, kernel_shape, jnp.float32)
    kernel = _maybe_spectral_normalize(self, kernel, train)
    y = jax.lax.conv_general_dilated(
        x.astype(self.dtype), kernel.astype(self.dtype),
        window_strides=(1, 1), padding='SAME',
        dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    if self.use_bias:
      bias = self.param('bias', nn.initializers.zeros, (self.features,),
                        jnp.float32)
      y = y + bias.astype(self.dtype)
    return y


# ---------------------------------------------------------------------------
# Shared building blocks.
# ---------------------------------------------------------------------------


def _normalize_with_standing_stats(module: nn.Module, x: jax.Array,
                                   train: bool, epsilon: float) -> jax.Array:
  """Affine-free BatchNorm over N, H, W; statistics in `module`'s batch_stats.

  Both generator BatchNorms (conditional and plain) keep 'mean'/'var'
  directly under their own scope so that TF's `accumulated_{mean,var}` map
  onto one path each. Running averages are updated only in training when
  'batch_stats' is mutable (and not at init, as nn.BatchNorm).
  """
  x = x.astype(jnp.float32)
  channels = x.shape[-1]
  running_mean = module.variable('batch_stats', 'mean', jnp.zeros,
                                 (channels,), jnp.float32)
  running_var = module.variable('batch_stats', 'var', jnp.ones,
                                (channels,), jnp.float32)
  if train:
    mean = jnp.mean(x, axis=(0, 1, 2))
    var = jnp.mean(jnp.square(x - mean), axis=(0, 1, 2))
    if (not module.is_initializing() and
        module.is_mutable_collection('batch_stats')):
      momentum = GENERATOR_BN_MOMENTUM
      running_mean.value = momentum * running_mean.value + (1 - momentum) * mean
      running_var.value = momentum * running_var.value + (1 - momentum) * var
  else:
    mean, var = running_mean.value, running_var.value
  return (x - mean) * jax.lax.rsqrt(var + epsilon)


class ConditionalBatchNorm(nn.Module):
  """BN without affine, then * (1 + gamma(cond)) + beta(cond).

  gamma and beta are bias-free SN dense layers named 'scale' and 'offset'
  (TF `BatchNorm[_1]/{scale,offset}`).
  """
  spectral_norm: bool = True
  epsilon: float = 1e-4
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, cond: jax.Array, train: bool) -> jax.Array:
    channels = x.shape[-1]
    dense = lambda name: SpectralDense(channels, use_bias=False,
                                       spectral_norm=self.spectral_norm,
                                       dtype=self.dtype, name=name)
    gamma = dense('scale')(cond, train).astype(jnp.float32)
    beta = dense('offset')(cond, train).astype(jnp.float32)
    normalized = _normalize_with_standing_stats(self, x, train, self.epsilon)
    return (normalized * (1 + gamma[:, None, None, :]) +
            beta[:, None, None, :])


class AffineBatchNorm(nn.Module):
  """BN with learned per-channel 'scale' and 'offset' (TF names)."""
  epsilon: float = 1e-4

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    channels = x.shape[-1]
    scale = self.param('scale', nn.initializers.ones, (channels,), jnp.float32)
    offset = self.param('offset', nn.initializers.zeros, (channels,),
                        jnp.float32)
    normalized = _normalize_with_standing_stats(self, x, train, self.epsilon)
    return normalized * scale + offset


class SelfAttention(nn.Module):
  """BigGAN / SAGAN self-attention: out = x + gamma * attention(x).

  Keys and values are 2x2 max-pooled, which quarters the cost; gamma starts
  at 0 so the block starts as the identity.
  """
  spectral_norm: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    batch, height, width, channels = x.shape
    conv = lambda features, name: SpectralConv(
        features, kernel_size=1, use_bias=False,
        spectral_norm=self.spectral_norm, dtype=self.dtype, name=name)
    key_channels = max(1, channels // 8)
    value_channels = max(1, channels // 2)
    pool = lambda y: nn.max_pool(y, (2, 2), strides=(2, 2))
    theta = conv(key_channels, 'theta')(x, train)
    phi = pool(conv(key_channels, 'phi')(x, train))
    g = pool(conv(value_channels, 'g')(x, train))
    theta = theta.reshape(batch, height * width, key_channels)
    phi = phi.reshape(batch, -1, key_channels)
    g = g.reshape(batch, -1, value_channels)
    logits = jnp.einsum('nqc,nkc->nqk', theta, phi).astype(jnp.float32)
    weights = jax.nn.softmax(logits, axis=-1).astype(g.dtype)
    attended = jnp.einsum('nqk,nkc->nqc', weights, g)
    attended = attended.reshape(batch, height, width, value_channels)
    output = conv(channels, 'o_conv')(attended, train)
    gamma = self.param('gamma', nn.initializers.zeros, (), jnp.float32)
    return x + gamma * output.astype(jnp.float32)


def _upsample_nearest(x: jax.Array) -> jax.Array:
  return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


# ---------------------------------------------------------------------------
# Generator.
# ---------------------------------------------------------------------------


class GBlock(nn.Module):
  """BigGAN up-sampling residual block, conditioned on `cond`."""
  out_channels: int
  spectral_norm: bool = True
  bn_epsilon: float = 1e-4
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, cond: jax.Array, train: bool) -> jax.Array:
    norm = lambda name: ConditionalBatchNorm(
        spectral_norm=self.spectral_norm, epsilon=self.bn_epsilon,
        dtype=self.dtype, name=name)
    conv = lambda kernel_size, name: SpectralConv(
        self.out_channels, kernel_size=kernel_size,
        spectral_norm=self.spectral_norm, dtype=self.dtype, name=name)
    y = nn.relu(norm('BatchNorm_0')(x, cond, train))
    y = conv(3, 'conv0')(_upsample_nearest(y), train)
    y = nn.relu(norm('BatchNorm_1')(y, cond, train))
    y = conv(3, 'conv1')(y, train)
    # Up-sampling changes the shape, so the shortcut always has a 1x1 conv.
    shortcut = conv(1, 'conv_sc')(_upsample_nearest(x), train)
    return (y + shortcut).astype(jnp.float32)


class Generator(nn.Module):
  """Unconditional BigGAN generator with hierarchical latents (BigBiGAN).

  The defaults are BigGAN-128 as in BigBiGAN: z (120) is split into 6 chunks
  of 20; chunk 0 feeds the 4x4x1536 seed, chunk i conditions GBlock i-1
  together with one learned 128-d "class" embedding; channels
  1536->1536->768->384->192->96, self-attention at 64x64, output 128x128x3.
  See `convert_bigbigan.tf_generator_name_map` for the TF variable names.

  Attributes:
    base_channels: BigGAN's `ch`.
    channel_multipliers: [0] times base_channels = seed channels; [i >= 1]
      = output channels of GBlock i-1 (in units of base_channels).
    latent_dim: size of z; must split into len(channel_multipliers) chunks.
    embedding_dim: size of the learned class vector ('linear').
    attention_resolution: self-attention after the GBlock whose output has
      this resolution; 0 for none.
    output_channels: image channels.
    spectral_norm: True to train (power iteration, 'spectral' collection);
      False for a frozen teacher with baked kernels.
    bn_epsilon: epsilon of every BatchNorm.
    dtype: compute dtype of convs and dense layers.
  """
  base_channels: int = 96
  channel_multipliers: Sequence[int] = (16, 16, 8, 4, 2, 1)
  latent_dim: int = 120
  embedding_dim: int = 128
  attention_resolution: int = 64
  output_channels: int = 3
  spectral_norm: bool = True
  bn_epsilon: float = 1e-4
  dtype: Any = jnp.float32

  @property
  def resolution(self) -> int:
    """Side of the generated image."""
    return 4 * 2**(len(self.channel_multipliers) - 1)

  @nn.compact
  def __call__(self, z: jax.Array, train: bool) -> jax.Array:
    """Generates images [N, R, R, output_channels] in [-1, 1], float32.

    Args:
      z: latents [N, latent_dim].
      train: use batch statistics (and update running ones and `u` where the
        collections are mutable).
    """
    num_chunks = len(self.channel_multipliers)
    if self.latent_dim % num_chunks:
      raise ValueError(
          f'latent_dim {self.latent_dim} must be divisible by the number of '
          f'latent chunks len(channel_multipliers) = {num_chunks}.')
    if z.shape[-1] != self.latent_dim:
      raise ValueError(f'Expected z of size {self.latent_dim}, got shape '
                       f'{z.shape}.')
    block_resolutions = [8 * 2**i for i in range(num_chunks - 1)]
    if (self.attention_resolution and
        self.attention_resolution not in block_resolutions):
      raise ValueError(
          f'attention_resolution {self.attention_resolution} is not a GBlock '
          f'output resolution {block_resolutions} (use 0 for none).')

    z_chunks = jnp.split(z.astype(jnp.float32), num_chunks, axis=-1)
    batch = z.shape[0]
    # BigBiGAN is unconditional: its class embedding is a single learned row
    # (TF `linear/w`), i.e. a bias-free dense layer applied to a one-hot of
    # the only class.
    embedding = nn.Dense(self.embedding_dim, use_bias=False,
                         kernel_init=nn.initializers.normal(1.0),
                         name='linear')(jnp.ones((batch, 1), jnp.float32))

    seed_channels = self.base_channels * self.channel_multipliers[0]
    x = SpectralDense(4 * 4 * seed_channels, spectral_norm=self.spectral_norm,
                      dtype=self.dtype, name='GenZ_G_linear')(z_chunks[0],
                                                              train)
    x = x.reshape(batch, 4, 4, seed_channels)
    for index, multiplier in enumerate(self.channel_multipliers[1:]):
      cond = jnp.concatenate([z_chunks[index + 1], embedding], axis=-1)
      x = GBlock(self.base_channels * multiplier,
                 spectral_norm=self.spectral_norm, bn_epsilon=self.bn_epsilon,
                 dtype=self.dtype, name=f'GBlock_{index}')(x, cond, train)
      if x.shape[1] == self.attention_resolution:
        x = SelfAttention(spectral_norm=self.spectral_norm, dtype=self.dtype,
                          name='attention')(x, train)

    x = nn.relu(AffineBatchNorm(epsilon=self.bn_epsilon, name='BatchNorm')(
        x, train))
    x = SpectralConv(self.output_channels, kernel_size=3,
                     spectral_norm=self.spectral_norm, dtype=self.dtype,
                     name='conv_2d')(x, train)
    return jnp.tanh(x.astype(jnp.float32))


# ---------------------------------------------------------------------------
# Encoder.
# ---------------------------------------------------------------------------


class Encoder(nn.Module):
  """ResNet-v2 backbone + MLP head predicting a diagonal Gaussian over z.

  Attributes:
    depth, width_multiplier, small_image_stem: of the backbone.
    latent_dim: size of z.
    head_hidden: widths of the ReLU MLP between the pooled features and the
      Gaussian parameters (the TF module's widths are not public).
    stride_placement, strided_padding, strided_conv, conv_bias,
      batch_norm_epsilon: layout options of the backbone (see
      `resnet.ResNet`). TF-slim's ResNet-v2 strides the last unit of a stage
      with symmetric padding; which layout the hub encoder has is not public
      and every variable shape is the same either way, so only a numeric
      comparison with the hub's `encode` tells (`convert_bigbigan
      --verify_with_hub`).
    dtype: compute dtype.
  """
  depth: int = 50
  width_multiplier: float = 1.0
  small_image_stem: bool = False
  latent_dim: int = 120
  head_hidden: Sequence[int] = (4096, 4096)
  stride_placement: str = 'first'
  strided_padding: str = 'same'
  strided_conv: str = '3x3'
  conv_bias: bool = False
  batch_norm_epsilon: float = resnet.BATCH_NORM_EPSILON
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool,
               with_features: bool = False):
    """Returns (z_mean, z_scale), each [N, latent_dim] float32, scale > 0.

    With `with_features`, also the backbone's pooled features [N, D] (the
    hub module's `avepool_feat`), learnt without labels.
    """
    backbone = resnet.create_resnet(
        self.depth, None, self.width_multiplier, self.small_image_stem,
        preactivation=True, dtype=self.dtype, name='backbone',
        stride_placement=self.stride_placement,
        strided_conv=self.strided_conv,
        strided_padding=self.strided_padding, conv_bias=self.conv_bias,
        batch_norm_epsilon=self.batch_norm_epsilon)
    _, features = backbone(x, train)
    h = features
    for index, width in enumerate(self.head_hidden):
      h = nn.relu(nn.Dense(width, dtype=self.dtype, name=f'head_{index}')(h))
    gaussian = nn.Dense(2 * self.latent_dim, dtype=self.dtype,
                        name='head_out')(h).astype(jnp.float32)
    z_mean, z_scale_logit = jnp.split(gaussian, 2, axis=-1)
    z_scale = jax.nn.softplus(z_scale_logit) + MIN_LATENT_SCALE
    if with_features:
      return z_mean, z_scale, features
    return z_mean, z_scale


def sample_latent(z_mean: jax.Array, z_scale: jax.Array,
                  rng: jax.Array) -> jax.Array:
  """Reparameterised sample z_mean + z_scale * N(0, I)."""
  noise = jax.random.normal(rng, z_mean.shape, z_mean.dtype)
  return z_mean + z_scale * noise
