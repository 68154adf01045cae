"""Streaming input pipelines for the paper's long-tail benchmarks.

Datasets (`config.dataset.name`):
  * 'imagenet_lt': TFDS `imagenet_lt` (train 115,846 long-tail images; test
    = the 50,000 ILSVRC-2012 validation images, balanced). Needs the
    ILSVRC-2012 tars in TFDS's manual dir.
  * 'places_lt': TFDS `places365_small` (256x256) filtered by the Places-LT
    split lists shipped in `splits/Places_LT` (OLTR, Liu et al. 2019):
    62,500 train images drawn from Places365-Standard train, 36,500 test
    images = the Places365 validation set.
  * 'sun_lt': SUN-LT (Samuel et al. 2020, DRAGON): SUN Attribute images read
    from a user directory with split lists exported from DRAGON's code
    (`export_dragon_split.py`; steps in docs/paper_scale.md).
  * 'fake': random images and long-tail labels of the right types, in memory,
    for tests and smoke runs; no download.

Every pipeline yields uint8 NHWC images at `dataset.image_size` (the
student's input size) and int32 labels; each model then resizes and
normalises for itself (`image_ops`): the encoder path gets 256x256 in
[-1, 1], the labeler its own size and statistics. Train: random-resized crop
(area 8%..100%, aspect 3/4..4/3) and horizontal flip. Eval: resize the
shorter side to image_size / eval_crop_fraction, centre crop.

Reading, sharding, shuffling, augmentation and batching are the streaming
machinery's (`streaming.py`, with its multi-host and determinism
guarantees); this module holds only what each benchmark is: where its
files are, how its lists map onto them, its class names. A benchmark is
one loader here and one row of `LOADERS`.

Missing data raise `DataUnavailableError` naming the manual steps and paths,
before any model is built.
"""

import os

import ml_collections
import numpy as np
import tensorflow as tf

from tgt_jax.data import dataset as dataset_lib
from tgt_jax.data import long_tail
from tgt_jax.data import streaming

SPLITS_DIR = os.path.join(os.path.dirname(__file__), 'splits')
# OLTR's Places-LT lists (splits/README.md).
PLACES_LT_COUNTS = {'train': 62_500, 'val': 7_300, 'test': 36_500}
PLACES_LT_NUM_CLASSES = 365
# Which TFDS places365_small split each Places-LT list is drawn from.
_PLACES_TFDS_SPLIT = {'train': 'train', 'val': 'train', 'test': 'validation'}
SUN_LT_SPLIT_FILES = {split: f'SUN_LT_{split}.txt'
                      for split in ('train', 'val', 'test')}
SUN_LT_CLASSES_FILE = 'SUN_LT_classes.txt'


DataUnavailableError = dataset_lib.DataUnavailableError


# ---------------------------------------------------------------------------
# Fake data.
# ---------------------------------------------------------------------------


