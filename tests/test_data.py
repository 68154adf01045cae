"""Tests for tgt_jax.data: bundled sets, long-tail subsets, split files,
folders."""

import importlib.resources
import logging
import math
import os

import numpy as np
from PIL import Image
import pytest

from tgt_jax import errors
from tgt_jax.data import bundled
from tgt_jax.data import image_folder
from tgt_jax.data import long_tail

_SPLITS = importlib.resources.files('tgt_jax.data') / 'splits'


# --- bundled data sets --------------------------------------------------------


@pytest.mark.parametrize('name, side, class_counts', [
    ('digits', 8, [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]),
    ('mnist', 28, [500] * 10)])
def test_load_bundled_shapes_dtypes_range_and_class_counts(name, side,
                                                           class_counts):
  images, labels = bundled.load(name)
  assert images.shape == (sum(class_counts), side, side, 1)
  assert images.dtype == np.uint8
  assert labels.shape == (sum(class_counts),)
  assert labels.dtype == np.int32
  assert (images.min(), images.max()) == (0, 255)
  assert np.bincount(labels).tolist() == class_counts


def test_load_digits_rescales_the_source_levels():
  images, _ = bundled.load('digits')
  # Every pixel is one of the 17 rescaled source levels round(v * 255 / 16),
  # halves rounding up (v = 8 -> 128).
  allowed = {math.floor(v * 255 / 16 + 0.5) for v in range(17)}
  assert set(np.unique(images).tolist()) <= allowed
  assert 128 in allowed


def test_load_mnist_keeps_the_values_and_holds_real_digits():
  images, labels = bundled.load('mnist')
  # Stored as 0..255 already: loading leaves every value as the file has it.
  asset = importlib.resources.files('tgt_jax.data') / 'assets' / 'mnist5k.npz'
  with asset.open('rb') as f, np.load(f) as raw:
    np.testing.assert_array_equal(images[..., 0], raw['images'])
    np.testing.assert_array_equal(labels, raw['labels'])
  # Real digits, not noise: most pixels are background, and each class's mean
  # image differs from every other's.
  assert 0.7 < np.mean(images == 0) < 0.9
  means = np.stack([images[labels == c].mean(0).ravel() for c in range(10)])
  distances = np.linalg.norm(means[:, None] - means[None], axis=-1)
  assert distances[~np.eye(10, dtype=bool)].min() > 100


def test_load_bundled_rejects_an_unknown_name_and_a_damaged_asset(
    monkeypatch):
  with pytest.raises(ValueError, match="'mnist_full'.*'digits', 'mnist'"):
    bundled.load('mnist_full')
  wrong = bundled.BundledDataset('digits.npz', num_examples=1797, side=28,
                                 max_value=16)
  monkeypatch.setitem(bundled.DATASETS, 'digits', wrong)
  with pytest.raises(errors.DataError,
                     match=r'digits.npz: images \(1797, 8, 8\).*expected '
                     r'images \(1797, 28, 28\)'):
    bundled.load('digits')


def test_split_train_test_is_stratified_balanced_disjoint_deterministic():
  _, labels = bundled.load('digits')
  train, test = bundled.split_train_test(labels, test_per_class=20,
                                        split_seed=3)
  assert np.bincount(labels[test], minlength=10).tolist() == [20] * 10
  assert np.intersect1d(train, test).size == 0
  assert np.array_equal(np.sort(np.concatenate([train, test])),
                        np.arange(labels.size))
  assert np.all(np.diff(train) > 0) and np.all(np.diff(test) > 0)
  again_train, again_test = bundled.split_train_test(labels, 20, split_seed=3)
  assert np.array_equal(train, again_train)
  assert np.array_equal(test, again_test)
  _, other_test = bundled.split_train_test(labels, 20, split_seed=4)
  assert not np.array_equal(test, other_test)


def test_split_train_test_raises_naming_the_small_class():
  _, labels = bundled.load('digits')
  # Class 8 is the smallest, with 174 examples.
  with pytest.raises(ValueError, match='class 8 has 174 example'):
    bundled.split_train_test(labels, test_per_class=174)
  # The validation split is carved by the same function: its field is named.
  with pytest.raises(ValueError, match=r'^dataset.val_per_class=174: .*'
                     r'--config.dataset.val_per_class'):
    bundled.split_train_test(labels, 174, field='dataset.val_per_class')


