"""Embedding distillation as a loss term: distances, g's isolation, steps."""

import jax

# Tiny models: compile time dominates, and these tests check values.
jax.config.update('jax_disable_most_optimizations', True)

import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top
import optax  # pylint: disable=g-import-not-at-top
import pytest  # pylint: disable=g-import-not-at-top

import conftest  # pylint: disable=g-import-not-at-top
from tgt_jax import embedding_distill  # pylint: disable=g-import-not-at-top
from tgt_jax import train_steps  # pylint: disable=g-import-not-at-top

EMBEDDING_MODES = ('raw', 'compressed', 'random_projection')


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
# The term in the step.
# ---------------------------------------------------------------------------


def _term(tiny, mode, **overrides):
  config = tiny.config.copy_and_resolve_references()
  config.embedding_distill.mode = mode
  config.embedding_distill.update(overrides)
  (term,) = train_steps.loss_terms(config, conftest.NUM_CLASSES)
  return config, term


_SETUPS = {}


def _setup(tiny, method, mode, **overrides):
  """(config, term, jitted step, initial state with the term's state), as
  `student_setup.create` builds them; one compiled step per key, shared
  (it does not donate, so its initial state is reused)."""
  key = (method, mode, tuple(sorted(overrides.items())))
  if key not in _SETUPS:
    config, _ = _term(tiny, mode, **overrides)
    _SETUPS[key] = config, conftest.student_setup(tiny, method, config)
  config, setup = _SETUPS[key]
  (term,) = setup.terms
  return config, term, setup.step, setup.state


def _unit(tiny):
  return tiny.batch['image'].astype(jnp.float32) / 255.0


def _labeler_outputs(tiny):
  return [jax.jit(tiny.teachers.label)(_unit(tiny))]


def test_no_gradient_of_the_student_loss_reaches_g(tiny):
  """The target t(e) is a stop-gradient: the student's objective, as a
  function of g and h, has an exactly zero gradient."""
  _, term = _term(tiny, 'compressed')
  state = term.init(jax.random.PRNGKey(0), tiny.teachers,
                    tiny.batch['image'].shape[1:])
  outputs = _labeler_outputs(tiny)
  features = jax.random.normal(jax.random.PRNGKey(1),
                               (len(tiny.batch['label']), 16))

  def student_objective(transformation):
    prepared = term.prepare({**state, 'transformation': transformation},
                            tiny.teachers, [_unit(tiny)], outputs,
                            tiny.batch['label'])
    return term.loss(prepared, features)

  grads = conftest.host(jax.grad(student_objective)(state['transformation']))
  assert 'transformation' in grads
  for leaf in jax.tree.leaves(grads):
    assert np.all(leaf == 0.0)
  # The distance does depend on the target, so only the stop-gradient keeps
  # the zeros above from being nonzero.
  prepared = term.prepare(state, tiny.teachers, [_unit(tiny)], outputs,
                          tiny.batch['label'])
  target_grad = jax.grad(embedding_distill.distance_correlation_loss,
                         argnums=1)(features, prepared['target'])
  assert np.any(np.asarray(target_grad) != 0.0)


def test_joint_step_moves_g_by_the_teacher_loss_alone(tiny):
  """g's update in the joint step is the Adam step of the teacher loss."""
  config, term, step, state = _setup(tiny, 'kd', 'compressed')
  before = state.terms[term.name]
  new_state, metrics = step(state, tiny.teachers, tiny.batch,
                            jax.random.PRNGKey(0))
  (logits, embedding), = _labeler_outputs(tiny)
  module = embedding_distill.TeacherTransformation(
      config.embedding_distill.compressed_dim, conftest.NUM_CLASSES)
  targets = jax.nn.one_hot(tiny.batch['label'], conftest.NUM_CLASSES)

  def teacher_loss(params):
    _, head_logits = module.apply({'params': params}, embedding)
    return -jnp.mean(jnp.sum(targets * jax.nn.log_softmax(head_logits), -1))

  loss, grads = jax.value_and_grad(teacher_loss)(before['transformation'])
  tx = optax.adam(config.embedding_distill.teacher_learning_rate)
  updates, _ = tx.update(grads, before['opt_state'],
                         before['transformation'])
  expected = optax.apply_updates(before['transformation'], updates)
  assert float(metrics['emb_compressed/teacher_loss']) == pytest.approx(
      float(loss), rel=1e-5)
  assert conftest.tree_allclose(
      conftest.host(new_state.terms[term.name]['transformation']),
      conftest.host(expected), atol=1e-6)
  del logits


@pytest.mark.integration
def test_teacher_loss_falls_when_g_trains(tiny):
  _, term, step, state = _setup(tiny, 'kd', 'compressed',
                                teacher_learning_rate=1e-2)
  teacher_losses = []
  for i in range(8):
    state, metrics = step(state, tiny.teachers, tiny.batch,
                          jax.random.PRNGKey(i))
    teacher_losses.append(float(metrics[f'{term.name}/teacher_loss']))
  assert teacher_losses[-1] < 0.9 * teacher_losses[0], teacher_losses


