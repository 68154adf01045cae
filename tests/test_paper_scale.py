"""Tests of the paper-scale pieces: splits, configs, streaming data, one
full-size TGT step.

The full-size step (ResNet-50 student and labeler, the BigBiGAN-size G and E)
is marked `slow`, as is the end-to-end run of a smoke config; deselect both
with `pytest -m "not slow"`.
"""

import io
import os
import re
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
from configs import imagenet_lt  # pylint: disable=g-import-not-at-top
from configs import places_lt  # pylint: disable=g-import-not-at-top
from configs import sun_lt  # pylint: disable=g-import-not-at-top
from tgt_jax import paper_scale  # pylint: disable=g-import-not-at-top
from tgt_jax import pretrained  # pylint: disable=g-import-not-at-top
from tgt_jax import train  # pylint: disable=g-import-not-at-top
from tgt_jax import train_steps  # pylint: disable=g-import-not-at-top
from tgt_jax.data import long_tail  # pylint: disable=g-import-not-at-top
from tgt_jax.data import pipeline  # pylint: disable=g-import-not-at-top
from tgt_jax.data import sources  # pylint: disable=g-import-not-at-top
from tgt_jax.data import tfds_pipelines  # pylint: disable=g-import-not-at-top
from tgt_jax.models import build  # pylint: disable=g-import-not-at-top

PAPER_CONFIGS = {'places_lt': places_lt, 'imagenet_lt': imagenet_lt,
                 'sun_lt': sun_lt}
CONFIG_DIR = os.path.join(os.path.dirname(__file__), '..', 'configs')


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

  source = tfds_pipelines.filtered_tfds_source(
      read_all([7, 0, 1, 2, 7]), listed, split_labels)
  assert source.count(0, 1) == 3
  kept = list(source.read(0, 1).as_numpy_iterator())
  assert [int(e['label']) for e in kept] == [0, 1, 2]
  shard = list(source.read(1, 2).as_numpy_iterator())
  assert [int(e['label']) for e in shard] == [1]
  # A path mapping that pairs a file with another class must not pass.
  wrong = tfds_pipelines.filtered_tfds_source(read_all([7, 0, 2, 2, 7]),
                                              listed, split_labels)
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match='differs from TFDS'):
    list(wrong.read(0, 1).as_numpy_iterator())


# ---------------------------------------------------------------------------
# Configs.
# ---------------------------------------------------------------------------


def _field(config, dotted):
  value = config
  for key in dotted.split('.'):
    value = value[key]
  return value


@pytest.mark.parametrize('name', sorted(PAPER_CONFIGS))
def test_paper_config_has_every_table_6_row_with_its_source(name):
  config = PAPER_CONFIGS[name].get_config()
  assert config.dataset.name == name
  for field in paper_scale.TABLE_6_FIELDS:
    assert _field(config, field) is not None, field
  assert config.teacher_generator.image_size == 128
  assert config.teacher_generator.encoder_image_size == 256
  assert config.student.image_size == 224

  # Each Table 6 row is set in the config file with a source tag.
  with open(os.path.join(CONFIG_DIR, f'{name}.py')) as f:
    text = f.read()
  rows = text[text.index('# ---- Table 6 rows ----'):]
  for field in paper_scale.TABLE_6_FIELDS:
    match = re.search(rf'config\.{re.escape(field)} = [^\n]*(\n\s+[^\n]*)?',
                      rows)
    assert match, f'{name}: Table 6 row {field} is not set'
    assert re.search(r'\[(paper|ext|ours)\]', match.group(0)), (
        f'{name}: {field} has no [paper]/[ext]/[ours] source')
  docstring = PAPER_CONFIGS[name].__doc__
  assert f'python main.py --config=configs/{name}.py' in docstring
  assert 'Expected hardware and run time' in docstring
  assert f'configs/{name}.py:smoke' in docstring


@pytest.mark.parametrize('name', sorted(PAPER_CONFIGS))
def test_paper_config_has_the_digits_schema(name):
  from configs import digits_lt  # pylint: disable=g-import-not-at-top
  digits_config = digits_lt.get_config()
  config = PAPER_CONFIGS[name].get_config()

  def keys(c, prefix=''):
    out = set()
    for key, value in c.items():
      if hasattr(value, 'items'):
        out |= keys(value, f'{prefix}{key}.')
      else:
        out.add(prefix + key)
    return out

  missing = keys(digits_config) - keys(config)
  # Digits-only dataset fields the streaming datasets have no use for.
  assert missing <= {'dataset.test_per_class', 'dataset.split_seed',
                     'dataset.on_decode_error'}, missing


