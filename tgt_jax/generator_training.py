"""Training the demo teacher generator: BigBiGAN's E and G, from images only.

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

from typing import Any

from flax import struct
import jax
import jax.numpy as jnp
import ml_collections
import optax

from tgt_jax import image_ops
from tgt_jax.models import bigbigan
from tgt_jax.models import build


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
      encoder=build.encoder(gen_config),
      generator=build.generator(gen_config, spectral_norm=True),
      discriminator=build.discriminator(gen_config),
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
    return bigbigan.sample_latent(z_mean, z_scale, rng), z_mean, updates

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
      d_loss, _ = bigbigan.bigbigan_hinge_losses(scores_real, scores_fake)
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
      _, eg_loss = bigbigan.bigbigan_hinge_losses(score(x_real, z_enc),
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
          'params': bigbigan.bake_spectral_norm(
              state.params['generator'], state.spectral['generator']),
          'batch_stats': state.batch_stats['generator']},
  }
