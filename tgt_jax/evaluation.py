"""Accuracy on the balanced test split: overall, per class and per shot group.

Evaluation batches are padded to a fixed size, so one compiled program serves
every batch; padded rows are dropped before counting, so the last partial
batch counts exactly once.
"""

import json
import math
import os
from typing import Any, Callable, Mapping

import jax
from jax.experimental import multihost_utils
import numpy as np

from tgt_jax import sharding
from tgt_jax.data import long_tail

GROUPS = ('many', 'medium', 'few')


def batched_apply(fn: Callable[[jax.Array], jax.Array], images: np.ndarray,
                  batch_size: int, mesh) -> np.ndarray:
  """Applies a jitted `fn(uint8 images) -> [N, ...]` over all `images`.

  Every process holds all of `images` and feeds its own rows of each batch.
  """
  sharding.check_batch_size(batch_size, mesh, 'eval_batch_size')
  rows = sharding.local_slice(batch_size)
  outputs = []
  for start in range(0, len(images), batch_size):
    chunk = images[start:start + batch_size]
    num_valid = len(chunk)
    if num_valid < batch_size:
      padding = np.zeros((batch_size - num_valid, *chunk.shape[1:]),
                         chunk.dtype)
      chunk = np.concatenate([chunk, padding])
    result = fn(sharding.put_batch(chunk[rows], mesh))
    if jax.process_count() > 1:
      result = multihost_utils.process_allgather(result, tiled=True)
    outputs.append(np.asarray(result)[:num_valid])
  return np.concatenate(outputs)


def per_class_accuracy(labels: np.ndarray, predictions: np.ndarray,
                       num_classes: int) -> np.ndarray:
  """Top-1 accuracy of each class (NaN for a class absent from `labels`)."""
  correct = np.bincount(labels, weights=predictions == labels,
                        minlength=num_classes)
  total = np.bincount(labels, minlength=num_classes)
  with np.errstate(invalid='ignore', divide='ignore'):
    return correct / total


def accuracy_report(labels: np.ndarray, logits: np.ndarray,
                    groups: Mapping[str, np.ndarray]) -> dict[str, Any]:
  """{'overall', 'many', 'medium', 'few': float, 'per_class': [float]}."""
  per_class = per_class_accuracy(labels, np.argmax(logits, -1),
                                 logits.shape[-1])
  report = long_tail.group_accuracies(per_class, groups)
  report['per_class'] = [float(a) for a in per_class]
  return report


def _nan_to_none(value: Any) -> Any:
  """JSON has no NaN: an empty shot group's accuracy is written as null."""
  if isinstance(value, Mapping):
    return {k: _nan_to_none(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_nan_to_none(v) for v in value]
  if isinstance(value, float) and math.isnan(value):
    return None
  return value


def read_results(workdir: str) -> dict[str, Any]:
  """results.json of an earlier run in `workdir`, or {} if it has none."""
  path = os.path.join(workdir, 'results.json')
  if not os.path.exists(path):
    return {}
  with open(path) as f:
    return json.load(f)


def write_results(results: Mapping[str, Any], workdir: str) -> None:
  """results.json and results.md (a table) in the workdir, atomically."""
  atomic_write(os.path.join(workdir, 'results.json'),
                json.dumps(_nan_to_none(results), indent=2,
                           allow_nan=False) + '\n')
  atomic_write(os.path.join(workdir, 'results.md'), results_table(results))


def results_table(results: Mapping[str, Any]) -> str:
  lines = ['| model | overall | many | medium | few |',
           '| --- | --- | --- | --- | --- |']
  for name, report in results.items():
    if isinstance(report, Mapping):
      cells = ' | '.join('-' if math.isnan(report[k]) else
                         f'{100 * report[k]:.1f}' for k in ('overall', *GROUPS))
      lines.append(f'| {name} | {cells} |')
  if 'reconstruction_agreement' in results:
    lines.append('')
    lines.append('Reconstruction agreement (labeler on G(E(x)) vs. label of x, '
                 f'test split): {100 * results["reconstruction_agreement"]:.1f}%')
  return '\n'.join(lines) + '\n'


def atomic_write(path: str, text: str) -> None:
  """Write-then-rename, so a crash never leaves a half-written file."""
  tmp = path + '.tmp'
  with open(tmp, 'w') as f:
    f.write(text)
  os.replace(tmp, path)
