"""Tests of embedding distillation: distances, g's isolation, steps, wiring."""

import functools
import json
import os
import shutil

import jax

# Tiny models: compile time dominates, and these tests check values.
jax.config.update('jax_disable_most_optimizations', True)

import numpy as np  # pylint: disable=g-import-not-at-top
import optax  # pylint: disable=g-import-not-at-top
import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
import pytest  # pylint: disable=g-import-not-at-top

import conftest  # pylint: disable=g-import-not-at-top
from tgt_jax import embedding_distill  # pylint: disable=g-import-not-at-top
from tgt_jax import image_ops  # pylint: disable=g-import-not-at-top
from tgt_jax import losses  # pylint: disable=g-import-not-at-top
from tgt_jax import train  # pylint: disable=g-import-not-at-top
from tgt_jax import train_steps  # pylint: disable=g-import-not-at-top
from tgt_jax.experiments import embedding_ablation  # pylint: disable=g-import-not-at-top

EMBEDDING_MODES = ('raw', 'compressed', 'random_projection')


def _host(tree):
  return jax.tree.map(np.asarray, jax.device_get(tree))


def _orthonormal_rows(rng, rows, columns):
  """A [rows, columns] matrix with orthonormal rows (an isometry)."""
  q, _ = np.linalg.qr(rng.normal(size=(columns, columns)))
  return q[:rows]


# ---------------------------------------------------------------------------
# The relational distances.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize('target_dim', [16, 24])
def test_distance_correlation_is_zero_for_rotated_scaled_features(target_dim):
  rng = np.random.default_rng(0)
  x = rng.normal(size=(64, 16)).astype(np.float32)
  for scale, shift in ((3.0, 5.0), (0.5, 0.0)):
    # An isometry into target_dim dimensions, scaled and translated: the
    # same batch geometry, even with another number of dimensions.
    y = scale * x @ _orthonormal_rows(rng, 16, target_dim) + shift
    loss = float(embedding_distill.distance_correlation_loss(x, y))
    assert abs(loss) < 1e-5, (scale, shift, loss)


def test_distance_correlation_is_near_one_for_independent_features():
  rng = np.random.default_rng(0)
  values = []
  for batch in (64, 512):
    x = rng.normal(size=(batch, 8)).astype(np.float32)
    y = rng.normal(size=(batch, 12)).astype(np.float32)
    values.append(float(embedding_distill.distance_correlation_loss(x, y)))
  # The sample dCor^2 of independent data is biased upwards by ~1/N, so the
  # loss approaches 1 as the batch grows.
  assert 0.3 < values[0] < values[1] <= 1.0
  assert values[1] > 0.85
  # And a dependent but non-isometric relation sits in between.
  x = rng.normal(size=(512, 8)).astype(np.float32)
  partial = float(embedding_distill.distance_correlation_loss(
      x, np.tanh(x[:, :4]) + 0.5 * rng.normal(size=(512, 4))))
  assert 0.0 < partial < values[1]


def test_cosine_gram_loss_is_zero_for_identical_and_rotated_features():
  rng = np.random.default_rng(1)
  x = rng.normal(size=(32, 16)).astype(np.float32)
  assert float(embedding_distill.cosine_gram_loss(x, x)) < 1e-6
  rotated = 0.3 * x @ _orthonormal_rows(rng, 16, 20)
  assert float(embedding_distill.cosine_gram_loss(x, rotated)) < 1e-6
  independent = rng.normal(size=(32, 16)).astype(np.float32)
  assert float(embedding_distill.cosine_gram_loss(x, independent)) > 0.1


def test_projected_mse_loss():
  x = np.arange(6, dtype=np.float32).reshape(2, 3)
  assert float(embedding_distill.projected_mse_loss(x, x)) == 0.0
  assert float(embedding_distill.projected_mse_loss(x, x + 2.0)) == 4.0


