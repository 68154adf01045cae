"""Checkpoints: fallback past a corrupted one or a crash during a save, and
the non-finite-loss stop."""

import os
import signal
import subprocess
import sys
import threading

from clu import metric_writers
import jax.numpy as jnp
import numpy as np
import pytest

from tgt_jax import checkpointing
from tgt_jax import compute
from tgt_jax import training_loop


def _run(directory, step_fn, num_steps):
  return training_loop.run(
      name='toy', directory=str(directory), state={'w': jnp.zeros(3)},
      step_fn=step_fn, batch_for_step=lambda step: step, num_steps=num_steps,
      writer=metric_writers.create_default_writer(None, just_logging=True),
      log_every=1, checkpoint_every=1)


def _add_one(state, step):
  del step
  w = state['w'] + 1.0
  return {'w': w}, {'loss': jnp.sum(w)}


def test_eta_prices_the_running_stage_at_its_own_rate():
  """A slow stage after fast ones: the ETA uses the slow stage's rate for
  its own steps, not the run's mean (which the fast stages inflate)."""
  progress = training_loop.RunProgress(
      {'labeler': 1000, 'student': 100, 'kd': 100})
  progress.record('labeler', 1000, 1000, 10.0)  # 100 steps/s.
  progress.done['student'] = 40  # Resumed: restored steps, not timed.
  progress.record('student', 50, 10, 10.0)  # 1 step/s.
  fraction, eta = progress.fraction_and_eta('student')
  assert fraction == pytest.approx(1050 / 1200)
  # 50 student steps at 1 step/s; 100 kd steps at the run's mean rate
  # (1010 timed steps in 20 s).
  assert eta == pytest.approx(50 / 1 + 100 / (1010 / 20))


def test_corrupted_latest_checkpoint_falls_back_to_the_one_before(tmp_path):
  _run(tmp_path, _add_one, 2)  # Keeps steps 1 and 2.
  latest = tmp_path / '2'
  for root, _, files in os.walk(latest):
    for name in files:  # Truncate every file of the newest checkpoint.
      with open(os.path.join(root, name), 'w') as f:
        f.write('')
  manager = checkpointing.create_manager(str(tmp_path))
  state, step = checkpointing.restore_latest(manager, {'w': jnp.zeros(3)})
  manager.close()
  assert step == 1
  np.testing.assert_array_equal(state['w'], np.ones(3))


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
  def poisoned(state, step):
    new_state, metrics = _add_one(state, step)
    if step == 2:  # The third step goes bad.
      new_state = {'w': new_state['w'] * jnp.nan}
      metrics = {'loss': jnp.sum(new_state['w'])}
    return new_state, metrics

  with pytest.raises(training_loop.NonFiniteLossError,
                     match=r'\[toy\] non-finite loss nan at step 3'):
    _run(tmp_path, poisoned, 5)
  manager = checkpointing.create_manager(str(tmp_path))
  assert manager.latest_step() == 2
  state, step = checkpointing.restore_latest(manager, {'w': jnp.zeros(3)})
  manager.close()
  assert step == 2
  np.testing.assert_array_equal(state['w'], np.full(3, 2.0))


def test_checkpoints_that_fit_nothing_are_refused_not_overwritten(tmp_path):
  _run(tmp_path, _add_one, 1)
  manager = checkpointing.create_manager(str(tmp_path))
  with pytest.raises(ValueError, match='fits this config'):
    checkpointing.restore_latest(manager, {'w': jnp.zeros(5)})
  manager.close()
  # A reader (evaluate) says the same at once: nothing is writing there, so
  # the failure is not taken for a checkpoint being removed.
  with pytest.raises(ValueError, match='fits this config'):
    training_loop.restore(str(tmp_path), {'w': jnp.zeros(5)})
  assert os.path.isdir(tmp_path / '1')


