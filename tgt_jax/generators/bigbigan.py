"""BigBiGAN as a teacher-generator family: the frozen teacher and its training.

The networks (G, E and their spectrally normalised layers) are
`models/bigbigan.py`; the converter from TF-Hub and its name tables are
`generators/convert_bigbigan.py`. Here: the networks built from a
`teacher_generator` section, the frozen teacher (`BigBiGAN`: E(x) is the
encoder's mean, G(z) mapped from [-1, 1] to [0, 1]), and the objective that
trains the demo's small teacher from images alone, with the joint
discriminator it needs.

The BigBiGAN objective [ext: Donahue & Simonyan 2019]: a joint discriminator
D(x, z) scores real pairs (x, E(x)) against generated pairs (G(z), z), z ~
N(0, I), with unary terms on x and z alone; hinge loss for D, the negated
scores for E and G. Alternating updates: D first, then E and G against the
updated D. [ours] Two reconstruction terms, not part of BigBiGAN, make the
tiny demo model's E and G reliable inverses within minutes on a CPU:
L1 between G(E(x)) and x, and L2 between E(G(z)) and z, with weights from the
config (0 turns them off).

The paper-scale teacher is never trained here: it is converted from the
public checkpoint.
"""

import dataclasses
from typing import Any, Mapping, Sequence

from flax import struct
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from tgt_jax import image_ops
from tgt_jax.generators import interface
from tgt_jax.models import bigbigan as networks

# Layout fields of `teacher_generator` for the encoder backbone. The hub
# encoder's layout is not public: `convert_bigbigan --verify_with_hub`
# reports which one matches its `encode`.
ENCODER_LAYOUT_DEFAULTS = {
    'encoder_stride_placement': 'first',
    'encoder_strided_padding': 'same',
}


# ---------------------------------------------------------------------------
# The networks of a config section.
# ---------------------------------------------------------------------------


def encoder_layout(gen_config: ml_collections.ConfigDict) -> dict[str, Any]:
  """`teacher_generator`'s encoder layout fields, defaults filled in."""
  return {name: gen_config.get(name, default)
          for name, default in ENCODER_LAYOUT_DEFAULTS.items()}


def generator(gen_config: ml_collections.ConfigDict, spectral_norm: bool,
              dtype: Any = jnp.float32) -> networks.Generator:
  """BigBiGAN's G; `spectral_norm=False` for the frozen (baked) teacher."""
  module = networks.Generator(
      base_channels=gen_config.base_channels,
      channel_multipliers=tuple(gen_config.channel_multipliers),
      latent_dim=gen_config.latent_dim,
      embedding_dim=gen_config.embedding_dim,
      attention_resolution=gen_config.attention_resolution,
      output_channels=gen_config.channels,
      spectral_norm=spectral_norm, dtype=dtype)
  if module.resolution != gen_config.image_size:
    raise ValueError(
        f'teacher_generator.image_size={gen_config.image_size} does not match '
        f'the {len(gen_config.channel_multipliers) - 1} GBlocks of '
        f'channel_multipliers={tuple(gen_config.channel_multipliers)} '
        f'(resolution {module.resolution}); each GBlock doubles 4x4.')
  return module


def encoder(gen_config: ml_collections.ConfigDict,
            dtype: Any = jnp.float32) -> networks.Encoder:
  """BigBiGAN's E: a pre-activation ResNet with a Gaussian head.

  `encoder_stride_placement` / `encoder_strided_padding` are optional
  (ENCODER_LAYOUT_DEFAULTS).
  """
  layout = encoder_layout(gen_config)
  return networks.Encoder(
      depth=gen_config.encoder_depth,
      width_multiplier=gen_config.encoder_width_multiplier,
      small_image_stem=gen_config.encoder_small_image_stem,
      latent_dim=gen_config.latent_dim,
      head_hidden=tuple(gen_config.encoder_head_hidden),
      stride_placement=layout['encoder_stride_placement'],
      strided_padding=layout['encoder_strided_padding'], dtype=dtype)


