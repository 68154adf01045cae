"""The experiment commands' logic: runs, shared teachers, read-offs, verdicts.

Training itself is faked here (a `train_fn` that records its calls); the
pipeline it stands for is tested in test_end_to_end.py.
"""

import json
import os

import numpy as np
import pytest

from tgt_jax.data import dataset as dataset_lib
from tgt_jax.experiments import exploration_sweep
from tgt_jax.experiments import grid
from tgt_jax.experiments import long_tail_table
from tgt_jax.experiments import results_doc
from tgt_jax.experiments import sample_size


def _demo():
  from test_config_lib import load_config  # pylint: disable=g-import-not-at-top
  return load_config('digits_lt')


def _report(overall, few=None):
  few = overall if few is None else few
  return {'overall': overall, 'many': overall, 'medium': overall, 'few': few,
          'per_class': [overall] * 10}


def test_run_variants_shares_teachers_and_trains_equal_configs_once(tmp_path):
  calls = []

  def fake_train(config, workdir):
    calls.append((workdir, config.seed, config.teacher_labeler.checkpoint,
                  config.exploration.sigma))
    for stage in grid.TEACHER_STAGES:  # As a real run leaves them.
      os.makedirs(os.path.join(workdir, stage), exist_ok=True)
    return {'kd': _report(0.5 + config.seed / 10)}

  base = _demo()
  other = _demo()
  other.exploration.sigma = 1.0
  same_as_base = _demo()
  results = grid.run_variants(
      {'a': base, 'b': other, 'c': same_as_base}, [0, 1], str(tmp_path),
      train_fn=fake_train)

  first = os.path.join(str(tmp_path), 'a', 'seed_0')
  assert [c[:2] for c in calls] == [
      (first, 0), (os.path.join(str(tmp_path), 'a', 'seed_1'), 1),
      (os.path.join(str(tmp_path), 'b', 'seed_0'), 0),
      (os.path.join(str(tmp_path), 'b', 'seed_1'), 1)]
  # The first run trains the teachers; every later one restores them.
  assert calls[0][2] == ''
  assert all(c[2] == os.path.join(first, 'teacher_labeler')
             for c in calls[1:])
  assert calls[2][3] == 1.0
  assert results['c'] is results['a']  # Equal configs: one set of runs.
  assert results['a'][1]['kd']['overall'] == pytest.approx(0.6)


def test_run_variants_takes_teachers_from_teacher_dir(tmp_path):
  teacher_dir = tmp_path / 'demo'
  (teacher_dir / 'teacher_labeler').mkdir(parents=True)
  seen = []

  def fake_train(config, workdir):
    seen.append((config.teacher_labeler.checkpoint,
                 config.teacher_generator.checkpoint))
    return {}

  grid.run_variants({'a': _demo()}, [0, 1],
                    str(tmp_path / 'out'), str(teacher_dir), fake_train)
  # Only the teacher the directory has is restored.
  assert seen == [(str(teacher_dir / 'teacher_labeler'), '')] * 2


def test_effective_multiplier_reads_the_baseline_curve_in_log_n():
  sizes = [10, 100, 1000]
  baseline = [0.5, 0.7, 0.9]
  n_eq, relation = sample_size.effective_multiplier(sizes, baseline, 0.6)
  assert relation == '=' and n_eq == pytest.approx(np.sqrt(10 * 100))
  assert sample_size.effective_multiplier(sizes, baseline, 0.7) == (
      pytest.approx(100), '=')
  assert sample_size.effective_multiplier(sizes, baseline, 0.95) == (
      1000, '>')
  assert sample_size.effective_multiplier(sizes, baseline, 0.4) == (10, '<')
  # A dip in the baseline does not make the read-off go backwards.
  n_eq, _ = sample_size.effective_multiplier(sizes, [0.5, 0.45, 0.9], 0.7)
  assert 100 < n_eq < 1000


def test_multipliers_per_size_and_baseline():
  summary = {'n100': {'kd': {'mean': 0.5}, 'tgt_random': {'mean': 0.7}},
             'n1000': {'kd': {'mean': 0.7}, 'tgt_random': {'mean': 0.8}}}
  mults = sample_size.multipliers(summary, [100, 1000], ['kd'], 'tgt_random')
  assert mults['kd'][0] == {'n': 100, 'n_equivalent': pytest.approx(1000),
                            'relation': '=', 'multiplier': pytest.approx(10)}
  assert mults['kd'][1]['relation'] == '>'


