"""Exact resume: a run SIGKILLed at a random step and rerun with the same
command ends exactly where an uninterrupted run ends.

Both runs are `python main.py` subprocesses on the tiny pipeline of
tests/tiny_pipeline_config.py. The interrupted one is killed three times, at
steps drawn at random (seeded) inside the labeler, the generator and a
student; each kill lands between checkpoints (or during an asynchronous
save), so the rerun must restore and replay steps. Every random draw and the
data order are functions of (seed, step), so parameters and results.json
must match bit for bit.
"""

import json
import os
import re
import signal
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

import conftest
from tgt_jax import config_lib
from tgt_jax import train
from tgt_jax.data import loading

pytestmark = pytest.mark.integration

_REPO = conftest.REPO
_CONFIG = os.path.join(_REPO, 'tests', 'tiny_pipeline_config.py')
_STAGES = ('teacher_labeler', 'teacher_generator', 'students/tgt_gradient')
_STEP_LINE = re.compile(r'\[([\w+]+)\] step (\d+)/(\d+)')


def _env(cache_dir):
  # The persistent compilation cache lets the reruns load what the first run
  # compiled (the same executables, so results are unchanged): the test
  # then costs about one compile of the pipeline instead of five.
  return conftest.subprocess_env(
      JAX_COMPILATION_CACHE_DIR=cache_dir,
      JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
      JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES='-1',
      JAX_DISABLE_MOST_OPTIMIZATIONS='1')


def _main(workdir, cache_dir, kill_at=None):
  """Runs main.py; with kill_at=(stage, step), SIGKILLs it once that stage
  has logged `step`. Returns the step it was killed after, or None."""
  process = subprocess.Popen(
      [sys.executable, os.path.join(_REPO, 'main.py'), f'--config={_CONFIG}',
       f'--workdir={workdir}'],
      cwd=_REPO, env=_env(cache_dir), stdout=subprocess.DEVNULL,
      stderr=subprocess.PIPE, text=True)
  tail = []
  for line in process.stderr:
    tail = (tail + [line])[-40:]
    match = _STEP_LINE.search(line)
    if (kill_at and match and match.group(1) == kill_at[0] and
        int(match.group(2)) >= kill_at[1]):
      process.send_signal(signal.SIGKILL)
      process.wait()
      return int(match.group(2))
  process.wait()
  assert process.returncode == 0, ''.join(tail)
  assert kill_at is None, f'the run ended before {kill_at}'
  return None


def _final_state(stage_dir):
  manager = ocp.CheckpointManager(stage_dir)
  try:
    step = manager.latest_step()
    return step, manager.restore(step, args=ocp.args.StandardRestore())
  finally:
    manager.close()


def _planned_steps():
  """{stage: steps} of the tiny pipeline, in the order it trains them."""
  import tiny_pipeline_config  # pylint: disable=g-import-not-at-top
  config = config_lib.resolve(tiny_pipeline_config.get_config())
  return train.plan(config, loading.load_dataset(config))


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
  root = tmp_path_factory.mktemp('crash')
  reference, killed = str(root / 'reference'), str(root / 'killed')
  cache = str(root / 'compilation_cache')
  _main(reference, cache)
  rng = np.random.default_rng(7)
  # (stage, step) of each kill: a random step before the stage's last (the
  # stages' lengths as the run plans them, not copied here).
  kill_points = [(stage, int(rng.integers(1, steps)))
                 for stage, steps in _planned_steps().items()]
  killed_after = [_main(killed, cache, kill_at=point)
                  for point in kill_points]
  _main(killed, cache)
  return reference, killed, kill_points, killed_after


def test_every_kill_interrupted_its_stage(runs):
  _, _, kill_points, killed_after = runs
  for (stage, step), after in zip(kill_points, killed_after):
    assert after is not None and step <= after, (stage, step, after)


def test_results_json_identical_after_kills(runs):
  """Every result, which checkpoint (best or last) it came from and the
  FLOPs of each stage; only the record of the command and date of the last
  rerun, and the wall times, differ."""
  reference, killed, _, _ = runs
  with open(os.path.join(reference, 'results.json')) as f:
    expected = json.load(f)
  with open(os.path.join(killed, 'results.json')) as f:
    actual = json.load(f)
  assert actual.pop('run_info')['git_commit'] == expected.pop(
      'run_info')['git_commit']
  assert conftest.timeless(actual) == conftest.timeless(expected)
  assert set(expected) >= {'teacher_labeler', 'tgt_gradient',
                           'reconstruction_agreement'}
  for name in ('teacher_labeler', 'teacher_generator', 'tgt_gradient'):
    assert actual[name]['compute']['wall_s'] > 0, name


def _leaves(tree):
  return {jax.tree_util.keystr(path): np.asarray(leaf)
          for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


@pytest.mark.parametrize('stage', [*_STAGES, *(f'{s}/best' for s in _STAGES)])
def test_parameters_identical_after_kills(runs, stage):
  """Every array of the last and of the best checkpoint: parameters,
  BatchNorm statistics, optimiser state (for the generator, D and the EMA
  too)."""
  reference, killed, _, _ = runs
  step, expected = _final_state(os.path.join(reference, stage))
  killed_step, actual = _final_state(os.path.join(killed, stage))
  assert killed_step == step
  expected, actual = _leaves(expected), _leaves(actual)
  assert sorted(actual) == sorted(expected)
  for name, leaf in expected.items():
    np.testing.assert_array_equal(actual[name], leaf, err_msg=stage + name)
