"""The streaming datasets of the paper's benchmarks, on fake and mock data,
and a paper-size step.

Nothing is downloaded: fake data (random images of the right types), TFDS's
mock of imagenet_lt, and small SUN-LT folders written by the tests.
"""

import io
import os
import resource
import time

import jax

jax.config.update('jax_disable_most_optimizations', True)

import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top
from PIL import Image  # pylint: disable=g-import-not-at-top
import pytest  # pylint: disable=g-import-not-at-top
import tensorflow as tf  # pylint: disable=g-import-not-at-top

import conftest  # pylint: disable=g-import-not-at-top
from test_config_lib import load_config  # pylint: disable=g-import-not-at-top
from tgt_jax import config_lib  # pylint: disable=g-import-not-at-top
from tgt_jax import pretrained  # pylint: disable=g-import-not-at-top
from tgt_jax import sharding  # pylint: disable=g-import-not-at-top
from tgt_jax import student_setup  # pylint: disable=g-import-not-at-top
from tgt_jax import teachers as teachers_lib  # pylint: disable=g-import-not-at-top
from tgt_jax.data import dataset as dataset_lib  # pylint: disable=g-import-not-at-top
from tgt_jax.data import loading  # pylint: disable=g-import-not-at-top
from tgt_jax.data import long_tail  # pylint: disable=g-import-not-at-top
from tgt_jax.data import streaming  # pylint: disable=g-import-not-at-top
from tgt_jax.data import tfds_pipelines  # pylint: disable=g-import-not-at-top


# ---------------------------------------------------------------------------
# Places-LT split files.
# ---------------------------------------------------------------------------


def test_places_lt_shot_groups_from_shipped_split():
  paths, labels = long_tail.read_split_file(
      os.path.join(tfds_pipelines.SPLITS_DIR, 'Places_LT',
                   'Places_LT_train.txt'), 365)
  counts = np.bincount(labels, minlength=365)
  assert len(paths) == 62_500 and counts.max() == 4_980 and counts.min() == 5
  groups = long_tail.shot_groups(counts, many_threshold=100, few_threshold=20)
  assert [len(groups[g]) for g in ('many', 'medium', 'few')] == [131, 163, 71]
  assert np.all(counts[groups['many']] > 100)
  assert np.all(counts[groups['few']] < 20)


@pytest.mark.parametrize('split', ['train', 'val', 'test'])
def test_places_lt_split_counts_and_tfds_names(split):
  filenames, labels = tfds_pipelines.read_places_lt_split(split)
  assert len(filenames) == tfds_pipelines.PLACES_LT_COUNTS[split]
  assert len(set(filenames)) == len(filenames)
  assert set(labels.tolist()) == set(range(365))
  prefix = 'val_256/' if split == 'test' else 'data_256/'
  assert all(name.startswith(prefix) for name in filenames)


def test_places_tfds_filename_mapping():
  convert = tfds_pipelines.places_tfds_filename
  assert (convert('train/apartment_building-outdoor/00000794.jpg') ==
          'data_256/a/apartment_building/outdoor/00000794.jpg')
  assert convert('train/airfield/00004851.jpg') == (
      'data_256/a/airfield/00004851.jpg')
  assert (convert('val/airfield/Places365_val_00003597.jpg') ==
          'val_256/Places365_val_00003597.jpg')
  with pytest.raises(ValueError, match='Unexpected Places-LT path'):
    convert('test/airfield/x.jpg')


def _png(value, size=(10, 12)):
  buffer = io.BytesIO()
  Image.fromarray(np.full((*size, 3), value, np.uint8)).save(buffer, 'PNG')
  return buffer.getvalue()


def test_places_filter_keeps_listed_files_and_checks_labels():
  listed = ['data_256/a/a/1.jpg', 'data_256/b/b/2.jpg', 'data_256/c/c/3.jpg']
  split_labels = np.asarray([0, 1, 2], np.int32)
  all_files = ['data_256/z/z/9.jpg'] + listed + ['data_256/y/y/8.jpg']

  def read_all(tfds_labels):
    return lambda: tf.data.Dataset.from_tensor_slices({
        'image': [_png(10 * i) for i in range(len(all_files))],
        'label': tfds_labels, 'filename': all_files})

  source = streaming.filtered_tfds_source(
      read_all([7, 0, 1, 2, 7]), listed, split_labels)
  assert source.count(0, 1) == 3
  kept = list(source.read(0, 1).as_numpy_iterator())
  assert [int(e['label']) for e in kept] == [0, 1, 2]
  shard = list(source.read(1, 2).as_numpy_iterator())
  assert [int(e['label']) for e in shard] == [1]
  # A path mapping that pairs a file with another class must not pass.
  wrong = streaming.filtered_tfds_source(read_all([7, 0, 2, 2, 7]),
                                              listed, split_labels)
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match='differs from TFDS'):
    list(wrong.read(0, 1).as_numpy_iterator())


