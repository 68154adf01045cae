"""The experiment commands' logic: runs, shared teachers, read-offs, verdicts.

Training itself is faked here (a `train_fn` that records its calls); the
pipeline it stands for is tested in test_end_to_end.py.
"""

import json
import os

import numpy as np
import pytest

from tgt_jax import compute
from tgt_jax import train
from tgt_jax.data import dataset as dataset_lib
from tgt_jax.experiments import compute as compute_experiment
from tgt_jax.experiments import exploration_sweep
from tgt_jax.experiments import grid
from tgt_jax.experiments import long_tail_table
from tgt_jax.experiments import results_doc
from tgt_jax.experiments import sample_size
from tgt_jax.experiments import seed_stats
from tgt_jax.experiments import selection_rule
from tgt_jax.experiments import tuning


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


def test_selection_rules_pick_by_their_criterion_and_break_ties_as_stated():
  accuracy = np.array([0.5, 0.8, 0.7, 0.8, 0.6])
  loss = np.array([1.0, 0.6, 0.4, 0.5, 0.9])
  picks = {rule: selection_rule.choose(rule, accuracy, loss)
           for rule in selection_rule.RULES}
  assert picks == {'last': 4, 'best_first': 1, 'best_latest': 3,
                   'best_loss': 2}
  with pytest.raises(ValueError, match='worst'):
    selection_rule.choose('worst', accuracy, loss)


def test_split_half_picks_on_one_half_and_scores_on_the_other():
  # Each class alternates between the halves, in split order.
  assert selection_rule.halves(np.array([0, 0, 1, 0, 1, 1])).tolist() == [
      0, 1, 0, 0, 1, 0]
  half = selection_rule.halves(np.array([0, 0, 1, 1]))
  assert half.tolist() == [0, 1, 0, 1]
  # Two checkpoints: half 0 (images 0, 2) is right only at the first, half
  # 1 (images 1, 3) only at the second.
  correct = np.array([[1, 0, 1, 0], [0, 1, 0, 1]], np.float64)
  loss = 1.0 - correct
  # best_first picks on one half the checkpoint where that half is right,
  # where the other half is wrong: 0 both ways round.
  assert selection_rule.split_half_score('best_first', correct, loss,
                                         half) == 0.0
  # last: half 1 is right at the last checkpoint, half 0 is not.
  assert selection_rule.split_half_score('last', correct, loss,
                                         half) == 0.5


def test_selection_summary_pairs_every_rule_with_last():
  def run(peak_step, last_test):
    """A run of two checkpoints whose validation peaks at `peak_step`."""
    early_correct = [1, 1, 1, 1] if peak_step == 100 else [0, 1, 0, 1]
    return selection_rule.rule_outcomes({
        'steps': [100, 200], 'val_labels': [0, 1, 0, 1],
        'val_correct': [early_correct, [1, 1, 1, 0] if peak_step == 100
                        else [1, 1, 1, 1]],
        'val_loss': [[0.1] * 4, [0.2] * 4],
        'test': [_report(0.9), _report(last_test)]})

  summary = selection_rule.summarize(
      {'kd': {0: run(100, 0.8), 1: run(200, 0.95), 2: run(100, 0.7)}})
  rules = summary['rules']
  assert summary['runs'] == 3
  assert rules['best_first']['not_last'] == 2  # Seeds 0 and 2.
  assert rules['last']['not_last'] == 0
  assert rules['best_first']['test']['overall']['values'] == pytest.approx(
      [0.9, 0.95, 0.9])
  assert rules['best_first']['test_vs_last']['overall']['mean'] == (
      pytest.approx((0.1 + 0.0 + 0.2) / 3))
  assert rules['best_loss']['mean_step'] == 100  # Lowest loss: step 100.


def test_tuning_searches_one_grid_for_every_method():
  configs = tuning.search_variants(['kd', 'tgt_random'], [1.0, 4.0],
                                   [0.5, 1.0], _demo())
  assert list(configs) == ['onehot'] + [
      f'{m}/T{t}_a{a}' for m in ('kd', 'tgt_random') for t in (1, 4)
      for a in (0.5, 1)]
  config = configs['tgt_random/T4_a0.5']
  assert config.methods == ('tgt_random',)
  assert (config.distill.temperature, config.distill.alpha) == (4.0, 0.5)
  assert configs['onehot'].methods == ('onehot',)


def _tuning_results(val_by_point, test=0.9):
  """{variant: {seed: results}} with the given validation means."""
  return {name: {seed: {name.split('/')[0]: _report(test + seed / 100),
                        'val': {name.split('/')[0]: _report(val)}}
                 for seed in (0, 1)}
          for name, val in val_by_point.items()}


def test_tuning_chooses_on_validation_and_names_the_best_free_baseline():
  results = _tuning_results({
      'onehot': 0.90, 'kd/T1_a1': 0.91, 'kd/T4_a1': 0.93,
      'tgt_random/T1_a1': 0.97, 'tgt_random/T4_a1': 0.95})
  search = tuning.choose(results, ['kd', 'tgt_random'])
  assert search['kd']['chosen'] == 'T4_a1'
  assert search['tgt_random']['chosen'] == 'T1_a1'
  reference = grid.model_stats(
      {s: r['val'] for s, r in results['onehot'].items()}, 'onehot')
  # tgt_random's validation is higher, but it is not generator-free.
  assert tuning.best_baseline(search, reference) == 'kd'


