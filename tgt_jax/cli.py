"""What every program's main shares: a quiet log and errors without a
traceback for what the user must fix."""

import contextlib
import logging as std_logging
import sys
from typing import Iterator

from absl import logging


class _QuietOrbax(std_logging.Filter):
  """Orbax logs every save at INFO, and read-only restores at WARNING: keep
  its other warnings and its errors."""

  def filter(self, record):
    if '/orbax/' not in record.pathname:
      return True
    return record.levelno >= std_logging.WARNING and (
        'read only' not in record.getMessage() and
        'read_only' not in record.getMessage())


def quiet_orbax_logs() -> None:
  """Call once from a program's main: keeps the log to our own progress."""
  logging.get_absl_handler().addFilter(_QuietOrbax())


@contextlib.contextmanager
def exit_on(*errors: type[BaseException]) -> Iterator[None]:
  """Ends the program with 'FATAL: <message>' and no traceback on `errors`,
  the ones whose message says what the user must fix (a traceback would
  bury it); every other error keeps its traceback."""
  try:
    yield
  except errors as error:
    sys.exit(f'FATAL: {error}')
