"""Latent exploration: the documented rules, example by example."""

import jax

# Tiny models: compile time dominates, and these tests check values.
jax.config.update('jax_disable_most_optimizations', True)

import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top
import pytest  # pylint: disable=g-import-not-at-top

from tgt_jax import exploration  # pylint: disable=g-import-not-at-top
from tgt_jax import methods  # pylint: disable=g-import-not-at-top
from tgt_jax import train_steps  # pylint: disable=g-import-not-at-top

TGT_METHODS = [name for name, m in methods.METHODS.items()
               if m.uses_generator]


def _config(tiny, **exploration_fields):
  config = tiny.config.copy_and_resolve_references()
  config.distill.temperature = 2.0  # tau != 1: a missing 1/tau shows.
  config.exploration.update(dict(step_size=1e-3, num_steps=1, normalize=True,
                                 init_sigma=0.0, labeler_gradient=True,
                                 sigma=0.3))
  config.exploration.update(exploration_fields)
  return config


def _variables(tiny):
  return {'params': tiny.state.params, 'batch_stats': tiny.state.batch_stats}


def explore(tiny, images, method, config):
  """The step's own exploration (train_steps.explore) of uint8 images."""
  def run(images):
    unit = images.astype(jnp.float32) / 255.0
    return train_steps.explore(method, tiny.student, _variables(tiny),
                               tiny.teachers, {}, unit,
                               jax.random.PRNGKey(3), config)
  return np.asarray(jax.jit(run)(jnp.asarray(images)))


def _independent_disagreement(tiny, temperature, labeler_gradient):
  """Per-example CE(softmax(h(G(z)) / tau), f(G(z)) / tau), written from the
  networks' own `apply`, not from the library's step code."""
  gen_net = tiny.teachers.generator_model.generator
  labeler, student = tiny.teachers.labeler_network, tiny.student

  def network_input(model, unit):
    resized = jax.image.resize(
        unit, (unit.shape[0], model.image_size, model.image_size,
               unit.shape[-1]), 'bilinear', antialias=True)
    return (resized - jnp.asarray(model.mean)) / jnp.asarray(model.std)

  def per_example(z):
    unit = jnp.clip((gen_net.apply(tiny.teachers.generator['generator'], z,
                                   train=False) + 1.0) / 2.0, 0.0, 1.0)
    teacher_logits, _ = labeler.network.apply(
        tiny.teachers.labeler, network_input(labeler, unit), train=False)
    if not labeler_gradient:
      teacher_logits = jax.lax.stop_gradient(teacher_logits)
    student_logits, _ = student.network.apply(
        _variables(tiny), network_input(student, unit), train=False)
    target = jax.nn.softmax(teacher_logits / temperature)
    return -jnp.sum(target * jax.nn.log_softmax(student_logits / temperature),
                    axis=-1)

  return per_example


@pytest.mark.parametrize('labeler_gradient', [
    True,  # The default.
    pytest.param(False, marks=pytest.mark.integration)])
def test_gradient_exploration_follows_the_documented_rule(tiny,
                                                          labeler_gradient):
  eta = 1e-3
  config = _config(tiny, step_size=eta, labeler_gradient=labeler_gradient)
  z1 = explore(tiny, tiny.batch['image'], 'tgt_gradient', config)

  unit = tiny.batch['image'].astype(jnp.float32) / 255.0
  z0 = np.asarray(jax.jit(tiny.teachers.encode)(unit))
  per_example = _independent_disagreement(tiny, 2.0, labeler_gradient)
  gradient = np.asarray(jax.jit(jax.grad(
      lambda z: jnp.sum(per_example(z))))(z0))
  unit_gradient = gradient / np.linalg.norm(gradient, axis=-1, keepdims=True)
  # z1 = z0 + eta * g / ||g||, g the gradient of each example's own value.
  np.testing.assert_allclose(z1, z0 + eta * unit_gradient, rtol=1e-5,
                             atol=1e-7)
  np.testing.assert_allclose(np.linalg.norm(z1 - z0, axis=-1), eta,
                             rtol=1e-3)
  if labeler_gradient:
    # Ascent: the disagreement rises by about eta * ||g|| per example.
    rise = np.asarray(per_example(z1) - per_example(z0))
    np.testing.assert_allclose(rise, eta * np.linalg.norm(gradient, axis=-1),
                               rtol=0.2, atol=1e-6)