def discriminator(gen_config: ml_collections.ConfigDict) -> 'Discriminator':
  """BigBiGAN's joint (x, z) discriminator, only to train a teacher."""
  return Discriminator(
      base_channels=gen_config.discriminator_base_channels,
      channel_multipliers=tuple(gen_config.discriminator_channel_multipliers),
      latent_hidden=tuple(gen_config.discriminator_latent_hidden),
      joint_hidden=tuple(gen_config.discriminator_joint_hidden))


# ---------------------------------------------------------------------------
# The frozen teacher.
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class BigBiGAN(interface.GaussianEncoder):
  """Frozen E and G (spectral norm baked in, as a converted checkpoint).

  E(x) is z_mean; `encoder_features` BigBiGAN's pooled `avepool_feat`.
  Variables: {'encoder': {'params', 'batch_stats'}, 'generator': {...}}.
  """
  generator: networks.Generator
  encoder: networks.Encoder
  encoder_image_size: int

  @classmethod
  def from_config(cls, gen_config: ml_collections.ConfigDict,
                  dtype: Any = jnp.float32) -> 'BigBiGAN':
    return cls(generator=generator(gen_config, spectral_norm=False,
                                   dtype=dtype),
               encoder=encoder(gen_config, dtype),
               encoder_image_size=gen_config.encoder_image_size)

  @property
  def latent_dim(self) -> int:
    return self.generator.latent_dim

  def abstract_variables(self) -> dict[str, Any]:
    shapes = {
        'encoder': interface.shapes_of_init(
            self.encoder.init, interface.image_shape(
                self.encoder_image_size, self.generator.output_channels),
            train=False),
        'generator': interface.shapes_of_init(
            self.generator.init, interface.latent_shape(self.latent_dim),
            train=False)}
    return {part: {'params': tree['params'],
                   'batch_stats': tree.get('batch_stats', {})}
            for part, tree in shapes.items()}

  def apply_encoder(self, variables, images: jax.Array,
                    with_features: bool):
    return self.encoder.apply(variables['encoder'], images, train=False,
                              with_features=with_features)

  def generate(self, variables, latents: jax.Array) -> jax.Array:
    return image_ops.generated_to_unit(
        self.generator.apply(variables['generator'], latents, train=False))


# ---------------------------------------------------------------------------
# Joint discriminator (only to train the demo teacher).
# ---------------------------------------------------------------------------


class DBlock(nn.Module):
  """BigGAN down-sampling residual block of the discriminator."""
  out_channels: int
  downsample: bool
  # False for the first block: a ReLU on the image itself would discard its
  # negative half of [-1, 1].
  preactivate: bool
  spectral_norm: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    conv = lambda kernel_size, name: networks.SpectralConv(
        self.out_channels, kernel_size=kernel_size,
        spectral_norm=self.spectral_norm, dtype=self.dtype, name=name)
    pool = lambda y: nn.avg_pool(y, (2, 2), strides=(2, 2))
    y = nn.relu(x) if self.preactivate else x
    y = conv(3, 'conv0')(y, train)
    y = conv(3, 'conv1')(nn.relu(y), train)
    if self.downsample:
      y = pool(y)
    shortcut = x
    if self.downsample or x.shape[-1] != self.out_channels:
      shortcut = conv(1, 'conv_sc')(x, train)
      if self.downsample:
        shortcut = pool(shortcut)
    return y + shortcut


