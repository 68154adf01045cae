"""Long-tail subsets, many/medium/few-shot class groups and OLTR split files.

The conventions follow the long-tail literature (OLTR, Liu et al., CVPR 2019;
Cao et al., 2019): a training set whose per-class counts decay exponentially
from the head class to the tail class, a balanced test set, and accuracies
reported over all classes and over the many-, medium- and few-shot groups.
"""

import os
from typing import Mapping, Optional, Union

import numpy as np


def exponential_class_counts(num_classes: int, max_count: int,
                             imbalance_factor: float) -> np.ndarray:
  """Per-class example counts decaying exponentially with the class index.

  Class c gets round(max_count * imbalance_factor ** (-c / (num_classes - 1)))
  examples (at least 1): class 0 gets max_count, the last class
  max_count / imbalance_factor (rounded), so the head/tail ratio is about
  imbalance_factor. Rounding is half-to-even, as Python's round.

  Args:
    num_classes: number of classes, at least 2.
    max_count: examples in the head class (class 0), at least 1.
    imbalance_factor: ratio of head to tail count, at least 1 (1 gives a
      balanced set).

  Returns:
    int64 array [num_classes], non-increasing.

  Raises:
    ValueError: for num_classes < 2, max_count < 1 or imbalance_factor < 1.
  """
  if num_classes < 2:
    raise ValueError(f'num_classes must be at least 2, got {num_classes}.')
  if max_count < 1:
    raise ValueError(f'max_count must be at least 1, got {max_count}.')
  if not imbalance_factor >= 1:  # Also rejects NaN.
    raise ValueError(
        f'imbalance_factor must be >= 1 (head count / tail count), got '
        f'{imbalance_factor}.')
  exponents = -np.arange(num_classes) / (num_classes - 1)
  counts = np.round(max_count * float(imbalance_factor) ** exponents)
  return np.maximum(counts, 1).astype(np.int64)


def long_tail_subset(labels: np.ndarray, counts: np.ndarray,
                     seed: int) -> np.ndarray:
  """Draws counts[c] examples of each class c without replacement.

  Each class draws from its own generator, seeded by (seed, c), and takes a
  prefix of a random permutation of its examples. Hence a class's draw does
  not depend on the other classes' counts, and raising counts[c] only adds
  examples to the class (subsets for the same seed are nested).

  Args:
    labels: int array [N] of class indices in 0..len(counts)-1.
    counts: int array [K] of examples wanted per class (0 is allowed).
    seed: non-negative seed; the same inputs and seed give the same subset.

  Returns:
    Sorted int64 array of indices into labels, sum(counts) long.

  Raises:
    ValueError: if labels or counts are not 1-D integer arrays, a count is
      negative, seed is negative, a label lies outside 0..len(counts)-1, or a
      class has fewer examples than asked (naming the class and both numbers).
  """
  labels = np.asarray(labels)
  counts = np.asarray(counts)
  for name, array in (('labels', labels), ('counts', counts)):
    if array.ndim != 1 or not np.issubdtype(array.dtype, np.integer):
      raise ValueError(f'{name} must be a 1-D integer array, got dtype '
                       f'{array.dtype} and shape {array.shape}.')
  if counts.size and counts.min() < 0:
    raise ValueError(f'counts must be non-negative, got {counts.tolist()}.')
  if seed < 0:
    raise ValueError(f'seed must be non-negative, got {seed}.')
  num_classes = counts.size
  if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
    raise ValueError(
        f'labels must lie in [0, {num_classes}) to match len(counts); found '
        f'values from {labels.min()} to {labels.max()}.')
  chosen = []
  for class_index in range(num_classes):
    class_indices = np.flatnonzero(labels == class_index)
    wanted = int(counts[class_index])
    if class_indices.size < wanted:
      raise ValueError(
          f'Class {class_index} has {class_indices.size} examples, fewer than '
          f'the {wanted} asked for. Lower the counts (e.g. max_count).')
    rng = np.random.default_rng([seed, class_index])
    chosen.append(rng.permutation(class_indices)[:wanted])
  if not chosen:
    return np.zeros([0], np.int64)
  return np.sort(np.concatenate(chosen)).astype(np.int64)


def shot_groups(train_counts: np.ndarray, many_threshold: float,
                few_threshold: float) -> dict[str, np.ndarray]:
  """Splits classes into many-, medium- and few-shot groups by train count.

  With the usual thresholds (100, 20): many-shot classes have more than 100
  training examples, few-shot classes fewer than 20, medium-shot the rest.

  Args:
    train_counts: int array [K], training examples per class.
    many_threshold: a class with count > many_threshold is many-shot.
    few_threshold: a class with count < few_threshold is few-shot.

  Returns:
    {'many': ..., 'medium': ..., 'few': ...}, each a sorted int64 array of
    class indices; together they partition 0..K-1.

  Raises:
    ValueError: if few_threshold > many_threshold, or train_counts is not 1-D.
  """
  if few_threshold > many_threshold:
    raise ValueError(
        f'few_threshold ({few_threshold}) must not exceed many_threshold '
        f'({many_threshold}).')
  train_counts = np.asarray(train_counts)
  if train_counts.ndim != 1:
    raise ValueError(
        f'train_counts must be 1-D, got shape {train_counts.shape}.')
  is_many = train_counts > many_threshold
  is_few = train_counts < few_threshold
  return {
      'many': np.flatnonzero(is_many).astype(np.int64),
      'medium': np.flatnonzero(~is_many & ~is_few).astype(np.int64),
      'few': np.flatnonzero(is_few).astype(np.int64),
  }


