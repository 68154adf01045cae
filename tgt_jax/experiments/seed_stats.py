"""Statistics over seeds, shared by every multi-run experiment.

Kept free of absl flags so that any experiment module can import it.
"""

from typing import Sequence

import numpy as np

METRICS = ('overall', 'many', 'medium', 'few')


def metric_stats(values: Sequence[float]) -> dict:
  """{'mean', 'std' (population, ddof 0), 'values'} of one metric."""
  values = [float(v) for v in values]
  return {'mean': float(np.mean(values)), 'std': float(np.std(values)),
          'values': values}


def mean_std_cell(stats: dict) -> str:
  """'mean ± std' in percent, as every results table prints it."""
  return f'{100 * stats["mean"]:.1f} ± {100 * stats["std"]:.1f}'
