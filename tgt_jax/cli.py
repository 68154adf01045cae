"""What every program's main shares: a quiet log and errors without a
traceback for what the user must fix."""

import contextlib
import logging as std_logging
import os
import sys
from typing import Iterator

from absl import flags
from absl import logging

from tgt_jax import errors

# Every program accepts it (absl reads it wherever the program defines its
# own flags); errors.debug_enabled also reads it from sys.argv, for the
# errors raised while the flags themselves are parsed.
flags.DEFINE_bool('debug', False,
                  'Show the Python traceback of an error that is otherwise '
                  'reported as one FATAL line (also: TGT_DEBUG=1).')


class _QuietOrbax(std_logging.Filter):
  """Orbax logs every save at INFO, and read-only restores at WARNING: keep
  its other warnings and its errors. Outside debug mode each of its errors
  is one line: a failed save (a full disk) is logged by every one of its
  threads with a traceback, hundreds of lines above our own FATAL line,
  which says what to do."""

  def filter(self, record):
    if '/orbax/' not in record.pathname:
      return True
    message = record.getMessage()
    if record.levelno < std_logging.WARNING or 'read only' in message or (
        'read_only' in message):
      return False
    if record.levelno >= std_logging.ERROR and not errors.debug_enabled():
      record.msg, record.args = message.split('\n', 1)[0], ()
      record.exc_info = record.exc_text = None
    return True


def _quiet_closed_loop(unraisable) -> None:
  """TensorStore's threads call back into orbax's event loops after a
  failed save has closed them; each such RuntimeError would print a
  traceback. Everything else is printed as Python does."""
  if (isinstance(unraisable.exc_value, RuntimeError) and
      'Event loop is closed' in str(unraisable.exc_value) and
      not errors.debug_enabled()):
    return
  sys.__unraisablehook__(unraisable)


def quiet_orbax_logs() -> None:
  """Call once from a program's main: keeps the log to our own progress
  (orbax's filtered, TensorStore's closed-loop callbacks silent)."""
  logging.get_absl_handler().addFilter(_QuietOrbax())
  sys.unraisablehook = _quiet_closed_loop


def _chain(error: BaseException | None) -> Iterator[BaseException]:
  """`error` and the errors it was raised from or during (a config file's
  error reaches us wrapped by absl's flag parser)."""
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    yield error
    error = error.__cause__ or error.__context__


def fatal_lines(error: BaseException) -> list[str] | None:
  """'FATAL: ...' lines for an error the user fixes, else None."""
  # The innermost: ml_collections re-raises a config file's error as a new
  # one of the same type whose message is the whole traceback.
  user = [cause for cause in _chain(error)
          if isinstance(cause, errors.UserError)]
  if user:
    return [f'FATAL: {problem}' for problem in user[-1].problems]
  disk = _disk_problem(error)
  return None if disk is None else [f'FATAL: {disk}']


def _disk_problem(error: BaseException) -> str | None:
  """The line for a disk problem behind `error`, if one is."""
  return next(filter(None, map(errors.disk_problem, _chain(error))), None)


@contextlib.contextmanager
def exit_on(*other_errors: type[BaseException]) -> Iterator[None]:
  """Ends the program with 'FATAL: <problem>' lines and no traceback on a
  `errors.UserError`, a full or read-only disk, or `other_errors` (the
  ones whose message says what the user must fix: a traceback would bury
  it); every other error keeps its traceback, and so does every error
  with TGT_DEBUG=1 or --debug."""
  try:
    yield
  except Exception as error:  # pylint: disable=broad-except
    lines = fatal_lines(error)
    if lines is None and isinstance(error, other_errors):
      lines = [f'FATAL: {error}']
    if lines is None or errors.debug_enabled():
      raise
    message = '\n'.join(' '.join(line.split()) for line in lines)
    if _disk_problem(error) is None:
      sys.exit(message)
    # A failed disk also failed the checkpointer's background threads,
    # which would report it again, at length, while Python shuts down:
    # the FATAL line stays the last.
    sys.stdout.flush()
    print(message, file=sys.stderr, flush=True)
    os._exit(1)  # pylint: disable=protected-access
