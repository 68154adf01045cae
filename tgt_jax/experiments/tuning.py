"""Equal tuning: one search of distillation settings per method, then the
comparison stated before the runs.

  python -m tgt_jax.experiments.tuning --workdir=workdirs/tuning \
      --teacher_dir=workdirs/selection_rule/seed_0 --seeds=0,1,2

Phase 1 (search, `--seeds`): every method of `--tuned_methods` (default
kd, kd_mixup, tgt_random, tgt_gradient) trains at every point of
one grid, the same for each method: distillation temperature
(`--temperatures`) x alpha, the soft part's weight (`--alphas`; 1 - alpha is
the one-hot part's, which is what gives the long-tail losses something to
act on). Each method's point with the best mean validation accuracy
(overall) is chosen; the test split chooses nothing. `onehot` has no
distillation setting and trains once per seed at the base config. The TGT
methods keep the base config's exploration (chosen earlier by
exploration_sweep), so their search is no smaller than the baselines'.

Phase 2 (report, `--eval_seeds`, default 3..7, seeds the search never saw):
every method at its chosen point, and onehot, on the test split. Stated
before the runs (2026-12-07), the primary comparison is few-shot test
accuracy of `--primary` (tgt_gradient) against the best generator-free
baseline (of onehot, kd and kd_mixup, the one with the best phase-1
validation mean), paired over the evaluation seeds with its 95% interval.
Every other pair (each TGT method against each baseline, overall and few)
is exploratory: its p-value (paired t test) is Holm-adjusted over that
family. Writes WORKDIR/tuning.{json,md}.
"""

import copy
from typing import Any, Mapping, Sequence

from absl import app
from absl import flags
import ml_collections

from tgt_jax import cli
from tgt_jax import methods as methods_lib
from tgt_jax.experiments import grid
from tgt_jax.experiments import seed_stats

FLAGS = flags.FLAGS
flags.DEFINE_list('tuned_methods',
                  ['kd', 'kd_mixup', 'tgt_random', 'tgt_gradient'],
                  'Methods searched (onehot is always the reference).')
flags.DEFINE_list('temperatures', ['1', '2', '4'],
                  '[ours] Distillation temperatures searched.')
flags.DEFINE_list('alphas', ['0.5', '1'],
                  '[ours] Soft-target weights alpha searched.')
flags.DEFINE_list('eval_seeds', ['3', '4', '5', '6', '7'],
                  'Seeds of the report phase (never used to choose).')
flags.DEFINE_string('primary', 'tgt_gradient',
                    'The TGT method of the primary comparison.')

NAME = 'tuning'
REFERENCE = 'onehot'
REPORTED = ('overall', 'few')


def point_name(temperature: float, alpha: float) -> str:
  return f'T{temperature:g}_a{alpha:g}'


def search_variants(methods: Sequence[str], temperatures: Sequence[float],
                    alphas: Sequence[float],
                    base: ml_collections.ConfigDict) -> dict[str, Any]:
  """'<method>/T<t>_a<a>' for every method and grid point, and 'onehot'."""
  reference = copy.deepcopy(base)
  reference.methods = (REFERENCE,)
  configs = {REFERENCE: reference}
  for method in methods:
    for temperature in temperatures:
      for alpha in alphas:
        config = copy.deepcopy(base)
        config.methods = (method,)
        config.distill.temperature = float(temperature)
        config.distill.alpha = float(alpha)
        configs[f'{method}/{point_name(temperature, alpha)}'] = config
  return configs


def choose(results: Mapping[str, Mapping[int, dict]],
           methods: Sequence[str]) -> dict[str, Any]:
  """{method: {'chosen': point, 'points': {point: {'val', 'test'}}}}: each
  method's grid with its statistics, the point with the best mean
  validation overall accuracy chosen (ties: the first in grid order)."""
  out = {}
  for method in methods:
    points = {}
    for name, per_seed in results.items():
      if name.startswith(f'{method}/'):
        val = {s: r['val'] for s, r in per_seed.items()}
        points[name.split('/', 1)[1]] = {
            'val': grid.model_stats(val, method, REPORTED),
            'test': grid.model_stats(per_seed, method, REPORTED)}
    chosen = max(points, key=lambda p: points[p]['val']['overall']['mean'])
    out[method] = {'chosen': chosen, 'points': points}
  return out


def best_baseline(search: Mapping[str, Any], reference_val: Mapping) -> str:
  """The generator-free method with the best phase-1 validation mean."""
  candidates = {REFERENCE: reference_val['overall']['mean']}
  for method, spec in search.items():
    if not methods_lib.get(method).uses_generator:
      candidates[method] = spec['points'][spec['chosen']]['val']['overall'][
          'mean']
  return max(candidates, key=candidates.get)


def report_variants(search: Mapping[str, Any], temperatures, alphas,
                    base: ml_collections.ConfigDict) -> dict[str, Any]:
  """Every method at its chosen point, and onehot (phase 2)."""
  every = search_variants(list(search), temperatures, alphas, base)
  configs = {REFERENCE: every[REFERENCE]}
  for method, spec in search.items():
    configs[method] = every[f'{method}/{spec["chosen"]}']
  return configs