# ---------------------------------------------------------------------------
# Streams on fake data.
# ---------------------------------------------------------------------------


@pytest.fixture(scope='module')
def fake_data():
  return loading.load_dataset(config_lib.resolve(load_config('places_lt',
                                                         'smoke')))


def test_fake_data_shapes_and_counts(fake_data):
  assert not fake_data.in_memory
  assert fake_data.num_classes == 6
  assert fake_data.student_class_counts.tolist() == [8, 6, 5, 3, 3, 2]
  # Default thresholds from the head class: 8 / 4^(1/3) and 8 / 4^(2/3).
  assert {k: v.tolist() for k, v in fake_data.shot_groups.items()} == {
      'many': [0, 1], 'medium': [2], 'few': [3, 4, 5]}
  assert fake_data.num_examples('teacher') == fake_data.num_examples(
      'student') == 27
  batch = fake_data.train_batches('student', 8, seed=0)(0)
  assert batch['image'].shape == (8, 16, 16, 3)
  assert batch['image'].dtype == np.uint8 and batch['label'].dtype == np.int32


def test_stream_is_a_function_of_seed_and_step(fake_data):
  stream = fake_data.train_batches('student', 8, seed=3)
  batches = [stream(step) for step in range(9)]  # Over two epochs (27 each).
  resumed = fake_data.train_batches('student', 8, seed=3)
  for step in (7, 4, 8):  # A resume at 7, then going back (a restart).
    for key in ('image', 'label'):
      np.testing.assert_array_equal(resumed(step)[key], batches[step][key])
  other_seed = fake_data.train_batches('student', 8, seed=4)(0)
  assert not np.array_equal(other_seed['image'], batches[0]['image'])


def _id_images(num):
  """Constant-colour images: crops, resizes and flips keep the id."""
  ids = np.arange(num)
  images = np.broadcast_to(ids[:, None, None, None], (num, 9, 11, 3))
  return np.ascontiguousarray(images).astype(np.uint8), ids.astype(np.int32)


def _id_data(num_train, num_test):
  return streaming.StreamingDataset(
      name='ids', class_names=tuple(str(i) for i in range(num_train)),
      train_class_counts=np.ones(num_train, np.int64), shot_groups={},
      sources={'train': streaming.fake_source(*_id_images(num_train)),
               'test': streaming.fake_source(*_id_images(num_test))},
      image_size=16)


def test_processes_read_disjoint_shards_covering_each_epoch():
  data = _id_data(num_train=24, num_test=5)
  seen = []
  for process in range(2):
    stream = data.train_batches('student', 8, seed=0, process_index=process,
                                process_count=2)
    epoch = np.concatenate([stream(step)['image'][:, 0, 0, 0]
                            for step in range(3)])  # 3 x 4 rows = 12.
    assert len(set(epoch.tolist())) == 12
    seen.append(set(epoch.tolist()))
  assert seen[0].isdisjoint(seen[1]) and seen[0] | seen[1] == set(range(24))


def test_eval_batches_pad_every_process_to_the_same_length():
  data = _id_data(num_train=4, num_test=7)
  labels, lengths = [], []
  for process in range(2):
    batches = list(data.eval_batches('test', 4, process_index=process,
                                     process_count=2))
    lengths.append(len(batches))
    for batch in batches:
      assert batch['image'].shape == (2, 16, 16, 3)
      labels += batch['label'][batch['mask']].tolist()
  assert lengths == [2, 2]
  assert sorted(labels) == list(range(7))
  with pytest.raises(ValueError, match="no 'val' split"):
    data.eval_batches('val', 4)