# --- long-tail counts and subsets ---------------------------------------------


def test_exponential_class_counts_matches_hand_computed_values():
  counts = long_tail.exponential_class_counts(10, 130, 50)
  # 130 * 50 ** (-c / 9) = 130, 84.17, 54.50 (54.4997), 35.29, 22.85, 14.79,
  # 9.58, 6.20, 4.02, 2.6.
  assert counts.tolist() == [130, 84, 54, 35, 23, 15, 10, 6, 4, 3]
  assert counts.dtype == np.int64


def test_exponential_class_counts_head_tail_ratio_and_edge_cases():
  counts = long_tail.exponential_class_counts(10, 5000, 100)
  assert counts[0] / counts[-1] == pytest.approx(100)
  assert np.all(np.diff(counts) <= 0)
  assert long_tail.exponential_class_counts(4, 7, 1).tolist() == [7] * 4
  # The tail would round to 0; every class keeps at least one example.
  assert long_tail.exponential_class_counts(3, 2, 100)[-1] == 1
  with pytest.raises(ValueError, match='imbalance_factor'):
    long_tail.exponential_class_counts(10, 100, 0.5)


def test_long_tail_subset_gives_exact_counts_and_is_deterministic():
  _, labels = bundled.load('digits')
  counts = long_tail.exponential_class_counts(10, 130, 50)
  subset = long_tail.long_tail_subset(labels, counts, seed=0)
  assert np.bincount(labels[subset], minlength=10).tolist() == counts.tolist()
  assert np.all(np.diff(subset) > 0)  # Sorted and without repeats.
  assert np.array_equal(subset,
                        long_tail.long_tail_subset(labels, counts, seed=0))
  assert not np.array_equal(subset,
                            long_tail.long_tail_subset(labels, counts, seed=1))
  # Larger counts only add examples for the same seed.
  bigger = long_tail.long_tail_subset(labels, counts + 10, seed=0)
  assert np.isin(subset, bigger).all()


def test_long_tail_subset_raises_when_a_class_is_too_small():
  labels = np.array([0, 0, 0, 1, 1])
  with pytest.raises(ValueError, match='Class 1 has 2 examples.*the 3 asked'):
    long_tail.long_tail_subset(labels, np.array([1, 3]), seed=0)


# --- shot groups and accuracies -----------------------------------------------


def test_shot_groups_on_hand_made_counts():
  counts = np.array([150, 101, 100, 50, 20, 19, 5])
  groups = long_tail.shot_groups(counts, many_threshold=100, few_threshold=20)
  assert groups['many'].tolist() == [0, 1]
  assert groups['medium'].tolist() == [2, 3, 4]
  assert groups['few'].tolist() == [5, 6]
  with pytest.raises(ValueError, match='few_threshold'):
    long_tail.shot_groups(counts, many_threshold=20, few_threshold=100)


def test_group_accuracies_values_and_empty_group_is_nan():
  per_class = np.array([1.0, 0.5, 0.0, 0.5])
  groups = {'many': np.array([0]), 'medium': np.array([1, 2, 3]),
            'few': np.array([], np.int64)}
  result = long_tail.group_accuracies(per_class, groups)
  assert result['overall'] == pytest.approx(0.5)
  assert result['many'] == pytest.approx(1.0)
  assert result['medium'] == pytest.approx(1 / 3)
  assert math.isnan(result['few'])


def test_overall_equals_top1_accuracy_on_a_balanced_test_set():
  rng = np.random.default_rng(0)
  labels = np.repeat(np.arange(5), 8)
  correct = rng.random(labels.size) < 0.6
  per_class = np.array([correct[labels == c].mean() for c in range(5)])
  result = long_tail.group_accuracies(per_class, {})
  assert result['overall'] == pytest.approx(correct.mean())


# --- split files --------------------------------------------------------------


def test_read_split_file_on_places_lt_train():
  paths, labels = long_tail.read_split_file(
      _SPLITS / 'Places_LT' / 'Places_LT_train.txt', num_classes=365)
  assert len(paths) == labels.size == 62500
  assert paths[0] == 'train/airfield/00004851.jpg'
  counts = np.bincount(labels, minlength=365)
  assert counts.size == 365 and counts.min() == 5 and counts.max() == 4980
  groups = long_tail.shot_groups(counts, many_threshold=100, few_threshold=20)
  assert [groups[name].size for name in ('many', 'medium', 'few')] == [
      131, 163, 71]


