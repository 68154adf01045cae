"""Accuracy against training compute: does more training close TGT's gap?

  python -m tgt_jax.experiments.compute --teacher_dir=workdirs/digits_lt \
      --workdir=workdirs/compute [--seeds=0,1,2,3,4] [--multiples=1,2,5] \
      [--methods=onehot,kd,kd_mixup] [--tgt_methods=tgt_random,tgt_gradient]

A TGT step costs several distillation steps (README, "Performance"). This
trains the generator-free students (`--methods`) for 1x, 2x and 5x the base
config's epochs, and the TGT students (`--tgt_methods`) at 1x, over the
seeds, every run restoring the teachers of one demo run (`--teacher_dir`),
and reports each (method, multiple) with its training compute as the runs
recorded it (README, "Outputs": XLA's FLOP count of the step times the
steps, and the wall time) and its test accuracy, overall and few-shot.

The plot's x axis is a student's total FLOPs: its own training plus that of
the teachers it depends on (none for onehot, the labeler for kd and
kd_mixup, the labeler and the generator for TGT), as each result's
`total_flops` says. The teachers are trained once and shared by every run,
so the teacher part of a point is the cost of one teacher, not a cost paid
per student.

[ours] Multiple m trains m times the epochs with the same warm-up (in
epochs) and the schedule's decay stretched over the longer run: the way one
spends more compute on a baseline. Variant x<m> lives in WORKDIR/x<m>/seed_<s>
(x1 trains the TGT students beside the baselines); every run resumes what it
finished, so a killed experiment rerun with the same command continues.
Writes WORKDIR/compute.{json,md,png}.
"""

import copy
import os
from typing import Any, Mapping, Sequence

from absl import app
from absl import flags
import matplotlib.pyplot as plt
import ml_collections

from tgt_jax import cli
from tgt_jax import evaluation
from tgt_jax import train
from tgt_jax.experiments import grid
from tgt_jax.experiments import seed_stats

FLAGS = flags.FLAGS
flags.DEFINE_list('multiples', ['1', '2', '5'],
                  'Multiples of the base config\'s epochs that every '
                  '--methods student trains for.')
flags.DEFINE_list('methods', ['onehot', 'kd', 'kd_mixup'],
                  'Students trained at every multiple.')
flags.DEFINE_list('tgt_methods', ['tgt_random', 'tgt_gradient'],
                  'Students trained at 1x only.')

NAME = 'compute'
METRICS = ('overall', 'few')


def variant_name(multiple: float) -> str:
  return f'x{multiple:g}'


def variants(base: ml_collections.ConfigDict, multiples: Sequence[float],
             methods: Sequence[str], tgt_methods: Sequence[str]
             ) -> dict[str, ml_collections.ConfigDict]:
  """One config per multiple of the epochs: `methods` at every multiple,
  `tgt_methods` at 1x (in the same runs as the 1x baselines)."""
  configs = {}
  for multiple in sorted(set(multiples) | ({1.0} if tgt_methods else set())):
    trained = [*(methods if multiple in multiples else ()),
               *(tgt_methods if multiple == 1.0 else ())]
    config = copy.deepcopy(base)
    config.methods = tuple(trained)
    config.num_epochs = base.num_epochs * multiple
    configs[variant_name(multiple)] = config
  return configs


def _common(values: Sequence[Any], what: str) -> Any:
  """The one value every seed shares (FLOPs and steps do not depend on the
  seed); a ValueError if they differ."""
  if any(v != values[0] for v in values):
    raise ValueError(f'{what} differs between seeds: {values}.')
  return values[0]


def rows(results: Mapping[str, Mapping[int, Mapping[str, Any]]],
         configs: Mapping[str, ml_collections.ConfigDict],
         multiples: Mapping[str, float]) -> list[dict[str, Any]]:
  """One row per (variant, student): its compute and accuracy over seeds
  (`multiples`: each variant's multiple of the epochs)."""
  out = []
  for variant, per_seed in results.items():
    config = configs[variant]
    for method in config.methods:
      key = grid.student_key(next(iter(per_seed.values())), method, config)
      reports = [per_seed[s][key] for s in sorted(per_seed)]
      records = [r['compute'] for r in reports]
      # 'method': the student's results key (e.g. 'kd+logit_adjusted');
      # 'config_method': its name in config.methods.
      row = {'method': key, 'config_method': method,
             'multiple': multiples[variant], 'epochs': config.num_epochs}
      for field in ('steps', 'flops_per_step', 'train_flops',
                    'teacher_flops', 'total_flops'):
        row[field] = _common([r[field] for r in records], f'{key} {field}')
      walls = [r['wall_s'] for r in records]
      row['wall_s'] = (None if None in walls else
                       seed_stats.metric_stats(walls))
      row.update(grid.model_stats(per_seed, key, METRICS))
      out.append(row)
  # Each method's rows together, by multiple (the methods in first-run order).
  order = {row['method']: i for i, row in reversed(list(enumerate(out)))}
  return sorted(out, key=lambda row: (order[row['method']], row['multiple']))


def matched(table_rows: Sequence[Mapping[str, Any]], tgt_methods: Sequence[str]
            ) -> list[tuple[Mapping[str, Any], Mapping[str, Any]]]:
  """(TGT row, baseline row) pairs at comparable compute: for every TGT row
  and every other method, that method's cheapest row with at least the TGT
  row's total FLOPs, or its most expensive row if none reaches it."""
  pairs = []
  tgt_rows = [r for r in table_rows if r['config_method'] in tgt_methods and
              r['total_flops'] is not None]
  baselines = {}
  for row in table_rows:
    if (row['config_method'] not in tgt_methods and
        row['total_flops'] is not None):
      baselines.setdefault(row['method'], []).append(row)
  for tgt in tgt_rows:
    for points in baselines.values():
      points = sorted(points, key=lambda r: r['total_flops'])
      reaching = [r for r in points
                  if r['total_flops'] >= tgt['total_flops']]
      pairs.append((tgt, reaching[0] if reaching else points[-1]))
  return pairs