def test_distances_have_finite_gradients_on_duplicate_rows():
  """Identical images in a batch give a zero distance: gradients stay finite."""
  rng = np.random.default_rng(2)
  x = rng.normal(size=(8, 5)).astype(np.float32)
  x[3] = x[2]
  y = rng.normal(size=(8, 7)).astype(np.float32)
  for name in ('distance_correlation', 'cosine_gram'):
    grad = jax.grad(embedding_distill.DISTANCE_FUNCTIONS[name])(x, y)
    assert np.all(np.isfinite(grad)), name


# ---------------------------------------------------------------------------
# The teacher transformation g: isolated from the student, trained by h.
# ---------------------------------------------------------------------------


def _config(tiny, mode, **overrides):
  config = tiny.config.copy_and_resolve_references()
  config.embedding_distill.mode = mode
  for name, value in overrides.items():
    config.embedding_distill[name] = value
  return config


def _aux(tiny, config):
  return embedding_distill.create_state(
      tiny.models, config, tiny.teachers, tiny.batch['image'].shape[1:],
      jax.random.PRNGKey(0))


def _task_loss_fn(tiny, images):
  """A kd-like task loss in the steps' contract, for the objective tests."""
  def loss_fn(params):
    # pylint: disable-next=protected-access
    logits, embedding, batch_stats = train_steps._student_outputs(
        tiny.models, params, tiny.state.batch_stats, images, train=True)
    return (losses.onehot_cross_entropy(tiny.batch['label'], logits),
            ({}, batch_stats, embedding))
  return loss_fn


@pytest.mark.parametrize('distance', ['distance_correlation', 'projected_mse'])
def test_no_gradient_of_the_student_loss_reaches_g(distance, tiny_teachers):
  tiny = tiny_teachers
  config = _config(tiny, 'compressed', distance=distance)
  aux = _aux(tiny, config)
  images = image_ops.uint8_to_unit(tiny.batch['image'])
  _, teacher_embedding = tiny.models.labeler_outputs(tiny.teachers, images)
  objective = functools.partial(
      embedding_distill.student_objective,
      loss_fn=_task_loss_fn(tiny, images), teacher_embedding=teacher_embedding,
      mode='compressed', distance=distance, weight=0.6)
  grads, _ = jax.jit(jax.grad(objective, argnums=(0, 1, 2), has_aux=True))(
      tiny.state.params, aux.projection, aux.transformation)
  student_grads, projection_grads, g_grads = _host(grads)

  # g (and h) are in the gradient tree, and every entry there is exactly 0.
  assert jax.tree.structure(g_grads) == jax.tree.structure(aux.transformation)
  assert 'transformation' in g_grads
  for leaf in jax.tree.leaves(g_grads):
    assert np.all(leaf == 0.0)
  # The student (and its projection) do get gradient from the same loss...
  assert any(np.any(leaf != 0.0) for leaf in jax.tree.leaves(student_grads))
  if distance == 'projected_mse':
    assert all(np.any(leaf != 0.0)
               for leaf in jax.tree.leaves(projection_grads))
  # ...and the distance does depend on the target, so only the stop-gradient
  # keeps the zeros above from being nonzero.
  target = embedding_distill.embedding_target('compressed', aux.transformation,
                                              teacher_embedding)
  features = jax.random.normal(jax.random.PRNGKey(0), target.shape)
  target_grad = jax.grad(embedding_distill.DISTANCE_FUNCTIONS[distance],
                         argnums=1)(features, target)
  assert np.any(np.asarray(target_grad) != 0.0)


_STEPS = {}


def _jitted_step(method, tiny, mode, **overrides):
  """One compiled step per (method, mode, overrides), shared across tests."""
  key = (method, mode, tuple(sorted(overrides.items())))
  if key not in _STEPS:
    config = _config(tiny, mode, **overrides)
    _STEPS[key] = (config, jax.jit(embedding_distill.make_train_step(
        method, tiny.models, config)))
  return _STEPS[key]


