"""The dataset a config names: in memory, or streamed with TensorFlow.

`load_dataset(config)` reads `config.dataset`, draws the student's long-tail
subset (`config.long_tail`) and the shot groups (`config.shot_groups`), and
fails with what is missing and how to get it before anything is trained.
"""

from absl import logging
import numpy as np

from tgt_jax import errors
from tgt_jax.data import bundled
from tgt_jax.data import dataset as dataset_lib
from tgt_jax.data import image_folder
from tgt_jax.data import long_tail

# The bundled data sets (one row each in bundled.DATASETS) and folders.
IN_MEMORY_NAMES = (*bundled.DATASETS, 'image_folder')
# tfds_pipelines.DATASET_NAMES, repeated so that checking a name needs no
# TensorFlow import (a test keeps the two equal).
STREAMING_NAMES = ('fake', 'places_lt', 'imagenet_lt', 'sun_lt')


def load_dataset(config) -> dataset_lib.Dataset:
  """The dataset `config.dataset` names, with its long-tail student subset.

  In memory for IN_MEMORY_NAMES, else a stream (TensorFlow imported then).
  Fails with what is missing and how to get it before anything is trained.
  """
  name = config.dataset.name
  if name in STREAMING_NAMES:
    from tgt_jax.data import tfds_pipelines  # pylint: disable=g-import-not-at-top
    return tfds_pipelines.load(config)
  if name not in IN_MEMORY_NAMES:
    raise errors.ConfigError(
        f'dataset.name={name!r}: unknown; pass --config.dataset.name= one of '
        f'{IN_MEMORY_NAMES + STREAMING_NAMES}.')
  splits, class_names = _read_in_memory(config.dataset)
  splits['train'], splits['val'] = _carve_validation(
      *splits['train'], config.dataset.val_per_class,
      config.dataset.split_seed, class_names)
  train_images, train_labels = splits['train']
  student_indices = _student_subset(train_labels, len(class_names),
                                    config.long_tail)
  counts = np.bincount(train_labels[student_indices],
                       minlength=len(class_names))
  _warn_if_few(counts, class_names)
  val = splits['val']
  return dataset_lib.InMemoryDataset(
      name=name, class_names=class_names,
      shot_groups=long_tail.shot_groups_for(counts, config.shot_groups),
      train_images=train_images, train_labels=train_labels,
      test_images=splits['test'][0], test_labels=splits['test'][1],
      val_images=val[0], val_labels=val[1],
      student_indices=student_indices, max_shift=config.dataset.max_shift,
      flip=config.dataset.flip)


def _read_in_memory(data_config):
  """{'train': (images, labels), 'test': ..., ['val': ...]}, class names."""
  if data_config.name in bundled.DATASETS:
    _check_bundled_shape(data_config)
    images, labels = bundled.load(data_config.name)
    class_names = bundled.DATASETS[data_config.name].class_names
    train_idx, test_idx = bundled.split_train_test(
        labels, data_config.test_per_class, data_config.split_seed,
        class_names=class_names)
    splits = {'train': (images[train_idx], labels[train_idx]),
              'test': (images[test_idx], labels[test_idx])}
  else:
    if not data_config.root:
      raise errors.ConfigError(
          "dataset.root: dataset.name='image_folder' needs the folder; use "
          '--config=configs/image_folder.py:root=ROOT (or '
          '--config.dataset.root=ROOT) with ROOT/train/<class>/*.png and '
          'ROOT/test/<class>/*.png.')
    folder = image_folder.load_image_folder(
        data_config.root, data_config.image_size, data_config.channels,
        data_config.on_decode_error)
    splits = {split: (folder[f'{split}_images'], folder[f'{split}_labels'])
              for split in ('train', 'test')}
    class_names = tuple(folder['class_names'])
  return ({k: (images, labels.astype(np.int32))
           for k, (images, labels) in splits.items()}, class_names)


def _check_bundled_shape(data_config) -> None:
  """Bundled images are used at their own size: a config that asks for
  another would have every model resize them silently."""
  side = bundled.DATASETS[data_config.name].side
  if (data_config.image_size, data_config.channels) != (side, 1):
    raise errors.ConfigError(
        f'dataset.image_size={data_config.image_size}, dataset.channels='
        f'{data_config.channels}: dataset.name={data_config.name!r} holds '
        f'{side}x{side} images of one channel; pass '
        f'--config.dataset.image_size={side} --config.dataset.channels=1.')


def _carve_validation(images: np.ndarray, labels: np.ndarray,
                      per_class, split_seed: int, class_names):
  """((train images, labels), (val images, labels)): `per_class` images of
  every class held out of the train split (None: 10% of the smallest class,
  at least 1), drawn independently of the test split."""
  if per_class is None:
    smallest = int(np.bincount(labels).min())
    per_class = max(1, int(0.1 * smallest))
  if per_class < 1:
    raise errors.ConfigError(
        f'dataset.val_per_class={per_class}: must be at least 1 (the '
        'validation split is what choices are made on); pass '
        '--config.dataset.val_per_class=1 or more.')
  train, val = bundled.split_train_test(labels, per_class, split_seed + 1,
                                        'dataset.val_per_class', class_names)
  return (images[train], labels[train]), (images[val], labels[val])


def _student_subset(train_labels: np.ndarray, num_classes: int,
                    long_tail_config) -> np.ndarray:
  """Indices of the student's long-tail subset of the train split."""
  if not long_tail_config.enabled:
    return np.arange(len(train_labels))
  available = np.bincount(train_labels, minlength=num_classes)
  max_count = long_tail_config.max_count or int(available.min())
  counts = long_tail.exponential_class_counts(
      num_classes, max_count, long_tail_config.imbalance_factor)
  short = np.flatnonzero(available < counts)
  if short.size:
    c = int(short[0])
    raise errors.DataError(
        f'long_tail.max_count={long_tail_config.max_count}: class {c} would '
        f'keep {counts[c]} train image(s) but has {available[c]}; lower '
        '--config.long_tail.max_count (0: the smallest class\'s size).')
  return long_tail.long_tail_subset(train_labels, counts,
                                    long_tail_config.seed)


# Below this many images of its largest class the student's set is legal but
# too small to learn from or to tell methods apart [ours].
FEW_STUDENT_IMAGES = 10


def _warn_if_few(counts: np.ndarray, class_names) -> None:
  if counts.max() < FEW_STUDENT_IMAGES:
    logging.warning(
        'The student trains on %d images (%s a class, largest class %d): too '
        'few to learn from. Add train images, or lower '
        '--config.long_tail.imbalance_factor, or pass '
        '--config.long_tail.enabled=False to use all of train/.',
        int(counts.sum()), dict(zip(class_names, counts.tolist())),
        int(counts.max()))