class Discriminator(nn.Module):
  """BigBiGAN joint discriminator: unary scores on x and z, joint on (x, z).

  Attributes:
    base_channels: channels unit of the x path.
    channel_multipliers: one DBlock each; all but the last halve the
      resolution.
    latent_hidden: widths of the SN ReLU MLP on z.
    joint_hidden: widths of the SN ReLU MLP on the concatenated features.
    attention_resolution: self-attention after the first DBlock whose output
      has this resolution; 0 for none.
    spectral_norm: see `Generator.spectral_norm`.
    dtype: compute dtype.
  """
  base_channels: int
  channel_multipliers: Sequence[int]
  latent_hidden: Sequence[int]
  joint_hidden: Sequence[int]
  attention_resolution: int = 0
  spectral_norm: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, z: jax.Array,
               train: bool) -> dict[str, jax.Array]:
    """Returns {'score_x', 'score_z', 'score_xz'}, each [N] float32."""
    dense = lambda features, name: networks.SpectralDense(
        features, spectral_norm=self.spectral_norm, dtype=self.dtype,
        name=name)
    h = x
    num_blocks = len(self.channel_multipliers)
    has_attention = False
    for index, multiplier in enumerate(self.channel_multipliers):
      h = DBlock(self.base_channels * multiplier,
                 downsample=index < num_blocks - 1, preactivate=index > 0,
                 spectral_norm=self.spectral_norm, dtype=self.dtype,
                 name=f'DBlock_{index}')(h, train)
      if (h.shape[1] == self.attention_resolution and not has_attention):
        h = networks.SelfAttention(spectral_norm=self.spectral_norm,
                                   dtype=self.dtype, name='attention')(h,
                                                                       train)
        has_attention = True
    if self.attention_resolution and not has_attention:
      raise ValueError(f'attention_resolution {self.attention_resolution} is '
                       'not the output resolution of any DBlock.')
    # BigGAN sums rather than averages over positions.
    features_x = jnp.sum(nn.relu(h).astype(jnp.float32), axis=(1, 2))

    features_z = z.astype(jnp.float32)
    for index, width in enumerate(self.latent_hidden):
      features_z = nn.relu(dense(width, f'latent_{index}')(features_z, train))

    joint = jnp.concatenate([features_x, features_z.astype(jnp.float32)],
                            axis=-1)
    for index, width in enumerate(self.joint_hidden):
      joint = nn.relu(dense(width, f'joint_{index}')(joint, train))

    score = lambda name, features: dense(1, name)(features, train)[:, 0].astype(
        jnp.float32)
    return {'score_x': score('score_x', features_x),
            'score_z': score('score_z', features_z),
            'score_xz': score('score_xz', joint)}


SCORE_NAMES = ('score_x', 'score_z', 'score_xz')


def bigbigan_hinge_losses(
    scores_real: Mapping[str, jax.Array],
    scores_fake: Mapping[str, jax.Array]) -> tuple[jax.Array, jax.Array]:
  """BigBiGAN hinge losses, summed over the unary and joint scores.

  Args:
    scores_real: discriminator scores of (x, E(x)).
    scores_fake: discriminator scores of (G(z), z).

  Returns:
    (discriminator_loss, encoder_generator_loss): the discriminator term is
    mean relu(1 - s_real) + mean relu(1 + s_fake) per score; the encoder and
    generator, which play against it, minimise mean s_real - mean s_fake.
  """
  discriminator_loss = 0.0
  encoder_generator_loss = 0.0
  for name in SCORE_NAMES:
    real, fake = scores_real[name], scores_fake[name]
    discriminator_loss += (jnp.mean(nn.relu(1 - real)) +
                           jnp.mean(nn.relu(1 + fake)))
    encoder_generator_loss += jnp.mean(real) - jnp.mean(fake)
  return discriminator_loss, encoder_generator_loss


# ---------------------------------------------------------------------------
# Training the demo teacher.
# ---------------------------------------------------------------------------


class GeneratorTrainState(struct.PyTreeNode):
  """E, G and D with their BN statistics, SN vectors and two optimisers."""
  step: jax.Array
  params: Any  # {'encoder', 'generator', 'discriminator'}
  batch_stats: Any  # {'encoder', 'generator', 'discriminator'}
  spectral: Any  # {'generator', 'discriminator'}: power-iteration vectors.
  encoder_generator_opt_state: Any
  discriminator_opt_state: Any


class BigBiGANModules(struct.PyTreeNode):
  encoder: Any = struct.field(pytree_node=False)
  generator: Any = struct.field(pytree_node=False)
  discriminator: Any = struct.field(pytree_node=False)
  encoder_generator_tx: Any = struct.field(pytree_node=False)
  discriminator_tx: Any = struct.field(pytree_node=False)


