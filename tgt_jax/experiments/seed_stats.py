"""Statistics over seeds, shared by every multi-run experiment.

Kept free of absl flags so that any experiment module can import it. The
verdict rule, used by every comparison in docs/results.md: two methods are
compared on paired runs (the same seeds, hence the same teachers, data
order and initialisation); the difference of each seed's metric is
averaged, and a claim holds when the 95% confidence interval of that mean
(Student t, n - 1 degrees of freedom) excludes 0.
"""

import math
from typing import Any, Mapping, Sequence

from jax.scipy import special
import numpy as np

METRICS = ('overall', 'many', 'medium', 'few')
CONFIDENCE = 0.95

RULE = ('Every comparison is paired: the two methods ran with the same '
        'seeds (the same teachers, data order and initialisation), and the '
        'per-seed differences are averaged; the interval is the 95% '
        'Student-t confidence interval of that mean (n - 1 degrees of '
        'freedom; standard deviations are sample ones, ddof 1). A claim '
        'holds when its interval excludes 0.')


def t_cdf(t: float, dof: int) -> float:
  """The Student-t CDF with `dof` degrees of freedom (no SciPy needed)."""
  tail = 0.5 * float(special.betainc(dof / 2, 0.5, dof / (dof + t * t)))
  return 1.0 - tail if t > 0 else tail


def t_quantile(probability: float, dof: int) -> float:
  """The Student-t quantile, by bisection on its CDF."""
  low, high = -1e3, 1e3
  for _ in range(200):
    middle = (low + high) / 2
    low, high = ((middle, high) if t_cdf(middle, dof) < probability
                 else (low, middle))
  return (low + high) / 2


def paired_p_value(a: Sequence[float], b: Sequence[float]) -> float:
  """Two-sided p-value of the paired t test of mean(a - b) = 0 (1.0 when
  every difference is 0; 0.0 when they are equal and not 0)."""
  differences = np.asarray(a, np.float64) - np.asarray(b, np.float64)
  n = len(differences)
  if n < 2:
    raise ValueError('A paired test needs at least 2 seeds.')
  spread = float(np.std(differences, ddof=1))
  mean = float(np.mean(differences))
  if spread == 0:
    return 1.0 if mean == 0 else 0.0
  t = mean / (spread / math.sqrt(n))
  return 2.0 * (1.0 - t_cdf(abs(t), n - 1))


def holm(p_values: Sequence[float]) -> list[float]:
  """Holm-Bonferroni adjusted p-values, in the order given: the family's
  chance of any false claim stays at most the level at which each adjusted
  p-value is read (Holm 1979)."""
  order = np.argsort(p_values)
  m = len(p_values)
  adjusted = np.empty(m)
  running = 0.0
  for rank, index in enumerate(order):
    running = max(running, min(1.0, (m - rank) * p_values[index]))
    adjusted[index] = running
  return adjusted.tolist()


def metric_stats(values: Sequence[float]) -> dict:
  """{'mean', 'std' (sample, ddof 1; 0 for one value), 'values'}."""
  values = [float(v) for v in values]
  std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
  return {'mean': float(np.mean(values)), 'std': std, 'values': values}


def paired_difference(a: Sequence[float], b: Sequence[float]) -> dict:
  """Mean of a[i] - b[i] over seeds with its 95% t interval and verdict:
  {'mean', 'low', 'high', 'n', 'holds' (the interval lies above 0),
  'excludes_zero'}."""
  differences = np.asarray(a, np.float64) - np.asarray(b, np.float64)
  n = len(differences)
  if n < 2:
    raise ValueError('A paired interval needs at least 2 seeds.')
  mean = float(np.mean(differences))
  half = t_quantile(0.5 + CONFIDENCE / 2, n - 1) * float(
      np.std(differences, ddof=1)) / math.sqrt(n)
  return {'mean': mean, 'low': mean - half, 'high': mean + half, 'n': n,
          'holds': mean - half > 0, 'excludes_zero': not (
              mean - half <= 0 <= mean + half)}


def difference_cell(difference: dict) -> str:
  """'+1.2 [+0.4, +2.0]' in points of percent."""
  return (f'{100 * difference["mean"]:+.1f} [{100 * difference["low"]:+.1f}, '
          f'{100 * difference["high"]:+.1f}]')


def paired_table(paired: Sequence[Mapping[str, Any]]) -> list[str]:
  """Markdown lines: one row per (model, against) of `paired`
  ({model, against, metric, difference} rows), overall and few columns."""
  lines = ['', 'Paired differences, points of accuracy, mean [95% interval] '
           f'over the seeds ({RULE})', '',
           '| model | vs | overall | few |', '| --- | --- | --- | --- |']
  cells = {}
  for row in paired:
    cells.setdefault((row['model'], row['against']), {})[row['metric']] = (
        difference_cell(row['difference']))
  for (model, against), cell in cells.items():
    lines.append(f'| {model} | {against} | {cell["overall"]} | '
                 f'{cell["few"]} |')
  return lines


def mean_std_cell(stats: dict) -> str:
  """'mean ± std' in percent, as every results table prints it."""
  return f'{100 * stats["mean"]:.1f} ± {100 * stats["std"]:.1f}'
