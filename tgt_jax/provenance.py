"""Where a result comes from: command, date, machine, versions, commit."""

import datetime
import importlib.metadata
import os
import platform
import subprocess
import sys

# The packages whose versions a result records.
PACKAGES = ('jax', 'jaxlib', 'flax', 'optax', 'orbax-checkpoint',
            'ml-collections', 'clu', 'numpy', 'tensorflow', 'tensorflow-cpu',
            'tensorflow-datasets')


def command_line() -> str:
  """The command that started this process, as a user would type it."""
  module = getattr(sys.modules.get('__main__'), '__spec__', None)
  program = (f'python -m {module.name}' if module is not None
             else f'python {sys.argv[0]}')
  return ' '.join([program, *sys.argv[1:]])


def machine() -> str:
  """The machine a result was measured on, in words."""
  import jax  # pylint: disable=g-import-not-at-top
  device = jax.devices()[0]
  kind = getattr(device, 'device_kind', device.platform)
  return (f'{platform.machine()} {platform.system()}, {os.cpu_count()} CPU '
          f'cores, {jax.device_count()} x {kind} ({jax.default_backend()}), '
          f'jax {jax.__version__}')


def package_versions() -> dict[str, str]:
  versions = {}
  for name in PACKAGES:
    try:
      versions[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      continue
  return versions


def git_commit() -> str:
  """The repository's commit (with '+changes' for uncommitted edits), or
  'unknown' outside a git checkout."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  try:
    commit = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=root,
                            capture_output=True, text=True, check=True,
                            timeout=10).stdout.strip()
    dirty = subprocess.run(['git', 'status', '--porcelain', '--', 'tgt_jax',
                            'configs', 'main.py'], cwd=root,
                           capture_output=True, text=True, check=True,
                           timeout=10).stdout.strip()
  except (OSError, subprocess.SubprocessError):
    return 'unknown'
  return commit + ('+changes' if dirty else '')


def provenance() -> dict[str, object]:
  """Command, date (UTC), machine, package versions and git commit."""
  return {'command': command_line(),
          'date': datetime.datetime.now(datetime.timezone.utc).strftime(
              '%Y-%m-%d %H:%M UTC'),
          'machine': machine(), 'packages': package_versions(),
          'git_commit': git_commit()}