def test_smoke_configs_share_one_code_path():
  smoke = {name: module.get_config('smoke')
           for name, module in PAPER_CONFIGS.items()}
  reference = smoke['places_lt'].to_dict()
  for name in ('imagenet_lt', 'sun_lt'):
    other = smoke[name].to_dict()
    other['teacher_labeler']['peak_learning_rate'] = (
        reference['teacher_labeler']['peak_learning_rate'])
    assert other == reference, name
  with pytest.raises(ValueError, match='Unknown config argument'):
    places_lt.get_config('nonsense')


# ---------------------------------------------------------------------------
# Streaming pipelines on fake data.
# ---------------------------------------------------------------------------


@pytest.fixture(scope='module')
def fake_data():
  return tfds_pipelines.load_long_tail_data(places_lt.get_config('smoke'))


def test_fake_data_shapes_and_counts(fake_data):
  assert fake_data.num_classes == 6
  assert fake_data.train_class_counts.tolist() == [8, 6, 5, 3, 3, 2]
  assert {k: v.tolist() for k, v in fake_data.shot_groups.items()} == {
      'many': [0, 1], 'medium': [2, 3, 4], 'few': [5]}
  batch = fake_data.train_batches(8, seed=0, process_index=0,
                                  process_count=1)(0)
  assert batch['image'].shape == (8, 16, 16, 3)
  assert batch['image'].dtype == np.uint8 and batch['label'].dtype == np.int32


def test_stream_is_a_function_of_seed_and_step(fake_data):
  stream = fake_data.train_batches(8, seed=3, process_index=0,
                                   process_count=1)
  batches = [stream(step) for step in range(9)]  # Over two epochs (27 each).
  resumed = fake_data.train_batches(8, seed=3, process_index=0,
                                    process_count=1)
  for step in (7, 4, 8):  # A resume at 7, then going back (a restart).
    for key in ('image', 'label'):
      np.testing.assert_array_equal(resumed(step)[key], batches[step][key])
  other_seed = fake_data.train_batches(8, seed=4, process_index=0,
                                       process_count=1)(0)
  assert not np.array_equal(other_seed['image'], batches[0]['image'])


def _id_images(num):
  """Constant-colour images: crops, resizes and flips keep the id."""
  ids = np.arange(num)
  images = np.broadcast_to(ids[:, None, None, None], (num, 9, 11, 3))
  return np.ascontiguousarray(images).astype(np.uint8), ids.astype(np.int32)


def _id_data(num_train, num_test):
  train_images, train_labels = _id_images(num_train)
  test_images, test_labels = _id_images(num_test)
  config = places_lt.get_config('smoke')
  return tfds_pipelines.LongTailData(
      name='ids', class_names=tuple(str(i) for i in range(num_train)),
      train_class_counts=np.ones(num_train, np.int64),
      shot_groups={}, train=tfds_pipelines.fake_source(train_images,
                                                       train_labels),
      test=tfds_pipelines.fake_source(test_images, test_labels),
      image_size=config.dataset.image_size)


