"""Tests of the input pipeline: batches are a pure function of (seed, step)."""

import jax
import numpy as np
import pytest

from tgt_jax import sharding
from tgt_jax.data import pipeline

NUM_EXAMPLES = 10


def _data(num_examples=NUM_EXAMPLES, size=6):
  """Random non-zero images (a shift shows as zeros); label i for example i."""
  rng = np.random.default_rng(0)
  images = rng.integers(1, 256, (num_examples, size, size, 1), np.uint8)
  return images, np.arange(num_examples, dtype=np.int32)


def test_train_batch_is_a_pure_function_of_seed_and_step():
  images, labels = _data()
  first = pipeline.train_batch(images, labels, 4, seed=3, step=7, max_shift=1)
  # Global NumPy state, and the batches computed before, must not matter:
  # a run resumed at step 7 sees what an uninterrupted run sees.
  np.random.seed(123)
  for step in range(7):
    pipeline.train_batch(images, labels, 4, seed=3, step=step, max_shift=1)
  again = pipeline.train_batch(images, labels, 4, seed=3, step=7, max_shift=1)
  np.testing.assert_array_equal(first['image'], again['image'])
  np.testing.assert_array_equal(first['label'], again['label'])
  assert first['image'].shape == (4, 6, 6, 1)
  assert first['image'].dtype == np.uint8
  assert first['label'].dtype == np.int32


def test_different_seeds_give_different_orders():
  orders = {seed: np.concatenate([
      pipeline.batch_indices(NUM_EXAMPLES, 5, seed, step) for step in (0, 1)])
            for seed in range(4)}
  for seed in range(1, 4):
    assert not np.array_equal(orders[0], orders[seed])
  images, labels = _data()
  a = pipeline.train_batch(images, labels, 5, seed=0, step=0)
  b = pipeline.train_batch(images, labels, 5, seed=1, step=0)
  assert not np.array_equal(a['label'], b['label'])


@pytest.mark.parametrize('batch_size', [4, 5, 3])
def test_every_epoch_is_a_permutation(batch_size):
  # 10 examples: batches of 4 and 3 straddle epoch boundaries, 5 does not.
  num_epochs = 6
  num_steps = num_epochs * NUM_EXAMPLES // batch_size
  stream = np.concatenate([
      pipeline.batch_indices(NUM_EXAMPLES, batch_size, seed=0, step=step)
      for step in range(num_steps)])
  epochs = stream[:num_steps * batch_size // NUM_EXAMPLES * NUM_EXAMPLES]
  epochs = epochs.reshape(-1, NUM_EXAMPLES)
  assert len(epochs) >= 5
  for epoch in epochs:
    np.testing.assert_array_equal(np.sort(epoch), np.arange(NUM_EXAMPLES))
  # Reshuffled each epoch, not one order repeated.
  assert len({tuple(epoch) for epoch in epochs}) == len(epochs)


def test_labels_follow_the_indices():
  images, labels = _data()
  batch = pipeline.train_batch(images, labels, 4, seed=2, step=3)
  indices = pipeline.batch_indices(NUM_EXAMPLES, 4, seed=2, step=3)
  np.testing.assert_array_equal(batch['label'], labels[indices])
  np.testing.assert_array_equal(batch['image'], images[indices])  # No shift.


def test_random_shift_moves_pixels_and_zero_fills():
  image = np.arange(1, 26, dtype=np.uint8).reshape(1, 5, 5, 1)
  images = np.repeat(image, 3, axis=0)
  # Offsets are in [0, 2 * max_shift]; max_shift means no move.
  shifted = pipeline.random_shift(images, np.array([[1, 1], [0, 0], [2, 1]]),
                                  max_shift=1)
  np.testing.assert_array_equal(shifted[0], image[0])
  # Offset (0, 0): content moves down and right by one; top row and left
  # column are zero.
  np.testing.assert_array_equal(shifted[1, 1:, 1:], image[0, :-1, :-1])
  assert not shifted[1, 0].any() and not shifted[1, :, 0].any()
  # Offset (2, 1): content moves up by one.
  np.testing.assert_array_equal(shifted[2, :-1], image[0, 1:])
  assert not shifted[2, -1].any()
  np.testing.assert_array_equal(
      pipeline.random_shift(images, np.zeros((3, 2), int), 0), images)


def test_shift_augmentation_is_drawn_per_step():
  images, labels = _data(num_examples=64)
  batch = pipeline.train_batch(images, labels, 64, seed=0, step=0,
                               max_shift=1)
  unshifted = images[pipeline.batch_indices(64, 64, 0, 0)]
  moved = [not np.array_equal(a, b)
           for a, b in zip(batch['image'], unshifted)]
  # A zero shift has probability 1/9 per image: most images move.
  assert 40 < sum(moved) < 64


def test_process_rows_concatenate_to_the_global_batch(monkeypatch):
  images, labels = _data(num_examples=37)
  global_batch = pipeline.train_batch(images, labels, 8, seed=5, step=11,
                                      max_shift=2)
  monkeypatch.setattr(jax, 'process_count', lambda: 2)
  parts = []
  for process in range(2):
    monkeypatch.setattr(jax, 'process_index', lambda p=process: p)
    rows = sharding.local_slice(8)
    assert rows == slice(4 * process, 4 * process + 4)
    parts.append(pipeline.train_batch(images, labels, 8, seed=5, step=11,
                                      max_shift=2, rows=rows))
  for key in ('image', 'label'):
    np.testing.assert_array_equal(
        np.concatenate([part[key] for part in parts]), global_batch[key])
  # The shift really is applied (so the equality above covers it).
  unshifted = images[pipeline.batch_indices(37, 8, 5, 11)]
  assert not np.array_equal(global_batch['image'], unshifted)


def test_steps_for_epochs():
  assert pipeline.steps_for_epochs(100, 10, 2) == 20
  assert pipeline.steps_for_epochs(100, 8, 1) == 13  # Rounds up.
  assert pipeline.steps_for_epochs(364, 64, 20) == 114
  assert pipeline.steps_for_epochs(100, 10, 0.25) == 3  # Fractional epochs.
  assert pipeline.steps_for_epochs(5, 64, 0.01) == 1  # At least one step.
  assert pipeline.steps_for_epochs(100, 10, 0) == 1


def test_extras_rows_follow_the_images():
  images = np.arange(20, dtype=np.uint8).reshape(20, 1, 1, 1)
  labels = np.arange(20) % 3
  latents = np.arange(20, dtype=np.float32)[:, None] * np.ones((1, 4))
  batch = pipeline.train_batch(images, labels, 8, seed=2, step=5,
                               extras={'latent': latents})
  np.testing.assert_array_equal(batch['latent'][:, 0],
                                batch['image'][:, 0, 0, 0])
  assert set(batch) == {'image', 'label', 'latent'}
