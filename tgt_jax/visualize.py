"""PNG figures: the sample grid of what the teachers make, and saving any
figure the experiments draw."""

from typing import Mapping, Sequence

import matplotlib
matplotlib.use('Agg')  # Files only; never a display.
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np
from PIL import Image


def save_sample_grid(path: str, rows: Mapping[str, np.ndarray],
                     labels: Mapping[str, np.ndarray],
                     class_names: Sequence[str]) -> None:
  """One row per entry of `rows` (unit-range NHWC images), titled by label.

  `labels[row]` holds the teacher labeler's predicted class of each image.
  """
  names = list(rows)
  num_cols = max(len(v) for v in rows.values())
  fig, axes = plt.subplots(len(names), num_cols,
                           figsize=(1.2 * num_cols, 1.4 * len(names)),
                           squeeze=False)
  for r, name in enumerate(names):
    for c in range(num_cols):
      ax = axes[r, c]
      ax.axis('off')
      if c >= len(rows[name]):
        continue
      image = np.clip(rows[name][c], 0.0, 1.0)
      if image.shape[-1] == 1:
        ax.imshow(image[..., 0], cmap='gray', vmin=0.0, vmax=1.0)
      else:
        ax.imshow(image)
      ax.set_title(class_names[int(labels[name][c])], fontsize=8)
    axes[r, 0].text(-0.15, 0.5, name, transform=axes[r, 0].transAxes,
                    ha='right', va='center', fontsize=8)
  fig.suptitle('Titles: the teacher labeler\'s label', fontsize=9)
  save_figure(fig, path, dpi=100)


def save_figure(fig, path: str, dpi: int = 120) -> None:
  """Lays out `fig`, writes it to `path` (PNG) and frees it."""
  fig.tight_layout()
  fig.savefig(path, dpi=dpi)
  plt.close(fig)


def read_png(path: str) -> np.ndarray:
  """A PNG as uint8 [H, W, 3] (e.g. to show a saved figure in TensorBoard)."""
  with Image.open(path) as image:
    return np.asarray(image.convert('RGB'))
