"""The benchmark times the step training takes, runs on the quick demo
config and prints its JSON report."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

import conftest
from test_config_lib import load_config
from tgt_jax import benchmark
from tgt_jax import compute
from tgt_jax import monitoring
from tgt_jax import sharding
from tgt_jax import student_setup
from tgt_jax import teachers as teachers_lib
from tgt_jax import train
from tgt_jax.data import loading

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _configured_method():
  """The tiny demo config with a loss term and a long-tail adjustment."""
  config = conftest.tiny_config()
  config.methods = ('kd',)
  config.long_tail_loss = 'logit_adjusted'
  config.embedding_distill.mode = 'compressed'
  # Trained jointly: no pre-training, so training's initial state is the
  # one the benchmark (which never pre-trains) starts from.
  config.embedding_distill.pretrain_steps = 0
  return conftest.resolved(config)


def _training_run(config, workdir):
  """(a Run in `workdir`, the config's data, random frozen teachers): what
  training builds a student from, without training the teachers."""
  mesh = sharding.create_mesh()
  dataset = loading.load_dataset(config)
  teachers = sharding.put_replicated(teachers_lib.random_teachers(
      config, dataset.num_classes, dataset.image_shape[-1]), mesh)
  run = train.Run(config=config, workdir=str(workdir), mesh=mesh,
                  writer=monitoring.create_writer('', enabled=False))
  return run, dataset, teachers


def test_a_configured_methods_benchmark_step_is_its_training_step(tmp_path):
  """kd with an embedding term and logit adjustment: the benchmark's
  student, built by `benchmark.method_setup` from training's variables, has
  training's key, loss terms, adjustment, initial state and step key, and
  its step computes bit for bit the state and metrics training's does."""
  config = _configured_method()
  run, dataset, teachers = _training_run(config, tmp_path)
  mesh = run.mesh
  batches = dataset.train_batches('student', config.batch_size,
                                  train.data_seed(config.seed, 'student'))
  trained = train.student_setup(run, dataset, teachers, 'kd', batches)
  timed = benchmark.method_setup(
      config, 'kd', student_setup.StudentData.of(dataset), teachers, mesh,
      jax.device_get({'params': trained.state.params,
                      'batch_stats': trained.state.batch_stats}))
  assert trained.key == timed.key == 'kd+logit_adjusted+emb_compressed'
  assert timed.terms == trained.terms and len(trained.terms) == 1
  assert timed.long_tail == trained.long_tail is not None
  assert timed.num_steps == trained.num_steps
  assert timed.classifier == trained.classifier
  assert conftest.tree_allclose(conftest.host(timed.state),
                                conftest.host(trained.state))
  np.testing.assert_array_equal(jax.random.key_data(timed.step_rng),
                                jax.random.key_data(trained.step_rng))
  batch = sharding.put_batch(batches(0), mesh)
  outputs = [conftest.host(setup.step(setup.state, teachers, batch,
                                      setup.step_rng))
             for setup in (trained, timed)]
  assert 'emb_compressed/distance' in outputs[0][1]
  assert conftest.tree_allclose(outputs[1], outputs[0])  # Exact.


def test_the_benchmark_builds_its_students_with_the_training_builder(
    monkeypatch):
  """run_benchmark asks `student_setup.create` (training's builder) for
  every row, with the config's loss term and long-tail adjustment."""
  built = []

  class Built(Exception):
    pass

  def create(config, method, data, *args, **kwargs):
    del args, kwargs
    built.append((method, student_setup.result_key(config, method, data)))
    raise Built()  # Only which student is asked for matters here.

  monkeypatch.setattr(student_setup, 'create', create)
  with pytest.raises(Built):
    benchmark.run_benchmark(_configured_method(), num_steps=1,
                            warmup_steps=0, synthetic_input=True)
  assert built == [('kd', 'kd+logit_adjusted+emb_compressed')]


@pytest.mark.integration
def test_benchmark_json_shape():
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu'}
  process = subprocess.run(
      [sys.executable, '-m', 'tgt_jax.benchmark',
       '--config=configs/digits_lt.py:quick', '--steps=2',
       '--warmup_steps=0', '--gradient_steps=2',
       "--config.methods=('kd', 'tgt_random')"],
      cwd=_REPO, env=env, capture_output=True, text=True, timeout=600,
      check=True)
  report = json.loads(process.stdout.strip().splitlines()[-1])
  assert set(report) >= {'device', 'peak_flops', 'methods',
                         'input_images_per_s'}
  assert isinstance(report['device'], str)
  assert report['peak_flops'] > 0 and report['input_images_per_s'] > 0
  assert list(report['methods']) == ['kd', 'tgt_random', 'tgt_gradient@2',
                                     'tgt_random+cached_latents']
  for name, method in report['methods'].items():
    for key, kind in (('step_ms', float), ('images_per_s', float),
                      ('flops', float), ('flops_fraction', float),
                      ('compile_s', float), ('peak_bytes', int)):
      assert isinstance(method[key], kind), (name, key)
      assert method[key] >= 0, (name, key)
    assert method['flops'] > 0, name
  methods = report['methods']
  # Exploration adds arithmetic: each gradient step a backward pass through
  # G, the labeler and the student, all counted by XLA's cost analysis.
  # A cached E(x) removes the encoder pass.
  assert methods['kd']['flops'] < methods['tgt_random+cached_latents']['flops']
  assert (methods['tgt_random+cached_latents']['flops'] <
          methods['tgt_random']['flops'])
  assert methods['tgt_random']['flops'] < methods['tgt_gradient@2']['flops']


@pytest.mark.integration
def test_input_only_benchmark_of_a_paper_config_with_fake_data():
  """The paper pipeline's input rate (tf.data stream) alone, no steps."""
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu'}
  process = subprocess.run(
      [sys.executable, '-m', 'tgt_jax.benchmark',
       '--config=configs/places_lt.py:smoke', '--input_only'],
      cwd=_REPO, env=env, capture_output=True, text=True, timeout=600,
      check=True)
  report = json.loads(process.stdout.strip().splitlines()[-1])
  assert set(report) == {'device', 'batch_size', 'dtype',
                         'input_images_per_s'}
  assert report['input_images_per_s'] > 0


def test_fake_data_variant_keeps_the_paper_models():
  paper, fake = load_config('places_lt'), load_config('places_lt',
                                                      'fake_data')
  assert fake.dataset.name == 'fake'
  assert fake.dataset.image_size == paper.dataset.image_size == 224
  for section in ('student', 'teacher_labeler', 'teacher_generator'):
    differs = {k for k, v in fake[section].items() if paper[section][k] != v}
    # Only the checkpoints to start from: none, for timing.
    assert differs <= {'pretrained_checkpoint', 'init_checkpoint'}, section


@pytest.mark.integration  # A training stage and a benchmark: 17 s.
def test_the_benchmark_reports_the_flops_training_records(tmp_path):
  """The configured kd trains a few steps through the training loop, which
  records XLA's FLOPs of its step in the stage's compute.json; the
  benchmark of the same config reports the same count for kd."""
  config = _configured_method()
  config.num_epochs = 0.05
  run, dataset, teachers = _training_run(config, tmp_path)
  key, trained = train.train_student(run, dataset, teachers, 'kd')
  assert key == 'kd+logit_adjusted+emb_compressed'
  recorded = trained.compute
  assert recorded['steps'] == 3 and recorded['flops_per_step'] > 0
  assert recorded == compute.stage_compute(
      str(tmp_path / 'students' / key), 3)
  report = benchmark.run_benchmark(config, num_steps=1, warmup_steps=0,
                                   gradient_steps=(), cached_latents=False)
  assert list(report['methods']) == ['kd']
  assert report['methods']['kd']['flops'] == recorded['flops_per_step']
