r"""Draws a sample grid from a workdir's trained teachers and students.

  python -m tgt_jax.sample --workdir=W --out=grid.png [--classes=0,3,5]
      [--num=10] [--prior=10] [--methods=tgt_random,tgt_gradient]

Rows: one eval image per class (the first `--num` classes, or `--classes`),
their reconstructions G(E(x)), what each TGT method explores from them with
the student it trained, the same images mixed if a student trained on mixed
images (kd_mixup, mixup.on_tgt), and with `--prior=N` N decodes of prior
samples G(z), z ~ N(0, I); every image titled with the teacher labeler's
label.
Reads checkpoints only (see tgt_jax.evaluate).
"""


from absl import app
from absl import flags
import numpy as np

from tgt_jax import cli
from tgt_jax import train
from tgt_jax import visualize


def sample_workdir(workdir: str, out: str, classes=None, num: int = 10,
                   prior: int = 0, methods=None) -> dict[str, np.ndarray]:
  """Writes the grid to `out`; returns its rows (unit-range images)."""
  run, dataset = train.open_workdir(workdir, methods)
  teachers, students = train.run_stages(run, dataset, evaluate_all=False)
  if teachers.generator is None:
    raise ValueError(f'The run in {workdir} trained no TGT method, so it has '
                     'no teacher generator to sample from.')
  wanted = ([int(c) for c in classes] if classes else
            list(range(min(num, dataset.num_classes))))
  rows, labels = train.sample_rows(run.config, dataset, teachers, students,
                                   dataset.num_classes, prior)
  _, shown = dataset.grid_examples(dataset.num_classes)
  columns = [list(shown).index(c) for c in wanted if c in shown]
  for name in rows:
    if name != 'prior G(z)':
      rows[name], labels[name] = rows[name][columns], labels[name][columns]
  visualize.save_sample_grid(out, rows, labels, dataset.class_names)
  return rows


def define_flags():
  """The command line (only when run as a program: tests import this
  module beside others)."""
  flags.DEFINE_string('workdir', None, 'A workdir written by main.py.')
  flags.DEFINE_string('out', None, 'The PNG to write.')
  flags.DEFINE_list('classes', None, 'Class indices to show (default: the '
                                     'first --num classes).')
  flags.DEFINE_integer('num', 10, 'Classes to show without --classes.')
  flags.DEFINE_integer('prior', 0, 'Also decode this many prior samples.')
  flags.DEFINE_list('methods', None, 'TGT students to explore with (default: '
                                     'all of the run\'s).')
  flags.mark_flags_as_required(['workdir', 'out'])


def main(argv):
  del argv
  cli.quiet_orbax_logs()
  values = flags.FLAGS
  with cli.exit_on(FileNotFoundError, ValueError):
    sample_workdir(values.workdir, values.out, values.classes, values.num,
                   values.prior, values.methods)
  print(f'Wrote {values.out}')


if __name__ == '__main__':
  define_flags()
  app.run(main)
