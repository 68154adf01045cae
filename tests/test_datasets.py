"""The dataset interface in memory: batches are a pure function of (seed,
step), each process reads its own rows, evaluation batches are masked."""

import jax
import numpy as np
import pytest

import conftest
from tgt_jax import config_lib
from tgt_jax import sharding
from tgt_jax.data import dataset as dataset_lib
from tgt_jax.data import loading

NUM_EXAMPLES = 10


def _dataset(num_examples=NUM_EXAMPLES, size=6, max_shift=1, flip=False,
             student_indices=None):
  """Random non-zero images (a shift shows as zeros); label i % 3 for
  example i; a test split of 7."""
  rng = np.random.default_rng(0)
  images = rng.integers(1, 256, (num_examples, size, size, 1), np.uint8)
  labels = (np.arange(num_examples) % 3).astype(np.int32)
  return dataset_lib.InMemoryDataset(
      name='test', class_names=('a', 'b', 'c'),
      shot_groups={'many': np.array([0]), 'medium': np.array([1]),
                   'few': np.array([2])},
      train_images=images, train_labels=labels,
      test_images=images[:7], test_labels=labels[:7],
      student_indices=(np.arange(num_examples) if student_indices is None
                       else student_indices),
      max_shift=max_shift, flip=flip)


def test_train_batch_is_a_pure_function_of_seed_and_step():
  data = _dataset()
  batches = data.train_batches('student', 4, seed=3)
  first = batches(7)
  # Global NumPy state, and the batches computed before, must not matter:
  # a run resumed at step 7 sees what an uninterrupted run sees.
  np.random.seed(123)
  for step in range(7):
    batches(step)
  again = data.train_batches('student', 4, seed=3)(7)
  for key in ('image', 'label', 'index'):
    np.testing.assert_array_equal(first[key], again[key])
  assert first['image'].shape == (4, 6, 6, 1)
  assert first['image'].dtype == np.uint8
  assert first['label'].dtype == np.int32
  other = data.train_batches('student', 4, seed=4)(7)
  assert not np.array_equal(first['index'], other['index'])


