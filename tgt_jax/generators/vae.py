"""A convolutional VAE as a teacher-generator family.

`--config.teacher_generator.family=vae`. E(x) is the posterior mean of
q(z | x) = N(mean, exp(log_var)) [ours: the deterministic point exploration
moves from, as BigBiGAN's z_mean]; G(z) is the decoder's pixel means
sigmoid(logits), in [0, 1] by construction; the prior is N(0, I) of the
same `latent_dim` as BigBiGAN's, so every explorer and exploration scale
applies unchanged. The networks are `models/vae.py`, their widths
`base_channels * channel_multipliers` (the decoder; the encoder the reverse).

The objective [ext: Kingma & Welling 2014; beta-VAE, Higgins et al. 2017]
is the negative ELBO with the KL weighted by beta
(`teacher_generator.vae.beta`, [ours] 1: the ELBO itself),

  L = mean_i [ BCE(x_i, sigmoid(D(z_i))) + beta * KL(q(z | x_i) || N(0, I)) ],
  z_i = mean_i + exp(log_var_i / 2) * eps,

with the reconstruction term a Bernoulli likelihood, the binary cross-
entropy summed over pixels of the image resized to G's side [ours, as
Kingma & Welling's MNIST model]: the digits are intensities in [0, 1], the
Bernoulli mean is the decoder's sigmoid, and its gradient in a logit,
sigmoid - x, does not vanish where the sigmoid saturates. A Gaussian
likelihood (MSE) would tie the balance between the two terms to a pixel
variance nobody states. Adam [ours: 1e-3, its default betas].
"""

import dataclasses
from typing import Any

from flax import struct
import jax
import jax.numpy as jnp
import ml_collections
import optax

from tgt_jax import image_ops
from tgt_jax.generators import interface
from tgt_jax.models import vae as networks


def encoder_widths(gen_config: ml_collections.ConfigDict) -> tuple[int, ...]:
  """The encoder's stage widths: the decoder's, from its output inwards."""
  return decoder_widths(gen_config)[::-1]


def decoder_widths(gen_config: ml_collections.ConfigDict) -> tuple[int, ...]:
  """The 4x4 seed's channels, then each doubling block's."""
  return tuple(gen_config.base_channels * m
               for m in gen_config.channel_multipliers)


def encoder(gen_config: ml_collections.ConfigDict,
            dtype: Any = jnp.float32) -> networks.Encoder:
  return networks.Encoder(widths=encoder_widths(gen_config),
                          latent_dim=gen_config.latent_dim, dtype=dtype)


def decoder(gen_config: ml_collections.ConfigDict,
            dtype: Any = jnp.float32) -> networks.Decoder:
  return networks.Decoder(widths=decoder_widths(gen_config),
                          output_channels=gen_config.channels, dtype=dtype)


# ---------------------------------------------------------------------------
# The frozen teacher.
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class VAE(interface.GaussianEncoder):
  """Frozen encoder and decoder; `posterior` is (mean, log_var).
  Variables: {'encoder': {'params'}, 'decoder': {'params'}}."""
  encoder: networks.Encoder
  decoder: networks.Decoder
  encoder_image_size: int

  @classmethod
  def from_config(cls, gen_config: ml_collections.ConfigDict,
                  dtype: Any = jnp.float32) -> 'VAE':
    return cls(encoder=encoder(gen_config, dtype),
               decoder=decoder(gen_config, dtype),
               encoder_image_size=gen_config.encoder_image_size)

  @property
  def latent_dim(self) -> int:
    return self.encoder.latent_dim

  def abstract_variables(self) -> dict[str, Any]:
    return {
        'encoder': interface.shapes_of_init(
            self.encoder.init, interface.image_shape(
                self.encoder_image_size, self.decoder.output_channels)),
        'decoder': interface.shapes_of_init(
            self.decoder.init, interface.latent_shape(self.latent_dim))}

  def generate(self, variables, latents: jax.Array) -> jax.Array:
    return jax.nn.sigmoid(self.decoder.apply(variables['decoder'], latents))


# ---------------------------------------------------------------------------
# The objective.
# ---------------------------------------------------------------------------


