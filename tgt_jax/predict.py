r"""Classifies a folder of images with an exported student.

  python -m tgt_jax.predict --export=DIR --images=FOLDER \
      --out=predictions.csv [--batch_size=64]

Every image file under FOLDER (sub-folders searched; any size) is prepared
as the student's training images were (see tgt_jax.export) and classified;
the CSV has one row per image: its path, the predicted class's name (as the
training folders or the dataset name it) and its probability. A file that
cannot be decoded is left out and named in a warning (--on_decode_error=
error stops at it instead).
"""

import csv

from absl import app
from absl import flags
from absl import logging
import numpy as np

from tgt_jax import cli
from tgt_jax import errors
from tgt_jax import export
from tgt_jax.data import image_folder


def predict_folder(export_dir: str, images_dir: str, out: str,
                   batch_size: int = 64, on_decode_error: str = 'skip'
                   ) -> list[tuple[str, str, float]]:
  """Writes the CSV; returns its rows (path, class name, probability).

  A file that cannot be decoded is left out with a warning naming it
  (`on_decode_error='skip'`), or stops the run naming it ('error').
  """
  model = export.load(export_dir)
  paths = image_folder.image_files(images_dir)
  if not paths:
    raise errors.DataUnavailableError(
        f'{images_dir}: no image files ({image_folder.IMAGE_EXTENSIONS}) '
        'under it; pass the folder that holds the images as --images.')
  images, paths, skipped = read_images(model, paths, on_decode_error)
  if not paths:
    raise errors.DataError(
        f'{images_dir}: none of its {len(skipped)} image files can be '
        'decoded; replace them with valid images.')
  rows = []
  for start in range(0, len(paths), batch_size):
    chunk = images[start:start + batch_size]
    # A fixed batch shape: one compiled program for every batch.
    padded = np.concatenate([chunk, np.zeros(
        (batch_size - len(chunk), *chunk.shape[1:]), np.uint8)])
    probabilities = model.probabilities(padded)[:len(chunk)]
    for path, p in zip(paths[start:start + batch_size], probabilities):
      rows.append((path, model.class_names[int(p.argmax())], float(p.max())))
  with open(out, 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(('path', 'class', 'probability'))
    writer.writerows(rows)
  if skipped:
    # One warning, after the CSV, where a user reading the end sees it.
    logging.warning('Left out %d file(s) that cannot be decoded: %s',
                    len(skipped), '; '.join(skipped))
  return rows


def read_images(model: export.Exported, paths: list[str],
                on_decode_error: str = 'skip'
                ) -> tuple[np.ndarray, list[str], list[str]]:
  """(images of the files that decode, their paths, 'path (why)' of those
  that did not); with on_decode_error='error' the first undecodable file
  stops, naming it."""
  if on_decode_error not in image_folder.DECODE_ERROR_MODES:
    raise errors.ConfigError(
        f'--on_decode_error={on_decode_error!r}: must be one of '
        f'{image_folder.DECODE_ERROR_MODES}.')
  images, kept, skipped = [], [], []
  for path in paths:
    try:
      images.append(model.read_image(path))
    except image_folder.DECODE_ERRORS as error:
      if on_decode_error == 'error':
        raise errors.DataError(
            f'{path}: cannot be decoded ({error}); remove or replace it, or '
            'pass --on_decode_error=skip to leave it out.') from error
      skipped.append(f'{path} ({error})')
      continue
    kept.append(path)
  return (np.stack(images) if images else np.zeros([0], np.uint8), kept,
          skipped)


def define_flags():
  """The command line (only when run as a program)."""
  flags.DEFINE_string('export', None, 'A directory written by '
                                      'python -m tgt_jax.export.')
  flags.DEFINE_string('images', None, 'A folder of images (searched '
                                      'recursively).')
  flags.DEFINE_string('out', 'predictions.csv', 'The CSV to write.')
  flags.DEFINE_integer('batch_size', 64, 'Images per forward pass.')
  flags.DEFINE_enum('on_decode_error', 'skip',
                    image_folder.DECODE_ERROR_MODES,
                    'skip: leave out (and list) files that cannot be '
                    'decoded; error: stop at the first, naming it.')
  flags.mark_flags_as_required(['export', 'images'])


def main(argv):
  del argv
  values = flags.FLAGS
  with cli.exit_on(FileNotFoundError, ValueError):
    rows = predict_folder(values.export, values.images, values.out,
                          values.batch_size, values.on_decode_error)
  print(f'Wrote {len(rows)} predictions to {values.out}')


if __name__ == '__main__':
  define_flags()
  app.run(main)
