"""Tests of the per-method train steps on tiny, randomly initialised models."""

import dataclasses

import jax

# Tiny models: compile time dominates, and these tests check values.
jax.config.update('jax_disable_most_optimizations', True)

import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top
import pytest  # pylint: disable=g-import-not-at-top

import conftest  # pylint: disable=g-import-not-at-top
from tgt_jax import image_ops  # pylint: disable=g-import-not-at-top
from tgt_jax import losses  # pylint: disable=g-import-not-at-top
from tgt_jax import sharding  # pylint: disable=g-import-not-at-top
from tgt_jax import train  # pylint: disable=g-import-not-at-top
from tgt_jax import train_steps  # pylint: disable=g-import-not-at-top
from tgt_jax.models import build  # pylint: disable=g-import-not-at-top

TGT_METHODS = ('tgt_random', 'tgt_gradient', 'tgt_prior')
# kd's distillation settings for every kd step below except alpha=0: soft
# and hard targets both count, and tau != 1, so a mix-up of the two terms or
# a missing tau^2 changes the loss.
KD_DISTILL = {'alpha': 0.3, 'temperature': 2.0}


_STEPS = {}


def _jitted_step(method, tiny, **distill):
  """One compiled step per (method, setup, distill overrides), shared."""
  key = (method, id(tiny), tuple(sorted(distill.items())))
  if key not in _STEPS:
    config = tiny.config.copy_and_resolve_references()
    for name, value in distill.items():
      config.distill[name] = value
    _STEPS[key] = jax.jit(
        train_steps.make_train_step(method, tiny.models, config))
  return _STEPS[key]


def _host(tree):
  return jax.tree.map(np.asarray, jax.device_get(tree))


def _leaves_differ(a, b):
  """How many leaves of two same-structure trees are not all equal."""
  return sum(not np.array_equal(x, y)
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@pytest.mark.parametrize('method', train_steps.METHODS)
def test_one_step_updates_the_student_only(method, tiny_teachers):
  tiny = tiny_teachers
  teachers_before = _host(tiny.teachers)
  state_before = _host(tiny.state)

  step = (_jitted_step(method, tiny, **KD_DISTILL) if method == 'kd' else
          _jitted_step(method, tiny))
  state, metrics = step(
      tiny.state, tiny.teachers, tiny.batch, jax.random.PRNGKey(0))
  state, metrics = _host(state), _host(metrics)

  assert np.isfinite(metrics['loss'])
  assert metrics['loss'] > 0
  assert 0.0 <= metrics['accuracy'] <= 1.0
  assert int(state.step) == int(state_before.step) + 1
  assert jax.tree.structure(state) == jax.tree.structure(state_before)
  # Every parameter tensor of the student moves (all receive gradient)...
  num_params = len(jax.tree.leaves(state.params))
  assert _leaves_differ(state.params, state_before.params) == num_params
  # ...and BatchNorm's running statistics are updated in train mode.
  assert _leaves_differ(state.batch_stats, state_before.batch_stats) > 0
  assert all(np.all(np.isfinite(p)) for p in jax.tree.leaves(state.params))
  # The frozen teachers are inputs only: nothing in them changed.
  assert conftest.tree_allclose(_host(tiny.teachers), teachers_before)
  assert conftest.tree_allclose(tiny.state, state_before)

  if method in TGT_METHODS:
    weight = tiny.config.distill.generated_weight
    assert metrics['loss'] == pytest.approx(
        metrics['real_loss'] + weight * metrics['generated_loss'], rel=1e-5)
    assert np.isfinite(metrics['generated_loss'])
    assert metrics['generated_loss'] > 0
    assert 0.0 <= metrics['generated_agreement'] <= 1.0


def test_unknown_method_is_a_value_error_listing_the_methods(tiny_teachers):
  with pytest.raises(ValueError, match='tgt_magic') as error:
    train_steps.make_train_step('tgt_magic', tiny_teachers.models,
                                tiny_teachers.config)
  for method in train_steps.METHODS:
    assert method in str(error.value)


def test_validate_config_rejects_an_unknown_method():
  config = conftest.tiny_config()
  config.methods = ('onehot', 'distil')
  mesh = sharding.create_mesh()
  with pytest.raises(ValueError, match="'distil'") as error:
    train.validate_config(config, mesh)
  for method in train_steps.METHODS:
    assert method in str(error.value)
  config.methods = train_steps.METHODS
  train.validate_config(config, mesh)  # All known methods pass.


def test_kd_with_alpha_zero_is_onehot(tiny_teachers):
  tiny = tiny_teachers
  args = (tiny.state, tiny.teachers, tiny.batch, jax.random.PRNGKey(0))
  onehot_state, onehot_metrics = _jitted_step('onehot', tiny)(*args)
  kd_state, kd_metrics = _jitted_step('kd', tiny, alpha=0.0)(*args)
  np.testing.assert_allclose(kd_metrics['loss'], onehot_metrics['loss'],
                             rtol=1e-6)
  assert conftest.tree_allclose(kd_state.params, onehot_state.params,
                                rtol=1e-5, atol=1e-7)
  # The comparison can tell the two apart: with alpha > 0 the labeler's soft
  # label enters and the loss differs.
  _, soft_metrics = _jitted_step('kd', tiny, **KD_DISTILL)(*args)
  assert abs(float(soft_metrics['loss']) - float(onehot_metrics['loss'])) > 1e-3


def test_kd_loss_is_the_mixed_target_loss(tiny_teachers):
  """kd = (1 - a) CE(y, s) + a tau^2 CE(softmax(t / tau), s / tau)."""
  tiny = tiny_teachers
  alpha, temperature = KD_DISTILL['alpha'], KD_DISTILL['temperature']
  _, metrics = _jitted_step('kd', tiny, **KD_DISTILL)(
      tiny.state, tiny.teachers, tiny.batch, jax.random.PRNGKey(0))

  @jax.jit
  def logits(batch):
    unit = image_ops.uint8_to_unit(batch['image'])
    teacher = tiny.models.labeler_logits(tiny.teachers, unit)
    variables = {'params': tiny.state.params,
                 'batch_stats': tiny.state.batch_stats}
    (student, _), _ = tiny.models.student.apply(
        variables, tiny.models.student_input(unit), train=True,
        mutable=['batch_stats'])
    return teacher, student

  teacher, student = _host(logits(tiny.batch))
  labels = np.asarray(tiny.batch['label'])

  def log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))

  onehot = -np.mean(log_softmax(student)[np.arange(len(labels)), labels])
  teacher_probs = np.exp(log_softmax(teacher / temperature))
  distill = temperature**2 * np.mean(
      -np.sum(teacher_probs * log_softmax(student / temperature), -1))
  expected = (1 - alpha) * onehot + alpha * distill
  assert float(metrics['loss']) == pytest.approx(expected, rel=1e-4)
  # And the library's own loss agrees on the same logits.
  assert float(losses.mixed_target_loss(labels, teacher, student, alpha,
                                        temperature)) == pytest.approx(
                                            expected, rel=1e-5)


