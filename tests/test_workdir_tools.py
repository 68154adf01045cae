"""Tools around a run: evaluate, sample, export and predict a finished (or
running) workdir; what TensorBoard shows; best and last checkpoints."""

import csv
import glob
import json
import os
import subprocess
import sys
import time

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

import conftest
from tgt_jax import errors
from tgt_jax import evaluate
from tgt_jax import export
from tgt_jax import predict
from tgt_jax import run_guard
from tgt_jax import sample
from tgt_jax import train
from tgt_jax.data import loading

pytestmark = pytest.mark.integration
METHODS = ('kd', 'tgt_random')


def _config():
  config = conftest.tiny_config()
  config.methods = METHODS
  config.num_epochs = 18 * 8 / 330  # 18 student steps.
  config.teacher_labeler.num_epochs = 0.05
  config.teacher_generator.num_epochs = 0.05
  config.eval_every_steps = 6
  config.log_every_steps = 3
  config.report_checkpoint = 'best'  # What these tests check is kept.
  return config


@pytest.fixture(scope='module')
def workdir(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('run'))
  train.train_and_evaluate(_config(), workdir)
  return workdir


def _results(workdir):
  with open(os.path.join(workdir, 'results.json')) as f:
    return json.load(f)


def test_results_record_the_checkpoint_and_where_they_come_from(workdir):
  results = _results(workdir)
  for name in ('teacher_labeler', *METHODS):
    assert results[name]['checkpoint'] in ('best', 'last')
    assert results[name]['step'] > 0
  info = results['run_info']
  assert set(info) >= {'command', 'date', 'machine', 'packages',
                       'git_commit'}
  assert 'jax' in info['packages'] and 'flax' in info['packages']
  # The best checkpoint sits beside the last; validation chose it.
  best = os.listdir(os.path.join(workdir, 'students', 'kd', 'best'))
  assert [int(s) for s in best if s.isdigit()] == [results['kd']['step']]


def test_evaluate_writes_results_and_changes_nothing(workdir, tmp_path):
  before = conftest.snapshot(workdir)
  test = evaluate.evaluate_workdir(workdir, 'test', out=str(tmp_path / 't'))
  val = evaluate.evaluate_workdir(workdir, 'val', methods=['kd'],
                                  out=str(tmp_path / 'v'))
  assert conftest.snapshot(workdir) == before  # Not a byte changed.
  recorded = _results(workdir)
  for name in ('teacher_labeler', *METHODS):  # The same checkpoints.
    assert test[name] == recorded[name]
  assert test['run_info']['evaluated']['split'] == 'test'
  assert set(val) >= {'teacher_labeler', 'kd'} and 'tgt_random' not in val
  assert val['run_info']['evaluated']['split'] == 'val'
  with open(tmp_path / 'v' / 'results.md') as f:
    assert '| kd |' in f.read()
  last = evaluate.evaluate_workdir(workdir, 'test', methods=['kd'],
                                   checkpoint='last', out=str(tmp_path / 'l'))
  assert last['kd']['checkpoint'] == 'last' and last['kd']['step'] == 18


def test_sample_draws_every_row(workdir, tmp_path):
  rows = sample.sample_workdir(workdir, str(tmp_path / 'grid.png'),
                               classes=['2', '5'], prior=3)
  assert list(rows) == ['real', 'reconstructed G(E(x))',
                        'tgt_random explored', 'prior G(z)']
  assert rows['real'].shape[0] == 2 and rows['prior G(z)'].shape[0] == 3
  assert os.path.getsize(tmp_path / 'grid.png') > 1000


