"""The loop every stage shares: resume, step, log, evaluate, checkpoint.

A stage is a jitted `step(state, batch) -> (state, metrics)`, a
`batch_for_step(step)` that is a pure function of the step number, and a
number of steps. The loop restores the newest checkpoint in the stage's
directory, runs the remaining steps, and saves every `checkpoint_every`
steps and at the end. Metrics stay on the device, summed, and reach the host
only at logging intervals, as their mean over the interval; so the loop never
waits on the device in between.

With an `evaluate(state) -> {'overall': ...}` the loop also measures the
state on the validation split every `eval_every` steps and at the end, and
keeps the best state by `overall` in `<directory>/best` beside the last one;
of evaluations that tie, the later step is kept (on a small validation split
ties are common, and the earliest of them is the least trained). Both are
exact after a resume: evaluation steps, values and the choice are functions
of the run's config.

The loop also keeps the stage's compute record (`compute`): the FLOPs of
its step, counted once on the first batch the stage trains on, and the wall
seconds of training up to each checkpoint, written before the checkpoint is
saved. A resume starts the clock at the seconds of the checkpoint it
restores, so the final record is the time that produced the final state
(each process's compilation, steps, validation and saves; not the steps a
crash threw away, which the resume runs again), whatever the interruptions.
"""

import dataclasses
import math
import os
import time
from typing import Any, Callable, Optional

from absl import logging
from clu import metric_writers
import jax
import jax.numpy as jnp
import numpy as np

from tgt_jax import checkpointing
from tgt_jax import compute

BEST_DIR = 'best'


class NonFiniteLossError(FloatingPointError):
  """Training produced a NaN or Inf loss."""


def is_stage_complete(directory: str, num_steps: int) -> bool:
  """True when the stage's newest checkpoint is at its final step."""
  steps = checkpoint_steps(directory)
  return bool(steps) and steps[-1] >= num_steps


@dataclasses.dataclass
class RunProgress:
  """Steps of every stage of a run, for its ETA.

  `planned`: {stage name: steps} in the order the stages run. Stages differ
  in cost by an order of magnitude (a labeler step against a gradient-
  exploration step), so the ETA prices the running stage's remaining steps
  at that stage's own rate and later stages at the run's mean rate so far: a
  rough guide that sharpens as each stage runs.
  """
  planned: dict[str, int]
  done: dict[str, int] = dataclasses.field(default_factory=dict)
  # {stage: (steps, seconds)} of the steps this process ran (not those a
  # resumed stage restored), for the rates.
  timed: dict[str, tuple[int, float]] = dataclasses.field(
      default_factory=dict)

  def record(self, stage: str, done: int, steps: int, seconds: float):
    """`stage` reached step `done`, running `steps` steps in `seconds`."""
    self.done[stage] = done
    old_steps, old_seconds = self.timed.get(stage, (0, 0.0))
    self.timed[stage] = (old_steps + steps, old_seconds + seconds)

  def fraction_and_eta(self, stage: str) -> tuple[float, Optional[float]]:
    """Fraction of the run's steps done, and seconds left (None: unknown)."""
    total = sum(self.planned.values())
    fraction = sum(self.done.values()) / max(total, 1)
    steps = sum(n for n, _ in self.timed.values())
    seconds = sum(t for _, t in self.timed.values())
    if not steps or seconds <= 0:
      return fraction, None
    mean_rate = steps / seconds
    stage_steps, stage_seconds = self.timed.get(stage, (0, 0.0))
    stage_rate = (stage_steps / stage_seconds if stage_steps and
                  stage_seconds > 0 else mean_rate)
    names = list(self.planned)
    later = names[names.index(stage) + 1:] if stage in names else []
    stage_left = max(self.planned.get(stage, 0) - self.done.get(stage, 0), 0)
    later_left = sum(max(self.planned[s] - self.done.get(s, 0), 0)
                     for s in later)
    return fraction, stage_left / stage_rate + later_left / mean_rate


def _format_eta(seconds: Optional[float]) -> str:
  if seconds is None:
    return '?'
  minutes, secs = divmod(int(seconds), 60)
  hours, minutes = divmod(minutes, 60)
  return f'{hours}h{minutes:02d}m' if hours else f'{minutes}m{secs:02d}s'


