"""Orbax checkpoints of a training stage, with resume from the newest usable.

Orbax writes each checkpoint into a temporary directory and renames it when
complete, so a crash during a save leaves the earlier checkpoints intact. A
checkpoint that fails to restore is reported and the next older one is tried.
"""

import os
import time
from typing import Any, Callable, Optional, TypeVar

from absl import logging
import jax
import orbax.checkpoint as ocp


def create_manager(directory: str, max_to_keep: Optional[int] = 2,
                   best_fn: Optional[Callable[[Any], float]] = None,
                   read_only: bool = False) -> ocp.CheckpointManager:
  """A manager of `directory`'s checkpoints.

  `best_fn(metrics)`: keep the `max_to_keep` checkpoints with the highest
  value instead of the newest; `max_to_keep=None` keeps every one.
  `read_only`: never create, write or delete (e.g. to evaluate while
  another process trains there).
  """
  return ocp.CheckpointManager(
      os.path.abspath(directory),
      options=ocp.CheckpointManagerOptions(
          max_to_keep=max_to_keep, create=not read_only, best_fn=best_fn,
          best_mode='max', read_only=read_only,
          # A save cut short (a crash, a full disk) leaves a temporary
          # directory; the one writer removes it (a reader never does, as
          # the writer may be saving into it now).
          cleanup_tmp_directories=not read_only))


_T = TypeVar('_T')

# How often a reader retries when the writer removed a checkpoint under it.
# The writer keeps its newest checkpoints, so a second look nearly always
# succeeds; a directory still changing after 10 looks 0.1 s apart is
# more than a race.
_READ_ATTEMPTS = 10
_READ_RETRY_S = 0.1


class CheckpointsRemoved(Exception):
  """Every listed checkpoint went missing before it could be restored."""


def read_while_written(directory: str,
                       read: Callable[[ocp.CheckpointManager], _T]) -> _T:
  """`read(manager)` on a read-only manager of `directory`, retried when
  another process's training removes a checkpoint while it is being read.

  A writer with `max_to_keep` deletes its oldest checkpoint after each save.
  Orbax's reader lists the steps, then opens each one, so a step deleted
  between the two raises FileNotFoundError (or NotADirectoryError while a
  save renames its temporary directory); about 3% of opens failed that way
  against a writer saving in a loop. Listing again sees the steps that are
  there now.
  """
  for attempt in range(_READ_ATTEMPTS):
    try:
      manager = create_manager(directory, read_only=True)
      try:
        return read(manager)
      finally:
        manager.close()
    except (FileNotFoundError, NotADirectoryError, CheckpointsRemoved) as error:
      if attempt == _READ_ATTEMPTS - 1:
        raise FileNotFoundError(
            f'The checkpoints in {directory} kept changing while being read '
            f'({error}). If another process trains there, try again; if '
            'none does, its checkpoints are incomplete.') from error
      logging.info('A checkpoint in %s was removed while being read (%s); '
                   'reading the directory again.', directory, error)
      time.sleep(_READ_RETRY_S)
  raise AssertionError('unreachable')


def save(manager: ocp.CheckpointManager, step: int, state: Any,
         metrics: Optional[dict[str, float]] = None) -> None:
  manager.save(step, args=ocp.args.StandardSave(state), metrics=metrics)


def restore_step(manager: ocp.CheckpointManager, target: Any,
                 step: int) -> Any:
  """The checkpoint of `step` as `target`'s structure (a live state or its
  abstract shapes; restored arrays take its shardings)."""
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
  return manager.restore(step, args=ocp.args.StandardRestore(abstract))


def _listing_changed(manager: ocp.CheckpointManager, steps) -> bool:
  """Whether the directory now holds other steps than `steps` (Orbax's
  own listing, read again from disk)."""
  manager.reload()
  return set(manager.all_steps()) != set(steps)


def restore_latest(manager: ocp.CheckpointManager, target: Any,
                   removal_possible: bool = False
                   ) -> tuple[Optional[Any], int]:
  """The newest checkpoint that restores into `target`'s structure.

  Returns (state, step), or (None, 0) when the directory has none. `target`
  is a live state or its abstract shapes; restored arrays take its shardings.
  A checkpoint that fails to restore is reported and the one before it is
  tried; if none restores, a ValueError says so rather than training over
  them. `removal_possible` (a reader beside a writer): a checkpoint may
  fail because the writer is deleting it, file by file; if none restores
  and the directory's steps changed meanwhile, CheckpointsRemoved asks the
  caller to list it again (the failures say nothing about the checkpoints).
  """
  steps = sorted(manager.all_steps(), reverse=True)
  errors = []
  for step in steps:
    try:
      state = restore_step(manager, target, step)
    except Exception as error:  # pylint: disable=broad-except
      # A reader's failure may be the writer's deletion: not an error yet.
      report = logging.warning if removal_possible else logging.error
      report('Checkpoint at step %d in %s cannot be restored (%s); falling '
             'back to the one before it.', step, manager.directory, error)
      errors.append(f'step {step}: {error}')
      continue
    return state, step
  if errors and removal_possible and _listing_changed(manager, steps):
    raise CheckpointsRemoved(
        f'{manager.directory} changed from steps {sorted(steps)} while '
        'they were being restored')
  if errors:
    raise ValueError(
        f'No checkpoint in {manager.directory} fits this config '
        f'({"; ".join(errors)[:2000]}). If the config changed (depth, width, '
        'image size, classes, optimizer), use a new --workdir or point the '
        'checkpoint field at a directory trained with the same config.')
  return None, 0