def gaussian_kl(mean: jax.Array, log_var: jax.Array) -> jax.Array:
  """KL(N(mean, exp(log_var)) || N(0, I)) per example [N], in nats:
  0.5 * sum(mean^2 + exp(log_var) - log_var - 1)."""
  return 0.5 * jnp.sum(jnp.square(mean) + jnp.exp(log_var) - log_var - 1.0,
                       axis=-1)


def bernoulli_nll(logits: jax.Array, targets: jax.Array) -> jax.Array:
  """-log p(targets | sigmoid(logits)) per example [N], summed over pixels
  and channels; targets in [0, 1]."""
  bce = optax.sigmoid_binary_cross_entropy(logits, targets)
  return jnp.sum(bce.reshape(bce.shape[0], -1), axis=-1)


def negative_elbo(logits: jax.Array, targets: jax.Array, mean: jax.Array,
                  log_var: jax.Array, beta: float) -> dict[str, jax.Array]:
  """{'loss': mean of nll + beta * KL, 'reconstruction_bce', 'kl'} over the
  batch."""
  nll = jnp.mean(bernoulli_nll(logits, targets))
  kl = jnp.mean(gaussian_kl(mean, log_var))
  return {'loss': nll + beta * kl, 'reconstruction_bce': nll, 'kl': kl}


def reconstruction_target(unit_images: jax.Array, size: int) -> jax.Array:
  """x at G's side: enlarged by pixel replication (nearest), shrunk by
  `image_ops.resize`.

  [ours] Replication, not bilinear interpolation: the labeler reads G(z)
  after its own antialiased shrinking to the data's side, and a bilinear
  enlargement does not survive that round trip (on the digits demo the
  labeler reads 66% of bilinearly enlarged test images correctly, 87.5% of
  replicated ones, 98% of the originals), so a decoder that learnt it
  exactly would still lose a third of its reconstructions' classes.
  """
  num, side, _, channels = unit_images.shape
  if side < size:
    return jax.image.resize(unit_images, (num, size, size, channels),
                            'nearest')
  return image_ops.resize(unit_images, size)


class VAETrainState(struct.PyTreeNode):
  step: jax.Array
  params: Any  # {'encoder', 'decoder'}
  opt_state: Any


def trainer(gen_config: ml_collections.ConfigDict) -> interface.Trainer:
  """The pipeline's VAE training (float32, like BigBiGAN's)."""
  model = VAE.from_config(gen_config)
  tx = optax.adam(gen_config.vae.learning_rate)
  beta = gen_config.vae.beta
  size = gen_config.image_size

  def init(rng: jax.Array) -> VAETrainState:
    rng_e, rng_d = jax.random.split(rng)
    side, channels = model.encoder_image_size, gen_config.channels
    params = {
        'encoder': model.encoder.init(
            rng_e, jnp.zeros((1, side, side, channels)))['params'],
        'decoder': model.decoder.init(
            rng_d, jnp.zeros((1, model.latent_dim)))['params']}
    return VAETrainState(step=jnp.zeros((), jnp.int32), params=params,
                         opt_state=tx.init(params))

  def loss_fn(params, unit_images, rng):
    variables = {part: {'params': p} for part, p in params.items()}
    mean, log_var = model.posterior(variables, unit_images)
    z = mean + jnp.exp(0.5 * log_var) * jax.random.normal(rng, mean.shape)
    logits = model.decoder.apply(variables['decoder'], z)
    terms = negative_elbo(logits, reconstruction_target(unit_images, size),
                          mean, log_var, beta)
    return terms['loss'], terms

  def step(state: VAETrainState, batch, rng):
    rng = jax.random.fold_in(rng, state.step)
    unit = image_ops.uint8_to_unit(batch['image'])
    grads, metrics = jax.grad(loss_fn, has_aux=True)(state.params, unit, rng)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    return state.replace(step=state.step + 1,
                         params=optax.apply_updates(state.params, updates),
                         opt_state=opt_state), metrics

  return interface.Trainer(init=init, step=step,
                           frozen_variables=frozen_variables)


def frozen_variables(state: VAETrainState) -> dict[str, Any]:
  return {part: {'params': params} for part, params in state.params.items()}