def row_name(row: Mapping[str, Any]) -> str:
  return f'{row["method"]} ({row["multiple"]:g}x)'


def paired(results: Mapping[str, Mapping[int, Mapping[str, Any]]],
           pairs) -> list[dict[str, Any]]:
  """Paired differences (seed_stats.RULE) of each matched pair, overall and
  few-shot: the runs of the two rows share seeds and teachers."""
  out = []
  for tgt, baseline in pairs:
    for metric in METRICS:
      out.append({'model': row_name(tgt), 'against': row_name(baseline),
                  'metric': metric, 'difference': grid.paired(
                      results[variant_name(tgt['multiple'])], tgt['method'],
                      baseline['method'], metric,
                      results[variant_name(baseline['multiple'])])})
  return out


def table(table_rows: Sequence[Mapping[str, Any]], seeds: Sequence[int],
          info: Mapping[str, str],
          differences: Sequence[Mapping[str, Any]] = ()) -> str:
  """Markdown: compute and accuracy of every (method, multiple)."""
  lines = [grid.header('Accuracy against training compute', info),
           'Test accuracy (%), mean ± std (ddof 1) over seeds '
           f'{", ".join(map(str, seeds))}, against training compute. Train '
           'FLOPs: XLA\'s count of the student\'s step (teachers\' passes '
           'inside it included) times its steps; total FLOPs adds the '
           'training of the teachers it depends on (none for onehot, the '
           'labeler for kd, both teachers for TGT); wall s: the student\'s '
           'training loop, mean ± std.', '',
           '| method | epochs (multiple) | steps | train FLOPs | total FLOPs '
           '| wall s | overall | few |',
           '| --- |' + ' --- |' * 7]
  for row in table_rows:
    wall = row['wall_s']
    wall_cell = '-' if wall is None else (
        f'{wall["mean"]:.1f} ± {wall["std"]:.1f}')
    cells = [f'{row["epochs"]:g} ({row["multiple"]:g}x)', str(row['steps']),
             evaluation.flops_cell(row['train_flops']),
             evaluation.flops_cell(row['total_flops']), wall_cell,
             *(seed_stats.mean_std_cell(row[m]) for m in METRICS)]
    lines.append(f'| {row["method"]} | ' + ' | '.join(cells) + ' |')
  if differences:
    lines += ['', 'Each TGT row against each other method\'s cheapest row '
              'with at least its total FLOPs (or that method\'s most '
              'expensive row).', *seed_stats.paired_table(differences)]
  return '\n'.join(lines) + '\n'


def plot(table_rows: Sequence[Mapping[str, Any]], path: str) -> None:
  """Accuracy (overall, few-shot) against total training FLOPs (log), one
  line per method through its multiples, ± std bars. A row without a FLOP
  count has no place on the axis and is left out (the table shows it)."""
  _, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharex=True)
  by_method = {}
  for row in table_rows:
    if row['total_flops'] is not None:
      by_method.setdefault(row['method'], []).append(row)
  for ax, metric in zip(axes, METRICS):
    for method, points in by_method.items():
      points = sorted(points, key=lambda r: r['total_flops'])
      ax.errorbar([r['total_flops'] for r in points],
                  [100 * r[metric]['mean'] for r in points],
                  yerr=[100 * r[metric]['std'] for r in points],
                  marker='o', capsize=3, label=method)
    ax.set_xscale('log')
  grid.metric_panels_done(axes, METRICS, 'training FLOPs, teachers included',
                          '{metric} test accuracy (%)',
                          'accuracy against compute', path)


def run_experiment(base: ml_collections.ConfigDict, seeds: Sequence[int],
                   workdir: str, teacher_dir: str | None,
                   multiples: Sequence[float], methods: Sequence[str],
                   tgt_methods: Sequence[str],
                   train_fn=train.train_and_evaluate) -> dict[str, Any]:
  """Trains every run (resuming), writes WORKDIR/compute.{json,md,png} and
  returns the JSON payload."""
  info = grid.provenance()
  configs = variants(base, multiples, methods, tgt_methods)
  results = grid.run_variants(configs, seeds, workdir, teacher_dir, train_fn)
  names = {variant_name(m): m for m in [*multiples, 1.0]}
  table_rows = rows(results, configs, names)
  # A paired interval needs two seeds.
  differences = (paired(results, matched(table_rows, tgt_methods))
                 if len(seeds) > 1 else [])
  markdown = table(table_rows, seeds, info, differences)
  payload = {**info, 'seeds': list(seeds), 'multiples': list(multiples),
             'methods': list(methods), 'tgt_methods': list(tgt_methods),
             'base_epochs': base.num_epochs, 'rows': table_rows,
             'paired': differences, 'per_seed': results}
  grid.write_outputs(workdir, NAME, payload, markdown)
  plot(table_rows, os.path.join(workdir, f'{NAME}.png'))
  return payload


def main(argv):
  del argv
  cli.quiet_orbax_logs()
  multiples = [float(m) for m in FLAGS.multiples]
  if any(m <= 0 for m in multiples):
    raise app.UsageError(f'--multiples must be positive, got {multiples}.')
  payload = run_experiment(grid.base_config(), [int(s) for s in FLAGS.seeds],
                           FLAGS.workdir, FLAGS.teacher_dir, multiples,
                           FLAGS.methods, FLAGS.tgt_methods)
  print(table(payload['rows'], payload['seeds'], payload,
              payload['paired']))


if __name__ == '__main__':
  app.run(main)
