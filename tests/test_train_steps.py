"""The one train step of every method, its losses and its optimiser."""

import jax

# Tiny models: compile time dominates, and these tests check values.
jax.config.update('jax_disable_most_optimizations', True)

import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
import ml_collections  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top
import pytest  # pylint: disable=g-import-not-at-top

import conftest  # pylint: disable=g-import-not-at-top
from tgt_jax import losses  # pylint: disable=g-import-not-at-top
from tgt_jax import methods  # pylint: disable=g-import-not-at-top
from tgt_jax import sharding  # pylint: disable=g-import-not-at-top
from tgt_jax import train_steps  # pylint: disable=g-import-not-at-top
from tgt_jax.generators import families as generator_families  # pylint: disable=g-import-not-at-top
from tgt_jax.models import build  # pylint: disable=g-import-not-at-top

# kd's settings for every kd step below except alpha=0: soft and hard
# targets both count, and tau != 1, so a mix-up of the two terms or a
# missing tau^2 changes the loss.
KD_DISTILL = {'alpha': 0.3, 'temperature': 2.0}
KD_METHODS = ('kd', 'kd_mixup')
_STEPS = {}


def _step(method, tiny, on_tgt=False, **distill):
  """One compiled step per (method, mixup.on_tgt, distill overrides),
  shared."""
  key = (method, id(tiny), on_tgt, tuple(sorted(distill.items())))
  if key not in _STEPS:
    config = tiny.config.copy_and_resolve_references()
    config.distill.update(distill)
    config.mixup.on_tgt = on_tgt
    _STEPS[key] = train_steps.jit_train_step(
        method, tiny.student, tiny.tx, config, sharding.create_mesh(),
        donate=False)
  return _STEPS[key]