@pytest.mark.parametrize('method', ['tgt_random', 'tgt_gradient'])
def test_step_is_a_function_of_state_batch_and_rng(method, tiny_teachers):
  tiny = tiny_teachers
  step = _jitted_step(method, tiny)
  rng = jax.random.PRNGKey(0)
  first = _host(step(tiny.state, tiny.teachers, tiny.batch, rng))
  second = _host(step(tiny.state, tiny.teachers, tiny.batch, rng))
  assert conftest.tree_allclose(first, second)  # Bit-identical.

  if method == 'tgt_random':
    # The rng matters (so the check above is not vacuous): another key, or
    # the same key at another step number, draws other latents.
    _, other_key = step(tiny.state, tiny.teachers, tiny.batch,
                        jax.random.PRNGKey(1))
    later_state = tiny.state.replace(step=jnp.ones((), jnp.int32))
    _, other_step = step(later_state, tiny.teachers, tiny.batch, rng)
    for other in (other_key, other_step):
      assert float(other['generated_loss']) != float(
          first[1]['generated_loss'])


@pytest.mark.parametrize('method', ['tgt_random', 'tgt_gradient'])
def test_cached_latents_give_the_step_of_encoding(method, tiny_teachers):
  """A batch carrying E(x) as 'latent' trains as encoding in the step does,
  and its compiled step has no encoder pass (fewer FLOPs)."""
  tiny = tiny_teachers
  config = tiny.config.copy_and_resolve_references()
  # A short ascent step, as in test_devices.py: with eta = 1 rounding-level
  # differences in z move G(z) enough to flip ReLU units of the tiny random
  # networks, and the update jumps.
  config.exploration.step_size = 0.05
  step = jax.jit(train_steps.make_train_step(method, tiny.models, config))
  real = image_ops.uint8_to_unit(tiny.batch['image'])
  cached = dict(tiny.batch, latent=tiny.models.encode(tiny.teachers, real))
  rng = jax.random.PRNGKey(3)
  encoded_state, encoded_metrics = step(tiny.state, tiny.teachers, tiny.batch,
                                        rng)
  cached_state, cached_metrics = step(tiny.state, tiny.teachers, cached, rng)
  # The same arithmetic compiled in another program: equal up to rounding.
  # Latents of the wrong images would move the losses by 1e-2 or more.
  assert conftest.tree_allclose(cached_metrics, encoded_metrics, rtol=1e-4,
                                atol=1e-6)
  assert conftest.tree_allclose(cached_state.params, encoded_state.params,
                                rtol=1e-4, atol=1e-5)

  def flops(batch):
    analysis = step.lower(tiny.state, tiny.teachers, batch, rng).compile(
        ).cost_analysis()
    return float(analysis['flops'])
  assert flops(cached) < flops(tiny.batch)