def comparisons(report: Mapping[str, Mapping[int, dict]], primary: str,
                baseline: str) -> dict[str, Any]:
  """The primary comparison, and the exploratory family with Holm-adjusted
  p-values: each TGT method against each generator-free method."""
  def pair(model, against, metric):
    a, b = report[model], report[against]
    seeds = sorted(set(a) & set(b))
    values_a = [a[s][model][metric] for s in seeds]
    values_b = [b[s][against][metric] for s in seeds]
    return {'model': model, 'against': against, 'metric': metric,
            'difference': seed_stats.paired_difference(values_a, values_b),
            'p': seed_stats.paired_p_value(values_a, values_b)}

  tgt = [m for m in report if methods_lib.get(m).uses_generator]
  free = [m for m in report if not methods_lib.get(m).uses_generator]
  family = [pair(m, b, metric) for m in tgt for b in free
            for metric in REPORTED
            if (m, b, metric) != (primary, baseline, 'few')]
  for row, adjusted in zip(family, seed_stats.holm([r['p'] for r in family])):
    row['p_holm'] = adjusted
  return {'primary': pair(primary, baseline, 'few') if primary in report
                     else None,
          'exploratory': family}


def table(search, reference_stats, report_stats, compared, baseline, seeds,
          eval_seeds, info) -> str:
  """The Markdown of both phases."""
  lines = [grid.header('Equal tuning of distillation', info),
           f'Phase 1, seeds {seeds}: mean ± std (ddof 1) accuracy (%) on the '
           'validation split and the test split at every point (T: '
           'temperature, a: alpha); each method\'s point is chosen on '
           f'validation. onehot (no such setting): val overall '
           f'{seed_stats.mean_std_cell(reference_stats["overall"])}.']
  for method, spec in search.items():
    lines += ['', f'### {method}', '',
              '| point | val overall | val few | test overall | test few |',
              '| --- | --- | --- | --- | --- |']
    for name, point in spec['points'].items():
      mark = ' (chosen on val)' if name == spec['chosen'] else ''
      cells = [seed_stats.mean_std_cell(point[split][m])
               for split in ('val', 'test') for m in REPORTED]
      lines.append(f'| {name}{mark} | ' + ' | '.join(cells) + ' |')
  lines += ['', f'Phase 2, seeds {eval_seeds} (never used to choose): test '
            'accuracy (%) at the chosen points.', '',
            '| model | point | overall | few |', '| --- | --- | --- | --- |']
  for model, stats in report_stats.items():
    point = search[model]['chosen'] if model in search else 'base config'
    lines.append(f'| {model} | {point} | '
                 f'{seed_stats.mean_std_cell(stats["overall"])} | '
                 f'{seed_stats.mean_std_cell(stats["few"])} |')
  primary = compared['primary']
  if primary is not None:
    lines += ['', f'**Primary comparison (stated before the runs):** '
              f'{primary["model"]} vs {baseline} (the best generator-free '
              'baseline on phase-1 validation), few-shot test accuracy, '
              f'paired over {primary["difference"]["n"]} seeds: '
              f'{seed_stats.difference_cell(primary["difference"])} points '
              f'(p = {primary["p"]:.3f}): '
              + ('holds.' if primary['difference']['excludes_zero'] else
                 'does not hold (the interval contains 0).')]
  lines += ['', 'Exploratory (Holm-adjusted over these rows; a claim holds '
            'at adjusted p < 0.05):', '',
            '| model | vs | metric | difference [95% interval] | p | '
            'p (Holm) |', '| --- | --- | --- | --- | --- | --- |']
  for row in compared['exploratory']:
    lines.append(f'| {row["model"]} | {row["against"]} | {row["metric"]} | '
                 f'{seed_stats.difference_cell(row["difference"])} | '
                 f'{row["p"]:.3f} | {row["p_holm"]:.3f} |')
  return '\n'.join(lines) + '\n'


def main(argv):
  del argv
  cli.quiet_orbax_logs()
  seeds = [int(s) for s in FLAGS.seeds]
  eval_seeds = [int(s) for s in FLAGS.eval_seeds]
  if set(seeds) & set(eval_seeds):
    raise app.UsageError('--eval_seeds must differ from --seeds: the report '
                         'phase measures what the search did not see.')
  temperatures = [float(t) for t in FLAGS.temperatures]
  alphas = [float(a) for a in FLAGS.alphas]
  info = grid.provenance()
  base = grid.base_config()
  searched = grid.run_variants(
      search_variants(FLAGS.tuned_methods, temperatures, alphas, base), seeds,
      f'{FLAGS.workdir}/search', FLAGS.teacher_dir, with_validation=True)
  search = choose(searched, FLAGS.tuned_methods)
  reference_val = grid.model_stats(
      {s: r['val'] for s, r in searched[REFERENCE].items()}, REFERENCE,
      REPORTED)
  baseline = best_baseline(search, reference_val)
  reported = grid.run_variants(
      report_variants(search, temperatures, alphas, base), eval_seeds,
      f'{FLAGS.workdir}/report', FLAGS.teacher_dir)
  report_stats = {m: grid.model_stats(r, m, REPORTED)
                  for m, r in reported.items()}
  compared = comparisons(reported, FLAGS.primary, baseline)
  markdown = table(search, reference_val, report_stats, compared, baseline,
                   seeds, eval_seeds, info)
  grid.write_outputs(FLAGS.workdir, NAME,
                     {**info, 'seeds': seeds, 'eval_seeds': eval_seeds,
                      'temperatures': temperatures, 'alphas': alphas,
                      'search': search, 'baseline': baseline,
                      'report': report_stats, 'comparisons': compared,
                      'per_seed': {'search': searched, 'report': reported}},
                     markdown)
  print(markdown)


if __name__ == '__main__':
  app.run(main)
