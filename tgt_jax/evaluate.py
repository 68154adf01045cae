r"""Evaluates a workdir's checkpoints without training anything.

  python -m tgt_jax.evaluate --workdir=W [--split=val|test]
      [--methods=kd,tgt_gradient] [--checkpoint=best|last] [--out=DIR]

Restores every stage of the run in W (the config it trained with, from
W/config.json): the labeler, the generator, the students of `--methods`
(default: all of the run's), each at the checkpoint the run reports
(`report_checkpoint`: the best by validation accuracy, or the last;
`--checkpoint` chooses), and writes results.json and results.md of the same
shape as the run's for `--split` into `--out` (default W/evaluation_<split>).
It reads checkpoints only (while another process may be training in W, it
takes each stage's newest) and writes nothing else.
"""

import os

from absl import app
from absl import flags

from tgt_jax import cli
from tgt_jax import evaluation
from tgt_jax import provenance
from tgt_jax import train


def evaluate_workdir(workdir: str, split: str = 'test', methods=None,
                     checkpoint=None, out: str | None = None) -> dict:
  """Evaluates and writes OUT/results.{json,md}; returns the results."""
  run, dataset = train.open_workdir(workdir, methods, split, checkpoint)
  run.results['run_info'] = {**provenance.provenance(), 'split': split,
                             'evaluated': {'workdir': os.path.abspath(workdir),
                                           'split': split}}
  train.run_stages(run, dataset)
  out = out or os.path.join(workdir, f'evaluation_{split}')
  os.makedirs(out, exist_ok=True)
  evaluation.write_results(run.results, out)
  return run.results


def define_flags():
  """The command line (only when run as a program: tests import this
  module beside others)."""
  flags.DEFINE_string('workdir', None, 'A workdir written by main.py.')
  flags.DEFINE_enum('split', 'test', ('test', 'val'), 'The split to evaluate.')
  flags.DEFINE_list('methods', None, 'Students to evaluate (default: all).')
  flags.DEFINE_enum('checkpoint', None, ('best', 'last'),
                    'Which checkpoint of each stage (default: the run\'s '
                    'report_checkpoint).')
  flags.DEFINE_string('out', None, 'Output directory (default: '
                                   'WORKDIR/evaluation_<split>).')
  flags.mark_flags_as_required(['workdir'])


def main(argv):
  del argv
  cli.quiet_orbax_logs()
  values = flags.FLAGS
  with cli.exit_on(FileNotFoundError):
    results = evaluate_workdir(values.workdir, values.split, values.methods,
                               values.checkpoint, values.out)
  print(evaluation.results_table(results))


if __name__ == '__main__':
  define_flags()
  app.run(main)