def test_sample_size_runs_every_size_for_the_same_steps():
  configs = sample_size.variants([13, 34, 134], steps=850, methods=['kd'],
                                 base=_demo())
  assert list(configs) == ['n130', 'n340', 'n1340']
  for name, config in configs.items():
    num_images = int(name[1:])
    assert config.long_tail.imbalance_factor == 1.0
    assert config.long_tail.max_count * 10 == num_images
    assert dataset_lib.steps_for_epochs(num_images, config.batch_size,
                                     config.num_epochs) == 850


def test_sweep_variants_share_the_demo_point():
  specs = exploration_sweep.sweeps([0.0, 0.5], [0.25, 1.0], [1, 2])
  configs = exploration_sweep.variants(specs, _demo())
  assert set(configs) == {'sigma_0', 'sigma_0.5', 'step_size_0.25',
                          'step_size_1', 'num_steps_1', 'num_steps_2'}
  assert configs['sigma_0'].methods == ('tgt_random',)
  assert configs['sigma_0'].exploration.sigma == 0.0
  assert configs['num_steps_2'].exploration.num_steps == 2
  # eta = 1 with one step is the same run in both gradient sweeps.
  assert (configs['step_size_1'].to_json() ==
          configs['num_steps_1'].to_json())


def test_long_tail_settings_and_table():
  configs = long_tail_table.variants(_demo())
  assert configs['if100'].long_tail.imbalance_factor == 100.0
  assert long_tail_table.digits_lt_counts(configs['if100'])[-1] == 1
  per_seed = {s: {m: _report(0.5 + 0.1 * i + 0.01 * s)
                  for i, m in enumerate(('teacher_labeler',
                                         *long_tail_table.METHODS))}
              for s in (0, 1)}
  summary = long_tail_table.summarize({'if50': per_seed})
  info = {'command': 'CMD', 'date': 'DATE', 'machine': 'MACHINE'}
  table = long_tail_table.table(summary, [0, 1], {'if50': [1] * 10}, info)
  assert '| tgt_gradient | 90.5 ± 0.5 |' in table
  assert 'CMD' in table and 'DATE' in table and 'MACHINE' in table


def _stats(mean, std):
  return {'mean': mean, 'std': std, 'values': [mean]}


def test_results_doc_verdicts_follow_the_numbers(tmp_path):
  def models(tgt_few):
    out = {m: {k: _stats(0.8, 0.01) for k in ('overall', 'many', 'medium',
                                               'few')}
           for m in ('teacher_labeler', 'onehot', 'kd', 'tgt_random')}
    out['tgt_gradient'] = {k: _stats(0.8, 0.01) for k in ('overall', 'many',
                                                          'medium')}
    out['tgt_gradient']['few'] = _stats(tgt_few, 0.01)
    return out

  root = tmp_path / 'workdirs'
  (root / 'long_tail_table').mkdir(parents=True)
  result = {'summary': {'if50': models(0.9), 'if100': models(0.805)}}
  (root / 'long_tail_table' / 'long_tail_table.json').write_text(
      json.dumps(result))
  (root / 'long_tail_table' / 'long_tail_table.md').write_text('TABLE')
  (root / 'sample_size').mkdir()
  (root / 'sample_size' / 'sample_size.json').write_text(json.dumps(
      {'multipliers': {'kd': [
          {'n': 130, 'multiplier': 2.0, 'relation': '='},
          {'n': 1340, 'multiplier': 0.8, 'relation': '='}]}}))
  (root / 'sample_size' / 'sample_size.md').write_text('SIZES')

  out = tmp_path / 'docs' / 'results.md'
  out.parent.mkdir()
  text = results_doc.build(str(root), str(out))
  assert out.read_text() == text
  assert 'TABLE' in text and 'SIZES' in text
  assert ('if50, tgt_gradient: overall +0.0 pts vs onehot (does not hold); '
          'few +10.0 pts vs onehot (holds)') in text
  assert 'if100, tgt_gradient: overall +0.0 pts vs onehot (does not hold); '\
      'few +0.5 pts vs onehot (does not hold)' in text
  assert ('vs kd: holds at [130], does not hold at [1340] images '
          '(multiplier 2.00x at 130, 0.80x at 1340).') in text
  assert 'Not run yet' in text  # The sweeps and the ablation.
