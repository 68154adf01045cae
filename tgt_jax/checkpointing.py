"""Orbax checkpoints of a training stage, with resume from the newest usable.

Orbax writes each checkpoint into a temporary directory and renames it when
complete, so a crash during a save leaves the earlier checkpoints intact. A
checkpoint that fails to restore is reported and the next older one is tried.
"""

import os
from typing import Any, Callable, Optional

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


def save(manager: ocp.CheckpointManager, step: int, state: Any,
         metrics: Optional[dict[str, float]] = None) -> None:
  manager.save(step, args=ocp.args.StandardSave(state), metrics=metrics)


def restore_step(manager: ocp.CheckpointManager, target: Any,
                 step: int) -> Any:
  """The checkpoint of `step` as `target`'s structure (a live state or its
  abstract shapes; restored arrays take its shardings)."""
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
  return manager.restore(step, args=ocp.args.StandardRestore(abstract))


def restore_latest(manager: ocp.CheckpointManager,
                   target: Any) -> tuple[Optional[Any], int]:
  """The newest checkpoint that restores into `target`'s structure.

  Returns (state, step), or (None, 0) when the directory has none. `target`
  is a live state or its abstract shapes; restored arrays take its shardings.
  A checkpoint that fails to restore is reported and the one before it is
  tried; if none restores, a ValueError says so rather than training over
  them.
  """
  steps = sorted(manager.all_steps(), reverse=True)
  errors = []
  for step in steps:
    try:
      state = restore_step(manager, target, step)
    except Exception as error:  # pylint: disable=broad-except
      logging.error('Checkpoint at step %d in %s cannot be restored (%s); '
                    'falling back to the one before it.', step,
                    manager.directory, error)
      errors.append(f'step {step}: {error}')
      continue
    return state, step
  if steps:
    raise ValueError(
        f'No checkpoint in {manager.directory} fits this config '
        f'({"; ".join(errors)[:2000]}). If the config changed (depth, width, '
        'image size, classes, optimizer), use a new --workdir or point the '
        'checkpoint field at a directory trained with the same config.')
  return None, 0