def test_joint_step_moves_g_by_the_teacher_loss_alone(tiny_teachers):
  """g's update in the joint step is the Adam step of the teacher loss."""
  tiny = tiny_teachers
  config, step = _jitted_step('kd', tiny, 'compressed')
  aux = _aux(tiny, config)
  state, metrics = step(tiny.state.replace(aux=aux), tiny.teachers, tiny.batch,
                        jax.random.PRNGKey(0))

  @jax.jit
  def teacher_update(aux):
    images = image_ops.uint8_to_unit(tiny.batch['image'])
    logits, embedding = tiny.models.labeler_outputs(tiny.teachers, images)
    module = embedding_distill.TeacherTransformation(
        config.embedding_distill.compressed_dim, logits.shape[-1])
    (loss, _), grads = jax.value_and_grad(
        embedding_distill.teacher_loss, has_aux=True)(
            aux.transformation, module, embedding,
            embedding_distill.teacher_targets(tiny.batch['label'], [logits]))
    tx = optax.adam(config.embedding_distill.teacher_learning_rate)
    updates, _ = tx.update(grads, aux.transformation_opt_state,
                           aux.transformation)
    return loss, optax.apply_updates(aux.transformation, updates)

  expected_loss, expected_g = teacher_update(aux)
  assert float(metrics['teacher_loss']) == pytest.approx(
      float(expected_loss), rel=1e-5)
  assert conftest.tree_allclose(_host(state.aux.transformation),
                                _host(expected_g), atol=1e-6)


def test_teacher_loss_falls_when_g_trains(tiny_teachers):
  tiny = tiny_teachers
  config, step = _jitted_step('kd', tiny, 'compressed',
                              teacher_learning_rate=1e-2)
  state = tiny.state.replace(aux=_aux(tiny, config))
  teacher_losses = []
  for i in range(8):
    state, metrics = step(state, tiny.teachers, tiny.batch,
                          jax.random.PRNGKey(i))
    teacher_losses.append(float(metrics['teacher_loss']))
  assert teacher_losses[-1] < 0.9 * teacher_losses[0], teacher_losses
  assert all(np.isfinite(teacher_losses))


def test_pretraining_lowers_the_teacher_loss_then_g_stays_frozen(
    tiny_teachers):
  tiny = tiny_teachers
  config = _config(tiny, 'compressed', pretrain_steps=8,
                   teacher_learning_rate=1e-2)
  pretrain = jax.jit(embedding_distill.make_pretrain_step('kd', tiny.models,
                                                          config))
  aux = _aux(tiny, config)
  pretrain_losses = []
  for i in range(8):
    aux, metrics = pretrain(aux, tiny.teachers, tiny.batch,
                            jax.random.PRNGKey(i))
    pretrain_losses.append(float(metrics['teacher_loss']))
  assert pretrain_losses[-1] < 0.9 * pretrain_losses[0], pretrain_losses

  # With pretrain_steps > 0 the student's step leaves g and h alone.
  _, step = _jitted_step('kd', tiny, 'compressed', pretrain_steps=8,
                         teacher_learning_rate=1e-2)
  state, metrics = step(tiny.state.replace(aux=aux), tiny.teachers,
                        tiny.batch, jax.random.PRNGKey(0))
  assert conftest.tree_allclose(_host(state.aux), _host(aux))
  assert float(metrics['teacher_loss']) < pretrain_losses[0]


def test_initial_state_pretrains_on_generated_images_for_tgt(tiny_teachers):
  """train.py's entry point: init, then pre-training that sees G(z~) too."""
  tiny = tiny_teachers
  config = _config(tiny, 'compressed', pretrain_steps=2)
  shape = tiny.batch['image'].shape[1:]
  initial = _aux(tiny, config)
  aux = embedding_distill.initial_state(
      'tgt_gradient', tiny.models, config, tiny.teachers, shape,
      lambda step: tiny.batch, jax.random.PRNGKey(0))
  assert jax.tree.structure(aux) == jax.tree.structure(initial)
  assert not conftest.tree_allclose(_host(aux.transformation),
                                    _host(initial.transformation))
  # Joint mode (pretrain_steps = 0) starts from the initialisation.
  joint = embedding_distill.initial_state(
      'tgt_gradient', tiny.models, _config(tiny, 'compressed'),
      tiny.teachers, shape, lambda step: tiny.batch, jax.random.PRNGKey(0))
  assert jax.tree.structure(joint) == jax.tree.structure(initial)


