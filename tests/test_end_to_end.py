"""The whole pipeline at configs/digits_lt.py:quick, and its resume."""

import json
import os
import shutil

import pytest

from configs import digits_lt
from tgt_jax import train

METHODS = ('onehot', 'kd', 'tgt_random', 'tgt_gradient')


@pytest.fixture(scope='module')
def quick_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('digits_lt_quick'))
  config = digits_lt.get_config('quick')
  results = train.train_and_evaluate(config, workdir)
  return config, workdir, results


def test_results_json_has_every_method_and_teacher(quick_run):
  _, workdir, results = quick_run
  with open(os.path.join(workdir, 'results.json')) as f:
    written = json.load(f)
  assert written == json.loads(json.dumps(results))
  for name in (*METHODS, 'teacher_labeler'):
    report = written[name]
    assert set(report) == {'overall', 'many', 'medium', 'few', 'per_class'}
    assert len(report['per_class']) == 10
    for key in ('overall', 'many', 'medium', 'few'):
      assert 0.0 <= report[key] <= 1.0
    # Balanced test split: overall accuracy is the mean per-class accuracy.
    assert report['overall'] == pytest.approx(
        sum(report['per_class']) / 10)
  assert 0.0 <= written['reconstruction_agreement'] <= 1.0
  # Even the quick labeler, trained on the full split, reads digits well.
  assert written['teacher_labeler']['overall'] > 0.5


def test_outputs_in_workdir(quick_run):
  _, workdir, _ = quick_run
  with open(os.path.join(workdir, 'results.md')) as f:
    table = f.read()
  for name in (*METHODS, 'teacher_labeler'):
    assert f'| {name} |' in table
  assert os.path.getsize(os.path.join(workdir, 'samples.png')) > 1000
  assert any(name.startswith('events.out.tfevents')
             for name in os.listdir(workdir))
  for stage in ('teacher_labeler', 'teacher_generator',
                *(f'students/{m}' for m in METHODS)):
    assert os.listdir(os.path.join(workdir, stage)), stage


def test_rerun_resumes_interrupted_stage_exactly(quick_run):
  """Drop the last checkpoint of one student: the rerun trains only the
  missing steps and ends where the uninterrupted run ended."""
  config, workdir, results = quick_run
  student_dir = os.path.join(workdir, 'students', 'tgt_gradient')
  steps = sorted(int(s) for s in os.listdir(student_dir) if s.isdigit())
  assert len(steps) >= 2, steps
  shutil.rmtree(os.path.join(student_dir, str(steps[-1])))
  rerun = train.train_and_evaluate(config, workdir)
  assert rerun['tgt_gradient'] == results['tgt_gradient']
  # Finished stages are reused as they are.
  assert rerun['teacher_labeler'] == results['teacher_labeler']
  assert rerun['onehot'] == results['onehot']
