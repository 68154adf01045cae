"""What a careless user and a hostile machine meet: every bad value is one
line naming the field before compute, a failed start blocks nothing, one
writer per workdir, a full or read-only disk loses nothing."""

import errno
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid

import pytest

import conftest
from tgt_jax import config_lib
from tgt_jax import errors
from tgt_jax import files
from tgt_jax import train

_CONFIGS = [('digits_lt', ''), ('digits_lt', 'quick'), ('mnist_lt', ''),
            ('image_folder', 'root=/x'), ('places_lt', 'fake_data'),
            ('imagenet_lt', 'smoke'), ('sun_lt', '')]


def _load(name, arg):
  module = __import__(f'configs.{name}', fromlist=['get_config'])
  return module.get_config(arg)


@pytest.mark.parametrize('name,arg', _CONFIGS)
def test_every_numeric_field_has_a_declared_range(name, arg):
  config = _load(name, arg)
  for candidate in (config, config_lib.resolve(config)):
    undeclared = sorted(set(config_lib.numeric_fields(candidate)) -
                        set(config_lib.RANGES))
    assert not undeclared  # Declare each in config_lib.RANGES.
  assert not config_lib.range_errors(config_lib.resolve(config))


def _fields_of_tiny_config():
  config = conftest.tiny_config()
  present = dict(config_lib._leaves(config_lib.resolve(config)))  # pylint: disable=protected-access
  return sorted(f for f in config_lib.RANGES if f in present)


@pytest.mark.parametrize('field', _fields_of_tiny_config())
def test_an_out_of_range_value_is_one_line_naming_the_field(field, tmp_path):
  config = conftest.tiny_config()
  declared = config_lib.RANGES[field]
  section, _, name = field.rpartition('.')
  owner = config[section] if section else config
  current = config_lib.resolve(config)[field]
  bad = declared.example()
  if isinstance(current, (tuple, list)):
    bad = (bad,)
  elif owner.get_type(name) is int or isinstance(current, int):
    bad = int(bad)
  with owner.ignore_type():
    owner[name] = bad
  workdir = tmp_path / 'work'
  start = time.perf_counter()
  with pytest.raises(errors.ConfigError) as error:
    train.train_and_evaluate(config, str(workdir))
  assert time.perf_counter() - start < 10  # Before any data or compute.
  problems = error.value.problems
  assert len(problems) == 1 and '\n' not in problems[0]
  assert problems[0].startswith(f'{field}=')
  assert f'--config.{field}=' in problems[0]
  assert not workdir.exists()


# String fields that hold a path or a prefix: any text may be meant.
_PATH_FIELDS = ('dataset.cache', 'dataset.cache_dir', 'dataset.data_dir',
                'dataset.root', 'dataset.split_dir',
                'teacher_generator.checkpoint',
                'teacher_generator.pretrained_checkpoint',
                'teacher_labeler.checkpoint',
                'teacher_labeler.init_checkpoint')


def test_every_string_field_refuses_an_unknown_value_in_one_line(tmp_path):
  """Each string field with a fixed set of values (config_lib.CHOICES, or
  its owner's check) given a typo: one line naming it, before compute,
  even where this run would not read the field."""
  resolved = config_lib.resolve(conftest.tiny_config())
  fields = [f for f, v in config_lib._leaves(resolved)  # pylint: disable=protected-access
            if isinstance(v, str) and f not in _PATH_FIELDS]
  assert set(config_lib.CHOICES) <= set(fields)
  for field in fields:
    config = conftest.tiny_config()
    section, _, name = field.rpartition('.')
    (config[section] if section else config)[name] = 'bogus'
    workdir = tmp_path / 'work'
    start = time.perf_counter()
    with pytest.raises(errors.ConfigError) as error:
      train.train_and_evaluate(config, str(workdir))
    assert time.perf_counter() - start < 10, field
    problems = error.value.problems
    assert len(problems) == 1 and '\n' not in problems[0], (field, problems)
    assert problems[0].startswith(f"{field}='bogus'"), problems[0]
    assert not workdir.exists()


def test_zero_epochs_is_an_error_not_one_step(tmp_path):
  for field in ('num_epochs', 'teacher_labeler.num_epochs'):
    config = conftest.tiny_config()
    section, _, name = field.rpartition('.')
    (config[section] if section else config)[name] = 0.0
    with pytest.raises(errors.ConfigError, match=f'^{field}=0.0: must be'):
      train.train_and_evaluate(config, str(tmp_path / 'work'))


@pytest.mark.integration  # Two small runs.
def test_a_failed_start_does_not_block_the_corrected_command(tmp_path):
  """A labeler that diverges at its first step leaves config files but no
  checkpoint: the corrected command then runs without --overwrite."""
  workdir = str(tmp_path / 'work')
  config = conftest.tiny_config()
  config.methods = ('onehot',)
  config.teacher_labeler.num_epochs = 0.05
  config.num_epochs = 0.05
  config.teacher_labeler.peak_learning_rate = 1e30
  with pytest.raises(FloatingPointError, match='non-finite loss'):
    train.train_and_evaluate(config, workdir)
  assert os.path.exists(os.path.join(workdir, 'config.json'))
  config.teacher_labeler.peak_learning_rate = 0.1
  results = train.train_and_evaluate(config, workdir)
  assert {'teacher_labeler', 'onehot'} <= set(results)