def default_shot_thresholds(train_counts: np.ndarray) -> tuple[float, float]:
  """(many, few) thresholds that follow the head class's size [ours].

  Geometric thirds of the count range from head h to tail t: many-shot
  classes have more than h / r^(1/3) images, few-shot fewer than
  h / r^(2/3), with r = h / t. On an exponential profile each group then
  holds about a third of the classes, and the thresholds scale with the
  head class; a balanced set is all medium-shot.
  """
  counts = np.asarray(train_counts, np.float64)
  head, tail = counts.max(), max(counts.min(), 1.0)
  ratio = head / tail
  return head / ratio**(1 / 3), head / ratio**(2 / 3)


def shot_groups_for(train_counts: np.ndarray,
                    shot_config: Mapping) -> dict[str, np.ndarray]:
  """`shot_groups` with the config's thresholds, or the default ones."""
  many, few = shot_config['many_threshold'], shot_config['few_threshold']
  if many is None:
    many, few = default_shot_thresholds(train_counts)
  return shot_groups(train_counts, many, few)


def group_accuracies(per_class_accuracy: np.ndarray,
                     groups: Mapping[str, np.ndarray]) -> dict[str, float]:
  """Mean per-class accuracy over all classes and over each group.

  With a class-balanced test set (as from bundled.split_train_test or the
  Places-LT / ImageNet-LT test lists), 'overall' equals the plain top-1
  accuracy over test examples, because every class weighs the same either way.

  Args:
    per_class_accuracy: float array [K], accuracy of each class.
    groups: group name -> int array of class indices, e.g. from shot_groups.

  Returns:
    {'overall': mean over all K classes, <group>: mean over the group's
    classes, ...} as Python floats. A group with no class gives float('nan'),
    e.g. 'few' when no class is that rare; callers that average or log these
    values should expect NaN.

  Raises:
    ValueError: if per_class_accuracy is not 1-D, a group is called 'overall',
      or a group names a class outside 0..K-1.
  """
  per_class_accuracy = np.asarray(per_class_accuracy, np.float64)
  if per_class_accuracy.ndim != 1:
    raise ValueError('per_class_accuracy must be 1-D, got shape '
                     f'{per_class_accuracy.shape}.')
  num_classes = per_class_accuracy.size
  results = {'overall': float(np.mean(per_class_accuracy))
                        if num_classes else float('nan')}
  for name, class_indices in groups.items():
    if name == 'overall':
      raise ValueError("A group may not be called 'overall'; that key holds "
                       'the mean over all classes.')
    class_indices = np.asarray(class_indices, np.int64).reshape(-1)
    out_of_range = class_indices[(class_indices < 0) |
                                 (class_indices >= num_classes)]
    if out_of_range.size:
      raise ValueError(f'Group {name!r} names classes outside '
                       f'[0, {num_classes}): {out_of_range.tolist()}.')
    # An empty group has no defined mean; NaN (rather than 0) keeps it from
    # being mistaken for a measured accuracy, without numpy's empty-mean
    # warning.
    results[name] = (float(np.mean(per_class_accuracy[class_indices]))
                     if class_indices.size else float('nan'))
  return results


def read_split_file(
    path: Union[str, os.PathLike],
    num_classes: Optional[int] = None) -> tuple[list[str], np.ndarray]:
  """Reads an OLTR-style split list: one 'relative/path label' per line.

  The label is the last whitespace-separated field, so a path may itself
  contain spaces. Empty lines (e.g. a trailing newline) are skipped.

  Args:
    path: the split file, e.g. the bundled
      tgt_jax/data/splits/Places_LT/Places_LT_train.txt.
    num_classes: if given, every label must lie in [0, num_classes); labels
      must be non-negative either way.

  Returns:
    (relative_paths, labels): a list of N strings and an int32 array [N].

  Raises:
    ValueError: naming the file, the 1-based line number and the line, for a
      line without both a path and an integer label, or with a label outside
      the allowed range.
  """
  relative_paths = []
  labels = []
  with open(path, 'r', encoding='utf-8') as split_file:
    for line_number, line in enumerate(split_file, start=1):
      stripped = line.strip()
      if not stripped:
        continue
      fields = stripped.rsplit(maxsplit=1)
      label = None
      if len(fields) == 2:
        try:
          label = int(fields[1])
        except ValueError:
          pass
      if label is None:
        raise ValueError(
            f'{os.fspath(path)}, line {line_number}: expected '
            f"'relative/path label' with an integer label, got {stripped!r}.")
      if label < 0 or (num_classes is not None and label >= num_classes):
        allowed = (f'[0, {num_classes})' if num_classes is not None else
                   'non-negative integers')
        raise ValueError(
            f'{os.fspath(path)}, line {line_number}: label {label} is outside '
            f'{allowed}: {stripped!r}.')
      relative_paths.append(fields[0])
      labels.append(label)
  return relative_paths, np.asarray(labels, np.int32)
