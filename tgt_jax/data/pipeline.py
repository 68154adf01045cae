"""From a config to arrays in memory, and deterministic batches from them.

Every batch is a pure function of (seed, step): the order of examples comes
from one permutation per epoch seeded by (seed, epoch), and augmentation from
(seed, step). A run resumed at step k therefore sees exactly the batches an
uninterrupted run sees from step k on.
"""

import dataclasses
from typing import Mapping

import ml_collections
import numpy as np

from tgt_jax.data import digits
from tgt_jax.data import image_folder
from tgt_jax.data import long_tail

DATASET_NAMES = ('digits', 'image_folder')


@dataclasses.dataclass(frozen=True)
class ClassificationData:
  """A labelled image dataset with its long-tail student subset.

  Images are uint8 NHWC in [0, 255]. `train_*` is the full train split (the
  teachers learn from it); the student learns from `train_*[student_indices]`,
  a long-tail subset when `config.long_tail.enabled`, else all of it.
  """
  train_images: np.ndarray
  train_labels: np.ndarray
  test_images: np.ndarray
  test_labels: np.ndarray
  student_indices: np.ndarray
  class_names: tuple[str, ...]
  shot_groups: dict[str, np.ndarray]

  @property
  def num_classes(self) -> int:
    return len(self.class_names)

  @property
  def student_images(self) -> np.ndarray:
    return self.train_images[self.student_indices]

  @property
  def student_labels(self) -> np.ndarray:
    return self.train_labels[self.student_indices]

  @property
  def student_class_counts(self) -> np.ndarray:
    return np.bincount(self.student_labels, minlength=self.num_classes)


def load_classification_data(
    config: ml_collections.ConfigDict) -> ClassificationData:
  """Loads `config.dataset` and draws the long-tail subset of its train split."""
  name = config.dataset.name
  if name == 'digits':
    images, labels = digits.load_digits()
    train_idx, test_idx = digits.split_train_test(
        labels, config.dataset.test_per_class, config.dataset.split_seed)
    train_images, train_labels = images[train_idx], labels[train_idx]
    test_images, test_labels = images[test_idx], labels[test_idx]
    class_names = tuple(str(c) for c in range(10))
  elif name == 'image_folder':
    if not config.dataset.root:
      raise ValueError(
          "dataset.name='image_folder' needs --config.dataset.root=ROOT with "
          'ROOT/train/<class>/*.png and ROOT/test/<class>/*.png.')
    folder = image_folder.load_image_folder(
        config.dataset.root, config.dataset.image_size,
        config.dataset.channels, config.dataset.on_decode_error)
    train_images, train_labels = folder['train_images'], folder['train_labels']
    test_images, test_labels = folder['test_images'], folder['test_labels']
    class_names = tuple(folder['class_names'])
  else:
    raise ValueError(f'Unknown dataset.name {name!r}; choose one of '
                     f'{DATASET_NAMES}.')

  num_classes = len(class_names)
  if config.long_tail.enabled:
    available = np.bincount(train_labels, minlength=num_classes)
    max_count = config.long_tail.max_count or int(available.min())
    counts = long_tail.exponential_class_counts(
        num_classes, max_count, config.long_tail.imbalance_factor)
    student_indices = long_tail.long_tail_subset(
        train_labels, counts, config.long_tail.seed)
  else:
    student_indices = np.arange(len(train_labels))
  student_counts = np.bincount(train_labels[student_indices],
                               minlength=num_classes)
  groups = long_tail.shot_groups(student_counts,
                                 config.shot_groups.many_threshold,
                                 config.shot_groups.few_threshold)
  return ClassificationData(
      train_images=train_images, train_labels=train_labels.astype(np.int32),
      test_images=test_images, test_labels=test_labels.astype(np.int32),
      student_indices=student_indices, class_names=class_names,
      shot_groups=groups)


def batch_indices(num_examples: int, batch_size: int, seed: int,
                  step: int) -> np.ndarray:
  """Indices of batch `step`: consecutive slices of per-epoch permutations."""
  positions = np.arange(step * batch_size, (step + 1) * batch_size)
  epochs = positions // num_examples
  indices = np.empty(batch_size, np.int64)
  for epoch in np.unique(epochs):
    permutation = np.random.default_rng([seed, int(epoch)]).permutation(
        num_examples)
    in_epoch = epochs == epoch
    indices[in_epoch] = permutation[positions[in_epoch] % num_examples]
  return indices


def random_shift(images: np.ndarray, offsets: np.ndarray,
                 max_shift: int) -> np.ndarray:
  """Shifts image i by offsets[i] - max_shift pixels (y, x), zero-filled."""
  if max_shift <= 0:
    return images
  _, h, w, _ = images.shape
  padded = np.pad(images, ((0, 0), (max_shift, max_shift),
                           (max_shift, max_shift), (0, 0)))
  return np.stack([padded[i, dy:dy + h, dx:dx + w]
                   for i, (dy, dx) in enumerate(offsets)])


def train_batch(images: np.ndarray, labels: np.ndarray, batch_size: int,
                seed: int, step: int, max_shift: int = 0,
                rows: slice = slice(None),
                extras: Mapping[str, np.ndarray] | None = None
                ) -> dict[str, np.ndarray]:
  """Batch `step` of a seeded stream; `rows` selects this process's part.

  Shifts are drawn for the whole global batch before slicing, so a row gets
  the same augmentation whatever the number of processes. `extras`: more
  per-image arrays (e.g. cached latents) whose rows join the batch.
  """
  indices = batch_indices(len(labels), batch_size, seed, step)
  offsets = np.random.default_rng([seed, step, 1]).integers(
      0, 2 * max_shift + 1, size=(batch_size, 2))
  indices, offsets = indices[rows], offsets[rows]
  batch_images = random_shift(images[indices], offsets, max_shift)
  batch = {'image': batch_images, 'label': labels[indices]}
  for name, values in (extras or {}).items():
    batch[name] = values[indices]
  return batch


def steps_for_epochs(num_examples: int, batch_size: int,
                     num_epochs: float) -> int:
  """Train steps covering `num_epochs` passes (at least one step).

  Epochs computed from a step count (steps * batch / examples) come back as
  that count: float rounding of the product is not rounded up to a step.
  """
  steps = num_epochs * num_examples / batch_size
  return max(1, int(np.ceil(steps - 1e-6 * max(1.0, steps))))
