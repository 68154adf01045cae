"""The pipeline as users run it: `python main.py` on the digits demo, on a
folder of their own images, and on a paper config's smoke variant."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest

import conftest
from test_config_lib import load_config
from tgt_jax import config_lib
from tgt_jax import pretrained
from tgt_jax import teachers as teachers_lib
from tgt_jax import train
from tgt_jax.generators import bigbigan

METHODS = ('onehot', 'kd', 'tgt_random', 'tgt_gradient')


def _main(*args, timeout=900):
  """Runs `python main.py ARGS` from the repository root; returns stderr."""
  process = subprocess.run(
      [sys.executable, 'main.py', *args], cwd=conftest.REPO,
      env=conftest.subprocess_env(), capture_output=True, text=True,
      timeout=timeout, check=False)
  assert process.returncode == 0, process.stderr[-5000:]
  return process.stderr


@pytest.fixture(scope='module')
def quick_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('digits_lt_quick'))
  log = _main('--config=configs/digits_lt.py:quick', f'--workdir={workdir}')
  with open(os.path.join(workdir, 'results.json')) as f:
    return workdir, json.load(f), log


@pytest.mark.e2e
def test_results_json_has_every_method_and_teacher(quick_run):
  _, results, log = quick_run
  for name in (*METHODS, 'teacher_labeler'):
    report = results[name]
    assert set(report) >= {'overall', 'many', 'medium', 'few', 'per_class',
                           'checkpoint', 'step', 'compute'}
    assert report['compute']['train_flops'] == (
        report['compute']['flops_per_step'] * report['compute']['steps']) > 0
    assert len(report['per_class']) == 10
    for key in ('overall', 'many', 'medium', 'few'):
      assert 0.0 <= report[key] <= 1.0
    # Balanced test split: overall accuracy is the mean per-class accuracy.
    assert report['overall'] == pytest.approx(sum(report['per_class']) / 10)
  assert 0.0 <= results['reconstruction_agreement'] <= 1.0
  # Even the quick labeler, trained on the full split, reads digits well.
  assert results['teacher_labeler']['overall'] > 0.5
  assert 'input sizes: data 8px' in log  # The derived sizes are logged.


@pytest.mark.e2e
def test_outputs_in_workdir(quick_run):
  workdir, _, _ = quick_run
  with open(os.path.join(workdir, 'results.md')) as f:
    table = f.read()
  for name in (*METHODS, 'teacher_labeler'):
    assert f'| {name} |' in table
  assert os.path.getsize(os.path.join(workdir, 'samples.png')) > 1000
  assert any(name.startswith('events.out.tfevents')
             for name in os.listdir(workdir))
  for stage in ('teacher_labeler', 'teacher_generator',
                *(f'students/{m}' for m in METHODS)):
    assert os.listdir(os.path.join(workdir, stage)), stage


@pytest.mark.e2e
def test_rerun_resumes_interrupted_stage_exactly(quick_run):
  """Drop the last checkpoint of one student: the rerun trains only the
  missing steps and ends where the uninterrupted run ended."""
  workdir, results, _ = quick_run
  student_dir = os.path.join(workdir, 'students', 'tgt_gradient')
  steps = sorted(int(s) for s in os.listdir(student_dir) if s.isdigit())
  assert len(steps) >= 2, steps
  shutil.rmtree(os.path.join(student_dir, str(steps[-1])))
  log = _main('--config=configs/digits_lt.py:quick', f'--workdir={workdir}')
  assert f'[tgt_gradient] resumed from step {steps[-2]}' in log
  with open(os.path.join(workdir, 'results.json')) as f:
    rerun = json.load(f)
  assert rerun.pop('run_info')['git_commit'] == results['run_info'][
      'git_commit']
  assert conftest.timeless(rerun) == conftest.timeless(
      {k: v for k, v in results.items() if k != 'run_info'})
  # The resumed student's time: the dropped checkpoint's steps, run again.
  assert rerun['tgt_gradient']['compute']['wall_s'] > 0


def _image_folder(root, size=20, counts=(12, 9, 6, 4)):
  """Colour-coded RGB classes of random-size images, train and test."""
  rng = np.random.default_rng(0)
  colours = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30)]
  for split, per_class in (('train', counts), ('test', (3,) * len(counts))):
    for label, count in enumerate(per_class):
      folder = os.path.join(root, split, f'class_{label}')
      os.makedirs(folder)
      for i in range(count):
        height, width = rng.integers(size, 2 * size, 2)
        pixels = np.clip(rng.normal(colours[label], 40, (height, width, 3)),
                         0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(os.path.join(folder, f'{i}.png'))


@pytest.mark.e2e
def test_your_own_images_in_one_flag(tmp_path):
  """configs/image_folder.py:root=DIR,...: every size follows from `size`."""
  root = str(tmp_path / 'images')
  _image_folder(root)
  workdir = str(tmp_path / 'work')
  log = _main(f'--config=configs/image_folder.py:root={root},size=12,'
              'quick=True', f'--workdir={workdir}', '--config.batch_size=8',
              '--config.teacher_labeler.batch_size=8',
              '--config.teacher_generator.batch_size=8',
              '--config.eval_batch_size=8', "--config.methods=('kd',"
              "'tgt_gradient')")
  assert 'input sizes: data 12px x 3; student 12, labeler 12, encoder 12, ' \
         'generator output 16' in log
  with open(os.path.join(workdir, 'results.json')) as f:
    results = json.load(f)
  assert {'teacher_labeler', 'kd', 'tgt_gradient'} <= set(results)
  assert len(results['kd']['per_class']) == 4
  with open(os.path.join(workdir, 'config.json')) as f:
    recorded = json.load(f)
  # The natural-image recipe: crops within size // 8 pixels, flips.
  assert recorded['dataset']['max_shift'] == 1 and recorded['dataset']['flip']


@pytest.mark.e2e
def test_paper_smoke_config_with_a_converted_teacher(tmp_path):
  """places_lt:smoke through train_and_evaluate, streaming fake data, with
  the generator loaded from a converted checkpoint (random weights)."""
  config = load_config('places_lt', 'smoke')
  config.methods = ('kd', 'tgt_gradient')
  gen = config_lib.resolve(config).teacher_generator
  directory = str(tmp_path / 'bigbigan')
  variables = teachers_lib.random_generator_variables(
      bigbigan.BigBiGAN.from_config(gen), seed=0)
  pretrained.save_teacher_generator(directory, variables, gen,
                                    {'source': 'random, for a test'})
  config.teacher_generator.pretrained_checkpoint = directory
  results = train.train_and_evaluate(config, str(tmp_path / 'workdir'))
  assert {'teacher_labeler', 'reconstruction_agreement', 'kd',
          'tgt_gradient'} <= set(results)
  assert 0.0 <= results['tgt_gradient']['overall'] <= 1.0
  assert os.path.exists(tmp_path / 'workdir' / 'samples.png')