def test_latent_cache_is_exact_or_off(tiny_teachers, monkeypatch):
  """'auto' caches E of the stored images only without augmentation."""
  tiny = tiny_teachers
  config = tiny.config.copy_and_resolve_references()
  data = train.sources.load_data(config)
  mesh = sharding.create_mesh()
  ctx = train.Context(config=config, workdir='', data=data, mesh=mesh,
                      writer=None)
  config.augment_max_shift = 1
  assert train._latent_cache(ctx, tiny.models, tiny.teachers,  # pylint: disable=protected-access
                             'tgt_random') is None
  config.augment_max_shift = 0
  assert train._latent_cache(ctx, tiny.models, tiny.teachers,  # pylint: disable=protected-access
                             'kd') is None
  cache = train._latent_cache(ctx, tiny.models, tiny.teachers,  # pylint: disable=protected-access
                              'tgt_gradient')
  # Computed once per run: the next TGT student gets the same array.
  assert train._latent_cache(ctx, tiny.models, tiny.teachers,  # pylint: disable=protected-access
                             'tgt_random')['latent'] is cache['latent']
  images = data.student_images
  assert cache['latent'].shape == (
      len(images), config.teacher_generator.latent_dim)
  expected = tiny.models.encode(tiny.teachers,
                                image_ops.uint8_to_unit(images[:5]))
  np.testing.assert_allclose(cache['latent'][:5], expected, atol=1e-5)
  config.exploration.cache_latents = 'never'
  assert train._latent_cache(ctx, tiny.models, tiny.teachers,  # pylint: disable=protected-access
                             'tgt_gradient') is None
  config.exploration.cache_latents = 'sometimes'
  with pytest.raises(ValueError, match="cache_latents='sometimes'"):
    train.validate_config(config, mesh)


def test_bfloat16_compute_keeps_float32_parameters_and_statistics():
  """config.dtype='bfloat16': convolutions and matmuls run in bfloat16, the
  parameters, BatchNorm statistics and loss stay float32, and the loss is
  the float32 loss up to bfloat16 rounding."""
  config = conftest.tiny_config()
  config.dtype = 'bfloat16'
  dtype = build.compute_dtype(config)
  assert dtype == jnp.bfloat16
  tiny = conftest.make_tiny_teachers(config)
  student = build.classifier(config.student, conftest.NUM_CLASSES, dtype)
  labeler = build.classifier(config.teacher_labeler, conftest.NUM_CLASSES,
                             dtype)
  models = dataclasses.replace(
      tiny.models, student=student, labeler=labeler,
      generator=build.generator(config.teacher_generator, False, dtype),
      encoder=build.encoder(config.teacher_generator, dtype))
  step = jax.jit(train_steps.make_train_step('tgt_random', models, config))
  rng = jax.random.PRNGKey(0)
  jaxpr = str(jax.make_jaxpr(step)(tiny.state, tiny.teachers, tiny.batch, rng))
  assert 'bf16' in jaxpr  # The compute really is bfloat16.
  new_state, metrics = step(tiny.state, tiny.teachers, tiny.batch, rng)
  for leaf in jax.tree.leaves((new_state.params, new_state.batch_stats)):
    assert leaf.dtype == jnp.float32
  assert metrics['loss'].dtype == jnp.float32
  _, float32_metrics = _jitted_step('tgt_random', tiny)(
      tiny.state, tiny.teachers, tiny.batch, rng)
  np.testing.assert_allclose(metrics['loss'], float32_metrics['loss'],
                             rtol=5e-2)
  config.dtype = 'float16'
  with pytest.raises(ValueError, match="dtype='float16'"):
    build.compute_dtype(config)
