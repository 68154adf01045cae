"""Mistakes in the command line or config fail early, naming what is wrong."""

import json
import os
import subprocess
import sys
import time

import numpy as np
from PIL import Image
import pytest

import conftest
from tgt_jax import errors
from tgt_jax import methods
from tgt_jax import train

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _write_png(path, value=128):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(np.full((8, 8), value, np.uint8)).save(path)


@pytest.mark.e2e  # python main.py as a user runs it.
def test_main_rejects_an_unknown_config_field(tmp_path):
  workdir = tmp_path / 'work'
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  process = subprocess.run(
      [sys.executable, 'main.py', '--config=configs/digits_lt.py:quick',
       '--config.not_a_field=1', f'--workdir={workdir}'],
      cwd=_REPO, env=env, capture_output=True, text=True, timeout=120,
      check=False)
  assert process.returncode != 0
  # The last line of the output, the error itself, names the field.
  assert 'not_a_field' in process.stderr.strip().splitlines()[-1]
  assert not workdir.exists()  # Failed while parsing flags, before any work.


def test_missing_image_folder_fails_before_training(tmp_path):
  config = conftest.tiny_config()
  config.dataset.name = 'image_folder'
  config.dataset.root = str(tmp_path / 'no_such_folder')
  workdir = tmp_path / 'work'
  with pytest.raises(FileNotFoundError, match='no_such_folder'):
    train.train_and_evaluate(config, str(workdir))
  assert not workdir.exists()  # No stage started, not even the workdir.


def test_image_folder_without_root_names_the_flag(tmp_path):
  config = conftest.tiny_config()
  config.dataset.name = 'image_folder'
  config.dataset.root = ''
  workdir = tmp_path / 'work'
  with pytest.raises(ValueError, match='--config.dataset.root'):
    train.train_and_evaluate(config, str(workdir))
  assert not workdir.exists()


def test_image_folder_class_without_images_is_named(tmp_path):
  root = tmp_path / 'images'
  for name in ('a.png', 'b.png'):
    _write_png(str(root / 'train' / 'cat' / name))
    _write_png(str(root / 'test' / 'cat' / name))
  (root / 'train' / 'dog').mkdir(parents=True)
  (root / 'train' / 'dog' / 'notes.txt').write_text('not an image')
  _write_png(str(root / 'test' / 'dog' / 'a.png'))
  config = conftest.tiny_config()
  config.dataset.name = 'image_folder'
  config.dataset.root = str(root)
  workdir = tmp_path / 'work'
  with pytest.raises(ValueError, match='holds no images') as error:
    train.train_and_evaluate(config, str(workdir))
  assert os.path.join('train', 'dog') in str(error.value)
  assert not workdir.exists()


def test_unknown_dataset_name_lists_the_known_ones(tmp_path):
  config = conftest.tiny_config()
  config.dataset.name = 'cifar10'
  workdir = tmp_path / 'work'
  with pytest.raises(ValueError, match="'cifar10'") as error:
    train.train_and_evaluate(config, str(workdir))
  assert 'digits' in str(error.value)
  assert 'mnist' in str(error.value)
  assert 'image_folder' in str(error.value)
  assert not workdir.exists()


def test_bundled_data_at_another_size_is_refused(tmp_path):
  config = conftest.tiny_config()  # Asks for 8x8 images.
  config.dataset.name = 'mnist'  # 28x28: every model would resize them.
  workdir = tmp_path / 'work'
  with pytest.raises(train.ConfigError,
                     match=r"dataset.image_size=8.*'mnist' holds 28x28 .*"
                     r'--config.dataset.image_size=28'):
    train.train_and_evaluate(config, str(workdir))
  assert not workdir.exists()


def test_inconsistent_config_fails_before_training(tmp_path):
  config = conftest.tiny_config()
  config.teacher_generator.channels = 3  # The digits have one.
  config.student.image_size = 16  # The pipeline delivers 8.
  workdir = tmp_path / 'work'
  with pytest.raises(train.ConfigError) as error:
    train.train_and_evaluate(config, str(workdir))
  assert 'teacher_generator.channels=3' in str(error.value)
  assert 'student.image_size=16' in str(error.value)
  assert not workdir.exists()


def test_unknown_method_fails_before_training(tmp_path):
  config = conftest.tiny_config()
  config.methods = ('onehot', 'tgt_sampling')
  workdir = tmp_path / 'work'
  with pytest.raises(ValueError, match="'tgt_sampling'") as error:
    train.train_and_evaluate(config, str(workdir))
  for method in methods.METHODS:
    assert method in str(error.value)
  assert not workdir.exists()


@pytest.mark.parametrize('stage', [
    'teacher_labeler',
    pytest.param('teacher_generator', marks=pytest.mark.integration)])
