"""Writes digits.npz from scikit-learn's bundled handwritten digits.

Run once by a developer, from the repository root:

  python tgt_jax/data/assets/make_digits_npz.py

Only the output (digits.npz) is committed, so scikit-learn is needed to
regenerate the file but is not a runtime dependency of tgt_jax. The pixel
values are stored exactly as in the source (integers 0..16); rescaling to
0..255 happens at load time in tgt_jax.data.bundled. See NOTICE.md for the
source and licence of the data.
"""

import os

import numpy as np
from sklearn import datasets


def main() -> None:
  digits = datasets.load_digits()
  images = digits.images
  labels = digits.target
  # The source holds small non-negative integers stored as floats; check
  # that before narrowing to uint8 so that nothing is silently truncated.
  if not np.array_equal(images, np.round(images)):
    raise ValueError('Expected integer pixel values in the source images.')
  if images.min() < 0 or images.max() > 16:
    raise ValueError(f'Pixel values outside 0..16: '
                     f'[{images.min()}, {images.max()}].')
  output_path = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                             'digits.npz')
  # Compressed: the images are mostly zeros, and np.load reads it directly.
  np.savez_compressed(
      output_path,
      images=images.astype(np.uint8),
      labels=labels.astype(np.uint8))
  print(f'Wrote {images.shape[0]} images of shape {images.shape[1:]} '
        f'to {output_path}')


if __name__ == '__main__':
  main()