def create_modules(gen_config: ml_collections.ConfigDict) -> BigBiGANModules:
  return BigBiGANModules(
      encoder=encoder(gen_config),
      generator=generator(gen_config, spectral_norm=True),
      discriminator=discriminator(gen_config),
      encoder_generator_tx=optax.adam(gen_config.learning_rate,
                                      gen_config.adam_b1, gen_config.adam_b2),
      discriminator_tx=optax.adam(gen_config.discriminator_learning_rate,
                                  gen_config.adam_b1, gen_config.adam_b2))


def _variables(state: GeneratorTrainState, name: str, params=None) -> dict:
  variables = {'params': state.params[name] if params is None else params,
               'batch_stats': state.batch_stats[name]}
  if name in state.spectral:
    variables['spectral'] = state.spectral[name]
  return variables


def create_state(modules: BigBiGANModules,
                 gen_config: ml_collections.ConfigDict,
                 rng: jax.Array) -> GeneratorTrainState:
  size, channels = gen_config.image_size, gen_config.channels
  enc_size = gen_config.encoder_image_size
  rng_e, rng_g, rng_d = jax.random.split(rng, 3)
  x = jnp.zeros((1, size, size, channels))
  z = jnp.zeros((1, gen_config.latent_dim))
  variables = {
      'encoder': modules.encoder.init(
          rng_e, jnp.zeros((1, enc_size, enc_size, channels)), train=False),
      'generator': modules.generator.init(rng_g, z, train=False),
      'discriminator': modules.discriminator.init(rng_d, x, z, train=False),
  }
  params = {k: v['params'] for k, v in variables.items()}
  eg_params = {k: params[k] for k in ('encoder', 'generator')}
  return GeneratorTrainState(
      step=jnp.zeros((), jnp.int32), params=params,
      batch_stats={k: v.get('batch_stats', {}) for k, v in variables.items()},
      spectral={k: v['spectral'] for k, v in variables.items()
                if 'spectral' in v},
      encoder_generator_opt_state=modules.encoder_generator_tx.init(
          eg_params),
      discriminator_opt_state=modules.discriminator_tx.init(
          params['discriminator']))


def _apply_train(module, variables, *args):
  """Train-mode apply returning the output and the updated collections."""
  mutable = [k for k in ('batch_stats', 'spectral') if k in variables]
  return module.apply(variables, *args, train=True, mutable=mutable)