@jax.jit
def _accumulate(total, metrics):
  return jax.tree.map(jnp.add, total, metrics)


@dataclasses.dataclass
class _Best:
  """The best checkpoint by validation `overall`, in directory/best."""
  directory: str
  manager: Any = None
  value: float = -math.inf

  def __post_init__(self):
    self.manager = checkpointing.create_manager(
        os.path.join(self.directory, BEST_DIR), max_to_keep=1,
        best_fn=lambda metrics: metrics['overall'])
    step = self.manager.best_step()
    metrics = None if step is None else self.manager.metrics(step)
    if metrics is not None:  # A committed best of an earlier run.
      self.value = float(metrics['overall'])

  def offer(self, step: int, state, report: dict) -> bool:
    """Saves `state` as the best if it is at least as good as the best so
    far (a tie goes to the later step; orbax keeps the newer of two equal
    checkpoints)."""
    if report['overall'] < self.value or step in self.manager.all_steps():
      return False
    self.value = float(report['overall'])
    checkpointing.save(self.manager, step, state,
                       metrics={'overall': self.value})
    return True

  def close(self):
    self.manager.wait_until_finished()
    self.manager.close()


def run(*, name: str, directory: str, state: Any,
        step_fn: Callable[[Any, Any], tuple[Any, dict[str, Any]]],
        batch_for_step: Callable[[int], Any], num_steps: int,
        writer: metric_writers.MetricWriter, log_every: int,
        checkpoint_every: int,
        keep_checkpoints: int = 2,
        evaluate: Optional[Callable[[Any], dict[str, Any]]] = None,
        eval_every: int = 0,
        progress: Optional[RunProgress] = None,
        flops_fn: Optional[Callable[[Any, Any], Optional[float]]] = None
        ) -> Any:
  """Trains `state` to `num_steps`, resuming from `directory` if possible.

  Returns the last state. With `evaluate`, the best state by validation
  `overall` is kept in directory/best (see `restore`). `keep_checkpoints`:
  how many of the newest checkpoints stay in `directory` (0: every one,
  e.g. to study a run's trajectory afterwards). `flops_fn(state, batch)`:
  the FLOPs of one step, recorded in directory/compute.json with the wall
  time (see `compute.stage_compute`).
  """
  progress = progress or RunProgress({name: num_steps})
  manager = checkpointing.create_manager(
      directory, max_to_keep=keep_checkpoints or None)
  restored, start_step = checkpointing.restore_latest(manager, state)
  if restored is not None:
    state = restored
    logging.info('[%s] resumed from step %d of %d.', name, start_step,
                 num_steps)
  progress.done[name] = min(start_step, num_steps)
  if start_step >= num_steps:
    manager.close()
    return state

  best = _Best(directory) if evaluate is not None else None
  writes = jax.process_index() == 0
  record = compute.read(directory)
  # None: a stage resumed from a checkpoint whose time was never recorded;
  # its wall time stays unknown rather than part of it.
  seconds_before = compute.seconds_at(record, start_step)
  try:
    logging.info('[%s] training steps %d..%d.', name, start_step + 1, num_steps)
    totals, count = None, 0
    clock_start = interval_start = time.perf_counter()
    for step in range(start_step, num_steps):
      batch = batch_for_step(step)
      if flops_fn is not None and 'flops_per_step' not in record:
        counting_start = time.perf_counter()
        record['flops_per_step'] = flops_fn(state, batch)
        # Counting is not training: off the clock and the step rate.
        counted = time.perf_counter() - counting_start
        clock_start += counted
        interval_start += counted
      state, metrics = step_fn(state, batch)
      totals = metrics if totals is None else _accumulate(totals, metrics)
      count += 1
      done = step + 1
      save_now = done % checkpoint_every == 0 or done == num_steps
      evaluate_now = evaluate is not None and (
          done == num_steps or (eval_every and done % eval_every == 0))
      # Non-finite parameters keep the loss non-finite, so checking the loss
      # before every save guarantees no saved checkpoint is poisoned.
      if done % log_every == 0 or save_now or evaluate_now:
        means = {k: float(np.mean(v)) / count
                 for k, v in jax.device_get(totals).items()}
        if not math.isfinite(means['loss']):
          raise NonFiniteLossError(
              f'[{name}] non-finite loss {means["loss"]} at step {done}; '
              f'the last good checkpoint in {directory} is kept. Lower the '
              'learning rate or check the input data.')
        elapsed = time.perf_counter() - interval_start
        progress.record(name, done, count, elapsed)
        scalars = {f'{name}/train/{k}': v for k, v in means.items()}
        scalars[f'{name}/steps_per_second'] = count / max(elapsed, 1e-9)
        line = ', '.join(f'{k}={v:.4g}' for k, v in sorted(means.items()))
        if evaluate_now:
          report = evaluate(state)
          scalars.update({f'{name}/val/{k}': v for k, v in report.items()
                          if isinstance(v, float)})
          line += '; val ' + ', '.join(
              f'{k}={v:.4g}' for k, v in report.items()
              if isinstance(v, float) and math.isfinite(v))
          if best.offer(done, state, report):
            line += ' (best)'
        writer.write_scalars(done, scalars)
        fraction, eta = progress.fraction_and_eta(name)
        logging.info('[%s] step %d/%d (%.1f steps/s): %s | run %.0f%%, ETA %s',
                     name, done, num_steps, count / max(elapsed, 1e-9), line,
                     100 * fraction, _format_eta(eta))
        totals, count = None, 0
        interval_start = time.perf_counter()
      if save_now:
        if writes:
          seconds = None if seconds_before is None else (
              seconds_before + time.perf_counter() - clock_start)
          _record_seconds(record, directory, done, seconds,
                          manager.all_steps())
        checkpointing.save(manager, done, state)
  except BaseException:
    # Stop the background saves before the error reaches the user: a save
    # left running fails noisily at interpreter shutdown (e.g. on a full
    # disk, burying the one line that says so). What was saved is kept.
    for closing in filter(None, (manager, best and best.manager)):
      try:
        closing.close()
      except Exception:  # pylint: disable=broad-except
        logging.warning('Closing the checkpoints of %s after an error '
                        'failed as well.', directory)
    raise
  manager.wait_until_finished()
  manager.close()
  if best is not None:
    best.close()
  writer.flush()
  return state


