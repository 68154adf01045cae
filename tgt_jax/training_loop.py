"""The loop every stage shares: resume, step, log, checkpoint.

A stage is a jitted `step(state, batch) -> (state, metrics)`, a
`batch_for_step(step)` that is a pure function of the step number, and a
number of steps. The loop restores the newest checkpoint in the stage's
directory, runs the remaining steps, and saves every `checkpoint_every` steps
and at the end. Metrics reach the host only at logging intervals, so the loop
never waits on the device in between.
"""

import math
import os
from typing import Any, Callable

from absl import logging
from clu import metric_writers
from clu import periodic_actions
import jax
import numpy as np

from tgt_jax import checkpointing


class NonFiniteLossError(FloatingPointError):
  """Training produced a NaN or Inf loss."""


def is_stage_complete(directory: str, num_steps: int) -> bool:
  """True when the stage's newest checkpoint is at its final step."""
  if not os.path.isdir(directory):
    return False
  manager = checkpointing.create_manager(directory)
  try:
    return (manager.latest_step() or 0) >= num_steps
  finally:
    manager.close()


def run(*, name: str, directory: str, state: Any,
        step_fn: Callable[[Any, Any], tuple[Any, dict[str, Any]]],
        batch_for_step: Callable[[int], Any], num_steps: int,
        writer: metric_writers.MetricWriter, log_every: int,
        checkpoint_every: int) -> Any:
  """Trains `state` to `num_steps`, resuming from `directory` if possible."""
  manager = checkpointing.create_manager(directory)
  restored, start_step = checkpointing.restore_latest(manager, state)
  if restored is not None:
    state = restored
    logging.info('[%s] resumed from step %d of %d.', name, start_step,
                 num_steps)
  if start_step >= num_steps:
    manager.close()
    return state

  progress = periodic_actions.ReportProgress(num_train_steps=num_steps,
                                             writer=writer)
  logging.info('[%s] training steps %d..%d.', name, start_step + 1, num_steps)
  for step in range(start_step, num_steps):
    state, metrics = step_fn(state, batch_for_step(step))
    done = step + 1
    progress(done)
    save_now = done % checkpoint_every == 0 or done == num_steps
    # Non-finite parameters keep the loss non-finite, so checking the loss
    # before every save guarantees no saved checkpoint is poisoned.
    if done % log_every == 0 or save_now:
      scalars = {k: float(np.mean(v))
                 for k, v in jax.device_get(metrics).items()}
      if not math.isfinite(scalars['loss']):
        manager.wait_until_finished()
        manager.close()
        raise NonFiniteLossError(
            f'[{name}] non-finite loss {scalars["loss"]} at step {done}; '
            f'the last good checkpoint in {directory} is kept. Lower the '
            'learning rate or check the input data.')
      writer.write_scalars(done, {f'{name}/{k}': v for k, v in scalars.items()})
      logging.info('[%s] step %d/%d: %s', name, done, num_steps, ', '.join(
          f'{k}={v:.4g}' for k, v in sorted(scalars.items())))
    if save_now:
      checkpointing.save(manager, done, state)
  manager.wait_until_finished()
  manager.close()
  writer.flush()
  return state
