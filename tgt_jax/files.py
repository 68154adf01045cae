"""Writing files so that a crash never leaves a half-written one."""

import json
import math
import os
from typing import Any, Mapping


def atomic_write(path: str, text: str) -> None:
  """Write-then-rename: readers see the old file or the new, never half."""
  tmp = path + '.tmp'
  with open(tmp, 'w') as f:
    f.write(text)
  os.replace(tmp, path)


def _nan_to_none(value: Any) -> Any:
  """JSON has no NaN: e.g. an empty shot group's accuracy is written null."""
  if isinstance(value, Mapping):
    return {k: _nan_to_none(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_nan_to_none(v) for v in value]
  if isinstance(value, float) and math.isnan(value):
    return None
  return value


def write_json(path: str, value: Any, indent: int = 2) -> None:
  """Atomically writes `value` as JSON, NaN as null."""
  atomic_write(path, json.dumps(_nan_to_none(value), indent=indent,
                                allow_nan=False) + '\n')


def read_json(path: str, default: Any = None) -> Any:
  """The JSON in `path`, or `default` when there is no such file."""
  if not os.path.exists(path):
    return default
  with open(path) as f:
    return json.load(f)
