"""Writing files so that a crash never leaves a half-written one."""

import contextlib
import fcntl
import json
import math
import os
import tempfile
from typing import Any, Iterator, Mapping


def atomic_write(path: str, text: str) -> None:
  """Write-then-rename: readers see the old file or the new, never half.

  The temporary file has a name of its own (two writers never share one),
  and is removed if the write fails (e.g. on a full disk)."""
  fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or '.',
                             prefix=f'.{os.path.basename(path)}.',
                             suffix='.tmp')
  try:
    with os.fdopen(fd, 'w') as f:
      f.write(text)
    os.chmod(tmp, 0o644)  # mkstemp's 0o600 would hide results from others.
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(OSError):
      os.remove(tmp)
    raise


class LockHeldError(RuntimeError):
  """Another process holds the lock; `holder` is what it recorded."""

  def __init__(self, path: str, holder: str):
    self.path, self.holder = path, holder
    super().__init__(f'{path} is held by {holder or "another process"}')


@contextlib.contextmanager
def exclusive_lock(path: str, holder: str) -> Iterator[None]:
  """Holds an exclusive advisory lock (flock) on `path` for the block.

  The kernel releases it when the process ends in any way, SIGKILL
  included, so a crash never leaves a stale lock. While held, the file
  names the holder (`holder`, e.g. pid, host and command); it is emptied on
  release, so a run that stops (refused, or done) leaves the file as it
  found it. Raises LockHeldError, naming the holder, if another process
  has it.
  """
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      with open(path) as f:
        raise LockHeldError(path, f.read().strip()) from None
    os.ftruncate(fd, 0)
    os.write(fd, holder.encode() + b'\n')
    try:
      yield
    finally:
      try:
        os.ftruncate(fd, 0)
      except OSError:  # E.g. the disk went read-only meanwhile: harmless.
        pass
  finally:
    os.close(fd)  # Closing the descriptor releases the lock.


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
