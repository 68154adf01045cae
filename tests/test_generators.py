"""The teacher-generator interface: every family keeps its contract.

For each family of `generators.families.FAMILIES`, at tiny widths: shapes,
the [0, 1] range, determinism, gradients to z, encode and the prior; that
the frozen teacher reads exactly what the family's trainer writes; the
VAE's objective on hand-computed values; and the config errors of a family
that lacks what a run asks for.
"""

import dataclasses
import os

import jax

jax.config.update('jax_disable_most_optimizations', True)

import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top
import pytest  # pylint: disable=g-import-not-at-top

import conftest  # pylint: disable=g-import-not-at-top
from tgt_jax import config_lib  # pylint: disable=g-import-not-at-top
from tgt_jax import image_ops  # pylint: disable=g-import-not-at-top
from tgt_jax import sharding  # pylint: disable=g-import-not-at-top
from tgt_jax import teachers as teachers_lib  # pylint: disable=g-import-not-at-top
from tgt_jax import train  # pylint: disable=g-import-not-at-top
from tgt_jax.generators import families  # pylint: disable=g-import-not-at-top
from tgt_jax.generators import vae  # pylint: disable=g-import-not-at-top

FAMILY_NAMES = tuple(families.FAMILIES)
NUM = 3


def _gen_config(family: str):
  config = conftest.tiny_config()
  config.teacher_generator.family = family
  return config_lib.resolve(config).teacher_generator


@pytest.fixture(scope='module', params=FAMILY_NAMES)
def family(request):
  """(name, resolved section, frozen model, random variables)."""
  gen = _gen_config(request.param)
  model = families.model(gen, jnp.float32)
  return (request.param, gen, model,
          teachers_lib.random_generator_variables(model, seed=1))


def _latents(model, seed=0):
  return jax.random.normal(jax.random.PRNGKey(seed), (NUM, model.latent_dim))


def _images(gen, seed=0):
  side = gen.encoder_image_size
  return jax.random.uniform(jax.random.PRNGKey(seed),
                            (NUM, side, side, gen.channels))


def test_generate_makes_unit_range_images_of_the_sections_shape(family):
  _, gen, model, variables = family
  images = np.asarray(jax.jit(model.generate)(variables, _latents(model)))
  assert images.shape == (NUM, gen.image_size, gen.image_size, gen.channels)
  assert images.dtype == np.float32
  assert images.min() >= 0.0 and images.max() <= 1.0
  assert images.std() > 1e-3  # Not a constant image.
  # Different latents, different images.
  other = np.asarray(jax.jit(model.generate)(variables, _latents(model, 1)))
  assert np.abs(images - other).max() > 1e-4


def test_generate_and_encode_are_deterministic(family):
  _, gen, model, variables = family
  z = _latents(model)
  # Two separately compiled functions: no state is carried between calls.
  first = jax.jit(model.generate)(variables, z)
  second = jax.jit(lambda v, z: model.generate(v, z))(variables, z)
  np.testing.assert_array_equal(first, second)
  x = _images(gen)
  np.testing.assert_array_equal(jax.jit(model.encode)(variables, x),
                                jax.jit(model.encode)(variables, x))


def test_generate_has_finite_nonzero_gradients_to_z(family):
  _, gen, model, variables = family
  weights = jax.random.normal(
      jax.random.PRNGKey(7), (NUM, gen.image_size, gen.image_size,
                              gen.channels))
  grad = np.asarray(jax.jit(jax.grad(
      lambda z: jnp.sum(weights * model.generate(variables, z))))(
          _latents(model)))
  assert grad.shape == (NUM, model.latent_dim)
  assert np.all(np.isfinite(grad))
  # Every example's latent gets a gradient of its own.
  assert np.all(np.linalg.norm(grad, axis=-1) > 1e-6)


def test_encode_features_and_prior_have_the_latent_shapes(family):
  _, gen, model, variables = family
  assert model.latent_dim == gen.latent_dim
  assert model.has_encoder
  x = _images(gen)
  z = np.asarray(jax.jit(model.encode)(variables, x))
  assert z.shape == (NUM, gen.latent_dim) and np.all(np.isfinite(z))
  # Any input size: E resizes to its own.
  bigger = jax.image.resize(x, (NUM, 16, 16, gen.channels), 'bilinear')
  assert jax.jit(model.encode)(variables, bigger).shape == z.shape
  features = jax.jit(model.encoder_features)(variables, x)
  assert features.ndim == 2 and features.shape[0] == NUM
  prior = model.sample_prior(jax.random.PRNGKey(0), 5)
  assert prior.shape == (5, gen.latent_dim) and prior.dtype == jnp.float32
  np.testing.assert_array_equal(prior,
                                model.sample_prior(jax.random.PRNGKey(0), 5))
  assert not np.allclose(prior, model.sample_prior(jax.random.PRNGKey(1), 5))