def _leaves_differ(a, b):
  return sum(not np.array_equal(x, y)
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@pytest.mark.parametrize('method', list(methods.METHODS))
def test_one_step_updates_the_student_only(method, tiny):
  teachers_before = conftest.host(tiny.teachers)
  state_before = conftest.host(tiny.state)
  step = _step(method, tiny, **(KD_DISTILL if method in KD_METHODS else {}))
  state, metrics = conftest.host(step(tiny.state, tiny.teachers, tiny.batch,
                                      jax.random.PRNGKey(0)))
  assert np.isfinite(metrics['loss']) and metrics['loss'] > 0
  assert 0.0 <= metrics['accuracy'] <= 1.0
  assert int(state.step) == int(state_before.step) + 1
  # Every parameter tensor of the student moves (all receive gradient), and
  # BatchNorm's running statistics are updated in train mode.
  assert _leaves_differ(state.params, state_before.params) == len(
      jax.tree.leaves(state.params))
  assert _leaves_differ(state.batch_stats, state_before.batch_stats) > 0
  # The frozen teachers are inputs only.
  assert conftest.tree_allclose(conftest.host(tiny.teachers), teachers_before)
  if methods.get(method).uses_generator:
    weight = tiny.config.distill.generated_weight
    assert metrics['loss'] == pytest.approx(
        metrics['real_loss'] + weight * metrics['generated_loss'], rel=1e-5)
    assert metrics['generated_loss'] > 0
    assert 0.0 <= metrics['generated_agreement'] <= 1.0


def test_unknown_method_lists_the_known_ones(tiny):
  with pytest.raises(ValueError, match='tgt_magic') as error:
    train_steps.make_train_step('tgt_magic', tiny.student, tiny.tx,
                                tiny.config)
  for method in methods.METHODS:
    assert method in str(error.value)


def test_method_table_says_what_each_method_uses():
  table = {name: (m.uses_labeler, m.uses_generator, m.encodes, m.mixup)
           for name, m in methods.METHODS.items()}
  assert table == {'onehot': (False, False, True, False),
                   'kd': (True, False, True, False),
                   'kd_mixup': (True, False, True, True),
                   'tgt_random': (True, True, True, False),
                   'tgt_gradient': (True, True, True, False),
                   'tgt_prior': (True, True, False, False)}
  assert methods.generating(['onehot', 'kd', 'tgt_prior']) == ['tgt_prior']


def test_kd_with_alpha_zero_is_onehot(tiny):
  args = (tiny.state, tiny.teachers, tiny.batch, jax.random.PRNGKey(0))
  onehot_state, onehot_metrics = _step('onehot', tiny)(*args)
  kd_state, kd_metrics = _step('kd', tiny, alpha=0.0)(*args)
  np.testing.assert_allclose(kd_metrics['loss'], onehot_metrics['loss'],
                             rtol=1e-6)
  assert conftest.tree_allclose(kd_state.params, onehot_state.params,
                                rtol=1e-5, atol=1e-7)
  _, soft_metrics = _step('kd', tiny, **KD_DISTILL)(*args)
  assert abs(float(soft_metrics['loss']) - float(onehot_metrics['loss'])) > 1e-3


def _log_softmax(x):
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


def test_kd_loss_is_the_mixed_target_loss(tiny):
  """kd = (1 - a) CE(y, s) + a tau^2 CE(softmax(t / tau), s / tau)."""
  alpha, temperature = KD_DISTILL['alpha'], KD_DISTILL['temperature']
  _, metrics = _step('kd', tiny, **KD_DISTILL)(
      tiny.state, tiny.teachers, tiny.batch, jax.random.PRNGKey(0))

  @jax.jit
  def logits(images):
    unit = images.astype(jnp.float32) / 255.0
    teacher = tiny.teachers.label(unit)[0]
    (student, _), _ = tiny.student.apply(
        {'params': tiny.state.params, 'batch_stats': tiny.state.batch_stats},
        unit, train=True)
    return teacher, student

  teacher, student = conftest.host(logits(tiny.batch['image']))
  labels = np.asarray(tiny.batch['label'])
  onehot = -np.mean(_log_softmax(student)[np.arange(len(labels)), labels])
  teacher_probs = np.exp(_log_softmax(teacher / temperature))
  distill = temperature**2 * np.mean(
      -np.sum(teacher_probs * _log_softmax(student / temperature), -1))
  expected = (1 - alpha) * onehot + alpha * distill
  assert float(metrics['loss']) == pytest.approx(expected, rel=1e-4)
  assert float(losses.mixed_target_loss(labels, teacher, student, alpha,
                                        temperature)) == pytest.approx(
                                            expected, rel=1e-5)


def test_mixup_is_a_function_of_its_key():
  images = jnp.asarray(np.random.default_rng(0).uniform(size=(8, 4, 4, 1)),
                       jnp.float32)
  labels = jnp.arange(8) % 3
  first = conftest.host(methods.mixup(jax.random.PRNGKey(0), images, 1.0))
  again = conftest.host(methods.mixup(jax.random.PRNGKey(0), images, 1.0))
  assert conftest.tree_allclose(first, again)  # Bit-identical.
  other = conftest.host(methods.mixup(jax.random.PRNGKey(1), images, 1.0))
  assert first.lam != other.lam
  assert not np.array_equal(first.perm, other.perm)
  lam, perm = float(first.lam), first.perm
  assert 0.5 <= lam <= 1.0  # Each image is mostly its own example.
  assert sorted(perm.tolist()) == list(range(8))
  np.testing.assert_allclose(first.images,
                             lam * images + (1 - lam) * images[perm],
                             rtol=1e-6)
  probs = np.asarray(methods.Mixup(*first).label_probs(labels, 3))
  expected = lam * np.eye(3)[labels] + (1 - lam) * np.eye(3)[labels[perm]]
  np.testing.assert_allclose(probs, expected, rtol=1e-6)


def _mixed_batch(tiny, rng):
  """The step's own mixup of `tiny.batch` at step 0 under `rng`."""
  step_key = jax.random.fold_in(jax.random.fold_in(rng, 0),
                                train_steps.MIXUP_STREAM)
  unit = tiny.batch['image'].astype(jnp.float32) / 255.0
  return methods.mixup(step_key, unit, tiny.config.mixup.concentration)


def test_kd_mixup_target_is_the_labeler_on_the_mixed_image(tiny):
  """Function matching: the student learns h(x_mix) on x_mix, not the
  mixture of h(x) and h(x[perm]) nor the mixed labels; the one-hot part
  (alpha < 1) is the mixed label. The formula is kd's
  (test_kd_loss_is_the_mixed_target_loss) on the mixed batch: kd_mixup
  differs from kd by the mixing alone."""
  alpha, temperature = KD_DISTILL['alpha'], KD_DISTILL['temperature']
  rng = jax.random.PRNGKey(0)
  # The random labeler's outputs are nearly uniform, and so would be every
  # candidate target: a sharper head (same shapes, no new compile) sets
  # them apart.
  teachers = tiny.teachers.replace(labeler=jax.tree_util.tree_map_with_path(
      lambda path, x: 30 * x if 'classifier' in jax.tree_util.keystr(path)
      else x, tiny.teachers.labeler))
  step = _step('kd_mixup', tiny, **KD_DISTILL)
  _, metrics = conftest.host(step(tiny.state, teachers, tiny.batch, rng))
  mixed = _mixed_batch(tiny, rng)
  lam, perm = float(mixed.lam), np.asarray(mixed.perm)
  assert float(metrics['mixup_lambda']) == lam
  assert lam < 0.9  # Far enough from 1 for the alternatives to differ.

  @jax.jit
  def logits(unit, mixed_images):
    (student, _), _ = tiny.student.apply(
        {'params': tiny.state.params, 'batch_stats': tiny.state.batch_stats},
        mixed_images, train=True)
    return teachers.label(mixed_images)[0], teachers.label(unit)[0], student

  unit = tiny.batch['image'].astype(jnp.float32) / 255.0
  on_mixed, on_real, student = conftest.host(logits(unit, mixed.images))
  labels = np.asarray(tiny.batch['label'])
  mixed_labels = (lam * np.eye(conftest.NUM_CLASSES)[labels] + (1 - lam) *
                  np.eye(conftest.NUM_CLASSES)[labels[perm]])
  log_student = _log_softmax(student / temperature)

  def loss(distill_target):
    onehot = -np.mean(np.sum(mixed_labels * _log_softmax(student), -1))
    distill = temperature**2 * np.mean(
        -np.sum(distill_target * log_student, -1))
    return (1 - alpha) * onehot + alpha * distill

  softmax = lambda z: np.exp(_log_softmax(z / temperature))
  expected = loss(softmax(on_mixed))
  assert float(metrics['loss']) == pytest.approx(expected, rel=1e-5)
  outputs_mixed = loss(lam * softmax(on_real) +
                       (1 - lam) * softmax(on_real[perm]))
  labels_only = loss(mixed_labels)
  for alternative in (outputs_mixed, labels_only):
    # 100 times the tolerance the step's loss matches to (the targets'
    # effect on the loss is small: the random student is nearly uniform).
    assert abs(alternative - expected) > 1e-3 * expected


def test_mixup_on_tgt_mixes_the_real_images_of_tgt_methods(tiny):
  """`mixup.on_tgt`: every TGT method trains on mixed real images under its
  own name ('tgt_random+mixup'); kd and onehot are unchanged."""
  config = tiny.config.copy_and_resolve_references()
  assert methods.trained_name('tgt_random', config) == 'tgt_random'
  config.mixup.on_tgt = True
  names = {m: methods.trained_name(m, config) for m in methods.METHODS}
  assert names == {'onehot': 'onehot', 'kd': 'kd', 'kd_mixup': 'kd_mixup',
                   'tgt_random': 'tgt_random+mixup',
                   'tgt_gradient': 'tgt_gradient+mixup',
                   'tgt_prior': 'tgt_prior+mixup'}
  assert [m for m in methods.METHODS if methods.in_run(m, config).mixup] == [
      'kd_mixup', 'tgt_random', 'tgt_gradient', 'tgt_prior']
  adjustment = train_steps.LongTailAdjustment.create(
      'logit_adjusted', np.ones(10), np.ones(10))
  assert train_steps.result_key(names['tgt_random'], (), adjustment) == (
      'tgt_random+mixup+logit_adjusted')

  args = (tiny.state, tiny.teachers, tiny.batch, jax.random.PRNGKey(0))
  _, mixed = conftest.host(_step('tgt_random', tiny, on_tgt=True)(*args))
  _, plain = conftest.host(_step('tgt_random', tiny)(*args))
  assert float(mixed['mixup_lambda']) == float(
      _mixed_batch(tiny, args[-1]).lam)
  assert 'mixup_lambda' not in plain
  assert abs(float(mixed['real_loss']) - float(plain['real_loss'])) > 1e-3
  weight = tiny.config.distill.generated_weight
  assert mixed['loss'] == pytest.approx(
      mixed['real_loss'] + weight * mixed['generated_loss'], rel=1e-5)


@pytest.mark.parametrize('method', ['tgt_random', 'tgt_gradient', 'kd_mixup'])
def test_step_is_a_function_of_state_batch_and_rng(method, tiny):
  step = _step(method, tiny, **(KD_DISTILL if method in KD_METHODS else {}))
  rng = jax.random.PRNGKey(0)
  first = conftest.host(step(tiny.state, tiny.teachers, tiny.batch, rng))
  second = conftest.host(step(tiny.state, tiny.teachers, tiny.batch, rng))
  assert conftest.tree_allclose(first, second)  # Bit-identical.
  drawn = {'tgt_random': 'generated_loss', 'kd_mixup': 'mixup_lambda'}
  if method in drawn:
    # The key matters, and so does the step number (folded into it): a
    # resumed run draws at each step what the uninterrupted one drew.
    other = conftest.host(step(tiny.state, tiny.teachers, tiny.batch,
                               jax.random.PRNGKey(1)))
    assert not conftest.tree_allclose(first[1], other[1])
    later = conftest.host(step(tiny.state.replace(step=tiny.state.step + 1),
                               tiny.teachers, tiny.batch, rng))
    assert not np.allclose(first[1][drawn[method]],
                           later[1][drawn[method]])


def test_a_latent_cache_trains_as_encoding_every_step(tiny):
  """Cached E(x), gathered by example index, gives the step of per-step
  encoding; and the compiled step has no encoder pass (fewer FLOPs)."""
  step = _step('tgt_gradient', tiny)
  rng = jax.random.PRNGKey(0)
  unit = tiny.batch['image'].astype(jnp.float32) / 255.0
  latents = jax.jit(tiny.teachers.encode)(unit)
  cache = jnp.zeros((20, latents.shape[1])).at[tiny.batch['index'] + 5].set(
      latents)
  cached = tiny.teachers.replace(latents=cache)
  batch = dict(tiny.batch, index=tiny.batch['index'] + 5)
  encoded_state, encoded = step(tiny.state, tiny.teachers, batch, rng)
  cached_state, from_cache = step(tiny.state, cached, batch, rng)
  assert conftest.tree_allclose(from_cache, encoded, rtol=1e-4, atol=1e-6)
  assert conftest.tree_allclose(cached_state.params, encoded_state.params,
                                rtol=1e-4, atol=1e-5)

  def flops(teachers):
    analysis = step.lower(tiny.state, teachers, batch, rng).compile(
        ).cost_analysis()
    return float(analysis['flops'])
  assert flops(cached) < flops(tiny.teachers)


@pytest.mark.integration
def test_bfloat16_compute_keeps_float32_parameters_and_statistics(tiny):
  config = conftest.tiny_config()
  config.dtype = 'bfloat16'
  setup = conftest.make_tiny_setup(config)
  dtype = build.compute_dtype(setup.config)
  assert dtype == jnp.bfloat16
  student = build.classifier(setup.config.student, conftest.NUM_CLASSES,
                             dtype)
  teachers = setup.teachers.replace(
      labeler_network=build.classifier(setup.config.teacher_labeler,
                                       conftest.NUM_CLASSES, dtype),
      generator_model=generator_families.model(
          setup.config.teacher_generator, dtype))
  step = jax.jit(train_steps.make_train_step('tgt_random', student, setup.tx,
                                             setup.config))
  rng = jax.random.PRNGKey(0)
  jaxpr = str(jax.make_jaxpr(step)(setup.state, teachers, setup.batch, rng))
  assert 'bf16' in jaxpr  # The compute really is bfloat16.
  new_state, metrics = step(setup.state, teachers, setup.batch, rng)
  for leaf in jax.tree.leaves((new_state.params, new_state.batch_stats)):
    assert leaf.dtype == jnp.float32
  assert metrics['loss'].dtype == jnp.float32
  _, float32_metrics = _step('tgt_random', tiny)(
      setup.state, setup.teachers, setup.batch, rng)
  np.testing.assert_allclose(metrics['loss'], float32_metrics['loss'],
                             rtol=5e-2)


# ---------------------------------------------------------------------------
# Optimiser and schedules.
# ---------------------------------------------------------------------------


def _recipe(**fields):
  recipe = ml_collections.ConfigDict(dict(
      optimizer='sgd', momentum=0.9, schedule='cosine', warmup_epochs=2,
      peak_learning_rate=0.4, weight_decay=0.0, decay_epochs=(6, 8),
      decay_factor=0.1))
  recipe.update(fields)
  return recipe


@pytest.mark.parametrize('schedule, expected', [
    # 10 steps an epoch, 100 steps, 20 of linear warm-up to 0.4.
    ('cosine', {0: 0.0, 10: 0.2, 20: 0.4,
                60: 0.4 * 0.5 * (1 + np.cos(np.pi * 40 / 80)), 100: 0.0}),
    ('step', {0: 0.0, 10: 0.2, 20: 0.4, 59: 0.4, 60: 0.04, 79: 0.04,
              80: 0.004, 99: 0.004}),
    ('constant', {0: 0.0, 10: 0.2, 20: 0.4, 99: 0.4}),
])
def test_schedule_sets_the_learning_rate(schedule, expected):
  rate = train_steps.learning_rate_schedule(_recipe(schedule=schedule),
                                            steps_per_epoch=10.0,
                                            num_steps=100)
  for step, value in expected.items():
    assert float(rate(step)) == pytest.approx(value, abs=1e-6), (schedule,
                                                                 step)


def test_the_optimizer_follows_the_schedule_and_decays_kernels_only():
  params = {'kernel': jnp.ones((2, 2)), 'bias': jnp.ones((2,))}
  zero = jax.tree.map(jnp.zeros_like, params)
  tx = train_steps.create_optimizer(
      _recipe(schedule='constant', warmup_epochs=0, momentum=0.0,
              weight_decay=0.5), steps_per_epoch=1.0, num_steps=10)
  updates, _ = tx.update(zero, tx.init(params), params)
  # Nesterov SGD at 0.4 on the decay term 0.5 * kernel only.
  np.testing.assert_allclose(updates['kernel'], -0.4 * 0.5)
  np.testing.assert_allclose(updates['bias'], 0.0)
  with pytest.raises(ValueError, match="schedule='linear'"):
    train_steps.learning_rate_schedule(_recipe(schedule='linear'), 1.0, 10)
  with pytest.raises(ValueError, match="optimizer='lamb'"):
    train_steps.create_optimizer(_recipe(optimizer='lamb'), 1.0, 10)


# ---------------------------------------------------------------------------
# Long-tail losses.
# ---------------------------------------------------------------------------


def _softmax_ce(labels, logits):
  return -np.mean(_log_softmax(logits)[np.arange(len(labels)), labels])


def test_long_tail_losses_against_their_formulas():
  """The offsets training adds to the logits (LongTailAdjustment) give each
  paper's loss."""
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(6, 4)).astype(np.float32)
  labels = np.array([0, 1, 2, 3, 0, 3])
  counts = np.array([50.0, 20.0, 5.0, 1.0])
  prior = counts / counts.sum()
  # Menon et al. (tau = 1): -log(pi_y e^f_y / sum_j pi_j e^f_j); Ren et
  # al.: -log(n_y e^f_y / sum_j n_j e^f_j), the same value.
  for name, weights in (('logit_adjusted', prior),
                        ('balanced_softmax', counts)):
    weighted = weights * np.exp(logits.astype(np.float64))
    expected = -np.mean(np.log(weighted[np.arange(6), labels] /
                               weighted.sum(-1)))
    adjustment = train_steps.LongTailAdjustment.create(name, counts, counts)
    adjusted = logits + np.asarray(adjustment.onehot_offset, np.float32)
    assert float(losses.onehot_cross_entropy(labels, adjusted)) == (
        pytest.approx(expected, rel=1e-5))


