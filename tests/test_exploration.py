"""Tests of latent exploration: gradient ascent, random perturbation, prior."""

import jax

# Tiny models: compile time dominates, and these tests check values.
jax.config.update('jax_disable_most_optimizations', True)

import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top
import pytest  # pylint: disable=g-import-not-at-top

from tgt_jax import exploration  # pylint: disable=g-import-not-at-top
from tgt_jax import image_ops  # pylint: disable=g-import-not-at-top
from tgt_jax import losses  # pylint: disable=g-import-not-at-top
from tgt_jax import train_steps  # pylint: disable=g-import-not-at-top


# ---------------------------------------------------------------------------
# Gradient exploration.
# ---------------------------------------------------------------------------


def _disagreement_fn(tiny, temperature):
  """CE(softmax(labeler(G(z)) / tau), student(G(z)) / tau), per example.

  The same function train_steps._explore_gradient ascends: teacher and
  student on the decoded image, the student in train mode.
  """
  models, teachers, state = tiny.models, tiny.teachers, tiny.state
  # pylint: disable-next=protected-access
  student_forward = train_steps._student_forward

  def disagreement(latent):
    generated = models.generate(teachers, latent)
    teacher_probs = jax.nn.softmax(
        models.labeler_logits(teachers, generated) / temperature)
    student_logits, _ = student_forward(
        models, state.params, state.batch_stats, generated, train=True)
    return losses.soft_cross_entropy(teacher_probs,
                                     student_logits / temperature)

  return disagreement


def _gradient_config(tiny, step_size, num_steps):
  config = tiny.config.copy_and_resolve_references()
  config.distill.temperature = 1.0
  config.exploration.step_size = step_size
  config.exploration.num_steps = num_steps
  config.exploration.normalize = True
  config.exploration.init_sigma = 0.0
  return config


def test_gradient_step_increases_student_teacher_disagreement(tiny_teachers):
  tiny = tiny_teachers
  eta = 1e-3  # Small against the curvature of the random-init networks.
  config = _gradient_config(tiny, eta, num_steps=1)
  real = image_ops.uint8_to_unit(tiny.batch['image'])
  disagreement = _disagreement_fn(tiny, temperature=1.0)

  @jax.jit
  def run(real):
    z0 = tiny.models.encode(tiny.teachers, real)
    z1 = train_steps.explore_latents('tgt_gradient', tiny.models, tiny.state,
                                     tiny.teachers, real,
                                     jax.random.PRNGKey(0), config)
    direct = exploration.ascend_latent(z0, disagreement, eta, num_steps=1,
                                       normalize=True)
    total = lambda z: jnp.sum(disagreement(z))
    gradient = jax.grad(total)(z0)
    return z0, z1, direct, total(z0), total(z1), gradient

  z0, z1, direct, before, after, gradient = jax.device_get(run(real))

  # The step's exploration ascends exactly this disagreement.
  np.testing.assert_allclose(z1, direct, rtol=1e-5, atol=1e-7)

  # Exploration starts at E(x) and each latent moves exactly eta (L2).
  np.testing.assert_allclose(np.linalg.norm(z1 - z0, axis=-1),
                             np.full(len(z0), eta), rtol=1e-4)
  # The move is along the gradient of the summed disagreement.
  unit_gradient = gradient / np.linalg.norm(gradient, axis=-1, keepdims=True)
  np.testing.assert_allclose(z1 - z0, eta * unit_gradient, rtol=1e-3,
                             atol=1e-6)
  # Ascent: the total disagreement rises by about eta * sum_i ||g_i|| (the
  # first-order change of a normalised step); descent would lower it.
  predicted_rise = eta * np.sum(np.linalg.norm(gradient, axis=-1))
  assert predicted_rise > 1e-2  # Well above float32 noise on a sum ~20.
  assert after - before == pytest.approx(predicted_rise, rel=0.2)


def test_ascend_latent_normalised_steps_have_length_step_size():
  w = jnp.array([3.0, -4.0, 12.0])  # ||w|| = 13.
  z0 = jnp.array([[0.0, 0.0, 0.0], [1.0, 2.0, 3.0]])
  for scale in (1e-3, 1.0, 1e3):  # The loss scale must not matter.
    linear = lambda z, scale=scale: scale * (z @ w)
    z = exploration.ascend_latent(z0, linear, step_size=0.5, num_steps=3,
                                  normalize=True)
    # A constant gradient direction: 3 steps of 0.5 along w / ||w||.
    np.testing.assert_allclose(z - z0, np.tile(1.5 * w / 13.0, (2, 1)),
                               rtol=1e-5, atol=1e-6)


def test_ascend_latent_moves_each_row_by_its_own_gradient():
  # Rows with very different gradient sizes still move exactly step_size.
  z0 = jnp.array([[1.0, 0.0], [0.0, 100.0], [3.0, 4.0]])
  squared_norm = lambda z: jnp.sum(z**2, axis=-1)  # Gradient 2z.
  z1 = exploration.ascend_latent(z0, squared_norm, step_size=0.25,
                                 num_steps=1, normalize=True)
  np.testing.assert_allclose(np.linalg.norm(z1 - z0, axis=-1),
                             [0.25, 0.25, 0.25], rtol=1e-6)
  # Radially outwards: z1 = z0 * (1 + 0.25 / ||z0||).
  radius = np.linalg.norm(z0, axis=-1, keepdims=True)
  np.testing.assert_allclose(z1, z0 * (1 + 0.25 / radius), rtol=1e-6)


