"""Nothing written by one config is overwritten by a run with another.

A run records the config it trains with in WORKDIR/config.json, and every
stage directory records the fields its training depends on in
<stage>/config.json. A later run with the same workdir must agree with both,
except for fields that change how a run is observed but not what it computes
(`IGNORED_FIELDS`, e.g. the logging interval, or `methods`, so that adding a
method to a finished run trains just that student). On a mismatch the run
stops before any compute with an error listing the fields that differ; with
the explicit `--overwrite` flag the old results and stage directories are
moved aside (renamed `*.replaced-<UTC time>`), never deleted, and the run
starts them afresh.

A teacher stage named by a `checkpoint` field belongs to another run and is
never moved: it must agree with this config except for the seed (one
teacher serves students of many seeds), with or without `--overwrite`.
"""

import datetime
import json
import os
from typing import Any

from absl import logging
import ml_collections

from tgt_jax import errors
from tgt_jax import files

FINGERPRINT_FILE = 'config.json'
# Fields that do not change what a run computes: how it is observed
# (`methods` only selects which students to train, and each student has its
# own stage fingerprint), where its inputs live (data may move, a teacher
# checkpoint may be copied elsewhere), and which split it is evaluated on.
IGNORED_FIELDS = ('methods', 'log_every_steps', 'checkpoint_every_steps',
                  'keep_checkpoints',
                  'eval_every_steps', 'eval_batch_size', 'num_grid_samples',
                  'dataset.root', 'dataset.data_dir', 'dataset.split_dir',
                  'dataset.cache_dir', 'dataset.cache', 'dataset.eval_split',
                  'teacher_labeler.checkpoint',
                  'teacher_labeler.init_checkpoint',
                  'teacher_generator.checkpoint',
                  'teacher_generator.pretrained_checkpoint')
# What a teacher stage's training depends on, besides its own section.
_TEACHER_CONTEXT = ('dataset', 'seed')


class ConfigMismatchError(errors.WorkdirError, ValueError):
  """A workdir or stage directory was written with a different config."""


def _flat(tree: Any, prefix: str = '') -> dict[str, Any]:
  """{'a.b': leaf} of nested dicts; tuples and lists compare as lists."""
  if isinstance(tree, dict):
    out = {}
    for key, value in tree.items():
      out.update(_flat(value, f'{prefix}{key}.'))
    return out
  if isinstance(tree, tuple):
    tree = list(tree)
  return {prefix[:-1]: tree}


def _ignored(field: str) -> bool:
  return field in IGNORED_FIELDS or field.split('.')[0] in IGNORED_FIELDS


def fingerprint_of(config_json: dict[str, Any]) -> dict[str, Any]:
  """The fields of a config (as JSON) that a run's results depend on."""
  return {k: v for k, v in _flat(config_json).items() if not _ignored(k)}


