"""Accuracy on a balanced split: overall, per class and per shot group.

`predict` is the one evaluation loop: it applies a jitted function to padded,
masked batches (`Dataset.eval_batches`), gathers every process's rows and
drops the padding, so the last partial batch counts exactly once.
"""

import math
import os
from typing import Any, Callable, Iterable, Mapping

import jax
from jax.experimental import multihost_utils
import numpy as np

from tgt_jax import files
from tgt_jax import sharding
from tgt_jax.data import long_tail

GROUPS = ('many', 'medium', 'few')
RESULTS_FILE = 'results.json'


def predict(fn: Callable[[jax.Array], jax.Array],
            batches: Iterable[Mapping[str, np.ndarray]],
            mesh) -> tuple[np.ndarray, np.ndarray]:
  """(fn(images) of every unmasked row, their labels), in order.

  `fn` maps a global uint8 image batch to [N, ...]; each batch holds this
  process's rows of a padded global batch with a boolean 'mask'.
  """
  outputs, labels = [], []
  for batch in batches:
    result = fn(sharding.put_batch(batch['image'], mesh))
    label, mask = batch['label'], batch['mask']
    if jax.process_count() > 1:
      result, label, mask = multihost_utils.process_allgather(
          (result, label, mask), tiled=True)
    mask = np.asarray(mask, bool)
    outputs.append(np.asarray(result)[mask])
    labels.append(np.asarray(label)[mask])
  return np.concatenate(outputs), np.concatenate(labels)


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


def read_results(workdir: str) -> dict[str, Any]:
  """results.json of an earlier run in `workdir`, or {} if it has none."""
  return files.read_json(os.path.join(workdir, RESULTS_FILE), {})


def write_results(results: Mapping[str, Any], workdir: str) -> None:
  """results.json and results.md (a table) in the workdir, atomically."""
  files.write_json(os.path.join(workdir, RESULTS_FILE), results)
  files.atomic_write(os.path.join(workdir, 'results.md'),
                     results_table(results))


def is_report(value: Any) -> bool:
  """Whether a results.json entry is a model's accuracy report."""
  return isinstance(value, Mapping) and 'overall' in value


def results_table(results: Mapping[str, Any]) -> str:
  """Markdown: accuracy (%) by shot group of every model in `results`."""
  split = results.get('run_info', {}).get('split', 'evaluation')
  lines = [f'Accuracy (%) on the {split} split.', '',
           '| model | overall | many | medium | few |',
           '| --- | --- | --- | --- | --- |']
  for name, report in results.items():
    if is_report(report):
      cells = ' | '.join(
          '-' if report[k] is None or math.isnan(report[k]) else
          f'{100 * report[k]:.1f}' for k in ('overall', *GROUPS))
      lines.append(f'| {name} | {cells} |')
  if 'reconstruction_agreement' in results:
    lines.append('')
    lines.append('Reconstruction agreement (labeler on G(E(x)) vs. label of '
                 f'x): {100 * results["reconstruction_agreement"]:.1f}%')
  return '\n'.join(lines + compute_table(results)) + '\n'


def flops_cell(flops: float | None) -> str:
  """FLOPs in engineering notation ('1.23e+12'); '-' when XLA gave none."""
  return '-' if flops is None else f'{flops:.3g}'


def compute_table(results: Mapping[str, Any]) -> list[str]:
  """Markdown lines: the training compute of every stage that records it
  (README, "Outputs", says what is counted); [] if none does."""
  rows = [(name, value['compute']) for name, value in results.items()
          if isinstance(value, Mapping) and value.get('compute')]
  if not rows:
    return []
  lines = ['', 'Training compute (FLOPs: XLA\'s count of the step times the '
           'steps; teacher FLOPs: the teachers trained here that the model '
           'depends on).', '',
           '| model | FLOPs/step | steps | train FLOPs | teacher FLOPs | '
           'total FLOPs | wall s |', '| --- |' + ' --- |' * 6]
  for name, record in rows:
    wall = record.get('wall_s')
    cells = [flops_cell(record['flops_per_step']), str(record['steps']),
             flops_cell(record['train_flops']),
             flops_cell(record.get('teacher_flops')),
             flops_cell(record.get('total_flops', record['train_flops'])),
             '-' if wall is None else f'{wall:.1f}']
    lines.append(f'| {name} | ' + ' | '.join(cells) + ' |')
  return lines