def test_ascend_latent_unnormalised_step_is_step_size_times_gradient():
  w = jnp.array([3.0, -4.0])
  z0 = jnp.zeros((2, 2))
  z = exploration.ascend_latent(z0, lambda z: 10.0 * (z @ w), step_size=0.1,
                                num_steps=2, normalize=False)
  np.testing.assert_allclose(z, np.tile(2 * 0.1 * 10.0 * w, (2, 1)),
                             rtol=1e-6)


def test_ascend_latent_zero_steps_returns_start():
  z0 = jax.random.normal(jax.random.PRNGKey(0), (4, 6))
  z = exploration.ascend_latent(z0, lambda z: jnp.sum(z**2, axis=-1),
                                step_size=1.0, num_steps=0)
  np.testing.assert_array_equal(z, z0)


def test_ascend_latent_zero_gradient_stays_finite():
  z0 = jnp.ones((3, 4))
  z = exploration.ascend_latent(z0, lambda z: jnp.zeros(z.shape[0]),
                                step_size=1.0, num_steps=2)
  np.testing.assert_array_equal(z, z0)


# ---------------------------------------------------------------------------
# Random perturbation.
# ---------------------------------------------------------------------------


def test_perturb_latent_has_configured_scale():
  z = jax.random.normal(jax.random.PRNGKey(1), (4096, 24)) * 3.0 + 1.0
  perturbed = exploration.perturb_latent(z, jax.random.PRNGKey(2), 0.3)
  noise = np.asarray(perturbed - z)
  assert perturbed.shape == z.shape
  assert perturbed.dtype == z.dtype
  # ~98k samples: the std's standard error is ~0.2%, the mean's ~0.001.
  assert np.std(noise) == pytest.approx(0.3, rel=0.02)
  assert abs(np.mean(noise)) < 0.005
  # Isotropic: every latent dimension has the same scale.
  np.testing.assert_allclose(np.std(noise, axis=0), 0.3, rtol=0.08)
  # Independent of z: per-row noise differs between rows.
  assert not np.allclose(noise[0], noise[1])


def test_perturb_latent_sigma_zero_is_identity():
  z = jax.random.normal(jax.random.PRNGKey(1), (16, 12))
  np.testing.assert_array_equal(
      exploration.perturb_latent(z, jax.random.PRNGKey(2), 0.0), z)


def test_perturb_latent_depends_only_on_the_key():
  z = jnp.zeros((8, 12))
  a = exploration.perturb_latent(z, jax.random.PRNGKey(5), 0.5)
  b = exploration.perturb_latent(z, jax.random.PRNGKey(5), 0.5)
  c = exploration.perturb_latent(z, jax.random.PRNGKey(6), 0.5)
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, c)


def test_random_exploration_perturbs_the_encoder_mean(tiny_teachers):
  tiny = tiny_teachers
  config = tiny.config.copy_and_resolve_references()
  config.exploration.sigma = 0.3
  # 256 real images x 12 latent dims: the std's standard error is ~1.3%.
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.integers(0, 256, (256, 8, 8, 1), np.uint8))
  real = image_ops.uint8_to_unit(images)

  @jax.jit
  def run(real):
    z = tiny.models.encode(tiny.teachers, real)
    explored = train_steps.explore_latents('tgt_random', tiny.models,
                                           tiny.state, tiny.teachers, real,
                                           jax.random.PRNGKey(3), config)
    return z, explored

  z, explored = jax.device_get(run(real))
  assert explored.shape == (256, config.teacher_generator.latent_dim)
  noise = explored - z
  assert np.std(noise) == pytest.approx(0.3, rel=0.06)
  assert abs(np.mean(noise)) < 0.03


# ---------------------------------------------------------------------------
# Prior sampling.
# ---------------------------------------------------------------------------


def test_sample_prior_shape_and_standard_normal_moments():
  z = np.asarray(exploration.sample_prior(jax.random.PRNGKey(0), (8192, 12)))
  assert z.shape == (8192, 12)
  assert z.dtype == np.float32
  assert abs(np.mean(z)) < 0.01
  assert np.std(z) == pytest.approx(1.0, rel=0.01)
  np.testing.assert_allclose(np.mean(z, axis=0), 0.0, atol=0.05)
  np.testing.assert_allclose(np.std(z, axis=0), 1.0, rtol=0.05)
  # Gaussian tails: about 4.55% of |z| beyond 2 sigma.
  assert np.mean(np.abs(z) > 2.0) == pytest.approx(0.0455, abs=0.005)


def test_prior_exploration_ignores_the_images(tiny_teachers):
  tiny = tiny_teachers
  real = image_ops.uint8_to_unit(tiny.batch['image'])
  latents = [
      train_steps.explore_latents('tgt_prior', tiny.models, tiny.state,
                                  tiny.teachers, images, jax.random.PRNGKey(7),
                                  tiny.config)
      for images in (real, 1.0 - real)]
  assert latents[0].shape == (real.shape[0],
                              tiny.config.teacher_generator.latent_dim)
  np.testing.assert_array_equal(latents[0], latents[1])