def test_streaming_and_in_memory_data_serve_one_interface(fake_data):
  """The one evaluation loop over either kind of dataset."""
  from tgt_jax import evaluation  # pylint: disable=g-import-not-at-top
  in_memory = loading.load_dataset(config_lib.resolve(conftest.tiny_config()))
  mesh = sharding.create_mesh(jax.devices()[:1])
  mean = jax.jit(lambda x: jnp.mean(x.astype(jnp.float32), axis=(1, 2, 3)))
  for data, test_size in ((in_memory, 400), (fake_data, 12)):
    outputs, labels = evaluation.predict(mean, data.eval_batches('test', 8),
                                         mesh)
    assert outputs.shape == labels.shape == (test_size,)
    images, grid_labels = data.grid_examples(3)
    assert grid_labels.tolist() == [0, 1, 2] and len(images) == 3
  outputs, _ = evaluation.predict(mean, fake_data.eval_batches('val', 8),
                                  mesh)
  assert len(outputs) == 12  # The fake val split.
  assert loading.STREAMING_NAMES == tfds_pipelines.DATASET_NAMES


# ---------------------------------------------------------------------------
# SUN-LT from a directory, ImageNet-LT from TFDS, and missing data.
# ---------------------------------------------------------------------------


def _make_sun_dir(root):
  images_dir, split_dir = os.path.join(root, 'images'), os.path.join(
      root, 'split')
  os.makedirs(split_dir)
  classes = ['a/abbey', 'b/beach/sand']
  for split, per_class in (('train', 3), ('val', 1), ('test', 2)):
    lines = []
    for label, name in enumerate(classes):
      os.makedirs(os.path.join(images_dir, name), exist_ok=True)
      for i in range(per_class):
        path = f'{name}/sun_{split}{i}.jpg'
        Image.fromarray(np.full((20, 30, 3), 40 * label + i, np.uint8)).save(
            os.path.join(images_dir, path), 'JPEG')
        lines.append(f'{path} {label}\n')
    with open(os.path.join(split_dir, f'SUN_LT_{split}.txt'), 'w') as f:
      f.writelines(lines)
  with open(os.path.join(split_dir, 'SUN_LT_classes.txt'), 'w') as f:
    f.write('\n'.join(classes) + '\n')
  return images_dir, split_dir


def test_sun_lt_reads_images_and_dragon_lists(tmp_path):
  images_dir, split_dir = _make_sun_dir(str(tmp_path))
  config = load_config('sun_lt')
  config.dataset.data_dir, config.dataset.split_dir = images_dir, split_dir
  config.dataset.image_size = 16
  data = loading.load_dataset(config)
  assert data.class_names == ('a/abbey', 'b/beach/sand')
  assert data.student_class_counts.tolist() == [3, 3]
  batch = data.train_batches('student', 4, seed=0)(1)
  assert batch['image'].shape == (4, 16, 16, 3)
  for split, count in (('test', 4), ('val', 2)):
    batches = list(data.eval_batches(split, 4))
    assert sum(int(b['mask'].sum()) for b in batches) == count


