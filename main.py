"""Runs Teacher Guided Training: teachers, then one student per method.

Kept short on purpose: the logic lives in `tgt_jax.train`, importable and
testable.

  python main.py --config=configs/digits_lt.py [--workdir=DIR]
      [--config.<field>=<value> ...] [--overwrite] [--debug]
      [--multihost [--coordinator_address=HOST:PORT --num_processes=N
                    --process_id=I]]
"""

import os
import re
import sys

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from tgt_jax import cli
from tgt_jax import errors
from tgt_jax import train

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    'config', None, 'Experiment config, e.g. configs/digits_lt.py[:quick].',
    lock_config=True)
flags.DEFINE_string('workdir', None,
                    'Output directory (default: workdirs/<config name>).')
flags.DEFINE_bool(
    'multihost', False,
    'Call jax.distributed.initialize() first: one process per host on TPU '
    'pods and GPU clusters (see README, "Many hosts").')
flags.DEFINE_string(
    'coordinator_address', None,
    'With --multihost where JAX cannot detect the cluster (plain GPU '
    'machines, local processes): host:port of process 0.')
flags.DEFINE_integer('num_processes', None,
                     'With --coordinator_address: the number of processes.')
flags.DEFINE_integer('process_id', None,
                     'With --coordinator_address: this process, 0-based.')
flags.DEFINE_bool(
    'overwrite', False,
    'Allow a run whose config differs from the one that wrote --workdir: the '
    'old results and mismatched checkpoints are moved aside '
    '(*.replaced-<time>), never deleted. Without it such a run stops.')
flags.mark_flags_as_required(['config'])


def default_workdir(config_path: str) -> str:
  """workdirs/<config file name>[_<argument>], e.g. workdirs/digits_lt_quick."""
  path, _, argument = config_path.partition(':')
  name = os.path.splitext(os.path.basename(path))[0]
  return os.path.join('workdirs', f'{name}_{argument}' if argument else name)


def _config_path(argv) -> str:
  return next((a.split('=', 1)[1] for a in argv if a.startswith('--config=')),
              'the config file')


def parse_flags(argv):
  """absl's parser, with every mistake in the command line made one line:
  a config field that does not exist, a value of the wrong type, and the
  errors a config file raises on its own arguments."""
  try:
    remaining = FLAGS(argv)
    FLAGS.config.keys()  # A config file that failed to load raises here.
    return remaining  # The config file loaded.
  except OSError as error:  # The config file could not be read.
    path = _config_path(argv).partition(':')[0]
    known = ', '.join(sorted(
        f'configs/{name}' for name in os.listdir('configs')
        if name.endswith('.py') and not name.startswith('_'))) if (
            os.path.isdir('configs')) else 'configs/*.py'
    reason = re.findall(r'\[Errno \d+\] ([^:\n]+)', str(error))
    _exit(f'FATAL: {path}: cannot load the config file'
          f'{f" ({reason[-1]})" if reason else ""}; pass --config= one of '
          f'{known} (relative to the current directory, or an absolute '
          'path).')
  except (AttributeError, KeyError) as error:
    text = str(error).encode().decode('unicode_escape')
    names = re.findall(r"'([A-Za-z_][A-Za-z0-9_]*)'", text)
    hint = re.search(r'Did you mean "[^"]+" instead of "[^"]+"\?', text)
    _exit(f'FATAL: {names[0] if names else text}: unknown config field in '
          f'a --config.<field> override; the fields are those set in '
          f'{_config_path(argv)}. {hint.group(0) if hint else ""} Check the '
          'spelling and the section, e.g. --config.exploration.sigma.')
  except flags.IllegalFlagValueError as error:
    lines = cli.fatal_lines(error)
    if lines:
      _exit('\n'.join(lines))
    found = re.match(r'flag --(config\.)?([\w.]+)=(.*?): (.*)', str(error),
                     re.S)
    if not found:
      _exit(f'FATAL: {" ".join(str(error).split())}')
    field, value, reason = found.group(2, 3, 4)
    _exit(f'FATAL: {field}={value!r}: {" ".join(reason.split())}; pass a '
          f'value of the type {_config_path(argv)} gives the field, e.g. an '
          'integer for a count.')
  except Exception as error:  # pylint: disable=broad-except
    lines = cli.fatal_lines(error)
    if not lines:
      raise
    _exit('\n'.join(lines))


def _exit(message: str) -> None:
  """Exits with `message`, or re-raises the error being handled in debug
  mode (TGT_DEBUG=1 or --debug), to show its traceback."""
  if errors.debug_enabled():
    raise  # pylint: disable=misplaced-bare-raise
  sys.exit(message)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  cli.quiet_orbax_logs()
  # TensorFlow is only an input-pipeline library here: keep it off the GPUs.
  try:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    tf.config.set_visible_devices([], 'GPU')
  except ImportError:
    pass
  if FLAGS.multihost:
    # On TPU pods, SLURM and other detected clusters all three are None.
    jax.distributed.initialize(coordinator_address=FLAGS.coordinator_address,
                               num_processes=FLAGS.num_processes,
                               process_id=FLAGS.process_id)
  workdir = FLAGS.workdir or default_workdir(FLAGS['config'].config_filename)
  logging.info('JAX process %d of %d, devices: %s', jax.process_index(),
               jax.process_count(), jax.devices())
  # Nothing is overwritten before any of the user's errors is raised.
  with cli.exit_on():
    train.train_and_evaluate(FLAGS.config, workdir, overwrite=FLAGS.overwrite)


if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags)
