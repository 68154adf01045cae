r"""Classifies a folder of images with an exported student.

  python -m tgt_jax.predict --export=DIR --images=FOLDER \
      --out=predictions.csv [--batch_size=64]

Every image file under FOLDER (sub-folders searched; any size) is prepared
as the student's training images were (see tgt_jax.export) and classified;
the CSV has one row per image: its path, the predicted class's name (as the
training folders or the dataset name it) and its probability.
"""

import csv

from absl import app
from absl import flags
import numpy as np

from tgt_jax import cli
from tgt_jax import export
from tgt_jax.data import image_folder


def predict_folder(export_dir: str, images_dir: str, out: str,
                   batch_size: int = 64) -> list[tuple[str, str, float]]:
  """Writes the CSV; returns its rows (path, class name, probability)."""
  model = export.load(export_dir)
  paths = image_folder.image_files(images_dir)
  if not paths:
    raise FileNotFoundError(f'No image files ({image_folder.IMAGE_EXTENSIONS})'
                            f' under {images_dir}.')
  rows = []
  for start in range(0, len(paths), batch_size):
    chunk = paths[start:start + batch_size]
    images = np.stack([model.read_image(path) for path in chunk])
    # A fixed batch shape: one compiled program for every batch.
    padded = np.concatenate([images, np.zeros(
        (batch_size - len(chunk), *images.shape[1:]), np.uint8)])
    probabilities = model.probabilities(padded)[:len(chunk)]
    for path, p in zip(chunk, probabilities):
      rows.append((path, model.class_names[int(p.argmax())], float(p.max())))
  with open(out, 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(('path', 'class', 'probability'))
    writer.writerows(rows)
  return rows


def define_flags():
  """The command line (only when run as a program)."""
  flags.DEFINE_string('export', None, 'A directory written by '
                                      'python -m tgt_jax.export.')
  flags.DEFINE_string('images', None, 'A folder of images (searched '
                                      'recursively).')
  flags.DEFINE_string('out', 'predictions.csv', 'The CSV to write.')
  flags.DEFINE_integer('batch_size', 64, 'Images per forward pass.')
  flags.mark_flags_as_required(['export', 'images'])


def main(argv):
  del argv
  values = flags.FLAGS
  with cli.exit_on(FileNotFoundError, ValueError):
    rows = predict_folder(values.export, values.images, values.out,
                          values.batch_size)
  print(f'Wrote {len(rows)} predictions to {values.out}')


if __name__ == '__main__':
  define_flags()
  app.run(main)
