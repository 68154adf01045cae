"""Embedding distillation on the digits demo: none vs raw vs compressed.

  python -m tgt_jax.experiments.embedding_ablation \
      --workdir=workdirs/embedding_ablation --seeds=0,1,2

trains kd and tgt_gradient students of configs/digits_lt.py with
embedding_distill.mode none, raw (EAsT), compressed (Ding & Lerch) and
random_projection (a fixed random g of the same size d_c), over the seeds,
and writes WORKDIR/ablation.json ({model: {metric: {mean, std, values}}} and
the per-seed results) and WORKDIR/ablation.md (mean ± std, the command).
`--config=configs/digits_lt.py:quick` runs the quick config instead (a smoke
test, not a result). `--methods` and `--modes` narrow the grid.

Run (seed s, mode m) lives in WORKDIR/seed_<s>/<m>. The teachers are trained
once, by the first run, and every other run restores them from its
checkpoints (config.teacher_labeler.checkpoint and
config.teacher_generator.checkpoint), so all runs share one labeler and one
generator and the spread measures the students' seeds alone. Each run resumes
what it finished before, so an interrupted ablation picks up where it
stopped.
"""

import copy
import os
from typing import Any, Mapping, Sequence

from absl import app
from absl import flags
from absl import logging
import ml_collections

from tgt_jax import embedding_distill
from tgt_jax import evaluation
from tgt_jax import train
from tgt_jax.experiments import grid
from tgt_jax.experiments import seed_stats

FLAGS = flags.FLAGS
flags.DEFINE_list('methods', ['kd', 'tgt_gradient'], 'Methods to compare.')
flags.DEFINE_list('modes', ['none', 'raw', 'compressed', 'random_projection'],
                  'embedding_distill.mode values to compare.')

METRICS = seed_stats.METRICS
_TEACHER_STAGES = grid.TEACHER_STAGES


def run_config(base: ml_collections.ConfigDict, methods: Sequence[str],
               mode: str, seed: int) -> ml_collections.ConfigDict:
  """The base config of one run of the grid."""
  config = copy.deepcopy(base)
  config.methods = tuple(methods)
  config.seed = seed
  config.embedding_distill.mode = mode
  return config


def run_ablation(workdir: str, seeds: Sequence[int], methods: Sequence[str],
                 modes: Sequence[str], base: ml_collections.ConfigDict,
                 teacher_dir: str | None = None) -> dict[int, dict]:
  """Trains the grid; returns {seed: {model key: report}} over all modes.

  `teacher_dir`: an earlier run's workdir whose teachers every run reuses;
  None trains them in the first run of the grid.
  """
  first_run = os.path.join(workdir, f'seed_{seeds[0]}', modes[0])
  per_seed = {}
  for seed in seeds:
    per_seed[seed] = {}
    for mode in modes:
      config = run_config(base, methods, mode, seed)
      run_dir = os.path.join(workdir, f'seed_{seed}', mode)
      if teacher_dir is not None or run_dir != first_run:
        config = grid.share_teachers(config, teacher_dir or first_run)
      logging.info('Ablation run: seed %d, mode %s, in %s.', seed, mode,
                   run_dir)
      results = train.train_and_evaluate(config, run_dir)
      # The teachers are the same in every run: keep the first report.
      for name, report in results.items():
        per_seed[seed].setdefault(name, report)
  return per_seed


def aggregate(per_seed: Mapping[int, Mapping[str, Any]]) -> dict[str, dict]:
  """{model: {metric: {'mean', 'std', 'values'}}} over seeds.

  std is the population standard deviation (ddof 0), as
  tgt_jax.experiments.multi_seed reports it. Scalars (such as
  reconstruction_agreement) are left out: the table is about accuracies.
  """
  runs = list(per_seed.items())
  names = [name for name, report in runs[0][1].items()
           if evaluation.is_report(report)]
  for seed, results in runs:
    missing = [name for name in names if name not in results]
    if missing:
      raise ValueError(f'seed {seed} has no results for {missing}; rerun the '
                       'ablation with the same flags to finish it.')
  return {name: grid.model_stats(per_seed, name) for name in names}


def _method_and_mode(name: str) -> tuple[str, str]:
  """'kd+emb_raw' -> ('kd', 'raw'); 'kd' -> ('kd', 'none'); teachers: '-'."""
  if name in _TEACHER_STAGES:
    return '-', '-'
  method, _, mode = name.partition('+emb_')
  return method, mode or 'none'


def ablation_table(summary: Mapping[str, Any], seeds: Sequence[int],
                   info: Mapping[str, str]) -> str:
  """Markdown: mean ± std in percent per model, with command/date/machine."""
  lines = [
      grid.header('Embedding compression ablation', info),
      f'Top-1 accuracy (%) on the balanced test split, mean ± std (ddof 0) '
      f'over seeds {", ".join(str(s) for s in seeds)}.', '',
      '| model | method | embedding | ' + ' | '.join(METRICS) + ' |',
      '| --- | --- | --- |' + ' --- |' * len(METRICS)]
  for name, stats in summary.items():
    method, mode = _method_and_mode(name)
    cells = ' | '.join(seed_stats.mean_std_cell(stats[m]) for m in METRICS)
    lines.append(f'| {name} | {method} | {mode} | {cells} |')
  return '\n'.join(lines) + '\n'


def _ordered(per_seed: Mapping[int, Mapping[str, Any]],
             methods: Sequence[str], modes: Sequence[str]) -> dict:
  """Rows grouped by method, modes in flag order, teachers first."""
  order = list(_TEACHER_STAGES) + [
      method if mode == 'none' else f'{method}+emb_{mode}'
      for method in methods for mode in modes]
  return {seed: {name: results[name] for name in order if name in results}
          for seed, results in per_seed.items()}


def main(argv):
  del argv
  train.quiet_orbax_logs()
  seeds = [int(s) for s in FLAGS.seeds]
  info = grid.provenance()
  for mode in FLAGS.modes:
    if mode not in embedding_distill.MODES:
      raise app.UsageError(f'Unknown mode {mode!r} in --modes; choose from '
                           f'{embedding_distill.MODES}.')
  per_seed = run_ablation(FLAGS.workdir, seeds, FLAGS.methods, FLAGS.modes,
                          grid.base_config(), FLAGS.teacher_dir)
  per_seed = _ordered(per_seed, FLAGS.methods, FLAGS.modes)
  summary = aggregate(per_seed)
  table = ablation_table(summary, seeds, info)
  grid.write_outputs(FLAGS.workdir, 'ablation',
                     {**info, 'seeds': seeds, 'summary': summary,
                      'per_seed': {str(s): r for s, r in per_seed.items()}},
                     table)
  print(table)


if __name__ == '__main__':
  app.run(main)