def test_atomic_write_is_safe_with_two_writers(tmp_path):
  path = str(tmp_path / 'results.json')
  texts = [json.dumps({'writer': w, 'pad': 'x' * 10_000}) for w in range(2)]

  def write(text):
    for _ in range(200):
      files.atomic_write(path, text)

  threads = [threading.Thread(target=write, args=(t,)) for t in texts]
  for thread in threads:
    thread.start()
  for thread in threads:
    thread.join()
  assert open(path).read() in texts
  assert os.listdir(tmp_path) == ['results.json']  # No temporary left.


def test_a_failed_write_leaves_no_temporary_file(tmp_path, monkeypatch):
  def full(*args):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
  monkeypatch.setattr(os, 'replace', full)
  with pytest.raises(OSError):
    files.atomic_write(str(tmp_path / 'a.json'), '{}')
  assert not os.listdir(tmp_path)


_HOLD = """
import sys, time
from tgt_jax import files
with files.exclusive_lock(sys.argv[1], 'process %s (test)' % sys.argv[2]):
  print('held', flush=True)
  time.sleep(120)
"""


def test_a_second_writer_is_refused_naming_the_holder(tmp_path):
  workdir = tmp_path / 'work'
  workdir.mkdir()
  tag = uuid.uuid4().hex
  holder = subprocess.Popen(
      [sys.executable, '-c', _HOLD, str(workdir / train.LOCK_FILE), tag],
      cwd=conftest.REPO, stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == 'held'
    with pytest.raises(errors.WorkdirError, match=f'in use by process {tag}'):
      train.train_and_evaluate(conftest.tiny_config(), str(workdir))
    assert sorted(os.listdir(workdir)) == [train.LOCK_FILE]
  finally:
    holder.kill()
    holder.wait()
  # Killed, the holder held nothing any more: the lock is free. It names
  # its holder while held and is emptied on release.
  lock = workdir / train.LOCK_FILE
  with files.exclusive_lock(str(lock), 'this test'):
    assert lock.read_text() == 'this test\n'
  assert lock.read_text() == ''


def test_disk_problems_are_one_line_with_the_fix():
  message = errors.disk_problem(OSError(errno.ENOSPC, 'No space', '/w/x'))
  assert message.startswith('/w/x: no space left on the device; free space')
  # TensorStore's error, as orbax raises it from a checkpoint save.
  tensorstore = ValueError(
      'RESOURCE_EXHAUSTED: Error writing "params/0": Failed writing: '
      '"/w/teacher_labeler/11.orbax-checkpoint-tmp/d/ab": Failed to write '
      "4 bytes to file 12: No space left on device [os_error_code='28']")
  assert errors.disk_problem(tensorstore).startswith(
      '/w/teacher_labeler/11.orbax-checkpoint-tmp/d/ab: no space left')
  assert errors.disk_problem(ValueError('RESOURCE_EXHAUSTED: out of '
                                        'memory')) is None


# --- A real full and read-only disk: a tmpfs workdir (needs root). --------


def _tmpfs(path, size):
  os.makedirs(path, exist_ok=True)
  done = subprocess.run(['mount', '-t', 'tmpfs', '-o', f'size={size}',
                         'tmpfs', path], capture_output=True, check=False)
  if done.returncode:
    pytest.skip(f'cannot mount a tmpfs here: {done.stderr.decode()}')


def _remount(path, options):
  subprocess.run(['mount', '-o', f'remount,{options}', path], check=True)


def _reports(results):
  # Wall times are the one entry two runs cannot share.
  return {k: v for k, v in conftest.timeless(results).items()
          if k != 'run_info'}


def _small_run():
  config = conftest.tiny_config()
  config.methods = ('onehot', 'kd')
  config.teacher_labeler.num_epochs = 0.1
  config.num_epochs = 0.2
  config.checkpoint_every_steps = 4
  return config


@pytest.mark.integration
def test_full_disk_stops_clearly_then_resumes_exactly(tmp_path):
  reference = str(tmp_path / 'reference')
  expected = _reports(train.train_and_evaluate(_small_run(), reference))
  used = sum(os.path.getsize(os.path.join(root, name))
             for root, _, names in os.walk(reference) for name in names)
  mount = str(tmp_path / 'disk')
  _tmpfs(mount, used // 2)
  try:
    workdir = os.path.join(mount, 'work')
    code = ('import sys; from tgt_jax import cli, train; import conftest, '
            'test_hostile_inputs as t\nwith cli.exit_on():\n'
            f'  train.train_and_evaluate(t._small_run(), {workdir!r})')
    env = dict(os.environ, JAX_PLATFORMS='cpu',
               PYTHONPATH=os.pathsep.join([conftest.REPO, os.path.join(
                   conftest.REPO, 'tests')]))
    failed = subprocess.run([sys.executable, '-c', code], env=env,
                            capture_output=True, text=True, timeout=600,
                            check=False)
    assert failed.returncode == 1
    last = failed.stderr.strip().splitlines()[-1]
    assert last.startswith('FATAL: ') and 'no space left' in last
    assert 'rerun the same command' in last
    _remount(mount, 'size=512m')
    resumed = train.train_and_evaluate(_small_run(), workdir)
    assert _reports(resumed) == expected
    assert not [root for root, _, _ in os.walk(workdir)
                if 'orbax-checkpoint-tmp' in root]
    # Read-only, the finished run reports its results instead of failing.
    _remount(mount, 'ro')
    assert _reports(train.train_and_evaluate(_small_run(), workdir)) == (
        expected)
    unfinished = _small_run()
    unfinished.methods = ('onehot', 'kd', 'tgt_random')
    with pytest.raises(errors.WorkdirError, match="read-only.*'tgt_random'"):
      train.train_and_evaluate(unfinished, workdir)
  finally:
    subprocess.run(['umount', mount], check=False)
  shutil.rmtree(reference)
