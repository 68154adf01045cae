"""The benchmark runs on the quick demo config and prints its JSON report."""

import json
import os
import subprocess
import sys

import pytest

from test_config_lib import load_config

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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