def test_imagenet_lt_reads_tfds(tmp_path, monkeypatch):
  """The TFDS reading path (ReadConfig, undecoded images, labels) on TFDS's
  mock of imagenet_lt: random examples generated from the builder's code."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  config = load_config('imagenet_lt')
  config.dataset.image_size = 32
  config.dataset.cache_dir = str(tmp_path)
  monkeypatch.setattr(tfds.core.DatasetBuilder, 'is_prepared',
                      lambda self: True)
  with tfds.testing.mock_data(num_examples=12,
                              policy=tfds.testing.MockPolicy.USE_CODE):
    data = loading.load_dataset(config)
    assert data.num_classes == 1000
    assert data.num_examples('student') == 12
    assert os.path.exists(tmp_path / 'imagenet_lt_train_labels.npy')
    batch = data.train_batches('student', 4, seed=0)(2)
    assert batch['image'].shape == (4, 32, 32, 3)
    masks = [b['mask'] for b in data.eval_batches('test', 8)]
    assert [int(m.sum()) for m in masks] == [8, 4]
    assert sum(int(b['mask'].sum()) for b in data.eval_batches('val', 8)) == 12


def _with_dataset(name, **fields):
  config = load_config(name)
  config.dataset.update(fields)
  return config


def test_missing_data_errors_name_the_manual_steps(tmp_path):
  data_dir = str(tmp_path / 'tfds')
  cases = [
      (_with_dataset('places_lt', data_dir=data_dir),
       ['tfds build places365_small', data_dir, 'train_256_places365standard']),
      (_with_dataset('imagenet_lt', data_dir=data_dir),
       ['ILSVRC2012_img_train.tar', 'ILSVRC2012_img_val.tar',
        'tfds build imagenet_lt', 'manual_dir', data_dir]),
      (_with_dataset('sun_lt', data_dir=str(tmp_path / 'sun'),
                     split_dir=str(tmp_path / 'split')),
       ['SUNAttributeDB_Images.tar.gz', 'export_dragon_split.py',
        'dvirsamuel/DRAGON', str(tmp_path / 'sun')]),
  ]
  for config, expected in cases:
    with pytest.raises(dataset_lib.DataUnavailableError) as error:
      loading.load_dataset(config)
    for text in expected:
      assert text in str(error.value), (config.dataset.name, text)


# ---------------------------------------------------------------------------
# Steps at paper scale.
# ---------------------------------------------------------------------------


@pytest.mark.integration
def test_smoke_config_takes_a_tgt_gradient_step(fake_data):
  """The models a smoke config builds take one step on its stream."""
  config = config_lib.resolve(load_config('places_lt', 'smoke'))
  teachers = teachers_lib.random_teachers(config, fake_data.num_classes, 3)
  data = student_setup.StudentData.of(fake_data)
  setup = student_setup.create(
      config, 'tgt_gradient', data, teachers, sharding.create_mesh(),
      jax.random.PRNGKey(0), variables=student_setup.random_variables(
          student_setup.classifier(config, data), 3, seed=0))
  batch = fake_data.train_batches('student', config.batch_size, seed=0)(0)
  new_state, metrics = setup.step(setup.state, teachers, batch,
                                  setup.step_rng)
  assert np.isfinite(float(metrics['loss']))
  assert int(new_state.step) == 1


_OPTIMIZED = {'xla_backend_optimization_level': 3,
              'xla_llvm_disable_expensive_passes': False}


@pytest.mark.integration
def test_full_size_tgt_gradient_step_on_cpu():
  """One tgt_gradient step of the Places-LT config at full size, batch 2.

  ResNet-18 student at 224, the default labeler (Keras ResNet-152 layout,
  365 classes), BigBiGAN's G (BigGAN-128, ch 96) and E (ResNet-v2-50 at 256
  with its Gaussian head), randomly initialised.
  """
  config = config_lib.resolve(load_config('places_lt', 'fake_data'))
  config.batch_size = 2
  num_classes = 365
  teachers = teachers_lib.random_teachers(config, num_classes, 3)
  # Ten steps an epoch; no dataset is read.
  data = student_setup.StudentData.uniform(num_classes, (224, 224, 3),
                                           num_examples=10 * 2)
  # BigBiGAN's variables hold its two networks (generators/bigbigan.py).
  counts = {'labeler': pretrained.count_parameters(teachers.labeler['params']),
            **{name: pretrained.count_parameters(
                teachers.generator[name]['params'])
               for name in ('encoder', 'generator')}}
  variables = student_setup.random_variables(
      student_setup.classifier(config, data), 3, seed=0)
  counts['student'] = pretrained.count_parameters(variables['params'])
  assert counts['generator'] > 60e6 and counts['labeler'] > 50e6
  assert counts['student'] < counts['labeler'] / 4
  setup = student_setup.create(config, 'tgt_gradient', data, teachers,
                               sharding.create_mesh(), jax.random.PRNGKey(0),
                               variables=variables)
  student = setup.classifier
  batch = {'image': jnp.asarray(np.random.default_rng(0).integers(
               0, 256, (2, 224, 224, 3), np.uint8)),
           'label': jnp.asarray([3, 300], jnp.int32)}
  start = time.perf_counter()
  # XLA's optimisations back on for this one program (the module turns them
  # off for the tiny ones): unoptimised, the strided-conv gradients of the
  # full-size nets run for tens of minutes on a CPU.
  compiled = setup.step.lower(setup.state, teachers, batch,
                              setup.step_rng).compile(
                                  compiler_options=_OPTIMIZED)
  compile_seconds = time.perf_counter() - start
  start = time.perf_counter()
  new_state, metrics = compiled(setup.state, teachers, batch, setup.step_rng)
  loss = float(metrics['loss'])
  run_seconds = time.perf_counter() - start
  peak_rss_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
  print(f'\nfull-size tgt_gradient step: parameters {counts}; compile '
        f'{compile_seconds:.1f} s, run {run_seconds:.1f} s, peak RSS of this '
        f'process so far {peak_rss_gib:.1f} GiB')
  assert np.isfinite(loss) and np.isfinite(float(metrics['generated_loss']))
  assert int(new_state.step) == 1
  logits, _ = student.apply(
      {'params': new_state.params, 'batch_stats': new_state.batch_stats},
      jnp.zeros((1, 224, 224, 3)))
  assert logits.shape == (1, num_classes)
  assert np.all(np.isfinite(np.asarray(logits)))