def test_the_frozen_teacher_reads_what_the_trainer_writes(family):
  """The trainer's frozen variables have exactly the tree and shapes the
  frozen model declares, so a trained generator loads into the teacher."""
  _, gen, model, _ = family
  trainer = families.get(gen).trainer(gen)
  frozen = jax.eval_shape(
      lambda rng: trainer.frozen_variables(trainer.init(rng)),
      jax.random.PRNGKey(0))
  shapes = lambda tree: jax.tree.map(lambda x: (x.shape, x.dtype), tree)
  assert shapes(frozen) == shapes(model.abstract_variables())


def test_teachers_delegate_to_the_family(family):
  _, gen, model, variables = family
  teachers = teachers_lib.Teachers(generator_model=model, generator=variables)
  z = _latents(model)
  np.testing.assert_array_equal(teachers.generate(z),
                                model.generate(variables, z))
  assert teachers.latent_dim == gen.latent_dim
  assert teachers.sample_prior(jax.random.PRNGKey(2), 4).shape == (
      4, gen.latent_dim)


def test_gaussian_kl_on_hand_computed_values():
  # KL(N(mu, s^2) || N(0, 1)) = (mu^2 + s^2 - log s^2 - 1) / 2 per dim:
  # (1, s^2 = 1) -> 1/2; (0, s^2 = 2) -> (2 - log 2 - 1) / 2.
  mean = jnp.array([[1.0, 0.0], [0.0, 0.0]])
  log_var = jnp.array([[0.0, np.log(2.0)], [0.0, 0.0]])
  np.testing.assert_allclose(vae.gaussian_kl(mean, log_var),
                             [0.5 + (1.0 - np.log(2.0)) / 2, 0.0], rtol=1e-6)


def test_negative_elbo_on_hand_computed_values():
  # Logit 0 is p = 1/2: -log p(x) = log 2 per pixel whatever x in [0, 1];
  # logit log 3 is p = 3/4: for x = 1, -log(3/4).
  logits = jnp.array([[[[0.0], [0.0]], [[np.log(3.0)], [np.log(3.0)]]]])
  targets = jnp.array([[[[0.3], [1.0]], [[1.0], [1.0]]]])
  nll = 2 * np.log(2.0) - 2 * np.log(0.75)
  np.testing.assert_allclose(vae.bernoulli_nll(logits, targets), [nll],
                             rtol=1e-6)
  mean, log_var = jnp.array([[1.0, 0.0]]), jnp.zeros((1, 2))
  terms = vae.negative_elbo(logits, targets, mean, log_var, beta=3.0)
  np.testing.assert_allclose(terms['kl'], 0.5, rtol=1e-6)
  np.testing.assert_allclose(terms['reconstruction_bce'], nll, rtol=1e-6)
  np.testing.assert_allclose(terms['loss'], nll + 3.0 * 0.5, rtol=1e-6)