def test_processes_read_disjoint_shards_covering_each_epoch():
  data = _id_data(num_train=24, num_test=5)
  seen = []
  for process in range(2):
    stream = data.train_batches(8, seed=0, process_index=process,
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
    batches = list(data.eval_batches(4, process_index=process,
                                     process_count=2))
    lengths.append(len(batches))
    for batch in batches:
      assert batch['image'].shape == (2, 16, 16, 3)
      labels += batch['label'][batch['mask']].tolist()
  assert lengths == [2, 2]
  assert sorted(labels) == list(range(7))


def test_materialize_gives_classification_data(fake_data):
  data = fake_data.materialize()
  assert isinstance(data, pipeline.ClassificationData)
  assert data.train_images.shape == (27, 16, 16, 3)
  assert data.test_images.shape == (12, 16, 16, 3)
  np.testing.assert_array_equal(data.student_class_counts,
                                fake_data.train_class_counts)


def test_unknown_dataset_lists_every_known_name():
  assert sources.STREAMING_DATASET_NAMES == tfds_pipelines.DATASET_NAMES
  config = places_lt.get_config('smoke')
  config.dataset.name = 'sun397'
  with pytest.raises(ValueError, match="'sun397'") as error:
    sources.load_data(config)
  for name in ('digits', 'image_folder', 'places_lt', 'sun_lt'):
    assert name in str(error.value)


def test_sources_serve_memory_and_streams_alike(fake_data):
  digits_config = conftest.tiny_config()
  in_memory = sources.load_data(digits_config)
  mesh = jax.sharding.Mesh(np.asarray(jax.devices()[:1]), ('data',))
  for data in (in_memory, fake_data):
    batch = sources.train_batch_fn(data, 'student', 8, seed=0)(0)
    assert batch['image'].shape[0] == 8 and batch['image'].dtype == np.uint8
    assert batch['image'].shape[-1] == sources.image_channels(data)
    outputs, labels = sources.eval_outputs(
        jax.jit(lambda x: jnp.mean(x.astype(jnp.float32), axis=(1, 2, 3))),
        data, 8, mesh)
    assert outputs.shape == labels.shape
    images, grid_labels = sources.grid_examples(data, 3)
    assert grid_labels.tolist() == [0, 1, 2] and len(images) == 3
  assert sources.num_train_examples(fake_data, 'teacher') == 27
  assert (sources.num_train_examples(in_memory, 'student') <
          sources.num_train_examples(in_memory, 'teacher'))


# ---------------------------------------------------------------------------
# SUN-LT from a directory, and missing data.
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
  config = sun_lt.get_config()
  config.dataset.data_dir, config.dataset.split_dir = images_dir, split_dir
  config.dataset.image_size = 16
  data = tfds_pipelines.load_long_tail_data(config)
  assert data.class_names == ('a/abbey', 'b/beach/sand')
  assert data.train_class_counts.tolist() == [3, 3]
  batch = data.train_batches(4, seed=0, process_index=0, process_count=1)(1)
  assert batch['image'].shape == (4, 16, 16, 3)
  eval_batches = list(data.eval_batches(4, process_index=0, process_count=1))
  assert sum(int(b['mask'].sum()) for b in eval_batches) == 4


def test_imagenet_lt_reads_tfds(tmp_path, monkeypatch):
  """The TFDS reading path (ReadConfig, undecoded images, labels) on TFDS's
  mock of imagenet_lt: random examples generated from the builder's code."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  config = imagenet_lt.get_config()
  config.dataset.image_size = 32
  config.dataset.cache_dir = str(tmp_path)
  monkeypatch.setattr(tfds.core.DatasetBuilder, 'is_prepared',
                      lambda self: True)
  with tfds.testing.mock_data(num_examples=12,
                              policy=tfds.testing.MockPolicy.USE_CODE):
    data = tfds_pipelines.load_long_tail_data(config)
    assert data.num_classes == 1000
    assert data.num_train_examples == data.num_test_examples == 12
    assert os.path.exists(tmp_path / 'imagenet_lt_train_labels.npy')
    batch = data.train_batches(4, seed=0, process_index=0,
                               process_count=1)(2)
    assert batch['image'].shape == (4, 32, 32, 3)
    masks = [b['mask'] for b in data.eval_batches(
        8, process_index=0, process_count=1)]
    assert [int(m.sum()) for m in masks] == [8, 4]


def _with_dataset(module, **fields):
  config = module.get_config()
  for key, value in fields.items():
    config.dataset[key] = value
  return config


def test_missing_data_errors_name_the_manual_steps(tmp_path):
  data_dir = str(tmp_path / 'tfds')
  cases = [
      (_with_dataset(places_lt, data_dir=data_dir),
       ['tfds build places365_small', data_dir, 'train_256_places365standard']),
      (_with_dataset(imagenet_lt, data_dir=data_dir),
       ['ILSVRC2012_img_train.tar', 'ILSVRC2012_img_val.tar',
        'tfds build imagenet_lt', 'manual_dir', data_dir]),
      (_with_dataset(sun_lt, data_dir=str(tmp_path / 'sun'),
                     split_dir=str(tmp_path / 'split')),
       ['SUNAttributeDB_Images.tar.gz', 'export_dragon_split.py',
        'dvirsamuel/DRAGON', str(tmp_path / 'sun')]),
  ]
  for config, expected in cases:
    with pytest.raises(tfds_pipelines.DataUnavailableError) as error:
      sources.load_data(config)
    for text in expected:
      assert text in str(error.value), (config.dataset.name, text)


# ---------------------------------------------------------------------------
# Running a smoke config.
# ---------------------------------------------------------------------------


def test_smoke_config_takes_a_tgt_gradient_step(fake_data):
  """The models a smoke config builds take one step on its stream."""
  config = places_lt.get_config('smoke')
  models, teachers, state = _models_and_state(config, fake_data.num_classes,
                                              conftest.random_variables)
  batch = fake_data.train_batches(config.batch_size, seed=0,
                                  process_index=0, process_count=1)(0)
  step = jax.jit(train_steps.make_train_step('tgt_gradient', models, config))
  new_state, metrics = step(state, teachers, batch, jax.random.PRNGKey(0))
  assert np.isfinite(float(metrics['loss']))
  assert int(new_state.step) == 1


def _models_and_state(config, num_classes, fill):
  """Student state, StepModels and frozen teachers built as train.py does."""
  gen = config.teacher_generator
  student = build.classifier(config.student, num_classes)
  labeler = build.classifier(config.teacher_labeler, num_classes)
  encoder = build.encoder(gen)
  generator = build.generator(gen, spectral_norm=False)
  tx, _ = train_steps.create_optimizer(
      config.optimizer, config.peak_learning_rate, 5, 100,
      config.weight_decay, config.momentum)
  keys = jax.random.split(jax.random.PRNGKey(0), 4)
  size = lambda c: (1, c.image_size, c.image_size, 3)
  enc = (1, gen.encoder_image_size, gen.encoder_image_size, 3)
  teachers = {'labeler': fill(labeler, keys[0], size(config.teacher_labeler)),
              'encoder': fill(encoder, keys[1], enc),
              'generator': fill(generator, keys[2], (1, gen.latent_dim))}
  variables = fill(student, keys[3], size(config.student))
  opt_state = jax.tree.map(
      lambda x: jnp.zeros(x.shape, x.dtype),
      jax.eval_shape(tx.init, variables['params']))
  state = train_steps.TrainState(
      step=jnp.zeros((), jnp.int32), params=variables['params'],
      batch_stats=variables['batch_stats'], opt_state=opt_state)
  models = train_steps.StepModels(
      student=student, student_config=config.student, tx=tx, labeler=labeler,
      labeler_config=config.teacher_labeler, generator=generator,
      encoder=encoder, encoder_image_size=gen.encoder_image_size)
  return models, teachers, state


def test_labeler_checkpoint_that_does_not_fit_is_refused(tmp_path,
                                                         fake_data):
  """teacher_labeler.checkpoint: reused when it fits, refused when not."""
  from clu import metric_writers  # pylint: disable=g-import-not-at-top
  config = places_lt.get_config('smoke')
  mesh = jax.sharding.Mesh(np.asarray(jax.devices()[:1]), ('data',))
  ctx = train.Context(config=config, workdir=str(tmp_path), mesh=mesh,
                      data=fake_data.materialize(),
                      writer=metric_writers.create_default_writer(
                          str(tmp_path), just_logging=True))
  train.teacher_labeler_stage(ctx)
  config.teacher_labeler.checkpoint = str(tmp_path / 'teacher_labeler')
  train.teacher_labeler_stage(ctx)  # Complete and fitting: restored.
  config.teacher_labeler.width_multiplier = 1 / 8
  # The stage's recorded config names the field; without that record the
  # restore itself refuses (tests/test_checkpointing.py).
  with pytest.raises(ValueError,
                     match=r'teacher_labeler\.width_multiplier: 0\.0625 -> '
                           r'0\.125'):
    train.teacher_labeler_stage(ctx)
  os.remove(str(tmp_path / 'teacher_labeler' / 'config.json'))
  with pytest.raises(ValueError, match='fits this config'):
    train.teacher_labeler_stage(ctx)


def _supports_streams() -> bool:
  return hasattr(train, 'sources')


@pytest.mark.slow
def test_smoke_config_runs_end_to_end(tmp_path, monkeypatch):
  """places_lt:smoke through train_and_evaluate: labeler, teacher, student.

  With train.py's streaming support the converted-teacher path is used (a
  random "converted" checkpoint); without it, the fake data are
  materialised in memory and the generator is trained as in the demo.
  """
  config = places_lt.get_config('smoke')
  config.methods = ('tgt_gradient',)
  gen = config.teacher_generator
  if _supports_streams():
    directory = str(tmp_path / 'bigbigan')
    variables = {
        'generator': conftest.random_variables(
            build.generator(gen, spectral_norm=False), jax.random.PRNGKey(0),
            (1, gen.latent_dim)),
        'encoder': conftest.random_variables(
            build.encoder(gen), jax.random.PRNGKey(1),
            (1, gen.encoder_image_size, gen.encoder_image_size, 3))}
    pretrained.save_teacher_generator(directory, variables, gen,
                                      {'source': 'random, for a test'})
    gen.pretrained_checkpoint = directory
  else:
    monkeypatch.setattr(
        pipeline, 'load_classification_data',
        lambda c: tfds_pipelines.load_long_tail_data(c).materialize())
  results = train.train_and_evaluate(config, str(tmp_path / 'workdir'))
  assert set(results) >= {'teacher_labeler', 'reconstruction_agreement',
                          'tgt_gradient'}
  assert 0.0 <= results['tgt_gradient']['overall'] <= 1.0
  assert os.path.exists(tmp_path / 'workdir' / 'results.md')


# ---------------------------------------------------------------------------
# The full-size step.
# ---------------------------------------------------------------------------


_OPTIMIZED = {'xla_backend_optimization_level': 3,
              'xla_llvm_disable_expensive_passes': False}


@pytest.mark.slow
def test_full_size_tgt_gradient_step_on_cpu():
  """One tgt_gradient step at paper size, batch 2, on the CPU.

  ResNet-50 student at 224 and ResNet-50 labeler (365 classes, Places-LT),
  BigBiGAN's G (BigGAN-128, ch 96) and E (ResNet-v2-50 at 256 with its
  Gaussian head), randomly initialised.
  """
  config = places_lt.get_config()
  config.batch_size = 2
  num_classes = 365
  models, teachers, state = _models_and_state(config, num_classes,
                                              conftest.random_variables)
  counts = {name: pretrained.count_parameters(v['params'])
            for name, v in teachers.items()}
  counts['student'] = pretrained.count_parameters(state.params)
  assert counts['generator'] > 60e6 and counts['student'] > 20e6

  batch = {'image': jnp.asarray(np.random.default_rng(0).integers(
               0, 256, (2, 224, 224, 3), np.uint8)),
           'label': jnp.asarray([3, 300], jnp.int32)}
  step = jax.jit(train_steps.make_train_step('tgt_gradient', models, config))
  start = time.perf_counter()
  # XLA's optimisations back on for this one program (the module turns them
  # off for the tiny ones): unoptimised, the strided-conv gradients of the
  # full-size nets run for tens of minutes on a CPU.
  compiled = step.lower(state, teachers, batch,
                        jax.random.PRNGKey(0)).compile(
                            compiler_options=_OPTIMIZED)
  compile_seconds = time.perf_counter() - start
  start = time.perf_counter()
  new_state, metrics = compiled(state, teachers, batch, jax.random.PRNGKey(0))
  loss = float(metrics['loss'])
  run_seconds = time.perf_counter() - start
  peak_rss_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
  print(f'\nfull-size tgt_gradient step: parameters {counts}; compile '
        f'{compile_seconds:.1f} s, run {run_seconds:.1f} s, peak RSS of this '
        f'process so far {peak_rss_gib:.1f} GiB')

  assert np.isfinite(loss)
  assert np.isfinite(float(metrics['generated_loss']))
  assert int(new_state.step) == 1
  assert (jax.tree.map(jnp.shape, new_state.params) ==
          jax.tree.map(jnp.shape, state.params))
  logits, _ = models.student.apply(
      {'params': new_state.params, 'batch_stats': new_state.batch_stats},
      jnp.zeros((1, 224, 224, 3)), train=False)
  assert logits.shape == (1, num_classes)
  assert np.all(np.isfinite(np.asarray(logits)))