_CRASH_IN_SAVE = '''
import os
import signal
import sys
import threading

from orbax.checkpoint._src.path import atomicity

sys.path.insert(0, sys.argv[2])
import test_checkpointing

finalize = atomicity.AtomicRenameTemporaryPath.finalize


async def crash_at_step_3(self, *args, **kwargs):
  # Step 3's files are written; die before the rename that commits them.
  if os.path.basename(str(self.get_final())) == '3':
    os.kill(os.getpid(), signal.SIGKILL)
  return await finalize(self, *args, **kwargs)


atomicity.AtomicRenameTemporaryPath.finalize = crash_at_step_3
test_checkpointing._run(sys.argv[1], test_checkpointing._add_one, 5)
'''


@pytest.mark.integration  # A killed subprocess; seconds of imports.
def test_crash_during_a_save_leaves_the_previous_checkpoint(tmp_path):
  """A process killed inside orbax's save of step 3 (after writing, before
  committing) leaves step 2 usable; the rerun resumes from it and ends as an
  uninterrupted run does."""
  directory = tmp_path / 'stage'
  tests_dir = os.path.dirname(os.path.abspath(__file__))
  process = subprocess.run(
      [sys.executable, '-c', _CRASH_IN_SAVE, str(directory), tests_dir],
      env=dict(os.environ, JAX_PLATFORMS='cpu'), capture_output=True,
      text=True, timeout=120, check=False)
  assert process.returncode == -signal.SIGKILL, process.stderr[-3000:]
  leftovers = [n for n in os.listdir(directory) if not n.isdigit()]
  assert leftovers, 'the crash should leave an uncommitted temporary'
  assert sorted(n for n in os.listdir(directory) if n.isdigit()) == ['1', '2']

  manager = checkpointing.create_manager(str(directory))
  state, step = checkpointing.restore_latest(manager, {'w': jnp.zeros(3)})
  manager.close()
  assert step == 2
  np.testing.assert_array_equal(state['w'], np.full(3, 2.0))

  final = _run(directory, _add_one, 5)
  np.testing.assert_array_equal(final['w'], np.full(3, 5.0))


def test_best_keeps_the_later_of_tied_evaluations(tmp_path):
  """Validation ties at steps 2 and 4 (and 3 is worse): the best is step 4,
  the more trained of the two."""
  scores = {2: 0.5, 3: 0.25, 4: 0.5}
  state = training_loop.run(
      name='toy', directory=str(tmp_path), state={'w': jnp.zeros(3)},
      step_fn=_add_one, batch_for_step=lambda step: step, num_steps=4,
      writer=metric_writers.create_default_writer(None, just_logging=True),
      log_every=1, checkpoint_every=1, eval_every=1,
      evaluate=lambda s: {'overall': scores.get(int(s['w'][0]), 0.0)})
  best, step = training_loop.restore(str(tmp_path), state, 'best')
  assert step == 4
  np.testing.assert_array_equal(best['w'], np.full(3, 4.0))


def test_keep_checkpoints_zero_keeps_every_one_and_each_restores(tmp_path):
  training_loop.run(
      name='toy', directory=str(tmp_path), state={'w': jnp.zeros(3)},
      step_fn=_add_one, batch_for_step=lambda step: step, num_steps=5,
      writer=metric_writers.create_default_writer(None, just_logging=True),
      log_every=1, checkpoint_every=2, keep_checkpoints=0)
  assert training_loop.checkpoint_steps(str(tmp_path)) == [2, 4, 5]
  state, step = training_loop.restore(str(tmp_path), {'w': jnp.zeros(3)},
                                      step=2)
  assert step == 2
  np.testing.assert_array_equal(state['w'], np.full(3, 2.0))
  with pytest.raises(ValueError, match=r'no checkpoint of step 3.*\[2, 4, 5\]'):
    training_loop.restore(str(tmp_path), {'w': jnp.zeros(3)}, step=3)
  # The default keeps the two newest.
  _run(tmp_path / 'default', _add_one, 5)
  assert training_loop.checkpoint_steps(str(tmp_path / 'default')) == [4, 5]


