"""Loads a user's own images from a train/test folder tree into memory.

Expected layout (one sub-folder per class; class names are the sorted names of
the train sub-folders, and a class's label is its index in that order):

  ROOT/train/<class>/*.{png,jpg,jpeg,bmp,gif}
  ROOT/test/<class>/*.{png,jpg,jpeg,bmp,gif}

Every image is decoded with PIL, converted to grey-scale or RGB, centre-cropped
to a square and resized to image_size x image_size, so the whole set fits in
one uint8 array. That suits the small data sets TGT's long-tail experiments
use; larger sets need a streaming input pipeline instead.
"""

import os
from typing import Any

from absl import logging
import numpy as np
from PIL import Image
from PIL import ImageOps

from tgt_jax import errors

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.gif')
DECODE_ERROR_MODES = ('error', 'skip')
_CHANNELS_TO_MODE = {1: 'L', 3: 'RGB'}
_LAYOUT_HINT = ('Expected layout: ROOT/train/<class>/*.png (or .jpg, .jpeg, '
                '.bmp, .gif) and ROOT/test/<class>/*, one sub-folder per '
                'class.')

# PIL signals a broken or unsupported file through several exception types
# (UnidentifiedImageError is an OSError; some truncated PNGs raise
# SyntaxError), and DecompressionBombError derives from Exception directly.
DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError,
                  Image.DecompressionBombError)


def load_image_folder(root: str,
                      image_size: int,
                      channels: int,
                      on_decode_error: str = 'error') -> dict[str, Any]:
  """Loads ROOT/train and ROOT/test image folders into uint8 arrays.

  Files are read in sorted order, so the result is deterministic. Only files
  directly inside a class folder with one of IMAGE_EXTENSIONS (any case) are
  read; hidden files (e.g. macOS '._x.jpg'), other files and nested folders are
  ignored. JPEG orientation tags are applied, a GIF contributes its first
  frame, and transparency is dropped.

  Args:
    root: the folder holding train/ and test/.
    image_size: side length S of the square output images, at least 1.
    channels: 1 for grey-scale, 3 for RGB.
    on_decode_error: 'error' to raise on the first file PIL cannot decode,
      'skip' to log a warning for it, leave it out and count it.

  Returns:
    A dict with 'train_images' and 'test_images' (uint8 [N, S, S, channels]),
    'train_labels' and 'test_labels' (int32 [N]), 'class_names' (list of str,
    label i is class_names[i]) and 'num_skipped' (int, undecodable files left
    out over both splits).

  Raises:
    FileNotFoundError: if root, ROOT/train or ROOT/test does not exist.
    ValueError: for an unknown on_decode_error or channels, image_size < 1,
      fewer than two train classes, a class folder with no images (or none
      that decode), a test class that is not a train class, or, with
      on_decode_error='error', a file that cannot be decoded.
  """
  if on_decode_error not in DECODE_ERROR_MODES:
    raise errors.ConfigError(
        f'dataset.on_decode_error={on_decode_error!r}: must be one of '
        f'{DECODE_ERROR_MODES}; pass --config.dataset.on_decode_error=skip '
        'or =error.')
  if channels not in _CHANNELS_TO_MODE:
    raise errors.ConfigError(
        f'dataset.channels={channels}: must be 1 (grey-scale) or 3 (RGB); '
        'pass --config.dataset.channels=1 or =3.')
  if image_size < 1:
    raise errors.ConfigError(
        f'dataset.image_size={image_size}: must be at least 1; pass '
        '--config.dataset.image_size=<side>.')
  if not os.path.exists(root):
    raise errors.DataUnavailableError(
        f'{root}: the image folder does not exist; create it or pass the '
        f'right path (--config=configs/image_folder.py:root=DIR). '
        f'{_LAYOUT_HINT}')
  if not os.path.isdir(root):
    raise errors.DataError(
        f'{root}: is a file, not a folder; pass the folder that holds '
        f'train/ and test/. {_LAYOUT_HINT}')
  split_dirs = {}
  for split in ('train', 'test'):
    split_dir = os.path.join(root, split)
    if not os.path.isdir(split_dir):
      raise errors.DataUnavailableError(
          f'{split_dir}: does not exist; put the {split} images in one '
          f'sub-folder per class there. {_LAYOUT_HINT}')
    split_dirs[split] = split_dir

  class_names = _class_folders(split_dirs['train'])
  if len(class_names) < 2:
    loose = _image_files(split_dirs['train'])
    raise errors.DataError(
        f'{split_dirs["train"]}: has {len(class_names)} class sub-folder(s) '
        f'{class_names}' + (f' and {len(loose)} image(s) directly inside'
                            if loose else '') +
        '; classification needs at least 2 classes: put each class\'s '
        'images in its own sub-folder (images directly in train/ are not '
        f'read). {_LAYOUT_HINT}')
  _warn_on_duplicate_folders(split_dirs['train'], class_names)
  for split_dir in split_dirs.values():
    loose = _image_files(split_dir)
    if loose:
      logging.warning(
          '%s: %d image file(s) directly inside (e.g. %s) belong to no class '
          'and are not read; move each into the sub-folder of its class.',
          split_dir, len(loose), os.path.basename(loose[0]))
  test_class_names = _class_folders(split_dirs['test'])
  if not test_class_names:
    raise errors.DataError(
        f'{split_dirs["test"]}: has no class sub-folders; add test images in '
        f'sub-folders named like the train classes {class_names}.')
  unknown = sorted(set(test_class_names) - set(class_names))
  if unknown:
    raise errors.DataError(
        f'{split_dirs["test"]}: test classes {unknown} have no train '
        f'folder, so they have no label; rename them to one of the train '
        f'classes {class_names} or add matching folders under '
        f'{split_dirs["train"]}.')
  missing = sorted(set(class_names) - set(test_class_names))
  if missing:
    # Allowed, but per-class test accuracy for these classes is undefined.
    logging.warning('Train classes %s have no folder in %s; they are not '
                    'evaluated.', missing, split_dirs['test'])

  label_of = {name: label for label, name in enumerate(class_names)}
  target_mode = _CHANNELS_TO_MODE[channels]
  result = {'class_names': class_names}
  num_skipped = 0
  for split, names in (('train', class_names), ('test', test_class_names)):
    images = []
    labels = []
    for class_name in names:
      class_dir = os.path.join(split_dirs[split], class_name)
      paths = _image_files(class_dir)
      if not paths:
        raise errors.DataError(
            f'{class_dir}: the class folder holds no images; add images with '
            f'one of the extensions {IMAGE_EXTENSIONS}, or remove the folder.')
      num_decoded = 0
      for path in paths:
        try:
          image = _decode(path, image_size, target_mode)
        except DECODE_ERRORS as error:
          if on_decode_error == 'error':
            raise errors.DataError(
                f'{path}: cannot be decoded ({error}); remove or replace the '
                'file, or pass --config.dataset.on_decode_error=skip to '
                'leave out undecodable files with a warning.') from error
          logging.warning('Skipping image %r, which cannot be decoded: %s',
                          path, error)
          num_skipped += 1
          continue
        images.append(image)
        labels.append(label_of[class_name])
        num_decoded += 1
      if not num_decoded:
        raise errors.DataError(
            f'{class_dir}: none of its {len(paths)} images can be decoded; '
            'replace them with valid images or remove the folder.')
    result[f'{split}_images'] = np.stack(images).reshape(
        [-1, image_size, image_size, channels])
    result[f'{split}_labels'] = np.asarray(labels, np.int32)
  result['num_skipped'] = num_skipped
  return result