@pytest.mark.integration  # Tens of steps; one joint step is tested above.
def test_pretraining_lowers_the_teacher_loss_then_g_stays_frozen(tiny):
  config, term, step, state = _setup(tiny, 'tgt_random', 'compressed',
                                     pretrain_steps=6,
                                     teacher_learning_rate=1e-2)
  initial = state.terms[term.name]
  losses = []
  for steps in (0, 10):
    pretrained = embedding_distill.EmbeddingDistillation(
        **{**term.__dict__, 'pretrain_steps': steps}).pretrain(
            initial, 'tgt_random', tiny.teachers, lambda i: tiny.batch,
            config, jax.random.PRNGKey(0))
    _, metrics = step(state.replace(terms={term.name: pretrained}),
                      tiny.teachers, tiny.batch, jax.random.PRNGKey(0))
    losses.append(float(metrics[f'{term.name}/teacher_loss']))
  assert losses[1] < 0.9 * losses[0], losses
  # With pretrain_steps > 0 the student's step leaves g and h alone.
  new_state, _ = step(state.replace(terms={term.name: pretrained}),
                      tiny.teachers, tiny.batch, jax.random.PRNGKey(0))
  assert conftest.tree_allclose(conftest.host(new_state.terms[term.name]),
                                conftest.host(pretrained))


@pytest.mark.parametrize('method, mode', [
    ('kd', 'raw'), ('kd', 'compressed'), ('kd', 'random_projection'),
    pytest.param('tgt_gradient', 'compressed', marks=pytest.mark.integration),
    pytest.param('tgt_gradient', 'raw', marks=pytest.mark.integration),
    pytest.param('tgt_gradient', 'random_projection',
                 marks=pytest.mark.integration)])
def test_one_step_of_every_mode(method, mode, tiny):
  config, term, step, state = _setup(tiny, method, mode)
  teachers_before = conftest.host(tiny.teachers)
  new_state, metrics = conftest.host(step(state, tiny.teachers, tiny.batch,
                                          jax.random.PRNGKey(0)))
  weight = config.embedding_distill.weight
  distance = metrics[f'{term.name}/distance']
  assert 0.0 < distance <= 1.0 + 1e-6
  # The term is added to the method's own objective: (1 - w) task + w D.
  assert metrics['loss'] == pytest.approx(
      (1 - weight) * metrics['task_loss'] + weight * distance, rel=1e-5)
  if method == 'tgt_gradient':
    assert metrics['task_loss'] == pytest.approx(
        metrics['real_loss'] + config.distill.generated_weight *
        metrics['generated_loss'], rel=1e-5)
  for new, old in zip(jax.tree.leaves(new_state.params),
                      jax.tree.leaves(state.params)):
    assert not np.array_equal(new, old)
  assert conftest.tree_allclose(conftest.host(tiny.teachers), teachers_before)
  before, after = conftest.host(state.terms[term.name]), new_state.terms[
      term.name]
  if mode == 'raw':
    assert after == {}
  elif mode == 'random_projection':
    assert set(after['transformation']) == {'transformation'}
    assert conftest.tree_allclose(after, before)
  else:
    assert not conftest.tree_allclose(after['transformation'],
                                      before['transformation'])


@pytest.mark.integration
def test_cosine_gram_runs_one_step(tiny):
  _, term, step, state = _setup(tiny, 'kd', 'compressed',
                                distance='cosine_gram')
  _, metrics = step(state, tiny.teachers, tiny.batch, jax.random.PRNGKey(0))
  assert float(metrics[f'{term.name}/distance']) > 0.0


def test_the_encoders_unsupervised_embedding_guides_the_student(tiny):
  """source='encoder': g compresses E's pooled backbone features (learnt
  without labels) instead of the labeler's embedding."""
  config, term, step, state = _setup(tiny, 'kd', 'compressed',
                                     source='encoder')
  assert term.name == 'emb_encoder_compressed'
  unit = _unit(tiny)
  features = jax.jit(tiny.teachers.encoder_features)(unit)
  labeler_embedding = _labeler_outputs(tiny)[0][1]
  assert not np.allclose(features, labeler_embedding)
  g = state.terms[term.name]['transformation']['transformation']['kernel']
  assert g.shape == (features.shape[-1],
                     config.embedding_distill.compressed_dim)
  prepared = term.prepare(state.terms[term.name], tiny.teachers, [unit],
                          _labeler_outputs(tiny), tiny.batch['label'])
  np.testing.assert_allclose(prepared['embedding'], features, rtol=1e-6)
  _, metrics = step(state, tiny.teachers, tiny.batch, jax.random.PRNGKey(0))
  assert 0.0 < float(metrics[f'{term.name}/distance']) <= 1.0 + 1e-6


def test_keys_and_config_errors(tiny):
  _, term = _term(tiny, 'compressed')
  assert train_steps.result_key('kd', [term]) == 'kd+emb_compressed'
  assert train_steps.result_key('kd') == 'kd'
  config = tiny.config.copy_and_resolve_references()
  assert not train_steps.loss_terms(config, 10)  # mode 'none'.
  config.embedding_distill.mode = 'squeezed'
  assert 'squeezed' in embedding_distill.config_errors(config)[0]
  config.embedding_distill.mode = 'raw'
  config.embedding_distill.weight = 1.5
  config.embedding_distill.distance = 'l2'
  config.embedding_distill.source = 'student'
  errors = ' '.join(embedding_distill.config_errors(config))
  assert 'weight=1.5' in errors and "distance='l2'" in errors
  assert "source='student'" in errors