def test_missing_teacher_checkpoint_names_the_field(tmp_path, stage):
  config = conftest.tiny_config()
  config.methods = ('tgt_random',)
  missing = str(tmp_path / 'no_teacher_here')
  config[stage].checkpoint = missing
  if stage == 'teacher_generator':  # The labeler must exist to get there.
    config.teacher_labeler.num_epochs = 0.01
  with pytest.raises(ValueError, match=f'{stage}.checkpoint={missing} holds '
                                       'no complete'):
    train.train_and_evaluate(config, str(tmp_path / 'work'))
  assert not os.path.exists(missing)  # Not created by the failed run.


def _main(args, workdir, **kwargs):
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  env.pop('TGT_DEBUG', None)
  return subprocess.run(
      [sys.executable, 'main.py', *args, f'--workdir={workdir}'], cwd=_REPO,
      env=env, capture_output=True, text=True, timeout=300, check=False,
      **kwargs)


@pytest.mark.e2e
@pytest.mark.parametrize('args,expected', [
    (['--config=configs/digits_lt.py', '--config.batch_size=0'],
     'FATAL: batch_size=0: must be an integer >= 1; pass '
     '--config.batch_size='),
    (['--config=configs/digits_lt.py', '--config.batch_size=abc'],
     "FATAL: batch_size='abc': invalid literal"),
    (['--config=configs/image_folder.py:root=/x,sise=16'],
     'FATAL: sise: unknown config argument'),
    (['--config=configs/image_folder.py:root=/no/such/folder'],
     'FATAL: /no/such/folder: the image folder does not exist'),
])
def test_main_reports_bad_input_in_one_line(tmp_path, args, expected):
  workdir = tmp_path / 'work'
  process = _main(args, workdir)
  assert process.returncode == 1
  assert 'Traceback' not in process.stderr
  fatal = [l for l in process.stderr.splitlines() if l.startswith('FATAL')]
  assert len(fatal) == 1 and fatal[0].startswith(expected), fatal
  assert process.stderr.strip().splitlines()[-1] == fatal[0]
  assert not workdir.exists()
  # TGT_DEBUG=1 shows the traceback instead.
  debug = subprocess.run(
      [sys.executable, 'main.py', *args, f'--workdir={workdir}'], cwd=_REPO,
      env=dict(os.environ, JAX_PLATFORMS='cpu', TGT_DEBUG='1'),
      capture_output=True, text=True, timeout=300, check=False)
  assert debug.returncode != 0 and 'Traceback' in debug.stderr


@pytest.mark.e2e
def test_two_runs_on_one_workdir_one_is_refused(tmp_path):
  workdir = tmp_path / 'work'
  args = ['--config=configs/digits_lt.py:quick', "--config.methods=('kd',)",
          '--config.teacher_labeler.num_epochs=0.5', '--config.num_epochs=1']
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  first = subprocess.Popen(
      [sys.executable, 'main.py', *args, f'--workdir={workdir}'], cwd=_REPO,
      env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  lock = workdir / 'run.lock'
  deadline = time.time() + 240
  while not (lock.exists() and lock.read_text()) and time.time() < deadline:
    time.sleep(0.2)
  second = _main(args, workdir)
  _, first_errors = first.communicate(timeout=600)
  assert first.returncode == 0, first_errors[-2000:]
  last = second.stderr.strip().splitlines()[-1]
  assert second.returncode == 1
  assert last.startswith(f'FATAL: {workdir}: in use by process {first.pid} ')
  with open(workdir / 'results.json') as f:
    results = json.load(f)
  assert {'teacher_labeler', 'kd'} <= set(results)


def test_debug_mode_reads_the_flag_in_every_form(monkeypatch):
  monkeypatch.delenv(errors.DEBUG_VARIABLE, raising=False)
  assert not errors.debug_enabled(['main.py', '--config=x.py'])
  for argv in (['--debug'], ['--debug=true'], ['--debug=1'],
               ['--nodebug', '--debug']):
    assert errors.debug_enabled(['main.py', *argv]), argv
  for argv in (['--debug=false'], ['--debug', '--nodebug'],
               ['--debugger']):
    assert not errors.debug_enabled(['main.py', *argv]), argv
  monkeypatch.setenv(errors.DEBUG_VARIABLE, '1')
  assert errors.debug_enabled(['main.py'])


def test_export_of_a_missing_workdir_says_it_is_missing(tmp_path):
  from tgt_jax import export  # pylint: disable=g-import-not-at-top
  missing = str(tmp_path / 'no_such_run')
  with pytest.raises(FileNotFoundError,
                     match=r'no_such_run/config.json not found: --workdir'):
    export.export_student(missing, 'kd', str(tmp_path / 'out'))
  assert not (tmp_path / 'out').exists()