@pytest.mark.parametrize('bad_line', ['no_label_here', 'a/b.jpg seven'])
def test_read_split_file_rejects_malformed_line(tmp_path, bad_line):
  split_path = tmp_path / 'split.txt'
  split_path.write_text(f'a/ok.jpg 0\n{bad_line}\n')
  with pytest.raises(ValueError, match=f'split.txt, line 2.*{bad_line}'):
    long_tail.read_split_file(split_path)


@pytest.mark.parametrize('label', [5, -1])
def test_read_split_file_rejects_label_out_of_range(tmp_path, label):
  split_path = tmp_path / 'split.txt'
  split_path.write_text(f'a/ok.jpg 0\n\na/bad.jpg {label}\n')
  with pytest.raises(ValueError, match=f'line 3: label {label} is outside'):
    long_tail.read_split_file(split_path, num_classes=5)


# --- image folders ------------------------------------------------------------


def _write_image(path, color, size=(12, 12), mode='RGB'):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.new(mode, size, color).save(path)


def _make_folder(root):
  """Two classes; 'cat' images are red, 'dog' images are blue."""
  _write_image(root / 'train' / 'cat' / 'a.png', (255, 0, 0))
  _write_image(root / 'train' / 'cat' / 'b.JPG', (255, 0, 0), size=(20, 9))
  _write_image(root / 'train' / 'dog' / 'c.png', (0, 0, 255), size=(5, 30))
  _write_image(root / 'test' / 'cat' / 'd.bmp', (255, 0, 0))
  _write_image(root / 'test' / 'dog' / 'e.gif', (0, 0, 255))
  # Neither of these is read: not an image extension, and a hidden file.
  (root / 'train' / 'cat' / 'notes.txt').write_text('not an image')
  (root / 'train' / 'dog' / '._c.png').write_bytes(b'macOS metadata')


def test_load_image_folder_round_trip(tmp_path):
  _make_folder(tmp_path)
  data = image_folder.load_image_folder(str(tmp_path), image_size=8,
                                        channels=3)
  assert data['class_names'] == ['cat', 'dog']
  assert data['train_images'].shape == (3, 8, 8, 3)
  assert data['train_images'].dtype == np.uint8
  assert data['train_labels'].tolist() == [0, 0, 1]
  assert data['train_labels'].dtype == np.int32
  assert data['test_images'].shape == (2, 8, 8, 3)
  assert data['test_labels'].tolist() == [0, 1]
  assert data['num_skipped'] == 0
  # Solid colours survive the resize (JPEG within compression error).
  np.testing.assert_allclose(data['train_images'][0], np.broadcast_to(
      [255, 0, 0], (8, 8, 3)))
  np.testing.assert_allclose(data['train_images'][1], np.broadcast_to(
      [255, 0, 0], (8, 8, 3)), atol=8)
  np.testing.assert_allclose(data['test_images'][1], np.broadcast_to(
      [0, 0, 255], (8, 8, 3)))

  grey = image_folder.load_image_folder(str(tmp_path), image_size=5,
                                        channels=1)
  assert grey['train_images'].shape == (3, 5, 5, 1)
  assert grey['test_images'].shape == (2, 5, 5, 1)


def test_load_image_folder_centre_crops_before_resizing(tmp_path):
  # Three 10x10 stripes side by side; the centre crop keeps only the green.
  stripes = np.zeros([10, 30, 3], np.uint8)
  stripes[:, :10, 0] = 255
  stripes[:, 10:20, 1] = 255
  stripes[:, 20:, 2] = 255
  for split in ('train', 'test'):
    for name in ('a', 'b'):
      os.makedirs(tmp_path / split / name)
      Image.fromarray(stripes).save(tmp_path / split / name / 'x.png')
  data = image_folder.load_image_folder(str(tmp_path), 4, 3)
  np.testing.assert_array_equal(
      data['train_images'][0], np.broadcast_to([0, 255, 0], (4, 4, 3)))


def test_load_image_folder_missing_root_names_layout(tmp_path):
  with pytest.raises(FileNotFoundError, match=r'ROOT/train/<class>'):
    image_folder.load_image_folder(str(tmp_path / 'nowhere'), 8, 1)