def make_train_step(modules: BigBiGANModules,
                    gen_config: ml_collections.ConfigDict):
  """The BigBiGAN step: `step(state, batch, rng) -> (state, metrics)`."""
  size, enc_size = gen_config.image_size, gen_config.encoder_image_size
  rec_weight = gen_config.reconstruction_weight
  latent_rec_weight = gen_config.latent_reconstruction_weight

  def encode_sample(state, params, real_unit, rng):
    (z_mean, z_scale), updates = _apply_train(
        modules.encoder, _variables(state, 'encoder', params),
        image_ops.encoder_input(real_unit, enc_size))
    return networks.sample_latent(z_mean, z_scale, rng), z_mean, updates

  def step(state, batch, rng):
    rng = jax.random.fold_in(rng, state.step)
    rng_prior, rng_enc = jax.random.split(rng)
    real_unit = image_ops.uint8_to_unit(batch['image'])
    x_real = image_ops.resize(real_unit, size) * 2.0 - 1.0
    z_prior = jax.random.normal(rng_prior, (x_real.shape[0],
                                            gen_config.latent_dim))

    # Discriminator update, E and G fixed.
    z_real, _, _ = encode_sample(state, state.params['encoder'], real_unit,
                                 rng_enc)
    x_fake, _ = _apply_train(modules.generator,
                             _variables(state, 'generator'), z_prior)
    z_real, x_fake = jax.lax.stop_gradient((z_real, x_fake))

    def discriminator_loss(d_params):
      variables = _variables(state, 'discriminator', d_params)
      scores_real, updates = _apply_train(modules.discriminator, variables,
                                          x_real, z_real)
      variables = {**variables, **updates}
      scores_fake, updates = _apply_train(modules.discriminator, variables,
                                          x_fake, z_prior)
      d_loss, _ = bigbigan_hinge_losses(scores_real, scores_fake)
      return d_loss, updates

    (d_loss, d_updates), d_grads = jax.value_and_grad(
        discriminator_loss, has_aux=True)(state.params['discriminator'])
    d_step, d_opt_state = modules.discriminator_tx.update(
        d_grads, state.discriminator_opt_state)
    d_params = optax.apply_updates(state.params['discriminator'], d_step)
    d_variables = {'params': d_params, **d_updates}

    # Encoder-generator update against the updated discriminator.
    def encoder_generator_loss(eg_params):
      z_enc, z_mean, e_updates = encode_sample(state, eg_params['encoder'],
                                               real_unit, rng_enc)
      g_vars = _variables(state, 'generator', eg_params['generator'])
      both, g_updates = _apply_train(modules.generator, g_vars,
                                     jnp.concatenate([z_prior, z_mean]))
      x_gen, x_rec = jnp.split(both, 2)
      # D's SN vectors were updated once this step already; not again here.
      score = lambda x, z: modules.discriminator.apply(d_variables, x, z,
                                                       train=False)
      _, eg_loss = bigbigan_hinge_losses(score(x_real, z_enc),
                                                  score(x_gen, z_prior))
      rec_loss = jnp.mean(jnp.abs(x_rec - x_real))
      z_back, _ = modules.encoder.apply(
          _variables(state, 'encoder', eg_params['encoder']),
          image_ops.encoder_input((x_gen + 1.0) / 2.0, enc_size), train=False)
      latent_rec_loss = jnp.mean(jnp.sum((z_back - z_prior)**2, axis=-1))
      total = (eg_loss + rec_weight * rec_loss +
               latent_rec_weight * latent_rec_loss)
      metrics = {'eg_adversarial_loss': eg_loss,
                 'reconstruction_l1': rec_loss,
                 'latent_reconstruction_l2': latent_rec_loss,
                 'z_mean_abs': jnp.mean(jnp.abs(z_mean))}
      return total, (metrics, e_updates, g_updates)

    eg_params = {k: state.params[k] for k in ('encoder', 'generator')}
    (eg_total, (metrics, e_updates, g_updates)), eg_grads = (
        jax.value_and_grad(encoder_generator_loss, has_aux=True)(eg_params))
    eg_step, eg_opt_state = modules.encoder_generator_tx.update(
        eg_grads, state.encoder_generator_opt_state)
    eg_params = optax.apply_updates(eg_params, eg_step)

    new_state = state.replace(
        step=state.step + 1,
        params={**eg_params, 'discriminator': d_params},
        batch_stats={'encoder': e_updates['batch_stats'],
                     'generator': g_updates['batch_stats'],
                     'discriminator': d_updates.get('batch_stats', {})},
        spectral={'generator': g_updates['spectral'],
                  'discriminator': d_updates['spectral']},
        encoder_generator_opt_state=eg_opt_state,
        discriminator_opt_state=d_opt_state)
    return new_state, {'loss': eg_total, 'discriminator_loss': d_loss,
                       **metrics}

  return step


def frozen_teacher_variables(state: GeneratorTrainState) -> dict:
  """Inference variables of E and of G with spectral norm baked in.

  The frozen G is the same module with `spectral_norm=False`, exactly as a
  converted paper-scale checkpoint, so one code path serves both.
  """
  return {
      'encoder': {'params': state.params['encoder'],
                  'batch_stats': state.batch_stats['encoder']},
      'generator': {
          'params': networks.bake_spectral_norm(
              state.params['generator'], state.spectral['generator']),
          'batch_stats': state.batch_stats['generator']},
  }


def trainer(gen_config: ml_collections.ConfigDict) -> interface.Trainer:
  """The pipeline's BigBiGAN training (float32 [ours: GAN training is the
  least robust step]; the frozen teacher then computes in the run's
  dtype)."""
  modules = create_modules(gen_config)
  return interface.Trainer(
      init=lambda rng: create_state(modules, gen_config, rng),
      step=make_train_step(modules, gen_config),
      frozen_variables=frozen_teacher_variables)