def test_export_then_predict_agrees_with_the_evaluation(workdir, tmp_path,
                                                        caplog):
  out = str(tmp_path / 'export')
  record = export.export_student(workdir, 'kd', out)
  assert record['checkpoint'] == {k: _results(workdir)['kd'][k]
                                  for k in ('checkpoint', 'step')}
  model = export.load(out)
  assert model.class_names == tuple(str(c) for c in range(10))
  # The test images as files, some in sub-folders: predict must find all.
  config = run_guard.read_run_config(workdir)
  data = loading.load_dataset(config)
  images = str(tmp_path / 'images')
  truth = {}
  for i, (image, label) in enumerate(zip(data.test_images, data.test_labels)):
    folder = os.path.join(images, f'part{i % 3}') if i % 2 else images
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f'{i:04d}.png')
    Image.fromarray(image[..., 0]).save(path)
    truth[path] = data.class_names[label]
  # Broken files are left out (and named), not a reason to lose the rest.
  (tmp_path / 'images' / 'zero.png').write_bytes(b'')
  good = open(next(iter(truth)), 'rb').read()
  (tmp_path / 'images' / 'truncated.png').write_bytes(good[:len(good) // 2])
  # Files are read in sorted order: truncated.png is the first broken one.
  with pytest.raises(errors.DataError,
                     match='truncated.png: cannot be decoded'):
    predict.predict_folder(out, images, str(tmp_path / 'p.csv'),
                           on_decode_error='error')
  caplog.clear()
  rows = predict.predict_folder(out, images, str(tmp_path / 'p.csv'))
  warnings = [r.getMessage() for r in caplog.records if 'decoded' in
              r.getMessage()]
  assert len(warnings) == 1  # One list, with each file's reason.
  assert 'truncated.png (' in warnings[0] and 'zero.png (' in warnings[0]
  with open(tmp_path / 'p.csv') as f:
    written = list(csv.DictReader(f))
  assert len(written) == len(rows) == len(truth)
  assert all(0.0 < float(r['probability']) <= 1.0 for r in written)
  accuracy = np.mean([r['class'] == truth[r['path']] for r in written])
  assert accuracy == pytest.approx(_results(workdir)['kd']['overall'],
                                   abs=1e-9)


def test_export_of_an_untrained_method_fails_before_loading(workdir,
                                                            tmp_path,
                                                            monkeypatch):
  def never(*args, **kwargs):
    raise AssertionError('loaded the run before checking the method')
  monkeypatch.setattr(export.train, 'open_workdir', never)
  with pytest.raises(errors.WorkdirError,
                     match=r"--method=tgt_gradient: .*\['kd'"):
    export.export_student(workdir, 'tgt_gradient', str(tmp_path / 'out'))
  assert not (tmp_path / 'out').exists()


def _events(workdir):
  scalars, texts, images, hparams = {}, set(), set(), False
  for path in glob.glob(os.path.join(workdir, 'events.out.tfevents.*')):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        plugin = value.metadata.plugin_data.plugin_name
        if plugin == 'images' or value.HasField('image'):
          images.add(value.tag)
        elif plugin == 'text':
          texts.add(value.tag)
        elif plugin == 'hparams':
          hparams = True
        else:
          tensor = tf.make_ndarray(value.tensor) if value.HasField(
              'tensor') else value.simple_value
          scalars.setdefault(value.tag, []).append((event.step,
                                                    float(tensor)))
  return scalars, texts, images, hparams


def test_tensorboard_has_averaged_scalars_validation_images_and_config(
    workdir):
  scalars, texts, images, hparams = _events(workdir)
  for stage in ('teacher_labeler', 'teacher_generator', *METHODS):
    assert f'{stage}/train/loss' in scalars, stage
    assert f'{stage}/steps_per_second' in scalars
    assert f'{stage}/val/overall' in scalars, stage
  # Every logging interval (3 steps) and every validation (6 steps).
  assert [s for s, _ in scalars['kd/train/loss']] == list(range(3, 19, 3))
  assert [s for s, _ in scalars['kd/val/overall']] == [6, 12, 18]
  assert 'samples' in images and 'config' in texts and hparams


def test_training_loss_is_the_interval_mean(tmp_path):
  """The logged loss is the mean over the interval, not its last batch."""
  from clu import metric_writers  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from tgt_jax import training_loop  # pylint: disable=g-import-not-at-top
  written = {}

  class Recorder(metric_writers.MultiWriter):

    def write_scalars(self, step, scalars):
      written[step] = scalars

  training_loop.run(
      name='toy', directory=str(tmp_path), state={'w': jnp.zeros(())},
      step_fn=lambda s, b: ({'w': s['w'] + 1}, {'loss': s['w'] + 1}),
      batch_for_step=lambda i: i, num_steps=8, writer=Recorder([]),
      log_every=4, checkpoint_every=8)
  assert written[4]['toy/train/loss'] == pytest.approx((1 + 2 + 3 + 4) / 4)
  assert written[8]['toy/train/loss'] == pytest.approx((5 + 6 + 7 + 8) / 4)


def test_evaluate_reads_a_workdir_while_another_process_trains(tmp_path):
  """A student in training: evaluate restores its newest checkpoint, and
  the training process goes on undisturbed."""
  workdir = str(tmp_path / 'busy')
  config = os.path.join(conftest.REPO, 'tests', 'tiny_pipeline_config.py')
  process = subprocess.Popen(
      [sys.executable, 'main.py', f'--config={config}', f'--workdir={workdir}',
       '--config.num_epochs=3', "--config.methods=('kd',)"],
      cwd=conftest.REPO, env=conftest.subprocess_env(),
      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  student = os.path.join(workdir, 'students', 'kd')
  deadline = time.time() + 600
  while not (os.path.isdir(student) and
             any(n.isdigit() for n in os.listdir(student))):
    assert process.poll() is None, process.stderr.read()[-3000:]
    assert time.time() < deadline
    time.sleep(1)
  results = evaluate.evaluate_workdir(workdir, 'test', methods=['kd'],
                                      checkpoint='last',
                                      out=str(tmp_path / 'eval'))
  _, stderr = process.communicate(timeout=600)
  assert process.returncode == 0, stderr[-3000:]
  assert 0 < results['kd']['step'] <= 124  # 3 epochs of 330 / 8.
  assert 0.0 <= results['kd']['overall'] <= 1.0