@pytest.mark.parametrize('split', ['train', 'test'])
def test_load_image_folder_missing_split(tmp_path, split):
  other = 'test' if split == 'train' else 'train'
  _write_image(tmp_path / other / 'cat' / 'a.png', (1, 2, 3))
  with pytest.raises(FileNotFoundError, match=f'{split}.*does not exist'):
    image_folder.load_image_folder(str(tmp_path), 8, 1)


def test_load_image_folder_needs_two_classes(tmp_path):
  _write_image(tmp_path / 'train' / 'cat' / 'a.png', (1, 2, 3))
  _write_image(tmp_path / 'test' / 'cat' / 'a.png', (1, 2, 3))
  with pytest.raises(ValueError, match='at least 2'):
    image_folder.load_image_folder(str(tmp_path), 8, 1)


def test_load_image_folder_empty_class_folder(tmp_path):
  _make_folder(tmp_path)
  os.makedirs(tmp_path / 'train' / 'emu')
  with pytest.raises(ValueError, match=r'emu.*holds no images'):
    image_folder.load_image_folder(str(tmp_path), 8, 1)


def test_load_image_folder_unknown_test_class(tmp_path):
  _make_folder(tmp_path)
  _write_image(tmp_path / 'test' / 'owl' / 'a.png', (1, 2, 3))
  with pytest.raises(ValueError, match=r"\['owl'\].*no train folder"):
    image_folder.load_image_folder(str(tmp_path), 8, 1)


def test_load_image_folder_corrupt_file_error_mode(tmp_path):
  _make_folder(tmp_path)
  (tmp_path / 'train' / 'dog' / 'broken.png').write_bytes(b'not a png')
  with pytest.raises(ValueError, match=r'broken\.png.*--config.dataset.on_decode_error=skip'):
    image_folder.load_image_folder(str(tmp_path), 8, 1)


def test_load_image_folder_corrupt_file_skip_mode(tmp_path, caplog):
  _make_folder(tmp_path)
  (tmp_path / 'train' / 'dog' / 'broken.png').write_bytes(b'not a png')
  # A truncated PNG passes the header check and fails only on decode. Noise
  # keeps the compressed pixel data long enough to cut in half.
  noise = np.random.default_rng(0).integers(0, 256, [32, 32, 3], np.uint8)
  cut_path = tmp_path / 'test' / 'dog' / 'cut.png'
  Image.fromarray(noise).save(cut_path)
  cut_path.write_bytes(cut_path.read_bytes()[:1500])
  with caplog.at_level(logging.WARNING):
    data = image_folder.load_image_folder(str(tmp_path), 8, 1,
                                          on_decode_error='skip')
  assert data['num_skipped'] == 2
  assert data['train_labels'].tolist() == [0, 0, 1]
  assert data['test_labels'].tolist() == [0, 1]
  assert 'broken.png' in caplog.text and 'cut.png' in caplog.text


def test_image_folder_warns_of_linked_classes_and_loose_images(tmp_path,
                                                              caplog):
  """Legal but never meant: a class folder that links to another (a second
  class with the same images) and images outside any class folder."""
  _make_folder(tmp_path)
  os.symlink(tmp_path / 'train' / 'cat', tmp_path / 'train' / 'kitten')
  _write_image(tmp_path / 'train' / 'loose.png', (9, 9, 9))
  with caplog.at_level(logging.WARNING):
    data = image_folder.load_image_folder(str(tmp_path), 8, 3)
  assert data['class_names'] == ['cat', 'dog', 'kitten']
  assert data['train_labels'].tolist() == [0, 0, 1, 2, 2]  # loose: unread.
  assert "class folders ['cat', 'kitten'] are one folder" in caplog.text
  assert '1 image file(s) directly inside (e.g. loose.png)' in caplog.text


def test_load_image_folder_unknown_decode_mode(tmp_path):
  _make_folder(tmp_path)
  with pytest.raises(ValueError, match='on_decode_error'):
    image_folder.load_image_folder(str(tmp_path), 8, 1,
                                   on_decode_error='ignore')


def test_load_image_folder_scales_16_bit_png(tmp_path):
  for split in ('train', 'test'):
    for name in ('a', 'b'):
      os.makedirs(tmp_path / split / name)
      Image.fromarray(np.full([4, 4], 32896, np.uint16)).save(
          tmp_path / split / name / 'x.png')
  data = image_folder.load_image_folder(str(tmp_path), 4, 1)
  # Mid-grey (128 * 257) stays mid-grey instead of clipping to white.
  assert np.all(data['train_images'] == 128)