def test_tuning_primary_comparison_stays_out_of_the_holm_family():
  def runs(model, few):
    return {s: {model: _report(0.9, few + s / 100)} for s in range(5)}
  report = {'onehot': runs('onehot', 0.7), 'kd': runs('kd', 0.8),
            'tgt_gradient': runs('tgt_gradient', 0.85)}
  compared = tuning.comparisons(report, 'tgt_gradient', 'kd')
  primary = compared['primary']
  assert (primary['model'], primary['against'], primary['metric']) == (
      'tgt_gradient', 'kd', 'few')
  assert primary['difference']['mean'] == pytest.approx(0.05)
  family = {(r['model'], r['against'], r['metric'])
            for r in compared['exploratory']}
  assert family == {('tgt_gradient', 'onehot', 'overall'),
                    ('tgt_gradient', 'onehot', 'few'),
                    ('tgt_gradient', 'kd', 'overall')}
  for row in compared['exploratory']:
    assert row['p_holm'] >= row['p']


def test_holm_and_paired_p_values_match_their_formulas():
  # t = 3 / (sd 1.5811 / sqrt 5) = 4.2426, 4 degrees of freedom.
  assert seed_stats.paired_p_value([1, 2, 3, 4, 5], [0] * 5) == (
      pytest.approx(0.013236, abs=1e-5))
  assert seed_stats.paired_p_value([1, 1], [1, 1]) == 1.0
  assert seed_stats.holm([0.01, 0.04, 0.03, 0.2]) == pytest.approx(
      [0.04, 0.09, 0.09, 0.2])


# FLOPs of one step of each method, and of each teacher's training, in the
# fake runs below.
_STEP_FLOPS = {'onehot': 1e6, 'kd': 3e6, 'kd_mixup': 3e6, 'tgt_random': 7e6,
               'tgt_gradient': 2e7}
_TEACHER_FLOPS = {'teacher_labeler': 5e9, 'teacher_generator': 4e10}
_STUDENT_IMAGES = 330  # The demo's long-tail subset.


def _fake_compute_run(config, workdir):
  """What a run records, with a fixed FLOP count per method: each student's
  steps follow from its epochs, as in training, and the teachers' FLOPs
  are added by the functions training adds them with."""
  for stage in grid.TEACHER_STAGES:
    os.makedirs(os.path.join(workdir, stage), exist_ok=True)
  steps = dataset_lib.steps_for_epochs(_STUDENT_IMAGES, config.batch_size,
                                       config.num_epochs)
  results = {'teacher_labeler': _report(0.99)}
  for method in config.methods:
    record = {'flops_per_step': _STEP_FLOPS[method], 'steps': steps,
              'train_flops': _STEP_FLOPS[method] * steps,
              'wall_s': 1e-3 * steps + config.seed}
    accuracy = 0.5 + 0.01 * config.seed + 1e-4 * steps
    results[method] = {**_report(accuracy, few=accuracy / 2),
                       'compute': compute.with_teachers(record, [
                           {'train_flops': _TEACHER_FLOPS[t]}
                           for t in train.teachers_used(method, config)])}
  return results


