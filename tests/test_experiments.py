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
from tgt_jax.experiments import seed_stats


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
  configs = sample_size.variants([13, 32, 126], steps=850, methods=['kd'],
                                 base=_demo())
  assert list(configs) == ['n130', 'n320', 'n1260']
  for name, config in configs.items():
    num_images = int(name[1:])
    assert config.long_tail.imbalance_factor == 1.0
    assert config.long_tail.max_count * 10 == num_images
    assert dataset_lib.steps_for_epochs(num_images, config.batch_size,
                                        config.num_epochs) == 850


def test_paired_statistics_and_intervals():
  a, b = [0.90, 0.92, 0.91, 0.93], [0.88, 0.91, 0.90, 0.90]
  difference = seed_stats.paired_difference(a, b)
  deltas = np.subtract(a, b)
  half = 3.182446 * np.std(deltas, ddof=1) / 2  # t(0.975, 3) * s / sqrt(4).
  assert difference['mean'] == pytest.approx(np.mean(deltas))
  assert difference['low'] == pytest.approx(np.mean(deltas) - half, rel=1e-4)
  assert difference['holds'] and difference['excludes_zero']
  assert not seed_stats.paired_difference([0.9, 0.8], [0.85, 0.85])['holds']
  assert seed_stats.metric_stats([1.0, 2.0, 3.0])['std'] == pytest.approx(1.0)
  with pytest.raises(ValueError, match='at least 2 seeds'):
    seed_stats.paired_difference([1.0], [0.5])


def test_sweep_puts_both_directions_on_one_displacement_grid():
  configs = exploration_sweep.variants([1.0, 4.0], _demo())
  assert set(configs) == {f'{m}/{p}' for m in exploration_sweep.METHODS
                          for p in ('base', 'D1', 'D4')}
  assert configs['tgt_gradient/D4'].exploration.step_size == 4.0
  assert configs['tgt_gradient/D4'].methods == ('tgt_gradient',)
  # sigma * E||eps|| = D in the demo's 24-d latent (E||eps|| = 4.848).
  sigma = configs['tgt_random/D4'].exploration.sigma
  assert sigma * exploration_sweep.expected_norm(24) == pytest.approx(4.0)
  assert exploration_sweep.expected_norm(24) == pytest.approx(4.848, abs=1e-3)
  assert configs['tgt_random/base'].exploration.sigma == 0.5


def test_long_tail_settings_losses_and_table():
  configs = long_tail_table.variants(_demo())
  assert set(configs) == {f'{s}/{l}' for s in ('if50', 'if100')
                          for l in ('none', 'logit_adjusted',
                                    'balanced_softmax')}
  assert configs['if100/none'].long_tail.imbalance_factor == 100.0
  assert configs['if50/balanced_softmax'].long_tail_loss == 'balanced_softmax'
  assert long_tail_table.student_counts(configs['if100/none'])[-1] == 1
  assert set(long_tail_table.variants(_demo(), ['if50'])) == {
      k for k in configs if k.startswith('if50/')}
  with pytest.raises(ValueError, match="'if10'"):
    long_tail_table.variants(_demo(), ['if10'])

  def report(value, seed):
    return {**_report(value + 0.01 * seed), 'latent_displacement': 2.0}

  results = {f'if50/{loss}': {
      s: {long_tail_table.model_name(m, loss): report(0.5 + 0.1 * i, s)
          for i, m in enumerate(long_tail_table.METHODS)} |
         {'teacher_labeler': report(0.99, 0)}
      for s in (0, 1, 2)} for loss in long_tail_table.LONG_TAIL_LOSSES}
  summary = long_tail_table.summarize(long_tail_table.merge(results))
  info = {'command': 'CMD', 'date': 'DATE', 'machine': 'MACHINE'}
  table = long_tail_table.table(summary, [0, 1, 2], {'if50': [1] * 10}, info)
  assert '| tgt_gradient | 81.0 ± 1.0 |' in table
  assert '| tgt_gradient | onehot | +30.0 [+30.0, +30.0] |' in table
  assert 'CMD' in table and 'DATE' in table and 'MACHINE' in table


def _difference(mean, low, high):
  return {'mean': mean, 'low': low, 'high': high, 'n': 5,
          'holds': low > 0, 'excludes_zero': low > 0 or high < 0}


def test_results_doc_verdicts_follow_the_intervals(tmp_path):
  root = tmp_path / 'workdirs'
  (root / 'long_tail_table').mkdir(parents=True)
  paired = [
      {'model': 'tgt_gradient', 'against': 'onehot', 'metric': 'few',
       'difference': _difference(0.10, 0.05, 0.15)},
      {'model': 'tgt_gradient', 'against': 'kd', 'metric': 'overall',
       'difference': _difference(0.01, -0.01, 0.03)},
      {'model': 'tgt_random', 'against': 'kd', 'metric': 'overall',
       'difference': _difference(-0.02, -0.03, -0.01)}]
  (root / 'long_tail_table' / 'long_tail_table.json').write_text(
      json.dumps({'summary': {'if50': {'paired': paired}}}))
  # An experiment's own table states the rule too; the document, once.
  (root / 'long_tail_table' / 'long_tail_table.md').write_text(
      'TABLE' + '\n'.join(seed_stats.paired_table([])))
  out = tmp_path / 'docs' / 'results.md'
  out.parent.mkdir()
  text = results_doc.build(str(root), str(out))
  assert out.read_text() == text
  assert 'TABLE' in text and text.count(seed_stats.RULE) == 1
  assert ('- tgt_gradient vs onehot, few: +10.0 [+5.0, +15.0]: holds.'
          in text)
  assert ('- tgt_gradient vs kd, overall: +1.0 [-1.0, +3.0]: does not hold '
          '(the interval contains 0).') in text
  assert ('- tgt_random vs kd, overall: -2.0 [-3.0, -1.0]: reversed '
          '(significantly worse).') in text
  assert 'Not in this document' in text  # The other experiments.
