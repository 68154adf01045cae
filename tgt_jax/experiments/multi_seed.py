"""The same experiment over several student seeds: mean and spread.

  python -m tgt_jax.experiments.multi_seed --config=configs/digits_lt.py \
      --seeds=0,1,2 --workdir=workdirs/digits_lt_seeds

Seed s trains every student in WORKDIR/seed_<s>. The teachers are trained
once, by the first seed, or taken from `--teacher_dir`, and reused by the
others (their checkpoints), as a pretrained teacher would be: the spread
then measures the students' seeds (initialisation, data order, exploration
noise), not the teachers'. Writes
WORKDIR/summary.json ({model: {metric: {mean, std, values}}}) and
WORKDIR/summary.md.
"""

import json
import os
from typing import Any, Mapping, Sequence

from absl import app
from absl import flags

from tgt_jax import cli
from tgt_jax import evaluation
from tgt_jax.experiments import grid
from tgt_jax.experiments import seed_stats

FLAGS = flags.FLAGS

METRICS = seed_stats.METRICS


def run_seeds(config, seeds: Sequence[int], workdir: str,
              teacher_dir: str | None = None) -> dict[int, dict]:
  """Runs `config` once per seed, in WORKDIR/seed_<s>, teachers shared."""
  # One unnamed variant: its runs live directly in WORKDIR/seed_<s>.
  return grid.run_variants({'': config}, seeds, workdir, teacher_dir)['']


def summarize(per_seed: Mapping[int, Mapping[str, Any]]) -> dict:
  """{model: {metric: {'mean', 'std', 'values'}}} over seeds (std: the
  sample one, ddof 1, as `seed_stats.metric_stats` computes it)."""
  runs = list(per_seed.values())
  summary = {}
  for name, report in runs[0].items():
    if evaluation.is_report(report):
      summary[name] = grid.model_stats(per_seed, name)
    elif isinstance(report, float):  # E.g. reconstruction_agreement.
      summary[name] = seed_stats.metric_stats([r[name] for r in runs])
  return summary


def summary_table(summary: Mapping[str, Any], num_seeds: int) -> str:
  """Markdown: mean ± std in percent, one row per model."""
  lines = [f'Mean ± std (ddof 1) over {num_seeds} seeds, top-1 accuracy (%) '
           'on the balanced test split.', '',
           '| model | ' + ' | '.join(METRICS) + ' |',
           '| --- |' + ' --- |' * len(METRICS)]
  for name, stats in summary.items():
    if 'mean' in stats:  # A scalar such as reconstruction_agreement.
      continue
    cells = ' | '.join(seed_stats.mean_std_cell(stats[m]) for m in METRICS)
    lines.append(f'| {name} | {cells} |')
  for name, stats in summary.items():
    if 'mean' in stats:
      lines.append(f'\n{name}: {100 * stats["mean"]:.1f}% '
                   f'± {100 * stats["std"]:.1f}')
  return '\n'.join(lines) + '\n'


def main(argv):
  del argv
  cli.quiet_orbax_logs()
  seeds = [int(s) for s in FLAGS.seeds]
  per_seed = run_seeds(grid.base_config(), seeds, FLAGS.workdir,
                       FLAGS.teacher_dir)
  summary = summarize(per_seed)
  with open(os.path.join(FLAGS.workdir, 'summary.json'), 'w') as f:
    json.dump(summary, f, indent=2)
  with open(os.path.join(FLAGS.workdir, 'summary.md'), 'w') as f:
    f.write(summary_table(summary, len(seeds)))
  print(summary_table(summary, len(seeds)))


if __name__ == '__main__':
  app.run(main)
