"""The stages of a run: what each starts from, reads and writes."""


import jax
import numpy as np
import pytest

import conftest
from test_config_lib import load_config
from tgt_jax import config_lib
from tgt_jax import pretrained
from tgt_jax import teachers as teachers_lib
from tgt_jax import train
from tgt_jax import visualize
from tgt_jax.data import loading
from tgt_jax.models import build


def test_no_labeler_starts_from_or_reads_what_a_student_does():
  """Even with the student's architecture, the labeler's initial
  parameters and its batches differ from the student's."""
  config = conftest.tiny_config()
  config.teacher_labeler.width_multiplier = config.student.width_multiplier
  config = config_lib.resolve(config)
  student = build.classifier(config.student, 10)
  labeler = build.classifier(config.teacher_labeler, 10)
  assert student == labeler  # The same network and input recipe.
  keys = {role: train.init_key(config.seed, role) for role in train.ROLES}
  assert len({tuple(np.asarray(jax.random.key_data(k)).tolist())
              for k in keys.values()}) == 3
  student_params = student.init(keys['student'], 1)['params']
  labeler_params = labeler.init(keys['teacher_labeler'], 1)['params']
  for a, b in zip(jax.tree.leaves(student_params),
                  jax.tree.leaves(labeler_params)):
    if a.ndim > 1:  # Kernels (BatchNorm starts at 1 and 0 in both).
      assert not np.allclose(a, b)
  # At paper scale every stage reads the same train split: the orders differ.
  fake = loading.load_dataset(config_lib.resolve(load_config('places_lt',
                                                         'smoke')))
  first = {role: fake.train_batches('student', 8,
                                    train.data_seed(0, role))(0)['image']
           for role in train.ROLES}
  assert not np.array_equal(first['student'], first['teacher_labeler'])
  assert not np.array_equal(first['teacher_labeler'],
                            first['teacher_generator'])


def test_labeler_fine_tunes_from_a_converted_classifier(tmp_path):
  """init_checkpoint: the backbone comes from the checkpoint; a head of
  another class count is initialised anew."""
  config = conftest.tiny_config()
  config = config_lib.resolve(config)
  labeler = build.classifier(config.teacher_labeler, 10)
  converted = teachers_lib.random_variables(
      build.classifier_network(config.teacher_labeler, 1000),
      (1, 8, 8, 1), seed=3)
  directory = str(tmp_path / 'converted')
  architecture = {field: config.teacher_labeler[field]
                  for field in pretrained.CLASSIFIER_FIELDS}
  pretrained.save_classifier(directory, converted,
                             {**architecture, 'num_classes': 1000},
                             info={'source': 'a test'})
  fresh = labeler.init(jax.random.PRNGKey(0), 1)
  variables = pretrained.initial_classifier_variables(
      directory, config.teacher_labeler, fresh)
  assert variables['params']['classifier']['kernel'].shape == (
      fresh['params']['classifier']['kernel'].shape)
  np.testing.assert_array_equal(variables['params']['classifier']['kernel'],
                                fresh['params']['classifier']['kernel'])
  np.testing.assert_array_equal(
      variables['params']['stem_conv']['kernel'],
      converted['params']['stem_conv']['kernel'])
  np.testing.assert_array_equal(
      variables['batch_stats']['stem_bn']['var'],
      converted['batch_stats']['stem_bn']['var'])
  config.teacher_labeler.width_multiplier = 0.5
  with pytest.raises(ValueError,
                     match=r'teacher_labeler\.width_multiplier: config'):
    pretrained.initial_classifier_variables(directory, config.teacher_labeler,
                                            fresh)


@pytest.mark.integration  # A whole pipeline: 23 s.
def test_kd_mixup_trains_through_the_pipeline(tmp_path):
  """kd_mixup is a method like any other: a student, its checkpoint and
  its results under its own name; no generator is trained for it."""
  config = conftest.tiny_config()
  config.methods = ('kd_mixup',)
  config.num_epochs = config.teacher_labeler.num_epochs = 0.05
  results = train.train_and_evaluate(config, str(tmp_path))
  assert sorted(results) == ['kd_mixup', 'run_info', 'teacher_labeler']
  assert 0.0 <= results['kd_mixup']['overall'] <= 1.0
  assert results['kd_mixup']['step'] > 0
  assert (tmp_path / 'students' / 'kd_mixup').is_dir()
  assert not (tmp_path / 'teacher_generator').exists()
  # Its training compute: XLA's count times its steps, the labeler's (the
  # one teacher it reads) added.
  labeler, student = (results[k]['compute']
                      for k in ('teacher_labeler', 'kd_mixup'))
  for record in (labeler, student):
    assert record['flops_per_step'] > 0 and record['wall_s'] > 0
    assert record['train_flops'] == record['flops_per_step'] * record['steps']
  dataset = loading.load_dataset(config_lib.resolve(config))
  assert student['steps'] == train.num_steps_and_epoch(
      dataset, 'student', config)[0]
  assert student['teacher_flops'] == labeler['train_flops']
  assert student['total_flops'] == (student['train_flops'] +
                                    labeler['train_flops'])
  assert '| kd_mixup | ' in (tmp_path / 'results.md').read_text().split(
      'Training compute')[1]


@pytest.mark.integration
def test_pipeline_samples_a_row_per_tgt_method(tmp_path, monkeypatch):
  """samples.png has a row per trained TGT method, named as trained (here
  with mixup.on_tgt), and a row of the mixed images they trained on."""
  config = conftest.tiny_config()
  config.methods = ('kd', 'tgt_random', 'tgt_prior')
  config.mixup.on_tgt = True
  config.num_epochs = config.teacher_labeler.num_epochs = 0.05
  config.teacher_generator.num_epochs = 0.05
  rows = {}
  monkeypatch.setattr(visualize, 'save_sample_grid',
                      lambda path, r, labels, names: rows.update(r))
  monkeypatch.setattr(visualize, 'read_png',
                      lambda path: np.zeros((4, 4, 3), np.uint8))
  results = train.train_and_evaluate(config, str(tmp_path))
  assert list(rows) == ['real', 'reconstructed G(E(x))',
                        'tgt_random+mixup explored',
                        'tgt_prior+mixup explored', 'mixup x_mix']
  assert rows['mixup x_mix'].shape == rows['real'].shape
  assert {'kd', 'tgt_random+mixup', 'tgt_prior+mixup'} <= set(results)