def test_the_labelers_path_changes_the_direction(tiny):
  """The two rules differ on these networks, so the test above can tell a
  step that ignores the labeler's dependence on z from one that uses it."""
  full, fixed = (explore(tiny, tiny.batch['image'], 'tgt_gradient',
                         _config(tiny, labeler_gradient=flag))
                 for flag in (True, False))
  unit = tiny.batch['image'].astype(jnp.float32) / 255.0
  z0 = np.asarray(jax.jit(tiny.teachers.encode)(unit))
  a, b = full - z0, fixed - z0
  cosine = np.sum(a * b, -1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(
      b, axis=-1)
  assert np.min(cosine) < 0.99, cosine


@pytest.mark.parametrize('method', TGT_METHODS)
def test_one_examples_latent_does_not_depend_on_the_others(tiny, method):
  config = _config(tiny, step_size=0.5)
  images = np.asarray(tiny.batch['image'])
  changed = images.copy()
  changed[1:] = 255 - changed[1:]  # Every example but the first.
  before = explore(tiny, images, method, config)
  after = explore(tiny, changed, method, config)
  np.testing.assert_allclose(after[0], before[0], rtol=1e-5, atol=1e-6)
  if method != 'tgt_prior':  # The changed examples did move.
    assert not np.allclose(after[1:], before[1:], atol=1e-3)


def test_a_train_mode_student_would_couple_the_examples(tiny):
  """Why the student runs in inference mode inside exploration: with batch
  statistics, example 0's gradient changes when the others change."""
  config = _config(tiny, step_size=0.5)
  labeler_net = tiny.teachers.labeler_network

  def gradient_of_first(images):
    unit = images.astype(jnp.float32) / 255.0
    z = tiny.teachers.encode(unit)

    def total(z):
      generated = tiny.teachers.generate(z)
      target = jax.nn.softmax(labeler_net.apply(
          tiny.teachers.labeler, generated)[0])
      (logits, _), _ = tiny.student.apply(_variables(tiny), generated,
                                          train=True)
      return -jnp.sum(target * jax.nn.log_softmax(logits))
    return jax.grad(total)(z)[0]

  del config
  images = np.asarray(tiny.batch['image'])
  changed = images.copy()
  changed[1:] = 255 - changed[1:]
  grad_fn = jax.jit(gradient_of_first)
  assert not np.allclose(grad_fn(images), grad_fn(changed), rtol=1e-3)


def test_cached_latents_are_gathered_by_example_index(tiny):
  """With a latent cache the explorer starts from the cached rows of the
  batch's example indices, exactly as from E(x) of those images."""
  unit = tiny.batch['image'].astype(jnp.float32) / 255.0
  z = np.asarray(jax.jit(tiny.teachers.encode)(unit))
  cache = np.zeros((3 * len(z), z.shape[1]), np.float32)
  index = np.arange(len(z)) * 3 + 1
  cache[index] = z
  teachers = tiny.teachers.replace(latents=jnp.asarray(cache))
  latents = jax.jit(teachers.real_latents)({'index': jnp.asarray(index)},
                                           unit)
  np.testing.assert_array_equal(np.asarray(latents), z)


def test_random_exploration_perturbs_the_encoder_mean(tiny):
  images = np.random.default_rng(0).integers(0, 256, (256, 8, 8, 1),
                                              np.uint8)
  explored = explore(tiny, images, 'tgt_random', _config(tiny, sigma=0.3))
  z = np.asarray(jax.jit(tiny.teachers.encode)(images / 255.0))
  noise = explored - z
  # 256 x 12 draws: the std's standard error is ~1.3%.
  assert np.std(noise) == pytest.approx(0.3, rel=0.06)
  assert abs(np.mean(noise)) < 0.03


def test_prior_exploration_ignores_the_images(tiny):
  images = np.asarray(tiny.batch['image'])
  config = _config(tiny)
  a = explore(tiny, images, 'tgt_prior', config)
  b = explore(tiny, 255 - images, 'tgt_prior', config)
  assert a.shape == (len(images), config.teacher_generator.latent_dim)
  np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------------------
# The primitives.
# ---------------------------------------------------------------------------


def test_ascend_latent_normalised_steps_have_length_step_size():
  w = jnp.array([3.0, -4.0, 12.0])  # ||w|| = 13.
  z0 = jnp.array([[0.0, 0.0, 0.0], [1.0, 2.0, 3.0]])
  for scale in (1e-3, 1.0, 1e3):  # The loss scale must not matter.
    linear = lambda z, scale=scale: scale * (z @ w)
    z = exploration.ascend_latent(z0, linear, step_size=0.5, num_steps=3,
                                  normalize=True)
    np.testing.assert_allclose(z - z0, np.tile(1.5 * w / 13.0, (2, 1)),
                               rtol=1e-5, atol=1e-6)


def test_ascend_latent_moves_each_row_by_its_own_gradient():
  z0 = jnp.array([[1.0, 0.0], [0.0, 100.0], [3.0, 4.0]])
  squared_norm = lambda z: jnp.sum(z**2, axis=-1)  # Gradient 2z.
  z1 = exploration.ascend_latent(z0, squared_norm, step_size=0.25,
                                 num_steps=1, normalize=True)
  radius = np.linalg.norm(z0, axis=-1, keepdims=True)
  np.testing.assert_allclose(z1, z0 * (1 + 0.25 / radius), rtol=1e-6)


def test_ascend_latent_unnormalised_step_is_step_size_times_gradient():
  w = jnp.array([3.0, -4.0])
  z = exploration.ascend_latent(jnp.zeros((2, 2)), lambda z: 10.0 * (z @ w),
                                step_size=0.1, num_steps=2, normalize=False)
  np.testing.assert_allclose(z, np.tile(2 * 0.1 * 10.0 * w, (2, 1)),
                             rtol=1e-6)


def test_ascend_latent_zero_steps_and_zero_gradient():
  z0 = jax.random.normal(jax.random.PRNGKey(0), (4, 6))
  np.testing.assert_array_equal(
      exploration.ascend_latent(z0, lambda z: jnp.sum(z**2, -1), 1.0, 0), z0)
  np.testing.assert_array_equal(
      exploration.ascend_latent(z0, lambda z: jnp.zeros(z.shape[0]), 1.0, 2),
      z0)


def test_perturb_latent_scale_and_key():
  z = jax.random.normal(jax.random.PRNGKey(1), (4096, 24)) * 3.0 + 1.0
  noise = np.asarray(exploration.perturb_latent(z, jax.random.PRNGKey(2),
                                                0.3) - z)
  assert np.std(noise) == pytest.approx(0.3, rel=0.02)
  np.testing.assert_allclose(np.std(noise, axis=0), 0.3, rtol=0.08)
  np.testing.assert_array_equal(
      exploration.perturb_latent(z, jax.random.PRNGKey(2), 0.0), z)
  assert not np.allclose(
      exploration.perturb_latent(z, jax.random.PRNGKey(3), 0.3) - z, noise)


def test_sample_prior_is_standard_normal():
  z = np.asarray(exploration.sample_prior(jax.random.PRNGKey(0), (8192, 12)))
  assert z.shape == (8192, 12) and z.dtype == np.float32
  assert abs(np.mean(z)) < 0.01
  assert np.std(z) == pytest.approx(1.0, rel=0.01)
  assert np.mean(np.abs(z) > 2.0) == pytest.approx(0.0455, abs=0.005)
