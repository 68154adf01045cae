"""The bundled handwritten digits data set and a balanced train/test split.

The data (1,797 real 8x8 grey-scale digits, ten classes) ships inside the
package as assets/digits.npz, so examples and tests run without a download.
See assets/NOTICE.md for its source and licence.
"""

import importlib.resources
import io

import numpy as np

from tgt_jax import errors

# The file stores the source's block counts (0..16); see assets/NOTICE.md.
_ASSET_MAX_VALUE = 16


def load_digits() -> tuple[np.ndarray, np.ndarray]:
  """Loads the bundled digits.

  The asset is read through importlib.resources, so this also works when the
  package is installed (as long as the packaging includes
  tgt_jax/data/assets/digits.npz).

  Returns:
    (images, labels): images is uint8 [1797, 8, 8, 1] with values rescaled from
    the source's 0..16 to 0..255 as round(v * 255 / 16) (halves round up),
    labels is int32 [1797] with values 0..9.
  """
  asset = importlib.resources.files('tgt_jax.data') / 'assets' / 'digits.npz'
  with np.load(io.BytesIO(asset.read_bytes())) as data:
    raw_images = data['images']
    raw_labels = data['labels']
  # Integer arithmetic keeps the rescaling exact; adding half the divisor
  # before the floor division rounds halves up (8 -> 127.5 -> 128).
  scaled = (raw_images.astype(np.int32) * 255 + _ASSET_MAX_VALUE // 2)
  scaled //= _ASSET_MAX_VALUE
  images = scaled.astype(np.uint8)[..., np.newaxis]
  labels = raw_labels.astype(np.int32)
  return images, labels


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
