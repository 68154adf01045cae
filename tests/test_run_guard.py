"""A run with a different config never overwrites results or checkpoints."""

import json
import os

import pytest

import conftest
from conftest import tiny_config
from tgt_jax import run_guard
from tgt_jax import train


def test_workdir_refuses_a_different_config_and_changes_nothing(tmp_path):
  config = tiny_config()
  run_guard.claim_workdir(str(tmp_path), config, overwrite=False)
  (tmp_path / 'results.json').write_text('{"kd": 1}')
  before = conftest.snapshot(tmp_path)

  changed = tiny_config()
  changed.exploration.sigma = 2.0
  with pytest.raises(run_guard.ConfigMismatchError) as error:
    run_guard.claim_workdir(str(tmp_path), changed, overwrite=False)
  message = str(error.value)
  assert 'exploration.sigma: 0.5 -> 2.0' in message
  assert '--overwrite' in message and '--workdir' in message
  assert conftest.snapshot(tmp_path) == before


def test_fields_that_do_not_change_results_are_not_a_new_config(tmp_path):
  run_guard.claim_workdir(str(tmp_path), tiny_config(), overwrite=False)
  observed = tiny_config()
  observed.methods = ('kd',)
  observed.log_every_steps = 7
  observed.checkpoint_every_steps = 3
  run_guard.claim_workdir(str(tmp_path), observed, overwrite=False)


def test_moving_data_or_teachers_or_evaluating_elsewhere_is_the_same_run(
    tmp_path):
  """The fingerprint is what a run computes, not where its files live."""
  config = tiny_config()
  config.teacher_labeler.checkpoint = '/teachers/a/teacher_labeler'
  run_guard.claim_workdir(str(tmp_path), config, overwrite=False)
  (tmp_path / 'results.json').write_text('{"kd": 1}')  # It trained.
  stage = str(tmp_path / 'teacher_labeler')
  run_guard.claim_stage(
      stage, run_guard.teacher_fingerprint(config, 'teacher_labeler'),
      overwrite=False)
  moved = tiny_config()
  moved.dataset.root = '/elsewhere/images'
  moved.dataset.data_dir = '/elsewhere/tfds'
  moved.dataset.cache_dir = '/elsewhere/cache'
  moved.dataset.eval_split = 'val'
  moved.teacher_labeler.checkpoint = '/teachers/b/teacher_labeler'
  moved.teacher_labeler.init_checkpoint = '/keras/resnet50'
  moved.teacher_generator.pretrained_checkpoint = '/bigbigan/here'
  moved.eval_every_steps = 7
  run_guard.claim_workdir(str(tmp_path), moved, overwrite=False)
  run_guard.claim_stage(
      stage, run_guard.teacher_fingerprint(moved, 'teacher_labeler'),
      overwrite=False, reused=True)
  # config.json now holds the latest run's config, paths included.
  recorded = run_guard.read_run_config(str(tmp_path))
  assert recorded.dataset.data_dir == '/elsewhere/tfds'
  assert recorded.dataset.eval_split == 'val'
  changed = tiny_config()
  changed.dataset.val_per_class = 3  # What is trained on changes.
  with pytest.raises(run_guard.ConfigMismatchError,
                     match='dataset.val_per_class'):
    run_guard.claim_workdir(str(tmp_path), changed, overwrite=False)


def test_overwrite_moves_old_results_aside(tmp_path):
  run_guard.claim_workdir(str(tmp_path), tiny_config(), overwrite=False)
  (tmp_path / 'results.json').write_text('{"kd": 1}')
  changed = tiny_config()
  changed.seed = 5
  run_guard.claim_workdir(str(tmp_path), changed, overwrite=True)
  assert not (tmp_path / 'results.json').exists()
  moved = [n for n in os.listdir(tmp_path) if n.startswith('results.replaced-')]
  assert len(moved) == 1
  assert (tmp_path / moved[0]).read_text() == '{"kd": 1}'
  recorded = json.loads((tmp_path / 'config.json').read_text())
  assert recorded['seed'] == 5


def test_reused_teacher_ignores_seed_and_is_never_moved(tmp_path):
  stage = str(tmp_path / 'teacher_labeler')
  config = tiny_config()
  fingerprint = run_guard.teacher_fingerprint(config, 'teacher_labeler')
  run_guard.claim_stage(stage, fingerprint, overwrite=False)
  before = conftest.snapshot(tmp_path)

  other_seed = tiny_config()
  other_seed.seed = 3
  other_seed.teacher_labeler.checkpoint = stage
  # A student of another seed may reuse the teacher, and the student's own
  # settings are not part of the teacher's fingerprint.
  other_seed.exploration.sigma = 1.5
  run_guard.claim_stage(
      stage, run_guard.teacher_fingerprint(other_seed, 'teacher_labeler'),
      overwrite=False, reused=True)

  wider = tiny_config()
  wider.teacher_labeler.width_multiplier = 0.5
  for overwrite in (False, True):
    with pytest.raises(run_guard.ConfigMismatchError,
                       match='teacher_labeler.width_multiplier'):
      run_guard.claim_stage(
          stage, run_guard.teacher_fingerprint(wider, 'teacher_labeler'),
          overwrite=overwrite, reused=True)
  assert conftest.snapshot(tmp_path) == before


@pytest.mark.integration
def test_pipeline_keeps_results_of_other_methods_and_refuses_changes(tmp_path):
  """Adding a method to a finished run keeps the earlier results; a changed
  config stops before compute and leaves every file as it was."""
  workdir = str(tmp_path)
  config = tiny_config()
  config.teacher_labeler.num_epochs = 0.1  # 18 steps: the files matter here.
  config.num_epochs = 0.5
  config.methods = ('onehot',)
  train.train_and_evaluate(config, workdir)

  config.methods = ('kd',)
  results = train.train_and_evaluate(config, workdir)
  assert {'teacher_labeler', 'onehot', 'kd'} <= set(results)
  with open(os.path.join(workdir, 'results.json')) as f:
    assert set(json.load(f)) == set(results)

  before = conftest.snapshot(workdir)
  changed = config.copy_and_resolve_references()
  changed.distill.temperature = 4.0
  with pytest.raises(run_guard.ConfigMismatchError,
                     match='distill.temperature: 1.0 -> 4.0'):
    train.train_and_evaluate(changed, workdir)
  assert conftest.snapshot(workdir) == before

  rerun = train.train_and_evaluate(changed, workdir, overwrite=True)
  assert 'onehot' not in rerun  # Its result came from the old config.
  assert any(n.startswith('results.replaced-') for n in os.listdir(workdir))
  assert any(n.startswith('kd.replaced-')
             for n in os.listdir(os.path.join(workdir, 'students')))