def _fake_split(counts: np.ndarray, source_size: int,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
  labels = np.repeat(np.arange(len(counts)), counts).astype(np.int32)
  rng.shuffle(labels)
  # A per-class tint over noise: learnable, so smoke runs are not all chance.
  tints = np.linspace(0, 255, len(counts))[labels]
  noise = rng.integers(0, 128, (len(labels), source_size,
                                source_size + source_size // 4, 3))
  images = np.clip(noise + tints[:, None, None, None] / 2, 0, 255)
  return images.astype(np.uint8), labels


def load_fake(dataset_config: ml_collections.ConfigDict,
              shot_config: ml_collections.ConfigDict
              ) -> streaming.StreamingDataset:
  """Random long-tail data: exponential train counts, balanced test split."""
  rng = np.random.default_rng(dataset_config.fake_seed)
  num_classes = dataset_config.fake_num_classes
  train_counts = long_tail.exponential_class_counts(
      num_classes, dataset_config.fake_max_count,
      dataset_config.fake_imbalance_factor)
  train = _fake_split(train_counts, dataset_config.fake_source_size, rng)
  test = _fake_split(np.full(num_classes, dataset_config.fake_test_per_class),
                     dataset_config.fake_source_size, rng)
  val = _fake_split(np.full(num_classes, dataset_config.fake_test_per_class),
                    dataset_config.fake_source_size, rng)
  return streaming.streaming_dataset(
      'fake', dataset_config, shot_config,
      class_names=tuple(f'class_{c}' for c in range(num_classes)),
      train_labels=train[1],
      sources={'train': streaming.fake_source(*train),
               'test': streaming.fake_source(*test),
               'val': streaming.fake_source(*val)})




# ---------------------------------------------------------------------------
# TFDS: ImageNet-LT and Places-LT.
# ---------------------------------------------------------------------------






IMAGENET_LT_HOW_TO = (
    'ImageNet-LT needs the ILSVRC-2012 archives, which cannot be downloaded '
    'automatically:\n'
    '  1. Register at https://image-net.org and download '
    'ILSVRC2012_img_train.tar (138 GB) and ILSVRC2012_img_val.tar (6.3 GB).\n'
    '  2. Put both in MANUAL_DIR (TFDS default: DATA_DIR/downloads/manual).\n'
    '  3. tfds build imagenet_lt --data_dir=DATA_DIR --manual_dir=MANUAL_DIR\n'
    '     (it also fetches the ImageNet-LT train/val lists from the OLTR '
    'Google Drive).')


def load_imagenet_lt(dataset_config: ml_collections.ConfigDict,
                     shot_config: ml_collections.ConfigDict
                     ) -> streaming.StreamingDataset:
  """TFDS imagenet_lt: long-tail train split, 50,000-image balanced test."""
  builder = streaming.tfds_builder('imagenet_lt', dataset_config,
                                   IMAGENET_LT_HOW_TO)
  class_names = tuple(builder.info.features['label'].names)
  # Counted by reading, not taken from the TFDS metadata, so that the epoch
  # arithmetic rests on what the files really hold.
  labels = {split: streaming.tfds_labels(builder, split, dataset_config)
            for split in ('train', 'validation', 'test')}

  def source(split):
    def read(index, count):
      return streaming.read_tfds(builder, split, index, count, even=True).map(
          lambda e: {'image': e['image'], 'label': e['label']})

    return streaming.Source(read=read,
                            count=streaming.even_count(len(labels[split])),
                            kind='encoded',
                            cache=(dataset_config.cache if split == 'train'
                                   else ''))

  # ImageNet-LT's val split is TFDS's 'validation' (20 images a class).
  return streaming.streaming_dataset(
      'imagenet_lt', dataset_config, shot_config, class_names=class_names,
      train_labels=labels['train'],
      sources={'train': source('train'), 'val': source('validation'),
               'test': source('test')})




PLACES_HOW_TO = (
    'Places-LT reads TFDS places365_small (Places365-Standard, 256x256):\n'
    '  tfds build places365_small --data_dir=DATA_DIR\n'
    '  (downloads about 30 GB from http://data.csail.mit.edu/places/places365/:'
    ' train_256_places365standard.tar, val_256.tar, test_256.tar and '
    'filelist_places365-standard.tar).')


def places_tfds_filename(split_path: str) -> str:
  """A Places-LT list path -> the `filename` feature of places365_small.

  'train/apartment_building-outdoor/00000794.jpg' ->
  'data_256/a/apartment_building/outdoor/00000794.jpg' (the "easy directory
  structure" joins nested categories with '-');
  'val/airfield/Places365_val_00003597.jpg' ->
  'val_256/Places365_val_00003597.jpg'.
  """
  folder, category, file_name = split_path.split('/')
  if folder == 'train':
    nested = category.replace('-', '/')
    return f'data_256/{category[0]}/{nested}/{file_name}'
  if folder == 'val':
    return f'val_256/{file_name}'
  raise ValueError(f'Unexpected Places-LT path {split_path!r}: expected '
                   "'train/<category>/<file>' or 'val/<category>/<file>'.")


def read_places_lt_split(split: str,
                         splits_dir: str = SPLITS_DIR
                         ) -> tuple[list[str], np.ndarray]:
  """(TFDS filenames, labels) of a shipped Places-LT list; counts asserted."""
  path = os.path.join(splits_dir, 'Places_LT', f'Places_LT_{split}.txt')
  paths, labels = long_tail.read_split_file(path, PLACES_LT_NUM_CLASSES)
  if len(paths) != PLACES_LT_COUNTS[split]:
    raise ValueError(f'{path} has {len(paths)} entries; Places-LT {split} has '
                     f'{PLACES_LT_COUNTS[split]}. The shipped list is damaged.')
  return [places_tfds_filename(p) for p in paths], labels




def load_places_lt(dataset_config: ml_collections.ConfigDict,
                   shot_config: ml_collections.ConfigDict
                   ) -> streaming.StreamingDataset:
  """Places-LT from TFDS places365_small and the shipped lists."""
  builder = streaming.tfds_builder('places365_small', dataset_config,
                                   PLACES_HOW_TO)
  class_names = tuple(builder.info.features['label'].names)
  if len(class_names) != PLACES_LT_NUM_CLASSES:
    raise ValueError(f'places365_small has {len(class_names)} classes, '
                     f'expected {PLACES_LT_NUM_CLASSES}.')

  def source(split, cache):
    filenames, labels = read_places_lt_split(split)
    tfds_split = _PLACES_TFDS_SPLIT[split]
    return streaming.filtered_tfds_source(
        lambda: streaming.read_tfds(builder, tfds_split, 0, 1, even=False),
        filenames, labels, cache), labels

  train, train_labels = source('train', dataset_config.cache)
  return streaming.streaming_dataset(
      'places_lt', dataset_config, shot_config, class_names=class_names,
      train_labels=train_labels,
      sources={'train': train, 'val': source('val', '')[0],
               'test': source('test', '')[0]})


# ---------------------------------------------------------------------------
# SUN-LT: SUN Attribute images with DRAGON's split, from a directory.
# ---------------------------------------------------------------------------

SUN_LT_HOW_TO = (
    'SUN-LT (DRAGON split of the SUN Attribute images) is built by hand:\n'
    '  1. Images: download SUNAttributeDB_Images.tar.gz from '
    'https://cs.brown.edu/~gmpatter/sunattributes.html and unpack it so that '
    'IMAGES_DIR/a/abbey/sun_*.jpg exist (IMAGES_DIR = the "images" folder).\n'
    '  2. Split: clone https://github.com/dvirsamuel/DRAGON, download its '
    'data.tar (README "Data Preparation") into the clone, create its conda '
    'environment, and in it run\n'
    '     python tgt_jax/data/export_dragon_split.py '
    '--dragon_root=DRAGON_CLONE --output_dir=SPLIT_DIR\n'
    '     which writes SUN_LT_{train,val,test}.txt and SUN_LT_classes.txt.\n'
    '  3. Pass --config.dataset.data_dir=IMAGES_DIR '
    '--config.dataset.split_dir=SPLIT_DIR.')


def load_sun_lt(dataset_config: ml_collections.ConfigDict,
                shot_config: ml_collections.ConfigDict
                ) -> streaming.StreamingDataset:
  """SUN-LT from `dataset.data_dir` (images) and `dataset.split_dir`."""
  images_dir, split_dir = dataset_config.data_dir, dataset_config.split_dir
  missing = [p for p in [images_dir, split_dir]
             if not p or not os.path.isdir(p)]
  split_files = {s: os.path.join(split_dir or '', f)
                 for s, f in SUN_LT_SPLIT_FILES.items()}
  classes_file = os.path.join(split_dir or '', SUN_LT_CLASSES_FILE)
  missing += [p for p in [*split_files.values(), classes_file]
              if not os.path.isfile(p)]
  if missing:
    raise DataUnavailableError(
        f'SUN-LT files not found: {missing}.\n{SUN_LT_HOW_TO}')
  with open(classes_file) as f:
    class_names = tuple(line.strip() for line in f if line.strip())

  def source(split):
    paths, labels = long_tail.read_split_file(split_files[split],
                                              len(class_names))
    absent = [p for p in paths[:5] if not os.path.isfile(
        os.path.join(images_dir, p))]
    if absent:
      raise DataUnavailableError(
          f'SUN-LT {split} lists {absent[0]!r}, not found under {images_dir}.'
          f'\n{SUN_LT_HOW_TO}')
    full_paths = np.asarray([os.path.join(images_dir, p) for p in paths])

    def read(index, count):
      return tf.data.Dataset.from_tensor_slices(
          {'image': full_paths[index::count], 'label': labels[index::count]})

    return streaming.Source(read=read,
                            count=streaming.strided_count(len(paths)),
                            kind='path'), labels

  train, train_labels = source('train')
  return streaming.streaming_dataset(
      'sun_lt', dataset_config, shot_config, class_names=class_names,
      train_labels=train_labels,
      sources={'train': train, 'val': source('val')[0],
               'test': source('test')[0]})


# ---------------------------------------------------------------------------
# Entry point.
# ---------------------------------------------------------------------------


# One row per benchmark: its loader (dataset config, shot-group config) ->
# StreamingDataset.
LOADERS = {'fake': load_fake, 'places_lt': load_places_lt,
           'imagenet_lt': load_imagenet_lt, 'sun_lt': load_sun_lt}
DATASET_NAMES = tuple(LOADERS)


def load(config: ml_collections.ConfigDict) -> streaming.StreamingDataset:
  """The benchmark `config.dataset.name` names, checked to exist on disk.

  Raises:
    DataUnavailableError: naming the manual steps and the paths, before any
      image is read.
    ValueError: for an unknown dataset name.
  """
  name = config.dataset.name
  if name not in LOADERS:
    raise ValueError(f'Unknown streaming dataset {name!r}; choose one of '
                     f'{DATASET_NAMES}.')
  return LOADERS[name](config.dataset, config.shot_groups)
