"""The dataset a config names: in memory, or streamed with TensorFlow.

`load_dataset(config)` reads `config.dataset`, draws the student's long-tail
subset (`config.long_tail`) and the shot groups (`config.shot_groups`), and
fails with what is missing and how to get it before anything is trained.
"""

import numpy as np

from tgt_jax.data import dataset as dataset_lib
from tgt_jax.data import digits
from tgt_jax.data import image_folder
from tgt_jax.data import long_tail

IN_MEMORY_NAMES = ('digits', 'image_folder')
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
    raise ValueError(f'Unknown dataset.name {name!r}; choose one of '
                     f'{IN_MEMORY_NAMES + STREAMING_NAMES}.')
  splits, class_names = _read_in_memory(config.dataset)
  splits['train'], splits['val'] = _carve_validation(
      *splits['train'], config.dataset.val_per_class,
      config.dataset.split_seed)
  train_images, train_labels = splits['train']
  student_indices = _student_subset(train_labels, len(class_names),
                                    config.long_tail)
  counts = np.bincount(train_labels[student_indices],
                       minlength=len(class_names))
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
  if data_config.name == 'digits':
    images, labels = digits.load_digits()
    train_idx, test_idx = digits.split_train_test(
        labels, data_config.test_per_class, data_config.split_seed)
    splits = {'train': (images[train_idx], labels[train_idx]),
              'test': (images[test_idx], labels[test_idx])}
    class_names = tuple(str(c) for c in range(10))
  else:
    if not data_config.root:
      raise ValueError(
          "dataset.name='image_folder' needs the folder: use "
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


def _carve_validation(images: np.ndarray, labels: np.ndarray,
                      per_class, split_seed: int):
  """((train images, labels), (val images, labels)): `per_class` images of
  every class held out of the train split (None: 10% of the smallest class,
  at least 1), drawn independently of the test split."""
  if per_class is None:
    smallest = int(np.bincount(labels).min())
    per_class = max(1, int(0.1 * smallest))
  if per_class < 1:
    raise ValueError(f'dataset.val_per_class={per_class}: at least 1 (the '
                     'validation split is what choices are made on).')
  train, val = digits.split_train_test(labels, per_class, split_seed + 1)
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
  return long_tail.long_tail_subset(train_labels, counts,
                                    long_tail_config.seed)
