"""The errors a user fixes, and how every program reports them.

A `UserError` is a problem in what the user gave: a config field out of
range, a missing or broken data folder, a workdir written by another config
or held by another process. Each problem is one line,
`<field or path>: <what is wrong>; <the flag or action that fixes it>`, and
the programs print it as `FATAL: <line>` with no traceback (`cli.exit_on`),
because the traceback would bury the one line that matters. Setting the
environment variable TGT_DEBUG=1 (or passing --debug to a program) shows the
traceback instead.

The subclasses keep the built-in type a caller would catch (ValueError,
FileNotFoundError), so code written against those still works.
"""

import errno
import os
import re
import sys
from typing import Sequence

DEBUG_VARIABLE = 'TGT_DEBUG'
# An OSError with one of these is the machine's, not the code's: the user
# frees space or fixes the permissions, then reruns the same command.
DISK_ERRNOS = {errno.ENOSPC: 'no space left on the device',
               errno.EDQUOT: 'disk quota exceeded',
               errno.EROFS: 'the file system is read-only',
               errno.EACCES: 'permission denied'}


class UserError(Exception):
  """One or more problems the user fixes, each a line naming the field or
  path, what is wrong and how to fix it."""

  def __init__(self, problems: str | Sequence[str]):
    self.problems = ([problems] if isinstance(problems, str)
                     else list(problems))
    super().__init__('\n'.join(self.problems))


class ConfigError(UserError, ValueError):
  """The config cannot run; one problem a field."""


class DataError(UserError, ValueError):
  """The data on disk cannot be used as it is (e.g. an empty class folder,
  an undecodable image)."""


class DataUnavailableError(UserError, FileNotFoundError):
  """A dataset, split file or image folder is not where the config says."""


class WorkdirError(UserError, RuntimeError):
  """The workdir cannot be used now: held by another process, read-only,
  or written by another config."""


def debug_enabled(argv: Sequence[str] | None = None) -> bool:
  """TGT_DEBUG=1 in the environment, or --debug (--debug=true, ...) on
  the command line, read before the flags are parsed: a flag error must
  know too. The last --debug/--nodebug wins, as absl's parser has it."""
  argv = sys.argv if argv is None else argv
  on = os.environ.get(DEBUG_VARIABLE, '') not in ('', '0')
  for arg in argv:
    name, has_value, value = arg.partition('=')
    if name == '--debug':
      on = not has_value or value.lower() in ('true', 't', '1', 'yes')
    elif arg == '--nodebug':
      on = False
  return on


# TensorStore (orbax's writer) reports a failed write as a ValueError whose
# text carries the operating system's error code.
_OS_ERROR_CODE = re.compile(r"os_error_code=\\?'(\d+)")
_FAILED_PATH = re.compile(r'Failed writing: "([^"]+)"')


def disk_problem(error: BaseException) -> str | None:
  """The one line for an error of the machine's (disk full, read-only,
  permissions), or None for any other error."""
  code, where = getattr(error, 'errno', None), getattr(error, 'filename', None)
  if not isinstance(error, OSError):
    found = _OS_ERROR_CODE.search(str(error))
    code = int(found.group(1)) if found else None
    path = _FAILED_PATH.search(str(error))
    where = path.group(1) if path else None
  what = DISK_ERRNOS.get(code)
  if what is None:
    return None
  return (f'{where or "a file of the run"}: {what}; free space or fix the '
          'permissions, then rerun the same command: every stage resumes '
          'from its last checkpoint.')