def _warn_on_duplicate_folders(split_dir: str, class_names: list[str]) -> None:
  """A class folder that is another one (a symbolic link, or a link to the
  same folder) would be a second class with the same images: legal, but
  never what was meant."""
  by_target = {}
  for name in class_names:
    by_target.setdefault(os.path.realpath(os.path.join(split_dir, name)),
                         []).append(name)
  for names in by_target.values():
    if len(names) > 1:
      logging.warning(
          '%s: class folders %s are one folder (symbolic links), so they '
          'become %d classes with the same images; remove all but one of '
          'them.', split_dir, names, len(names))


def _class_folders(split_dir: str) -> list[str]:
  """Sorted names of the non-hidden sub-folders of split_dir."""
  return sorted(
      entry.name for entry in os.scandir(split_dir)
      if entry.is_dir() and not entry.name.startswith('.'))


def _image_files(class_dir: str) -> list[str]:
  """Sorted paths of the non-hidden image files directly in class_dir."""
  return sorted(
      entry.path for entry in os.scandir(class_dir)
      if entry.is_file() and not entry.name.startswith('.') and
      entry.name.lower().endswith(IMAGE_EXTENSIONS))


def decode_image(path: str, image_size: int, channels: int) -> np.ndarray:
  """One image file as uint8 [S, S, channels], exactly as the folder loader
  reads it: mode conversion, centre square crop, bilinear resize."""
  if channels not in _CHANNELS_TO_MODE:
    raise ValueError(f'channels must be 1 (grey-scale) or 3 (RGB), got '
                     f'{channels}.')
  return _decode(path, image_size, _CHANNELS_TO_MODE[channels]).reshape(
      image_size, image_size, channels)


def image_files(folder: str) -> list[str]:
  """Sorted paths of the image files anywhere under `folder` (recursive;
  hidden files and folders skipped)."""
  found = []
  for root, dirs, names in os.walk(folder):
    dirs[:] = sorted(d for d in dirs if not d.startswith('.'))
    found += [os.path.join(root, name) for name in sorted(names)
              if not name.startswith('.') and
              name.lower().endswith(IMAGE_EXTENSIONS)]
  return found


def _decode(path: str, image_size: int, target_mode: str) -> np.ndarray:
  """Decodes one file into a uint8 [S, S] ('L') or [S, S, 3] ('RGB') array."""
  with Image.open(path) as image:
    # load() forces the full decode here, so truncated files fail inside the
    # caller's error handling rather than later.
    image.load()
    image = ImageOps.exif_transpose(image)
    image = _to_mode(image, target_mode)
  width, height = image.size
  side = min(width, height)
  left = (width - side) // 2
  top = (height - side) // 2
  image = image.crop((left, top, left + side, top + side))
  image = image.resize((image_size, image_size), Image.Resampling.BILINEAR)
  return np.asarray(image, np.uint8)


def _to_mode(image: Image.Image, target_mode: str) -> Image.Image:
  """Converts to 'L' or 'RGB', keeping the full range of 16-bit images."""
  if image.mode in ('I', 'I;16', 'I;16B', 'I;16L'):
    # PIL's own conversion clips these 16-bit values at 255 (turning most of
    # the image white); scale 0..65535 to 0..255 instead.
    values = np.asarray(image, np.float64) / 257.0
    image = Image.fromarray(np.clip(np.round(values), 0, 255).astype(np.uint8))
  elif image.mode == 'P' and 'transparency' in image.info:
    # Going through RGBA avoids PIL's warning for palette transparency.
    image = image.convert('RGBA')
  return image.convert(target_mode)
