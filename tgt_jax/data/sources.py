"""One interface over in-memory and streaming datasets, for the stages.

`pipeline.ClassificationData` (digits, image folders: arrays in memory) and
`tfds_pipelines.LongTailData` (ImageNet-LT, Places-LT, SUN-LT, fake:
tf.data streams) differ in how they hold images; the training stages need
only the few things below, so they stay unaware of the difference:

  load_data(config)                   -> data
  num_train_examples(data, subset)    -> int (sizes epochs in steps)
  image_shape(data), image_channels(data) -> the images' (H, W, C), C
  train_batch_fn(data, subset, ...)   -> batch_for_step(step): this
                                         process's rows, uint8 + int32
  eval_outputs(fn, data, ...)         -> (outputs, labels) on the balanced
                                         test split, all processes' rows
  grid_examples(data, num)            -> one test image per class

`subset` is 'teacher' (the full train split the teachers learn from) or
'student' (its long-tail subset). For the streaming benchmarks both are the
long-tail train split ([ours]: the paper's labeler data are not known).
TensorFlow is imported only when a streaming dataset is asked for.
"""

from typing import Any, Callable, Mapping, Optional, Union

import jax
from jax.experimental import multihost_utils
import ml_collections
import numpy as np

from tgt_jax import evaluation
from tgt_jax import sharding
from tgt_jax.data import pipeline

SUBSETS = ('teacher', 'student')
# tfds_pipelines.DATASET_NAMES, repeated so that checking a name needs no
# TensorFlow import (a test keeps the two equal).
STREAMING_DATASET_NAMES = ('fake', 'places_lt', 'imagenet_lt', 'sun_lt')
# Any: a tfds_pipelines.LongTailData (not imported here: it needs TensorFlow).
Data = Union[pipeline.ClassificationData, Any]


def is_streaming(data: Data) -> bool:
  return not isinstance(data, pipeline.ClassificationData)


def load_data(config: ml_collections.ConfigDict) -> Data:
  """In memory for `pipeline.DATASET_NAMES`, else a stream."""
  name = config.dataset.name
  if name in pipeline.DATASET_NAMES:
    return pipeline.load_classification_data(config)
  if name not in STREAMING_DATASET_NAMES:
    raise ValueError(f'Unknown dataset.name {name!r}; choose one of '
                     f'{pipeline.DATASET_NAMES + STREAMING_DATASET_NAMES}.')
  from tgt_jax.data import tfds_pipelines  # pylint: disable=g-import-not-at-top
  return tfds_pipelines.load_long_tail_data(config)


def _check_subset(subset: str) -> None:
  if subset not in SUBSETS:
    raise ValueError(f'subset must be one of {SUBSETS}, got {subset!r}.')


def num_train_examples(data: Data, subset: str) -> int:
  _check_subset(subset)
  if is_streaming(data):
    return data.num_train_examples
  return len(data.train_labels if subset == 'teacher' else
             data.student_indices)


def image_shape(data: Data) -> tuple[int, int, int]:
  """(H, W, C) of the uint8 images `train_batch_fn` yields."""
  if is_streaming(data):
    return (data.image_size, data.image_size, 3)
  return tuple(int(d) for d in data.train_images.shape[1:])


def image_channels(data: Data) -> int:
  return image_shape(data)[-1]


def train_batch_fn(data: Data, subset: str, batch_size: int, seed: int,
                   max_shift: int = 0,
                   extras: Mapping[str, np.ndarray] | None = None
                   ) -> Callable[[int], dict[str, np.ndarray]]:
  """`batch_for_step(step)`: this process's rows of global batch `step`.

  In memory, `max_shift` sets the random-shift augmentation; streams
  augment with their own random-resized crop and flip and ignore it.
  `extras`: per-image arrays of the subset (in memory only) whose rows join
  each batch under their names.
  """
  _check_subset(subset)
  if is_streaming(data):
    if extras:
      raise ValueError('Per-image extras (cached latents) need in-memory '
                       'data; a stream has no fixed image order.')
    return data.train_batches(batch_size, seed)
  images, labels = ((data.train_images, data.train_labels)
                    if subset == 'teacher' else
                    (data.student_images, data.student_labels))
  rows = sharding.local_slice(batch_size)
  return lambda step: pipeline.train_batch(images, labels, batch_size, seed,
                                           step, max_shift, rows, extras)


def eval_outputs(fn: Callable[[jax.Array], jax.Array], data: Data,
                 batch_size: int, mesh,
                 max_batches: Optional[int] = None
                 ) -> tuple[np.ndarray, np.ndarray]:
  """A jitted `fn(uint8 images) -> [N, ...]` over the test split.

  Returns (outputs, labels) for every test image (or those of the first
  `max_batches` batches), padding removed, gathered from all processes.
  """
  if not is_streaming(data):
    limit = None if max_batches is None else max_batches * batch_size
    images, labels = data.test_images[:limit], data.test_labels[:limit]
    return evaluation.batched_apply(fn, images, batch_size, mesh), labels
  sharding.check_batch_size(batch_size, mesh, 'eval_batch_size')
  outputs, labels = [], []
  for index, batch in enumerate(data.eval_batches(batch_size)):
    if max_batches is not None and index >= max_batches:
      break
    result = fn(sharding.put_batch(batch['image'], mesh))
    label, mask = batch['label'], batch['mask']
    if jax.process_count() > 1:
      result, label, mask = multihost_utils.process_allgather(
          (result, label, mask), tiled=True)
    mask = np.asarray(mask, bool)
    outputs.append(np.asarray(result)[mask])
    labels.append(np.asarray(label)[mask])
  return np.concatenate(outputs), np.concatenate(labels)


def grid_examples(data: Data, num: int,
                  max_batches: int = 20) -> tuple[np.ndarray, np.ndarray]:
  """The first test image of each of the first `num` classes (as found).

  Every process returns the same images (process 0's rows of the first
  eval batches in a stream), for the sample grid.
  """
  if not is_streaming(data):
    picks = [np.flatnonzero(data.test_labels == c)[0]
             for c in range(data.num_classes)][:num]
    return data.test_images[picks], data.test_labels[picks]
  found = {}
  for index, batch in enumerate(data.eval_batches(256, 0, 1)):
    for image, label, mask in zip(batch['image'], batch['label'],
                                  batch['mask']):
      if mask and label < num and int(label) not in found:
        found[int(label)] = image
    if len(found) == num or index + 1 >= max_batches:
      break
  labels = np.asarray(sorted(found), np.int32)
  return np.stack([found[c] for c in labels]), labels