# ---------------------------------------------------------------------------
# One step of every mode, with kd and tgt_gradient.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize('method', ['kd', 'tgt_gradient'])
@pytest.mark.parametrize('mode', EMBEDDING_MODES)
def test_one_step_of_every_mode(method, mode, tiny_teachers):
  tiny = tiny_teachers
  config, step = _jitted_step(method, tiny, mode)
  aux = _aux(tiny, config)
  teachers_before = _host(tiny.teachers)
  state, metrics = step(tiny.state.replace(aux=aux), tiny.teachers, tiny.batch,
                        jax.random.PRNGKey(0))
  state, metrics = _host(state), _host(metrics)

  weight = config.embedding_distill.weight
  assert np.isfinite(metrics['loss'])
  assert 0.0 < metrics['embedding_distance'] <= 1.0 + 1e-6
  assert metrics['loss'] == pytest.approx(
      (1 - weight) * metrics['task_loss'] +
      weight * metrics['embedding_distance'], rel=1e-5)
  if method == 'tgt_gradient':
    # The wrapped method's own terms are still reported and add up.
    assert metrics['task_loss'] == pytest.approx(
        metrics['real_loss'] + config.distill.generated_weight *
        metrics['generated_loss'], rel=1e-5)
  assert int(state.step) == 1
  for new, old in zip(jax.tree.leaves(state.params),
                      jax.tree.leaves(tiny.state.params)):
    assert not np.array_equal(new, old)
  assert conftest.tree_allclose(_host(tiny.teachers), teachers_before)

  if mode == 'raw':
    assert state.aux.transformation is None
  elif mode == 'random_projection':
    assert set(state.aux.transformation) == {'transformation'}
    assert conftest.tree_allclose(state.aux.transformation,
                                  _host(aux.transformation))
  else:
    assert np.isfinite(metrics['teacher_loss'])
    assert not conftest.tree_allclose(state.aux.transformation,
                                      _host(aux.transformation))


@pytest.mark.parametrize('distance', ['cosine_gram', 'projected_mse'])
def test_other_distances_run_one_step(distance, tiny_teachers):
  tiny = tiny_teachers
  config, step = _jitted_step('kd', tiny, 'compressed', distance=distance)
  aux = _aux(tiny, config)
  state, metrics = step(tiny.state.replace(aux=aux), tiny.teachers,
                        tiny.batch, jax.random.PRNGKey(0))
  assert np.isfinite(float(metrics['loss']))
  assert float(metrics['embedding_distance']) > 0.0
  if distance == 'projected_mse':
    # The student's projection trains with the student.
    assert not conftest.tree_allclose(_host(state.aux.projection),
                                      _host(aux.projection))
  else:
    assert state.aux.projection is None


# ---------------------------------------------------------------------------
# Config, naming and the pipeline.
# ---------------------------------------------------------------------------


def test_result_keys():
  assert embedding_distill.result_key('kd', 'none') == 'kd'
  assert (embedding_distill.result_key('tgt_gradient', 'compressed') ==
          'tgt_gradient+emb_compressed')
  assert embedding_distill.result_key('onehot', 'raw') == 'onehot+emb_raw'


def test_validate_config_rejects_unknown_mode_and_distance():
  config = conftest.tiny_config()
  assert embedding_distill.mode_of(config) == 'none'  # The default.
  config.embedding_distill.mode = 'squeezed'
  with pytest.raises(ValueError, match='random_projection'):
    embedding_distill.validate_config(config)
  config.embedding_distill.mode = 'raw'
  config.embedding_distill.distance = 'l1'
  with pytest.raises(ValueError, match='distance_correlation'):
    embedding_distill.validate_config(config)
  config.embedding_distill.distance = 'cosine_gram'
  config.embedding_distill.weight = 1.5
  with pytest.raises(ValueError, match=r'\[0, 1\]'):
    embedding_distill.validate_config(config)
  # A config without the section (the paper-scale ones) means 'none'.
  del config['embedding_distill']
  assert embedding_distill.mode_of(config) == 'none'
  embedding_distill.validate_config(config)