def test_reading_while_the_writer_removes_old_checkpoints(tmp_path):
  """evaluate beside a training process: the writer deletes its oldest
  checkpoint after each save, and a reader that listed it must look again
  rather than fail (before the fix about 3% of reads raised
  FileNotFoundError). Each read gets a complete checkpoint, of its step."""
  directory = str(tmp_path)
  saves = 60
  def write():
    manager = checkpointing.create_manager(directory, max_to_keep=1)
    for step in range(1, saves + 1):
      checkpointing.save(manager, step, {'w': jnp.full(3, float(step))})
      manager.wait_until_finished()
    manager.close()

  writer = threading.Thread(target=write)
  writer.start()
  reads = []
  try:
    while writer.is_alive() or not reads:
      steps = training_loop.checkpoint_steps(directory)
      state, step = training_loop.restore(directory, {'w': jnp.zeros(3)})
      if state is not None:
        np.testing.assert_array_equal(state['w'], np.full(3, float(step)))
        reads.append(step)
      assert all(1 <= s <= saves for s in steps)
  finally:
    writer.join()
  assert len(reads) > 10 and reads == sorted(reads)


def test_wall_time_and_flops_are_exact_across_a_resume(tmp_path,
                                                       monkeypatch):
  """Every step takes one second of a fake clock. A run killed after its
  fifth step (checkpoint at 4) and resumed records the six seconds an
  uninterrupted run does: the killed step is redone, not counted twice;
  the FLOPs are counted once, on the first batch, off the clock."""
  now = [0.0]
  monkeypatch.setattr(training_loop.time, 'perf_counter', lambda: now[0])
  counted = []

  def count_flops(state, batch):
    counted.append(batch)
    now[0] += 100.0  # Counting is slow, and not training.
    return 42.0

  def run(directory, kill_after=None):
    def step_fn(state, step):
      now[0] += 1.0
      if step == kill_after:
        raise KeyboardInterrupt  # As a kill: no checkpoint of this step.
      return _add_one(state, step)
    return training_loop.run(
        name='toy', directory=str(directory), state={'w': jnp.zeros(3)},
        step_fn=step_fn, batch_for_step=lambda step: step, num_steps=6,
        writer=metric_writers.create_default_writer(None, just_logging=True),
        log_every=1, checkpoint_every=2, flops_fn=count_flops)

  run(tmp_path / 'whole')
  with pytest.raises(KeyboardInterrupt):
    run(tmp_path / 'killed', kill_after=4)
  assert compute.read(str(tmp_path / 'killed'))['wall_s'] == {'2': 2.0,
                                                              '4': 4.0}
  run(tmp_path / 'killed')
  for name in ('whole', 'killed'):
    assert compute.stage_compute(str(tmp_path / name), 6) == {
        'flops_per_step': 42.0, 'steps': 6, 'train_flops': 252.0,
        'wall_s': 6.0}
  assert counted == [0, 0]  # Once per stage, on its first batch.
  # Every checkpoint a resume could start from has its seconds; the record
  # drops those of deleted checkpoints (one save late), so it stays small.
  wall = compute.read(str(tmp_path / 'whole'))['wall_s']
  manager = checkpointing.create_manager(str(tmp_path / 'whole'))
  assert {str(s) for s in manager.all_steps()} == {'4', '6'} <= set(wall)
  manager.close()
  assert len(wall) == 3


def test_a_resume_from_an_untimed_checkpoint_records_no_wall_time(tmp_path):
  """A stage trained before its time was recorded: its wall time is
  unknown (None), not the part this process saw."""
  _run(tmp_path, _add_one, 2)
  (tmp_path / compute.COMPUTE_FILE).unlink()
  _run(tmp_path, _add_one, 3)
  assert compute.stage_compute(str(tmp_path), 3)['wall_s'] is None