@pytest.mark.parametrize('batch_size', [4, 5, 3])
def test_every_epoch_is_a_permutation(batch_size):
  num_steps = 6 * NUM_EXAMPLES // batch_size
  stream = np.concatenate([
      dataset_lib.batch_indices(NUM_EXAMPLES, batch_size, seed=0, step=step)
      for step in range(num_steps)])
  epochs = stream[:num_steps * batch_size // NUM_EXAMPLES * NUM_EXAMPLES]
  epochs = epochs.reshape(-1, NUM_EXAMPLES)
  assert len(epochs) >= 5
  for epoch in epochs:
    np.testing.assert_array_equal(np.sort(epoch), np.arange(NUM_EXAMPLES))
  assert len({tuple(epoch) for epoch in epochs}) == len(epochs)


def test_subsets_and_indices():
  data = _dataset(student_indices=np.array([1, 4, 6, 9]))
  assert data.num_examples('teacher') == 10
  assert data.num_examples('student') == 4
  assert data.student_class_counts.tolist() == [2, 2, 0]
  batch = data.train_batches('student', 4, seed=2, augment=False)(3)
  # 'index' is the position in the subset: the student's example index.
  np.testing.assert_array_equal(
      batch['image'], data.train_images[data.student_indices][batch['index']])
  np.testing.assert_array_equal(
      batch['label'], data.train_labels[data.student_indices][batch['index']])
  with pytest.raises(ValueError, match="subset must be one of"):
    data.num_examples('labeler')


def test_random_shift_moves_pixels_and_zero_fills():
  image = np.arange(1, 26, dtype=np.uint8).reshape(1, 5, 5, 1)
  images = np.repeat(image, 3, axis=0)
  # Offsets are in [0, 2 * max_shift]; max_shift means no move.
  shifted = dataset_lib.random_shift(
      images, np.array([[1, 1], [0, 0], [2, 1]]), max_shift=1)
  np.testing.assert_array_equal(shifted[0], image[0])
  np.testing.assert_array_equal(shifted[1, 1:, 1:], image[0, :-1, :-1])
  assert not shifted[1, 0].any() and not shifted[1, :, 0].any()
  np.testing.assert_array_equal(shifted[2, :-1], image[0, 1:])
  assert not shifted[2, -1].any()


def test_augmentation_crops_and_flips_per_step():
  images = np.random.default_rng(1).integers(1, 256, (64, 6, 6, 1), np.uint8)
  plain = dataset_lib.augment_batch(images, 0, 0, max_shift=0, flip=False)
  np.testing.assert_array_equal(plain, images)
  flipped = dataset_lib.augment_batch(images, 0, 0, max_shift=0, flip=True)
  is_flipped = [np.array_equal(f, i[:, ::-1]) for f, i in zip(flipped, images)]
  unchanged = [np.array_equal(f, i) for f, i in zip(flipped, images)]
  assert all(a or b for a, b in zip(is_flipped, unchanged))
  assert 16 < sum(is_flipped) < 48  # About half.
  shifted = dataset_lib.augment_batch(images, 0, 0, max_shift=1, flip=False)
  # A zero shift has probability 1/9 per image: most images move.
  assert 40 < sum(not np.array_equal(a, b)
                  for a, b in zip(shifted, images)) < 64
  again = dataset_lib.augment_batch(images, 0, 0, max_shift=1, flip=True)
  np.testing.assert_array_equal(
      again, dataset_lib.augment_batch(images, 0, 0, max_shift=1, flip=True))
  assert not np.array_equal(
      again, dataset_lib.augment_batch(images, 0, 1, max_shift=1, flip=True))


def test_process_rows_concatenate_to_the_global_batch(monkeypatch):
  data = _dataset(num_examples=37, max_shift=2, flip=True)
  global_batch = data.train_batches('student', 8, seed=5)(11)
  global_eval = list(data.eval_batches('test', 8))
  monkeypatch.setattr(jax, 'process_count', lambda: 2)
  parts, eval_parts = [], []
  for process in range(2):
    monkeypatch.setattr(jax, 'process_index', lambda p=process: p)
    assert sharding.local_slice(8) == slice(4 * process, 4 * process + 4)
    parts.append(data.train_batches('student', 8, seed=5)(11))
    eval_parts.append(list(data.eval_batches('test', 8)))
  for key in ('image', 'label', 'index'):
    np.testing.assert_array_equal(
        np.concatenate([part[key] for part in parts]), global_batch[key])
    for i, batch in enumerate(global_eval):
      np.testing.assert_array_equal(
          np.concatenate([part[i][key] for part in eval_parts]), batch[key])


def test_eval_batches_are_padded_and_masked():
  data = _dataset()
  batches = list(data.eval_batches('test', 4))
  assert [len(b['label']) for b in batches] == [4, 4]
  mask = np.concatenate([b['mask'] for b in batches])
  assert mask.tolist() == [True] * 7 + [False]
  labels = np.concatenate([b['label'] for b in batches])[mask]
  np.testing.assert_array_equal(labels, data.test_labels)
  student = list(data.eval_batches('student', 4))
  assert np.concatenate([b['index'] for b in student])[:10].tolist() == list(
      range(10))
  with pytest.raises(ValueError, match='no validation split'):
    list(data.eval_batches('val', 4))


def test_steps_for_epochs():
  assert dataset_lib.steps_for_epochs(100, 10, 2) == 20
  assert dataset_lib.steps_for_epochs(100, 8, 1) == 13  # Rounds up.
  assert dataset_lib.steps_for_epochs(364, 64, 20) == 114
  assert dataset_lib.steps_for_epochs(100, 10, 0.25) == 3
  assert dataset_lib.steps_for_epochs(5, 64, 0.01) == 1  # At least one.


def test_load_digits_demo():
  data = loading.load_dataset(config_lib.resolve(conftest.tiny_config()))
  assert data.in_memory and data.image_shape == (8, 8, 1)
  # 40 test and 20 validation images a class are held out of train.
  assert data.num_examples('teacher') == 1797 - 400 - 200
  val = list(data.eval_batches('val', 200))
  assert np.bincount(val[0]['label']).tolist() == [20] * 10
  test_images = {bytes(x) for x in data.test_images}
  assert not test_images & {bytes(x) for x in val[0]['image']} - {
      bytes(x) for x in data.train_images}  # Val is not the test split.
  assert data.student_class_counts.tolist() == [118, 76, 49, 32, 21, 13, 9,
                                                6, 4, 2]
  assert {k: v.tolist() for k, v in data.shot_groups.items()} == {
      'many': [0, 1, 2], 'medium': [3, 4, 5, 6], 'few': [7, 8, 9]}
  assert (data.max_shift, data.flip) == (1, False)
  images, labels = data.grid_examples(3)
  assert labels.tolist() == [0, 1, 2] and images.shape == (3, 8, 8, 1)


def test_load_mnist_demo():
  from configs import mnist_lt  # pylint: disable=g-import-not-at-top
  data = loading.load_dataset(config_lib.resolve(mnist_lt.get_config()))
  assert data.in_memory and data.image_shape == (28, 28, 1)
  assert data.train_images.dtype == data.test_images.dtype == np.uint8
  # 100 test and 50 validation images a class are held out of the 500.
  assert data.num_examples('teacher') == 3500
  assert np.bincount(data.train_labels).tolist() == [350] * 10
  assert np.bincount(data.test_labels).tolist() == [100] * 10
  assert np.bincount(data.val_labels).tolist() == [50] * 10
  # No two of the 5,000 images are equal, so equal bytes mean the same image.
  splits = [{bytes(x) for x in images} for images in
            (data.train_images, data.val_images, data.test_images)]
  assert sum(map(len, splits)) == len(set().union(*splits)) == 5000
  # The long tail and shot groups configs/mnist_lt.py's docstring promises.
  assert data.student_class_counts.tolist() == [350, 227, 147, 95, 62, 40, 26,
                                                17, 11, 7]
  assert {k: v.tolist() for k, v in data.shot_groups.items()} == {
      'many': [0, 1, 2], 'medium': [3, 4, 5, 6], 'few': [7, 8, 9]}
  assert (data.max_shift, data.flip) == (2, False)


def test_unknown_dataset_lists_every_known_name():
  config = conftest.tiny_config()
  config.dataset.name = 'cifar10'
  with pytest.raises(ValueError, match='cifar10') as error:
    loading.load_dataset(config)
  for name in loading.IN_MEMORY_NAMES + loading.STREAMING_NAMES:
    assert name in str(error.value)