def test_the_vae_trainer_lowers_its_objective():
  gen = _gen_config('vae')
  # Two patterns (the left or the top half lit): learnable, unlike noise,
  # whose best reconstruction is the mean.
  side = gen.encoder_image_size
  left = np.zeros((side, side, 1), np.uint8)
  left[:, :side // 2] = 255
  images = np.stack([left, np.swapaxes(left, 0, 1)] * 4)
  batch = {'image': jnp.asarray(images)}
  gen.vae.learning_rate = 1e-2  # A few steps should tell.
  trainer = families.get(gen).trainer(gen)
  state = trainer.init(jax.random.PRNGKey(0))
  step = jax.jit(trainer.step)
  losses = []
  for _ in range(30):
    state, metrics = step(state, batch, jax.random.PRNGKey(1))
    losses.append(float(metrics['loss']))
  assert int(state.step) == 30
  assert set(metrics) == {'loss', 'reconstruction_bce', 'kl'}
  assert losses[-1] < 0.8 * losses[0], losses


# ---------------------------------------------------------------------------
# Config errors, before compute.
# ---------------------------------------------------------------------------


class _NoEncoder(vae.VAE):
  has_encoder = False


def _errors(family_row, **fields):
  config = conftest.tiny_config()
  config.teacher_generator.family = 'vae'
  for field, value in fields.items():
    section, _, name = field.rpartition('.')
    (config[section] if section else config)[name] = value
  with pytest.MonkeyPatch.context() as patch:
    patch.setitem(families.FAMILIES, 'vae', family_row)
    return train.config_errors(config_lib.resolve(config),
                               sharding.create_mesh())


ENCODERLESS = dataclasses.replace(families.FAMILIES['vae'], model=_NoEncoder)


@pytest.mark.parametrize('fields', [
    {'methods': ('kd', 'tgt_random')},
    {'methods': ('tgt_gradient',)},
    {'methods': ('kd', 'tgt_prior'), 'embedding_distill.mode': 'raw',
     'embedding_distill.source': 'encoder'},
])
def test_a_run_needing_e_of_x_refuses_an_encoderless_family(fields):
  errors = _errors(ENCODERLESS, **fields)
  assert any("teacher_generator.family='vae' has no encoder" in e
             for e in errors), errors


def test_an_encoderless_family_serves_tgt_prior():
  assert _errors(ENCODERLESS, methods=('kd', 'tgt_prior')) == []


def test_a_family_without_trainer_or_checkpoint_is_refused():
  errors = _errors(dataclasses.replace(families.FAMILIES['vae'],
                                       trainer=None),
                   methods=('tgt_random',))
  assert any('cannot be trained here' in e for e in errors), errors


def test_a_converted_checkpoint_is_bigbigans_only():
  errors = _errors(families.FAMILIES['vae'], methods=('tgt_random',),
                   **{'teacher_generator.pretrained_checkpoint': '/x'})
  assert any("not teacher_generator.family='vae'" in e for e in errors)


def test_an_unknown_family_names_the_choices():
  config = conftest.tiny_config()
  config.teacher_generator.family = 'flow'
  errors = config_lib.range_errors(config)
  assert any("teacher_generator.family='flow'" in e and "'vae'" in e
             for e in errors), errors


def test_the_vae_target_enlarges_by_replication():
  x = jnp.array([[[[0.0], [1.0]], [[0.25], [0.5]]]])  # [1, 2, 2, 1]
  target = np.asarray(vae.reconstruction_target(x, 4))[0, ..., 0]
  np.testing.assert_array_equal(target, [[0, 0, 1, 1], [0, 0, 1, 1],
                                         [.25, .25, .5, .5],
                                         [.25, .25, .5, .5]])
  # Shrinking (a dataset larger than G) is the usual antialiased resize.
  big = jax.random.uniform(jax.random.PRNGKey(0), (1, 8, 8, 1))
  np.testing.assert_array_equal(vae.reconstruction_target(big, 4),
                                image_ops.resize(big, 4))


@pytest.mark.integration
def test_the_vae_trains_through_the_generator_stage(tmp_path):
  """family=vae through the pipeline: its stage checkpoints, validates
  (best beside last), logs to TensorBoard, and a rerun reuses it."""
  from test_workdir_tools import _events  # pylint: disable=g-import-not-at-top
  config = conftest.tiny_config()
  config.teacher_generator.family = 'vae'
  config.methods = ('tgt_random',)
  config.num_epochs = config.teacher_labeler.num_epochs = 0.05
  config.teacher_generator.num_epochs = 0.2
  config.report_checkpoint = 'best'  # The default is 'last' since eea7d55.
  first = train.train_and_evaluate(config, str(tmp_path))
  assert first['teacher_generator']['checkpoint'] == 'best'
  assert first['teacher_generator']['step'] > 0
  assert 0.0 <= first['reconstruction_agreement'] <= 1.0
  stage = tmp_path / 'teacher_generator'
  assert (stage / 'best').is_dir()
  assert str(first['teacher_generator']['step']) in os.listdir(stage)
  scalars, _, _, _ = _events(str(tmp_path))
  assert {'teacher_generator/train/kl', 'teacher_generator/train/loss',
          'teacher_generator/val/overall'} <= set(scalars)
  # A rerun restores every finished stage: the same results, exactly.
  again = train.train_and_evaluate(config, str(tmp_path))
  assert {k: v for k, v in again.items() if k != 'run_info'} == {
      k: v for k, v in first.items() if k != 'run_info'}