def _record_seconds(record: dict, directory: str, step: int,
                    seconds: Optional[float], kept) -> None:
  """Writes the wall seconds at checkpoint `step` into compute.json,
  dropping the entries of checkpoints that are gone (`kept`: those that
  exist)."""
  kept = set(kept)
  wall = {k: v for k, v in record.get('wall_s', {}).items() if int(k) in kept}
  wall[str(step)] = seconds
  record['wall_s'] = wall
  compute.write(directory, record)


def restore(directory: str, target: Any, which: str = 'last',
            step: Optional[int] = None) -> tuple[Optional[Any], int]:
  """The stage's 'last' or 'best' checkpoint as `target`'s structure, read
  only (safe while another process trains in the directory); (None, 0) if
  there is none. `step`: that checkpoint of the stage instead of the last
  (one `checkpoint_steps` lists)."""
  if which not in ('last', 'best'):
    raise ValueError(f"which must be 'last' or 'best', got {which!r}.")
  path = directory if which == 'last' else os.path.join(directory, BEST_DIR)
  if not os.path.isdir(path):
    return None, 0

  def read(manager):
    if step is None:
      return checkpointing.restore_latest(manager, target,
                                          removal_possible=True)
    if step not in manager.all_steps():
      raise ValueError(f'{path} holds no checkpoint of step {step}; it '
                       f'holds {sorted(manager.all_steps())}.')
    return checkpointing.restore_step(manager, target, step), step

  return checkpointing.read_while_written(path, read)


def checkpoint_steps(directory: str) -> list[int]:
  """The steps of the stage's checkpoints on disk (every evaluation's when
  the stage ran with `keep_checkpoints=0` and saved at each one)."""
  if not os.path.isdir(directory):
    return []
  return checkpointing.read_while_written(
      directory, lambda manager: sorted(manager.all_steps()))
