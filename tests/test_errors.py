"""Mistakes in the command line or config fail early, naming what is wrong."""

import os
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest

import conftest
from tgt_jax import train
from tgt_jax import methods

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
  config.dataset.name = 'mnist'
  workdir = tmp_path / 'work'
  with pytest.raises(ValueError, match="'mnist'") as error:
    train.train_and_evaluate(config, str(workdir))
  assert 'digits' in str(error.value)
  assert 'image_folder' in str(error.value)
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
