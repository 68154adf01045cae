"""The training compute a stage records: XLA's FLOPs of its step, and the
teachers a student's count includes."""

import jax
import jax.numpy as jnp
import pytest

import conftest
from tgt_jax import compute
from tgt_jax import train


def _matmul(x, y):
  return x @ y


def test_step_flops_is_xlas_count_of_the_program():
  """A (4, 8) @ (8, 16) product: 2 * 4 * 8 * 16 FLOPs, from abstract
  arguments (no values needed)."""
  x, y = jnp.ones((4, 8)), jnp.ones((8, 16))
  assert compute.step_flops(_matmul, x, y) == 2 * 4 * 8 * 16
  step = compute.Step(jax.jit(_matmul), _matmul)
  assert step.flops(x, y) == 2 * 4 * 8 * 16


@pytest.mark.parametrize('analysis, expected', [
    ([{'flops': 7.0}], 7.0),  # Older JAX: one dict per program.
    ({'flops': 7.0}, 7.0),
    ({'bytes accessed': 3.0}, None),  # No count: None, not a guess.
    ([], None),
    (None, None),
])
def test_step_flops_reads_every_form_of_the_analysis(monkeypatch, analysis,
                                                     expected):
  monkeypatch.setattr(jax.stages.Lowered, 'cost_analysis',
                      lambda self: analysis)
  assert compute.step_flops(_matmul, jnp.ones((2, 2)),
                            jnp.ones((2, 2))) == expected


def test_a_students_count_adds_the_teachers_it_depends_on():
  config = conftest.tiny_config()
  assert train.teachers_used('onehot', config) == ()
  assert train.teachers_used('kd', config) == ('teacher_labeler',)
  assert train.teachers_used('kd_mixup', config) == ('teacher_labeler',)
  for method in ('tgt_random', 'tgt_gradient', 'tgt_prior'):
    assert train.teachers_used(method, config) == ('teacher_labeler',
                                                   'teacher_generator')
  config.embedding_distill.mode = 'compressed'
  config.embedding_distill.source = 'encoder'
  assert train.teachers_used('onehot', config) == ('teacher_generator',)
  config.embedding_distill.source = 'labeler'
  assert train.teachers_used('onehot', config) == ('teacher_labeler',)

  student = {'flops_per_step': 2.0, 'steps': 5, 'train_flops': 10.0,
             'wall_s': 1.0}
  labeler = {'train_flops': 100.0}
  generator = {'train_flops': 1000.0}
  assert compute.with_teachers(student, [labeler, generator]) == {
      **student, 'teacher_flops': 1100.0, 'total_flops': 1110.0}
  assert compute.with_teachers(student, [])['total_flops'] == 10.0
  # One unknown count makes the sum unknown: a partial sum undercounts.
  unknown = compute.with_teachers(student, [labeler, {'train_flops': None}])
  assert unknown['teacher_flops'] is None and unknown['total_flops'] is None
