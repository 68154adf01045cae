"""The one dataset interface the training stages use, and its in-memory form.

A `Dataset` has a full train split (the teachers learn from it, subset
'teacher'), a long-tail subset of it (the student's, subset 'student'), and
evaluation splits. Two implementations share the interface:

  InMemoryDataset   arrays in memory (the bundled digits, image folders);
                    batches are gathered and augmented with NumPy.
  StreamingDataset  tf.data streams (ImageNet-LT, Places-LT, SUN-LT, fake),
                    in streaming.py, fed by the benchmarks of
                    tfds_pipelines.py; TensorFlow is imported only there.

`loading.load_dataset(config)` gives the one a config names.

Every batch is a pure function of (seed, step): a run resumed at step k sees
exactly the batches an uninterrupted run sees from step k on. Each process
gets only its own rows of every global batch (`sharding.local_slice`), so the
same code runs on many hosts. Evaluation batches are padded to a fixed size
and carry a 'mask', so one compiled program serves every batch and the last
partial batch counts exactly once (`evaluation.predict`).
"""

import abc
import dataclasses
from typing import Any, Callable, Iterator

import numpy as np

from tgt_jax import errors
from tgt_jax import sharding

SUBSETS = ('teacher', 'student')
# 'student': the student's train images, un-augmented, in index order (to
# encode each once for the latent cache); in memory only.
EVAL_SPLITS = ('test', 'val', 'student')

Batch = dict[str, np.ndarray]


# The data a config names are not on disk; the message says how to get them.
DataUnavailableError = errors.DataUnavailableError

BatchFn = Callable[[int], Batch]


def check_subset(subset: str) -> None:
  if subset not in SUBSETS:
    raise ValueError(f'subset must be one of {SUBSETS}, got {subset!r}.')


def steps_for_epochs(num_examples: int, batch_size: int,
                     num_epochs: float) -> int:
  """Train steps covering `num_epochs` passes (at least one step).

  Epochs computed from a step count (steps * batch / examples) come back as
  that count: float rounding of the product is not rounded up to a step.
  """
  steps = num_epochs * num_examples / batch_size
  return max(1, int(np.ceil(steps - 1e-6 * max(1.0, steps))))


class Dataset(abc.ABC):
  """A labelled image dataset with a long-tail student subset.

  Images are uint8 NHWC in [0, 255], labels int32. Subclasses set the
  attributes below and implement the abstract methods.

  Attributes:
    name: the config's dataset.name.
    class_names: label i is class_names[i].
    shot_groups: {'many', 'medium', 'few'}: class indices by the student's
      train counts.
    image_shape: (H, W, C) of the images batches hold.
    in_memory: batches carry 'index' (the example's position in its subset),
      so per-example arrays such as cached latents can be gathered.
  """
  name: str
  class_names: tuple[str, ...]
  shot_groups: dict[str, np.ndarray]
  image_shape: tuple[int, int, int]
  in_memory: bool = False

  @property
  def num_classes(self) -> int:
    return len(self.class_names)

  @property
  @abc.abstractmethod
  def student_class_counts(self) -> np.ndarray:
    """Train images per class in the student's subset."""

  @property
  @abc.abstractmethod
  def teacher_class_counts(self) -> np.ndarray:
    """Train images per class of the teachers' subset (the train split)."""

  @abc.abstractmethod
  def num_examples(self, subset: str) -> int:
    """Images in a train subset ('teacher' or 'student')."""

  @abc.abstractmethod
  def train_batches(self, subset: str, batch_size: int, seed: int,
                    augment: bool = True) -> BatchFn:
    """`batch_for_step(step)`: this process's rows of global batch `step`."""

  @abc.abstractmethod
  def has_split(self, split: str) -> bool:
    """Whether `eval_batches(split)` has data (e.g. a validation split)."""

  @abc.abstractmethod
  def eval_batches(self, split: str, batch_size: int) -> Iterator[Batch]:
    """This process's rows of padded global batches with a boolean 'mask'."""

  @abc.abstractmethod
  def grid_examples(self, num: int) -> tuple[np.ndarray, np.ndarray]:
    """The first test image of each of the first `num` classes (as found);
    the same on every process."""

  def describe(self) -> dict[str, Any]:
    """A JSON-ready summary for the log."""
    return {'name': self.name, 'num_classes': self.num_classes,
            'teacher_train_images': self.num_examples('teacher'),
            'student_train_images': self.num_examples('student'),
            'student_class_counts': self.student_class_counts.tolist(),
            'shot_groups': {k: len(v) for k, v in self.shot_groups.items()}}


