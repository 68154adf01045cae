"""Exploration sweeps: accuracy against sigma, step size and step count.

  python -m tgt_jax.experiments.exploration_sweep \
      --workdir=workdirs/exploration_sweep --teacher_dir=workdirs/digits_lt

trains students of configs/digits_lt.py (the demo's long tail) over the
seeds, varying one exploration knob at a time around the demo's values:

- `tgt_random`: the perturbation scale sigma (0 = decode E(x) unperturbed);
- `tgt_gradient`: the step size eta at one step, and the number of steps at
  the demo's eta.

Writes WORKDIR/exploration_sweep.{json,md,png} (one panel a knob, overall and
few-shot accuracy, mean ± std bands). The demo's setting is one point of
each sweep; `--teacher_dir` reuses an earlier run's teachers.
"""

import copy
from typing import Any, Mapping, Sequence

from absl import app
from absl import flags
import matplotlib.pyplot as plt
import ml_collections
import numpy as np

from tgt_jax import train
from tgt_jax import visualize
from tgt_jax.experiments import grid
from tgt_jax.experiments import seed_stats

FLAGS = flags.FLAGS
flags.DEFINE_list('sigmas', ['0', '0.25', '0.5', '1', '2'],
                  'tgt_random: exploration.sigma values.')
flags.DEFINE_list('step_sizes', ['0.25', '1', '4'],
                  'tgt_gradient: exploration.step_size values (one step).')
flags.DEFINE_list('num_steps', ['1', '2', '4'],
                  'tgt_gradient: exploration.num_steps values.')

NAME = 'exploration_sweep'
REPORTED = ('overall', 'few')


def sweeps(sigmas: Sequence[float], step_sizes: Sequence[float],
           num_steps: Sequence[int]) -> dict[str, tuple[str, str, list]]:
  """{sweep: (method, exploration field, values)}."""
  return {'sigma': ('tgt_random', 'sigma', list(sigmas)),
          'step_size': ('tgt_gradient', 'step_size', list(step_sizes)),
          'num_steps': ('tgt_gradient', 'num_steps', list(num_steps))}


def variant_name(sweep: str, value) -> str:
  return f'{sweep}_{value:g}'


def variants(sweep_specs: Mapping[str, tuple[str, str, list]],
             base: ml_collections.ConfigDict) -> dict[str, Any]:
  """One config per (sweep, value); a value shared by two sweeps is one run.

  The gradient sweeps cross at the demo's (step_size, num_steps); each run
  trains only the sweep's method.
  """
  configs = {}
  for sweep, (method, field, values) in sweep_specs.items():
    for value in values:
      config = copy.deepcopy(base)
      config.methods = (method,)
      config.exploration[field] = type(base.exploration[field])(value)
      configs[variant_name(sweep, value)] = config
  return configs


def summarize(results, sweep_specs) -> dict:
  """{sweep: {'method', 'field', 'values', 'stats': [{metric: stats}]}}."""
  summary = {}
  for sweep, (method, field, values) in sweep_specs.items():
    summary[sweep] = {
        'method': method, 'field': field, 'values': values,
        'stats': [grid.model_stats(results[variant_name(sweep, v)], method,
                                   REPORTED) for v in values]}
  return summary


def table(summary, seeds, info, demo) -> str:
  """Markdown: one table per sweep, mean ± std (%) over the seeds; `demo`:
  the base config's exploration section."""
  lines = [grid.header('Exploration sweeps', info),
           f'Top-1 accuracy (%) on the balanced test split, mean ± std '
           f'(ddof 0) over seeds {", ".join(map(str, seeds))}; the demo\'s '
           'long tail (imbalance factor 50). The demo uses sigma '
           f'{demo.sigma:g}, step size {demo.step_size:g}, '
           f'{demo.num_steps} step(s).']
  for sweep, spec in summary.items():
    lines += ['', f'### {spec["method"]}: exploration.{spec["field"]}', '',
              f'| {spec["field"]} | ' + ' | '.join(REPORTED) + ' |',
              '| --- |' + ' --- |' * len(REPORTED)]
    for value, stats in zip(spec['values'], spec['stats']):
      cells = ' | '.join(seed_stats.mean_std_cell(stats[m]) for m in REPORTED)
      lines.append(f'| {value:g} | {cells} |')
  return '\n'.join(lines) + '\n'


def plot(summary, path: str) -> None:
  """One panel a sweep: overall and few-shot accuracy against the knob."""
  fig, axes = plt.subplots(1, len(summary), figsize=(4.5 * len(summary), 3.5),
                           squeeze=False)
  for ax, (sweep, spec) in zip(axes[0], summary.items()):
    x = np.asarray(spec['values'], float)
    for metric in REPORTED:
      mean = np.array([100 * s[metric]['mean'] for s in spec['stats']])
      std = np.array([100 * s[metric]['std'] for s in spec['stats']])
      ax.plot(x, mean, marker='o', label=metric)
      ax.fill_between(x, mean - std, mean + std, alpha=0.2)
    if sweep != 'sigma':  # sigma includes 0: keep it linear.
      ax.set_xscale('log', base=2)
      ax.set_xticks(x, [f'{v:g}' for v in x])
      ax.minorticks_off()
    ax.set_xlabel(f'exploration.{spec["field"]}')
    ax.set_ylabel('test accuracy (%)')
    ax.set_title(spec['method'])
    ax.grid(alpha=0.3)
    ax.legend()
  visualize.save_figure(fig, path)


def main(argv):
  del argv
  train.quiet_orbax_logs()
  seeds = [int(s) for s in FLAGS.seeds]
  specs = sweeps([float(v) for v in FLAGS.sigmas],
                 [float(v) for v in FLAGS.step_sizes],
                 [int(v) for v in FLAGS.num_steps])
  info = grid.provenance()
  base = grid.base_config()
  configs = variants(specs, base)
  results = grid.run_variants(configs, seeds, FLAGS.workdir,
                              FLAGS.teacher_dir)
  summary = summarize(results, specs)
  markdown = table(summary, seeds, info, base.exploration)
  grid.write_outputs(FLAGS.workdir, NAME,
                     {**info, 'seeds': seeds, 'summary': summary,
                      'per_seed': results}, markdown)
  plot(summary, f'{FLAGS.workdir}/{NAME}.png')
  print(markdown)


if __name__ == '__main__':
  app.run(main)
