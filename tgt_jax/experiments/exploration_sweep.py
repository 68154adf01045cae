"""Exploration sweeps: random and gradient directions at equal step length.

  python -m tgt_jax.experiments.exploration_sweep \
      --workdir=workdirs/exploration_sweep --teacher_dir=workdirs/digits_lt

trains students of the base config (configs/digits_lt.py: the demo's long
tail) over the seeds (`--seeds`; docs/results.md ran 0, 1, 2) on one grid of
latent displacements D = ||z~ - E(x)||:

- `tgt_gradient`: one normalised step of size eta = D (it moves exactly D);
- `tgt_random`: sigma = D / E||eps|| (eps ~ N(0, I) in the latent's d
  dimensions, E||eps|| = sqrt(2) Gamma((d + 1) / 2) / Gamma(d / 2)), which
  moves D on average;

plus each method at the base config's own setting. Every run is evaluated
on the validation split (carved from the train split) and on the test
split: the best D of each method is chosen on validation, and its test
accuracy is reported; the test split chooses nothing. At each D the two
directions are compared on paired runs (seed_stats.RULE), and every result
reports its measured mean displacement. Writes
WORKDIR/exploration_sweep.{json,md,png}.
"""

import copy
import math
from typing import Any, Sequence

from absl import app
from absl import flags
import matplotlib.pyplot as plt
import ml_collections
import numpy as np

from tgt_jax import cli
from tgt_jax import config_lib
from tgt_jax import visualize
from tgt_jax.experiments import grid
from tgt_jax.experiments import seed_stats

FLAGS = flags.FLAGS
flags.DEFINE_list('displacements', ['0.5', '1', '2', '4', '8'],
                  'Latent displacements D of the common grid.')

NAME = 'exploration_sweep'
METHODS = ('tgt_random', 'tgt_gradient')
REPORTED = ('overall', 'few')


def expected_norm(dim: int) -> float:
  """E||eps|| for eps ~ N(0, I_dim) (the chi distribution's mean)."""
  return math.sqrt(2.0) * math.exp(math.lgamma((dim + 1) / 2) -
                                   math.lgamma(dim / 2))


def variants(displacements: Sequence[float],
             base: ml_collections.ConfigDict) -> dict[str, Any]:
  """'<method>/D<d>' for every displacement, and '<method>/base'."""
  latent_dim = config_lib.resolve(base).teacher_generator.latent_dim
  configs = {}
  for method in METHODS:
    default = copy.deepcopy(base)
    default.methods = (method,)
    configs[f'{method}/base'] = default
    for d in displacements:
      config = copy.deepcopy(default)
      if method == 'tgt_random':
        config.exploration.sigma = d / expected_norm(latent_dim)
      else:
        config.exploration.step_size = float(d)
        config.exploration.num_steps = 1
        config.exploration.normalize = True
        config.exploration.init_sigma = 0.0
      configs[f'{method}/D{d:g}'] = config
  return configs


def summarize(results, displacements) -> dict:
  """{method: {'points': {name: {split: {metric: stats}, 'displacement'}},
  'chosen': name (best val overall mean), 'paired': {D: difference}}}."""
  summary = {}
  for method in METHODS:
    points = {}
    for name in ['base'] + [f'D{d:g}' for d in displacements]:
      per_seed = results[f'{method}/{name}']
      val = {s: r['val'] for s, r in per_seed.items()}
      points[name] = {
          'test': grid.model_stats(per_seed, method, REPORTED),
          'val': grid.model_stats(val, method, REPORTED),
          'displacement': seed_stats.metric_stats(
              [r[method]['latent_displacement'] for r in per_seed.values()])}
    chosen = max(points, key=lambda p: points[p]['val']['overall']['mean'])
    summary[method] = {'points': points, 'chosen': chosen}
  summary['paired'] = {
      f'D{d:g}': grid.paired(results[f'tgt_gradient/D{d:g}'], 'tgt_gradient',
                             'tgt_random', other=results[f'tgt_random/D{d:g}'])
      for d in displacements}
  return summary


def table(summary, seeds, info, base_exploration) -> str:
  """Markdown: per method, validation and test accuracy at each point."""
  lines = [grid.header('Exploration at equal step length', info),
           f'Top-1 accuracy (%), mean ± std (ddof 1) over seeds '
           f'{", ".join(map(str, seeds))}, on the validation split (carved '
           'from train) and the balanced test split; the '
           'demo\'s long tail. D: the mean latent displacement the setting '
           'aims at; measured: its mean ||z~ - E(x)|| on test images. '
           f'"base": the base config (sigma {base_exploration.sigma:g}, step '
           f'size {base_exploration.step_size:g}, '
           f'{base_exploration.num_steps} step(s)). The chosen point is the '
           'best validation mean; its test numbers are the result.']
  for method in METHODS:
    spec = summary[method]
    lines += ['', f'### {method}', '',
              '| point | measured D | val overall | val few | test overall '
              '| test few |', '| --- | --- | --- | --- | --- | --- |']
    for name, point in spec['points'].items():
      mark = ' (chosen on val)' if name == spec['chosen'] else ''
      cells = [f'{point["displacement"]["mean"]:.2f}'] + [
          seed_stats.mean_std_cell(point[split][m])
          for split in ('val', 'test') for m in REPORTED]
      lines.append(f'| {name}{mark} | ' + ' | '.join(cells) + ' |')
  lines += ['', 'tgt_gradient minus tgt_random at the same displacement, test '
            'overall, points, mean [95% interval] on paired runs:', '',
            '| D | difference |', '| --- | --- |']
  for name, difference in summary['paired'].items():
    lines.append(f'| {name[1:]} | {seed_stats.difference_cell(difference)} |')
  return '\n'.join(lines) + '\n'


def plot(summary, displacements, path: str) -> None:
  """Test and validation overall accuracy against the displacement."""
  fig, ax = plt.subplots(figsize=(5.5, 3.8))
  for method in METHODS:
    points = [summary[method]['points'][f'D{d:g}'] for d in displacements]
    x = [p['displacement']['mean'] for p in points]
    for split, style in (('test', '-'), ('val', ':')):
      mean = np.array([100 * p[split]['overall']['mean'] for p in points])
      std = np.array([100 * p[split]['overall']['std'] for p in points])
      ax.plot(x, mean, style, marker='o', label=f'{method} ({split})')
      if split == 'test':
        ax.fill_between(x, mean - std, mean + std, alpha=0.15)
  ax.set_xscale('log', base=2)
  ax.minorticks_off()
  ax.set_xlabel('mean latent displacement ||z~ - E(x)||')
  ax.set_ylabel('overall accuracy (%)')
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  visualize.save_figure(fig, path)


def main(argv):
  del argv
  cli.quiet_orbax_logs()
  seeds = [int(s) for s in FLAGS.seeds]
  displacements = [float(v) for v in FLAGS.displacements]
  info = grid.provenance()
  base = grid.base_config()
  results = grid.run_variants(variants(displacements, base), seeds,
                              FLAGS.workdir, FLAGS.teacher_dir,
                              with_validation=True)
  summary = summarize(results, displacements)
  markdown = table(summary, seeds, info, base.exploration)
  grid.write_outputs(FLAGS.workdir, NAME,
                     {**info, 'seeds': seeds, 'displacements': displacements,
                      'summary': summary, 'per_seed': results}, markdown)
  plot(summary, displacements, f'{FLAGS.workdir}/{NAME}.png')
  print(markdown)


if __name__ == '__main__':
  app.run(main)