def test_compute_experiment_scales_the_epochs_and_tabulates_every_row(
    tmp_path):
  base = _demo()
  payload = compute_experiment.run_experiment(
      base, [0, 1], str(tmp_path), None, multiples=[1.0, 2.0, 5.0],
      methods=['onehot', 'kd', 'kd_mixup'],
      tgt_methods=['tgt_random', 'tgt_gradient'], train_fn=_fake_compute_run)
  with open(tmp_path / 'compute.json') as f:
    saved = json.load(f)
  assert saved['rows'] == payload['rows']
  assert [(r['method'], r['multiple']) for r in saved['rows']] == [
      (m, x) for m in ('onehot', 'kd', 'kd_mixup') for x in (1, 2, 5)] + [
          ('tgt_random', 1), ('tgt_gradient', 1)]
  assert set(saved['per_seed']) == {'x1', 'x2', 'x5'}
  rows = {(r['method'], r['multiple']): r for r in saved['rows']}
  one = dataset_lib.steps_for_epochs(_STUDENT_IMAGES, 64, 150)
  for method in ('onehot', 'kd', 'kd_mixup'):
    for multiple in (1, 2, 5):
      row = rows[method, multiple]
      assert row['epochs'] == 150 * multiple
      assert row['steps'] == dataset_lib.steps_for_epochs(
          _STUDENT_IMAGES, 64, 150 * multiple)
      # Train FLOPs grow with the multiple (to the step's rounding).
      assert row['train_flops'] == pytest.approx(
          multiple * rows[method, 1]['train_flops'], rel=2 / one)
      assert row['train_flops'] == _STEP_FLOPS[method] * row['steps']
  assert rows['onehot', 2]['total_flops'] == rows['onehot', 2]['train_flops']
  assert rows['kd', 5]['total_flops'] == (rows['kd', 5]['train_flops'] +
                                          _TEACHER_FLOPS['teacher_labeler'])
  assert rows['tgt_gradient', 1]['teacher_flops'] == sum(
      _TEACHER_FLOPS.values())
  # Mean and sample std over the two seeds.
  assert rows['kd', 1]['overall']['mean'] == pytest.approx(
      0.505 + 1e-4 * one)
  assert rows['kd', 1]['overall']['std'] == pytest.approx(
      0.01 / np.sqrt(2))
  assert rows['kd', 1]['wall_s']['mean'] == pytest.approx(1e-3 * one + 0.5)
  # Each TGT row against each baseline's cheapest row of at least its
  # total FLOPs, paired over the seeds: here no baseline reaches a TGT
  # row's (its generator alone costs 4e10), so each one's 5x row.
  against = {(p['model'], p['against']) for p in saved['paired']}
  assert against == {(f'{t} (1x)', f'{b} (5x)')
                     for t in ('tgt_random', 'tgt_gradient')
                     for b in ('onehot', 'kd', 'kd_mixup')}
  difference = next(p['difference'] for p in saved['paired']
                    if p['model'] == 'tgt_random (1x)' and p['metric'] ==
                    'overall' and p['against'] == 'kd (5x)')
  assert difference['mean'] == pytest.approx(
      1e-4 * (one - rows['kd', 5]['steps']))
  table = (tmp_path / 'compute.md').read_text()
  two = rows['kd', 2]['steps']
  assert (f'| kd | 300 (2x) | {two} | {3e6 * two:.3g} | '
          f'{3e6 * two + 5e9:.3g} | ') in table
  assert os.path.getsize(tmp_path / 'compute.png') > 1000


@pytest.mark.integration
def test_compute_experiment_on_a_tiny_config(tmp_path):
  """Real tiny runs: kd at 1x and 2x and tgt_random at 1x, one seed. The
  step's FLOPs are the same at every multiple, so the train FLOPs scale
  with the steps; rerun, the experiment trains nothing again and writes
  the same rows (wall times included: they are read back, not re-timed)."""
  import conftest  # pylint: disable=g-import-not-at-top
  base = conftest.tiny_config()
  base.num_epochs = base.teacher_labeler.num_epochs = 0.05
  base.teacher_generator.num_epochs = 0.05

  def run():
    return compute_experiment.run_experiment(
        base, [0], str(tmp_path), None, multiples=[1.0, 2.0],
        methods=['kd'], tgt_methods=['tgt_random'])['rows']

  rows = {(r['method'], r['multiple']): r for r in run()}
  assert set(rows) == {('kd', 1), ('kd', 2), ('tgt_random', 1)}
  one, two = rows['kd', 1], rows['kd', 2]
  assert (one['steps'], two['steps']) == (3, 5)  # 0.05 and 0.1 epochs.
  assert one['flops_per_step'] == two['flops_per_step'] > 0
  assert two['train_flops'] == 5 * one['flops_per_step']
  # The second run restored the first's teachers: the same teacher FLOPs.
  assert one['teacher_flops'] == two['teacher_flops'] > 0
  assert rows['tgt_random', 1]['flops_per_step'] > one['flops_per_step']
  assert rows['tgt_random', 1]['teacher_flops'] > one['teacher_flops']
  assert run() == list(rows.values())


def test_compute_matches_tgt_with_the_cheapest_baseline_reaching_its_flops():
  def row(method, multiple, flops):
    return {'method': method, 'config_method': method, 'multiple': multiple,
            'total_flops': flops}
  rows = [row('kd', 1, 10.0), row('kd', 2, 20.0), row('kd', 5, 50.0),
          row('onehot', 1, 1.0), row('tgt_gradient', 1, 15.0),
          row('tgt_random', 1, None)]  # No count: no place to match.
  pairs = compute_experiment.matched(rows, ['tgt_gradient', 'tgt_random'])
  assert [(compute_experiment.row_name(t), compute_experiment.row_name(b))
          for t, b in pairs] == [('tgt_gradient (1x)', 'kd (2x)'),
                                 ('tgt_gradient (1x)', 'onehot (1x)')]


def test_results_doc_reads_the_compute_experiment(tmp_path):
  root = tmp_path / 'workdirs'
  (root / 'compute').mkdir(parents=True)
  (root / 'compute' / 'compute.json').write_text(json.dumps({'paired': [
      {'model': 'tgt_gradient (1x)', 'against': 'kd (5x)', 'metric': 'few',
       'difference': _difference(-0.02, -0.03, -0.01)}]}))
  (root / 'compute' / 'compute.md').write_text('COMPUTE TABLE')
  text = results_doc.build(str(root), str(tmp_path / 'results.md'))
  assert 'COMPUTE TABLE' in text
  assert ('- tgt_gradient (1x) vs kd (5x), few: -2.0 [-3.0, -1.0]: reversed '
          '(significantly worse).') in text