def run_fingerprint(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The fields of the whole run that its results depend on."""
  return fingerprint_of(json.loads(config.to_json()))


def teacher_fingerprint(config: ml_collections.ConfigDict,
                        stage: str) -> dict[str, Any]:
  """The fields a teacher stage's training depends on: its own section, the
  dataset and the seed (not where anything lives)."""
  return {k: v for k, v in run_fingerprint(config).items()
          if k.split('.')[0] in (stage, *_TEACHER_CONTEXT)}


def _differences(old: dict[str, Any], new: dict[str, Any],
                 ignore: tuple[str, ...] = ()) -> list[str]:
  keys = sorted((set(old) | set(new)) - set(ignore))
  missing = '<absent>'
  return [f'{k}: {old.get(k, missing)!r} -> {new.get(k, missing)!r}'
          for k in keys if old.get(k, missing) != new.get(k, missing)]


def _read(directory: str) -> dict[str, Any] | None:
  path = os.path.join(directory, FINGERPRINT_FILE)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def _write(directory: str, fingerprint: dict[str, Any]) -> None:
  os.makedirs(directory, exist_ok=True)
  files.atomic_write(os.path.join(directory, FINGERPRINT_FILE),
                     json.dumps(fingerprint, indent=1, sort_keys=True))


def _move_aside(path: str) -> str:
  stamp = datetime.datetime.now(datetime.timezone.utc).strftime(
      '%Y%m%dT%H%M%S')
  root, ext = os.path.splitext(path)
  target = f'{root}.replaced-{stamp}{ext}'
  os.replace(path, target)
  logging.warning('--overwrite: moved %s to %s.', path, target)
  return target


def _mismatch_message(what: str, directory: str, diffs: list[str],
                      fix: str) -> str:
  shown = '; '.join(diffs[:12]) + ('; ...' if len(diffs) > 12 else '')
  # The path first, as every one-line error: `<path>: <what is wrong>`.
  return (f'{directory}: this {what.lower()} was written by a run with a '
          f'different config ({len(diffs)} field(s) differ, old -> new: '
          f'{shown}). Nothing was changed. {fix}')


def holds_checkpoint(directory: str) -> bool:
  """Whether a stage directory holds a finished checkpoint (last or best):
  orbax names each by its step, and renames it so only once complete."""
  return any(
      os.path.isdir(os.path.join(path, name)) and name.isdigit()
      for path in (directory, os.path.join(directory, 'best'))
      if os.path.isdir(path) for name in os.listdir(path))


def trained_students(workdir: str) -> list[str]:
  """The sorted names (results.json keys) of the students with a finished
  checkpoint in workdir/students."""
  students = os.path.join(workdir, 'students')
  if not os.path.isdir(students):
    return []
  return sorted(name for name in os.listdir(students)
                if holds_checkpoint(os.path.join(students, name)))


def holds_results(workdir: str) -> bool:
  """Whether a workdir holds anything a run computed: results or a stage
  checkpoint. A run that failed before that trained nothing, and its
  recorded config binds no later run (a corrected command just runs)."""
  # Every run records its provenance (run_info) first; a result is more.
  if set(files.read_json(os.path.join(workdir, 'results.json'), {})) - {
      'run_info'}:
    return True
  return bool(trained_students(workdir)) or any(
      holds_checkpoint(os.path.join(workdir, stage))
      for stage in ('teacher_labeler', 'teacher_generator'))


def claim_workdir(workdir: str, config: ml_collections.ConfigDict,
                  overwrite: bool, write: bool = True) -> None:
  """Checks the run's config against WORKDIR/config.json, then records it.

  WORKDIR/config.json holds the whole resolved config of the latest run
  (`read_run_config` rebuilds it, e.g. to evaluate); only its fingerprint
  is compared, so a run whose data or teachers moved is the same run.
  Raises ConfigMismatchError on a different config unless `overwrite`; then
  the old results files and config are moved aside. A config.json beside
  no results and no checkpoint (its run failed before training anything)
  binds nothing and is replaced. `write`: as in `claim_stage`.
  """
  fingerprint = run_fingerprint(config)
  old = _read(workdir)
  if old is not None and not holds_results(workdir):
    if _differences(fingerprint_of(old), fingerprint):
      logging.warning('%s/%s was written by a run that trained nothing (no '
                      'checkpoint, no results): this run replaces it.',
                      workdir, FINGERPRINT_FILE)
    old = None
  if old is not None:
    diffs = _differences(fingerprint_of(old), fingerprint)
    if diffs and not overwrite:
      raise ConfigMismatchError(_mismatch_message(
          'Workdir', workdir, diffs,
          'Use a new --workdir for the new config, or rerun with --overwrite '
          'to move the old results and checkpoints aside '
          '(*.replaced-<time>) and train afresh.'))
    if diffs and write:
      for name in ('results.json', 'results.md', FINGERPRINT_FILE):
        if os.path.exists(os.path.join(workdir, name)):
          _move_aside(os.path.join(workdir, name))
  recorded = json.loads(config.to_json())
  # Unchanged, it is not rewritten: a finished run's workdir may be
  # read-only.
  if write and _read(workdir) != recorded:
    _write(workdir, recorded)


def read_run_config(workdir: str) -> ml_collections.ConfigDict:
  """The resolved config a run in `workdir` trained with (config.json)."""
  recorded = _read(workdir)
  if recorded is None:
    raise FileNotFoundError(
        f'{os.path.join(workdir, FINGERPRINT_FILE)} not found: --workdir must '
        'be a directory written by `python main.py`.')
  return ml_collections.ConfigDict(recorded)


def claim_stage(directory: str, fingerprint: dict[str, Any], overwrite: bool,
                reused: bool = False, write: bool = True) -> None:
  """Checks (or records) what a stage directory was trained with.

  `reused`: the directory was named by a config's `checkpoint` field; it is
  compared without the seed and never moved or written. `write`: False on
  every process but the first, which alone records and moves files.
  """
  old = _read(directory)
  if old is None:
    if reused:
      logging.warning('%s records no config (written by an older version); '
                      'using it unchecked.', directory)
    elif write:  # A new stage, or one from before stage fingerprints.
      _write(directory, fingerprint)
    return
  diffs = _differences(old, fingerprint, ignore=('seed',) if reused else ())
  if not diffs:
    return
  if not reused and not holds_checkpoint(directory):
    if write:  # Its run failed before its first checkpoint.
      _write(directory, fingerprint)
    return
  if reused:
    raise ConfigMismatchError(_mismatch_message(
        'Teacher checkpoint', directory, diffs,
        'Point the checkpoint field at a teacher trained with this config, '
        'or make the config match the teacher.'))
  if not overwrite:
    raise ConfigMismatchError(_mismatch_message(
        'Stage directory', directory, diffs,
        'Use a new --workdir, or rerun with --overwrite to move it aside.'))
  if write:
    _move_aside(directory)
    _write(directory, fingerprint)
