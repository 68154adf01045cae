"""Accuracy reports and the results files."""

import json
import os

import jax
import numpy as np

from tgt_jax import evaluation
from tgt_jax import sharding


def test_accuracy_report_per_class_and_groups():
  labels = np.array([0, 0, 1, 1, 2, 2])
  logits = np.eye(3)[[0, 0, 1, 0, 0, 0]]  # Class 1 half right, 2 all wrong.
  groups = {'many': np.array([0]), 'medium': np.array([1]),
            'few': np.array([2])}
  report = evaluation.accuracy_report(labels, logits, groups)
  assert report['per_class'] == [1.0, 0.5, 0.0]
  assert report['many'] == 1.0 and report['medium'] == 0.5
  assert report['few'] == 0.0 and report['overall'] == 0.5


def test_empty_group_is_written_as_null_not_nan(tmp_path):
  results = {'kd': {'overall': 0.5, 'many': 1.0, 'medium': float('nan'),
                    'few': 0.0, 'per_class': [1.0, 0.0]},
             'reconstruction_agreement': 0.25}
  evaluation.write_results(results, str(tmp_path))
  with open(os.path.join(tmp_path, 'results.json')) as f:
    text = f.read()
  assert 'NaN' not in text
  assert json.loads(text)['kd']['medium'] is None
  with open(os.path.join(tmp_path, 'results.md')) as f:
    table = f.read()
  assert '| kd | 50.0 | 100.0 | - | 0.0 |' in table
  assert 'Reconstruction agreement' in table and '25.0%' in table
  assert not os.path.exists(os.path.join(tmp_path, 'results.json.tmp'))


def test_predict_keeps_every_unmasked_row_once_in_order():
  batches = [{'image': np.arange(4, dtype=np.uint8)[:, None] + 10 * b,
              'label': np.arange(4) + 4 * b,
              'mask': np.array([True, True, True, b == 0])}
             for b in range(2)]
  outputs, labels = evaluation.predict(
      jax.jit(lambda x: x[:, 0].astype(np.float32) * 2), batches,
      sharding.create_mesh(jax.devices()[:1]))
  np.testing.assert_array_equal(labels, [0, 1, 2, 3, 4, 5, 6])
  np.testing.assert_array_equal(outputs, [0, 2, 4, 6, 20, 22, 24])