# Both losses against their formulas: above; here, one in the step.
@pytest.mark.parametrize('name', [
    'logit_adjusted',
    pytest.param('balanced_softmax', marks=pytest.mark.integration)])
def test_long_tail_adjustment_in_the_step(name, tiny):
  """onehot: the one-hot CE of f + log prior of the student's split; kd:
  the distillation part adjusted by the labeler's training prior."""
  student_counts = np.array([64, 40, 25, 16, 10, 6, 4, 3, 2, 1])
  teacher_counts = np.array([90, 110, 100, 95, 105, 100, 98, 102, 97, 103])
  adjustment = train_steps.LongTailAdjustment.create(
      name, student_counts, teacher_counts)
  assert train_steps.result_key('kd', (), adjustment) == f'kd+{name}'
  mesh = sharding.create_mesh()
  args = (tiny.state, tiny.teachers, tiny.batch, jax.random.PRNGKey(0))

  @jax.jit
  def logits(images):
    unit = images.astype(jnp.float32) / 255.0
    (student, _), _ = tiny.student.apply(
        {'params': tiny.state.params, 'batch_stats': tiny.state.batch_stats},
        unit, train=True)
    return tiny.teachers.label(unit)[0], student

  teacher, student = conftest.host(logits(tiny.batch['image']))
  labels = np.asarray(tiny.batch['label'])
  normalise = (lambda c: c / c.sum()) if name == 'logit_adjusted' else (
      lambda c: c)
  log_student = np.log(normalise(student_counts.astype(np.float64)))
  log_teacher = np.log(normalise(teacher_counts.astype(np.float64)))

  onehot = train_steps.jit_train_step('onehot', tiny.student, tiny.tx,
                                      tiny.config, mesh, donate=False,
                                      long_tail=adjustment)
  _, metrics = onehot(*args)
  assert float(metrics['loss']) == pytest.approx(
      _softmax_ce(labels, student + log_student), rel=1e-4)
  # Accuracy is measured with the plain logits, as predictions are made.
  assert float(metrics['accuracy']) == pytest.approx(
      np.mean(student.argmax(-1) == labels))

  config = tiny.config.copy_and_resolve_references()
  config.distill.update(KD_DISTILL)
  kd = train_steps.jit_train_step('kd', tiny.student, tiny.tx, config, mesh,
                                  donate=False, long_tail=adjustment)
  _, metrics = kd(*args)
  alpha, tau = KD_DISTILL['alpha'], KD_DISTILL['temperature']
  teacher_probs = np.exp(_log_softmax(teacher / tau))
  distill = tau**2 * np.mean(-np.sum(
      teacher_probs * _log_softmax((student + log_teacher) / tau), -1))
  expected = ((1 - alpha) * _softmax_ce(labels, student + log_student) +
              alpha * distill)
  assert float(metrics['loss']) == pytest.approx(expected, rel=1e-4)