# ---------------------------------------------------------------------------
# In memory.
# ---------------------------------------------------------------------------


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
  """A crop of image i at offsets[i] from a zero padding of max_shift pixels.

  Offset (max_shift, max_shift) is the image itself; others shift it by up to
  max_shift pixels in y and x, zero-filled.
  """
  if max_shift <= 0:
    return images
  _, h, w, _ = images.shape
  padded = np.pad(images, ((0, 0), (max_shift, max_shift),
                           (max_shift, max_shift), (0, 0)))
  return np.stack([padded[i, dy:dy + h, dx:dx + w]
                   for i, (dy, dx) in enumerate(offsets)])


def augment_batch(images: np.ndarray, seed: int, step: int, max_shift: int,
                  flip: bool) -> np.ndarray:
  """Random crops within `max_shift` pixels and optional horizontal flips.

  Drawn for the whole global batch from (seed, step), so that a row gets the
  same augmentation whatever the number of processes.
  """
  offsets = np.random.default_rng([seed, step, 1]).integers(
      0, 2 * max_shift + 1, size=(len(images), 2))
  images = random_shift(images, offsets, max_shift)
  if flip:
    flips = np.random.default_rng([seed, step, 2]).random(len(images)) < 0.5
    images = np.where(flips[:, None, None, None], images[:, :, ::-1], images)
  return images


@dataclasses.dataclass(frozen=True)
class InMemoryDataset(Dataset):
  """Arrays in memory: `train_*` is the full train split, the student learns
  from `train_*[student_indices]`; `max_shift` and `flip` augment training
  batches (see `augment_batch`)."""
  name: str
  class_names: tuple[str, ...]
  shot_groups: dict[str, np.ndarray]
  train_images: np.ndarray
  train_labels: np.ndarray
  test_images: np.ndarray
  test_labels: np.ndarray
  student_indices: np.ndarray
  max_shift: int = 0
  flip: bool = False
  val_images: np.ndarray | None = None
  val_labels: np.ndarray | None = None
  in_memory: bool = True

  @property
  def image_shape(self) -> tuple[int, int, int]:
    return tuple(int(d) for d in self.train_images.shape[1:])

  @property
  def student_class_counts(self) -> np.ndarray:
    return np.bincount(self.train_labels[self.student_indices],
                       minlength=self.num_classes)

  @property
  def teacher_class_counts(self) -> np.ndarray:
    return np.bincount(self.train_labels, minlength=self.num_classes)

  def _subset(self, subset: str) -> tuple[np.ndarray, np.ndarray]:
    check_subset(subset)
    if subset == 'teacher':
      return self.train_images, self.train_labels
    return (self.train_images[self.student_indices],
            self.train_labels[self.student_indices])

  def num_examples(self, subset: str) -> int:
    return len(self._subset(subset)[1])

  def train_batches(self, subset: str, batch_size: int, seed: int,
                    augment: bool = True) -> BatchFn:
    images, labels = self._subset(subset)
    rows = sharding.local_slice(batch_size)
    max_shift, flip = (self.max_shift, self.flip) if augment else (0, False)

    def batch_for_step(step: int) -> Batch:
      indices = batch_indices(len(labels), batch_size, seed, step)
      batch_images = augment_batch(images[indices], seed, step, max_shift,
                                   flip)
      return {'image': batch_images[rows], 'label': labels[indices][rows],
              'index': indices[rows].astype(np.int32)}

    return batch_for_step

  def has_split(self, split: str) -> bool:
    return split in EVAL_SPLITS and (split != 'val' or
                                     self.val_labels is not None)

  def _eval_split(self, split: str) -> tuple[np.ndarray, np.ndarray]:
    if split == 'test':
      return self.test_images, self.test_labels
    if split == 'val':
      if self.val_labels is None:
        raise ValueError(f'{self.name} has no validation split.')
      return self.val_images, self.val_labels
    if split == 'student':
      return self._subset('student')
    raise ValueError(f'split must be one of {EVAL_SPLITS}, got {split!r}.')

  def eval_batches(self, split: str, batch_size: int) -> Iterator[Batch]:
    images, labels = self._eval_split(split)
    rows = sharding.local_slice(batch_size)
    for start in range(0, len(labels), batch_size):
      index = np.arange(start, start + batch_size)
      mask = index < len(labels)
      index = np.where(mask, index, 0)  # Padding repeats row 0, masked out.
      yield {'image': images[index][rows], 'label': labels[index][rows],
             'mask': mask[rows], 'index': index[rows].astype(np.int32)}

  def grid_examples(self, num: int) -> tuple[np.ndarray, np.ndarray]:
    picks = [np.flatnonzero(self.test_labels == c)[0]
             for c in range(self.num_classes)
             if np.any(self.test_labels == c)][:num]
    return self.test_images[picks], self.test_labels[picks]