def test_pipeline_reports_the_keyed_student_and_resumes_exactly(tmp_path):
  """kd+emb_compressed through train.py; g/h are checkpointed with it."""
  config = conftest.tiny_config()
  config.methods = ('kd',)
  config.embedding_distill.mode = 'compressed'
  config.checkpoint_every_steps = 20
  workdir = str(tmp_path)
  results = train.train_and_evaluate(config, workdir)
  with open(os.path.join(workdir, 'results.json')) as f:
    written = json.load(f)
  assert set(written) == {'teacher_labeler', 'kd+emb_compressed'}
  assert written['kd+emb_compressed'] == results['kd+emb_compressed']

  # Drop the newest student checkpoint: the rerun restores g/h with the
  # student from the one before and ends where the first run ended.
  student_dir = os.path.join(workdir, 'students', 'kd+emb_compressed')
  steps = sorted(int(s) for s in os.listdir(student_dir) if s.isdigit())
  assert len(steps) >= 2, steps
  final = os.path.join(student_dir, str(steps[-1]))
  first_final = _saved_tree(final)
  shutil.rmtree(final)
  rerun = train.train_and_evaluate(config, workdir)
  assert rerun['kd+emb_compressed'] == results['kd+emb_compressed']
  rerun_final = _saved_tree(final)
  # g and h are saved with the student, and the resumed run ends on exactly
  # the same student and g/h.
  assert set(first_final['aux']['transformation']) == {'transformation',
                                                       'head'}
  assert conftest.tree_allclose(rerun_final, first_final)


def _saved_tree(checkpoint_dir):
  """A saved TrainState as a nested dict of NumPy arrays."""
  return ocp.StandardCheckpointer().restore(
      os.path.join(os.path.abspath(checkpoint_dir), 'default'))


# ---------------------------------------------------------------------------
# The ablation's aggregation.
# ---------------------------------------------------------------------------


def _fake_report(overall):
  return {'overall': overall, 'many': overall + 0.1, 'medium': overall,
          'few': overall - 0.1, 'per_class': [overall] * 10}


def test_ablation_aggregates_mean_and_std_over_seeds():
  per_seed = {
      seed: {'teacher_labeler': _fake_report(0.9),
             'kd': _fake_report(0.5 + 0.1 * seed),
             'kd+emb_compressed': _fake_report(0.6 + 0.2 * seed)}
      for seed in (0, 1)}
  summary = embedding_ablation.aggregate(per_seed)
  assert list(summary) == ['teacher_labeler', 'kd', 'kd+emb_compressed']
  kd = summary['kd']['overall']
  assert kd['mean'] == pytest.approx(0.55)
  assert kd['std'] == pytest.approx(0.05)  # ddof 0, as multi_seed reports.
  assert kd['values'] == pytest.approx([0.5, 0.6])
  assert summary['kd+emb_compressed']['few']['mean'] == pytest.approx(0.6)

  info = {'command': 'CMD --flag', 'date': 'DATE', 'machine': 'MACHINE'}
  table = embedding_ablation.ablation_table(summary, [0, 1], info)
  assert 'CMD --flag' in table and 'DATE' in table and 'MACHINE' in table
  assert '| kd+emb_compressed | kd | compressed | 70.0 ± 10.0 |' in table
  assert '| kd | kd | none | 55.0 ± 5.0 |' in table


def test_ablation_rejects_runs_with_missing_models():
  per_seed = {0: {'kd': _fake_report(0.5)}, 1: {}}
  with pytest.raises(ValueError, match='seed 1'):
    embedding_ablation.aggregate(per_seed)
