"""Section 4.2 at small scale: does TGT act like more real data?

  python -m tgt_jax.experiments.sample_size \
      --workdir=workdirs/sample_size --teacher_dir=workdirs/digits_lt

trains `onehot`, `kd` and `tgt_random` students of configs/digits_lt.py on
balanced subsets of the digits' train split (default 11, 28, 57 and 114
images a class: 10, 25, 50 and 100% of the smallest class), over the seeds
(`--seeds`; docs/results.md ran 0, 1, 2),
and plots test accuracy against the number of real training images. The
effective-sample-size multiplier of TGT over a baseline at n real images is
n' / n, where n' is the number of real images at which the baseline's mean
accuracy (interpolated linearly in log n between measured sizes) reaches
TGT's mean accuracy at n; where TGT beats every baseline point, only the
lower bound n_max / n is reported. At every size, TGT is also compared with
each baseline on paired runs (seed_stats.RULE).

[ours] Every size trains for the same number of steps (about the demo's 850,
config `--steps`) with the same warm-up (30 steps): a fixed epoch count would
give the smallest subset a tenth of the updates, and the curve would then
measure optimisation as much as data. The teachers are the demo's (trained on
the full train split); `--teacher_dir` reuses them from an earlier run.
Writes WORKDIR/sample_size.{json,md,png}.
"""

import copy
from typing import Any, Mapping, Sequence

from absl import app
from absl import flags
import matplotlib.pyplot as plt
import ml_collections
import numpy as np

from tgt_jax import cli
from tgt_jax import visualize
from tgt_jax.experiments import grid
from tgt_jax.experiments import seed_stats

FLAGS = flags.FLAGS
flags.DEFINE_list('per_class', ['11', '28', '57', '114'],
                  'Real training images per class, one subset each.')
flags.DEFINE_integer('steps', 850, '[ours] Student steps at every size; 0 '
                     'keeps the base config\'s schedule (e.g. with :quick).')
flags.DEFINE_list('baselines', ['onehot', 'kd'], 'Methods without TGT.')

NAME = 'sample_size'
NUM_CLASSES = 10
WARMUP_STEPS = 30  # [ours] About the demo's 5 warm-up epochs.


def variants(per_class: Sequence[int], steps: int, methods: Sequence[str],
             base: ml_collections.ConfigDict,
             quick: bool = False) -> dict[str, Any]:
  """One config per subset size: balanced, `per_class` images a class;
  `quick` keeps the base config's (short) schedule instead of `steps`."""
  configs = {}
  for count in per_class:
    config = copy.deepcopy(base)
    config.methods = tuple(methods)
    # An exponential profile with factor 1 is a balanced subset.
    config.long_tail.imbalance_factor = 1.0
    config.long_tail.max_count = count
    num_images = NUM_CLASSES * count
    if not quick:
      config.num_epochs = steps * config.batch_size / num_images
      config.warmup_epochs = WARMUP_STEPS * config.batch_size / num_images
    configs[f'n{num_images}'] = config
  return configs


def effective_multiplier(sizes: Sequence[float],
                         baseline: Sequence[float],
                         target: float) -> tuple[float, str]:
  """(n' , relation) with baseline(n') = target, by log-linear interpolation.

  `baseline` is the baseline's mean accuracy at `sizes` (increasing). The
  curve is made monotone by a running maximum first (more data never hurts
  the best accuracy seen so far). relation is '=' when n' is read off the
  curve, '>' when the target exceeds every baseline point (n' > max size,
  only the lower bound max size is returned) and '<' when it is below every
  point (n' < min size).
  """
  sizes = np.asarray(sizes, float)
  curve = np.maximum.accumulate(np.asarray(baseline, float))
  if target > curve[-1]:
    return float(sizes[-1]), '>'
  if target < curve[0]:
    return float(sizes[0]), '<'
  # First segment whose upper end reaches the target.
  i = int(np.argmax(curve >= target))
  if i == 0 or curve[i] == curve[i - 1]:
    return float(sizes[i]), '='
  frac = (target - curve[i - 1]) / (curve[i] - curve[i - 1])
  low, high = np.log(sizes[i - 1]), np.log(sizes[i])
  log_n = low + frac * (high - low)
  return float(np.exp(log_n)), '='


def summarize(results: Mapping[str, Mapping[int, dict]],
              methods: Sequence[str]) -> dict:
  """{subset: {method: overall stats}} over seeds."""
  return {subset: {m: grid.model_stats(per_seed, m, ('overall',))['overall']
                   for m in methods}
          for subset, per_seed in results.items()}


def paired(results: Mapping[str, Mapping[int, dict]],
           baselines: Sequence[str], tgt_method: str) -> dict:
  """{subset: {baseline: paired difference of TGT's overall accuracy}}."""
  return {subset: {b: grid.paired(per_seed, tgt_method, b) for b in baselines}
          for subset, per_seed in results.items()}


def multipliers(summary: Mapping[str, Any], sizes: Sequence[int],
                baselines: Sequence[str], tgt_method: str) -> dict:
  """{baseline: [{n, n_equivalent, relation, multiplier}]} per size."""
  out = {}
  subsets = list(summary)
  for baseline in baselines:
    curve = [summary[s][baseline]['mean'] for s in subsets]
    rows = []
    for subset, n in zip(subsets, sizes):
      n_eq, relation = effective_multiplier(
          sizes, curve, summary[subset][tgt_method]['mean'])
      rows.append({'n': n, 'n_equivalent': n_eq, 'relation': relation,
                   'multiplier': n_eq / n})
    out[baseline] = rows
  return out


def table(summary, sizes, mults, methods, tgt_method, seeds, info,
          differences) -> str:
  """Markdown: accuracy per size and method, the paired differences, then
  the multipliers."""
  baselines = [m for m in methods if m != tgt_method]
  lines = [grid.header('Effective sample size (Section 4.2 analogue)', info),
           f'Overall top-1 accuracy (%) on the balanced test split, mean ± std '
           f'(ddof 1) over seeds {", ".join(map(str, seeds))}; balanced '
           'subsets of the train split, every size trained for the same '
           f'number of steps. Last columns: {tgt_method} minus each baseline '
           'on paired runs, points, mean [95% interval].', '',
           '| real images | ' + ' | '.join(methods) + ' | ' + ' | '.join(
               f'{tgt_method} - {b}' for b in baselines) + ' |',
           '| --- |' + ' --- |' * (len(methods) + len(baselines))]
  for subset, n in zip(summary, sizes):
    cells = ' | '.join(seed_stats.mean_std_cell(summary[subset][m])
                       for m in methods)
    cells += ' | ' + ' | '.join(seed_stats.difference_cell(
        differences[subset][b]) for b in baselines)
    lines.append(f'| {n} | {cells} |')
  lines += ['', f'Effective-sample-size multiplier of {tgt_method}: the real '
            'images the baseline needs to match it, divided by the real '
            "images it had ('>' : it beats the baseline's largest size, so "
            "only a lower bound; '<' : below the baseline's smallest size).",
            '', '| real images | ' + ' | '.join(
                f'vs {b}' for b in mults) + ' |',
            '| --- |' + ' --- |' * len(mults)]
  for i, n in enumerate(sizes):
    cells = []
    for rows in mults.values():
      row = rows[i]
      bound = '' if row['relation'] == '=' else row['relation'] + ' '
      cells.append(f'{bound}{row["multiplier"]:.2f}x '
                   f'({bound}{row["n_equivalent"]:.0f} images)')
    lines.append(f'| {n} | ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines) + '\n'


def plot(summary, sizes, methods, path: str) -> None:
  """Accuracy against real training images (log scale), mean ± std bands."""
  fig, ax = plt.subplots(figsize=(5.5, 3.8))
  for method in methods:
    mean = np.array([100 * summary[s][method]['mean'] for s in summary])
    std = np.array([100 * summary[s][method]['std'] for s in summary])
    ax.plot(sizes, mean, marker='o', label=method)
    ax.fill_between(sizes, mean - std, mean + std, alpha=0.2)
  ax.set_xscale('log')
  ax.set_xticks(sizes, [str(n) for n in sizes])
  ax.minorticks_off()
  ax.set_xlabel('real training images (balanced)')
  ax.set_ylabel('overall test accuracy (%)')
  ax.set_title('Accuracy against real sample size')
  ax.legend()
  ax.grid(alpha=0.3)
  visualize.save_figure(fig, path)


def main(argv):
  del argv
  cli.quiet_orbax_logs()
  seeds = [int(s) for s in FLAGS.seeds]
  per_class = [int(c) for c in FLAGS.per_class]
  if per_class != sorted(per_class):
    raise app.UsageError(f'--per_class must increase, got {per_class}.')
  methods = [*FLAGS.baselines, FLAGS.tgt_method]
  info = grid.provenance()
  results = grid.run_variants(
      variants(per_class, FLAGS.steps, methods, grid.base_config(),
               quick=FLAGS.steps == 0), seeds,
      FLAGS.workdir, FLAGS.teacher_dir)
  sizes = [NUM_CLASSES * c for c in per_class]
  summary = summarize(results, methods)
  mults = multipliers(summary, sizes, FLAGS.baselines, FLAGS.tgt_method)
  differences = paired(results, FLAGS.baselines, FLAGS.tgt_method)
  markdown = table(summary, sizes, mults, methods, FLAGS.tgt_method, seeds,
                   info, differences)
  grid.write_outputs(FLAGS.workdir, NAME,
                     {**info, 'seeds': seeds, 'sizes': sizes,
                      'steps': FLAGS.steps, 'summary': summary,
                      'paired': differences, 'multipliers': mults,
                      'per_seed': results}, markdown)
  plot(summary, sizes, methods, f'{FLAGS.workdir}/{NAME}.png')
  print(markdown)


if __name__ == '__main__':
  app.run(main)
