r"""The probe battery of issue 20: what a careful user and a hostile
environment meet, run through the commands a user types.

  python tests/hostile_probes.py --out=docs/probes.md

Each probe runs `main.py` or a tool in a subprocess (CPU), on the bundled
digits or on small image folders it writes, and is classified from what the
process printed and left behind:

  clear error    stopped with a last line `FATAL: ...` that matches what is
                 wrong, no traceback, within `BEFORE_COMPUTE_S`, and the
                 workdir as it was (nothing written);
  correct run    finished, with the results (or warning) the probe expects;
  traceback      a Python traceback was printed;
  unchecked      a bad value was accepted: the run went on (or finished);
  silent         a degenerate-but-legal input ran without the warning;
  lost           written results, checkpoints or files changed by a run that
                 should have left them alone, or a resumed run whose results
                 differ from the uninterrupted run's.

The table (docs/probes.md) is written by this command; nothing in it is
typed. The full-disk and read-only probes need root (a tmpfs); elsewhere
they are reported as skipped. About 20 minutes on a 2-core CPU.
"""

import argparse
import collections
import dataclasses
import datetime
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Callable

import numpy as np
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # conftest (beside this file) imports tgt_jax.
import conftest  # pylint: disable=g-import-not-at-top,wrong-import-position

# A bad input must stop before any compute: import, config and data checks
# take about 10 s here; a labeler step would come later.
BEFORE_COMPUTE_S = 45
OUTCOMES = ('clear error', 'correct run', 'traceback', 'unchecked', 'silent',
            'lost', 'skipped')
# The digits demo, shrunk: a run of every stage in about a minute.
QUICK = ['--config=configs/digits_lt.py:quick',
         "--config.methods=('onehot','kd','tgt_random')",
         '--config.teacher_labeler.num_epochs=0.5',
         '--config.teacher_generator.num_epochs=0.5',
         '--config.num_epochs=1', '--config.checkpoint_every_steps=10']
FOLDER = ['--config.teacher_labeler.num_epochs=1',
          '--config.teacher_generator.num_epochs=1', '--config.num_epochs=1',
          "--config.methods=('onehot',)"]


@dataclasses.dataclass
class Done:
  """What one command did."""
  returncode: int
  output: str
  seconds: float

  @property
  def last_line(self) -> str:
    lines = self.output.strip().splitlines()
    return lines[-1] if lines else ''


def _run(command, timeout=900, env=None) -> Done:
  start = time.time()
  done = subprocess.run(
      command, cwd=REPO, capture_output=True, text=True, timeout=timeout,
      env=dict(os.environ, JAX_PLATFORMS='cpu', **(env or {})), check=False)
  return Done(done.returncode, done.stdout + done.stderr, time.time() - start)


def _main(args, workdir, **kwargs) -> Done:
  return _run([sys.executable, 'main.py', *args, f'--workdir={workdir}'],
              **kwargs)


def _tool(module, *args, **kwargs) -> Done:
  return _run([sys.executable, '-m', f'tgt_jax.{module}', *args], **kwargs)


def _reports(workdir) -> dict:
  with open(os.path.join(workdir, 'results.json')) as f:
    return {k: v for k, v in json.load(f).items() if k != 'run_info'}


def classify_error(done: Done, needle: str, before, after) -> tuple[str, str]:
  """The outcome of a probe that must stop with one FATAL line."""
  if 'Traceback' in done.output:
    return 'traceback', done.last_line
  if done.returncode == 0:
    return 'unchecked', 'exit 0'
  if before != after:
    return 'lost', 'the workdir changed'
  if not done.last_line.startswith('FATAL: ') or needle not in done.last_line:
    return 'traceback', f'no FATAL line naming {needle!r}: {done.last_line}'
  if done.seconds > BEFORE_COMPUTE_S:
    return 'unchecked', f'stopped only after {done.seconds:.0f} s'
  return 'clear error', done.last_line


@dataclasses.dataclass
class Probe:
  name: str
  group: str
  run: Callable[[str], tuple[str, str]]  # base dir -> (outcome, detail)


# --- Inputs -----------------------------------------------------------------


def _png(path, seed, size=16):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3))
  Image.fromarray(pixels.astype(np.uint8)).save(path)


def _folder(root, train=(12, 10, 8, 6), test=4):
  """root/train/c<i>/*.png and root/test/c<i>/*.png, noise images."""
  for c, count in enumerate(train):
    for i in range(count):
      _png(os.path.join(root, 'train', f'c{c}', f'{i}.png'), 100 * c + i)
    for i in range(test):
      _png(os.path.join(root, 'test', f'c{c}', f'{i}.png'), 5000 + 100 * c + i)
  return root


def _folder_args(root):
  return [f'--config=configs/image_folder.py:root={root},size=16', *FOLDER]


def _slug(name):
  """A probe's name as a file name."""
  return ''.join(c if c.isalnum() else '_' for c in name)


def _error_probe(name, group, make_args, needle, workdir_exists=False):
  """A probe of `main.py` that must stop with one FATAL line naming
  `needle`, the workdir untouched."""
  def run(base):
    workdir = os.path.join(base, _slug(name))
    if workdir_exists:
      os.makedirs(workdir)
    before = conftest.snapshot(workdir)
    done = _main(make_args(base), workdir)
    return classify_error(done, needle, before, conftest.snapshot(workdir))
  return Probe(name, group, run)


def _config_probe(name, override, needle):
  return _error_probe(name, 'config value',
                      lambda base: [*QUICK, override], needle)


def _folder_probe(name, edit, needle, config_arg=None):
  def make_args(base):
    root = _folder(os.path.join(base, _slug(name) + '_data'))
    edit(root)
    if config_arg is not None:
      return [f'--config=configs/image_folder.py:{config_arg.format(root)}',
              *FOLDER]
    return _folder_args(root)
  return _error_probe(name, 'image folder', make_args, needle)


def _rm(path):
  shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)


def _truncate(path, size):
  with open(path, 'rb') as f:
    data = f.read()
  with open(path, 'wb') as f:
    f.write(data[:size])


def _warn_probe(name, edit, needle, extra=()):
  """A degenerate-but-legal folder: the run finishes, and warns."""
  def run(base):
    root = _folder(os.path.join(base, _slug(name) + '_data'))
    edit(root)
    done = _main([*_folder_args(root), *extra],
                 os.path.join(base, _slug(name)))
    if 'Traceback' in done.output:
      return 'traceback', done.last_line
    if done.returncode:
      return 'traceback', done.last_line
    warning = next((l for l in done.output.splitlines() if needle in l), None)
    if warning is None:
      return 'silent', f'finished without a warning naming {needle!r}'
    return 'correct run', warning.split('] ', 1)[-1][:160]
  return Probe(name, 'degenerate data', run)


CONFIG_PROBES = [
    _config_probe('unknown field', '--config.batch_sise=8', 'batch_sise'),
    _config_probe('unknown method', "--config.methods=('kdd',)", 'methods'),
    _config_probe('batch_size=0', '--config.batch_size=0', 'batch_size'),
    _config_probe('batch_size=-8', '--config.batch_size=-8', 'batch_size'),
    _config_probe('batch_size=abc', '--config.batch_size=abc', 'batch_size'),
    _config_probe('batch_size=8.5', '--config.batch_size=8.5', 'batch_size'),
    _config_probe('eval_batch_size=0', '--config.eval_batch_size=0',
                  'eval_batch_size'),
    _config_probe('checkpoint_every_steps=0',
                  '--config.checkpoint_every_steps=0',
                  'checkpoint_every_steps'),
    _config_probe('eval_every_steps=-1', '--config.eval_every_steps=-1',
                  'eval_every_steps'),
    _config_probe('peak_learning_rate<0', '--config.peak_learning_rate=-0.1',
                  'peak_learning_rate'),
    _config_probe('exploration.sigma<0', '--config.exploration.sigma=-1',
                  'exploration.sigma'),
    _config_probe('num_epochs=0', '--config.num_epochs=0', 'num_epochs'),
    _config_probe('teacher_labeler.num_epochs=0',
                  '--config.teacher_labeler.num_epochs=0',
                  'teacher_labeler.num_epochs'),
    _config_probe('imbalance_factor=0.5',
                  '--config.long_tail.imbalance_factor=0.5',
                  'long_tail.imbalance_factor'),
    _config_probe('unknown dataset', '--config.dataset.name=cifar',
                  'dataset.name'),
    _config_probe('unknown report_checkpoint',
                  '--config.report_checkpoint=worst', 'report_checkpoint'),
    _config_probe('distill.temperature=0', '--config.distill.temperature=0',
                  'distill.temperature'),
    _config_probe('mixup.concentration<0', '--config.mixup.concentration=-1',
                  'mixup.concentration'),
    _error_probe('missing config file',
                 'config value',
                 lambda base: ['--config=configs/nope.py'], 'nope.py'),
    _error_probe('image_folder.py without root', 'config value',
                 lambda base: ['--config=configs/image_folder.py'], 'root'),
    _error_probe('config argument typo', 'config value',
                 lambda base: [f'--config=configs/image_folder.py:root={base},'
                               'sise=16'], 'sise'),
]

FOLDER_PROBES = [
    _folder_probe('missing root', lambda root: shutil.rmtree(root), 'missing',
                  config_arg='root={}'),
    _folder_probe('missing train/',
                  lambda root: shutil.rmtree(os.path.join(root, 'train')),
                  'train'),
    _folder_probe('empty class folder', lambda root: [
        os.remove(os.path.join(root, 'train', 'c2', name))
        for name in os.listdir(os.path.join(root, 'train', 'c2'))], 'c2'),
    _folder_probe('one class only', lambda root: [
        shutil.rmtree(os.path.join(root, split, f'c{c}'))
        for split in ('train', 'test') for c in (1, 2, 3)], 'class'),
    _folder_probe('test class unknown to train', lambda root: _png(
        os.path.join(root, 'test', 'owl', 'x.png'), 1), 'owl'),
    _folder_probe('truncated PNG', lambda root: _truncate(
        os.path.join(root, 'train', 'c1', '0.png'), 200), '0.png'),
    _folder_probe('zero-byte PNG', lambda root: _truncate(
        os.path.join(root, 'train', 'c1', '0.png'), 0), '0.png'),
    _folder_probe('text file named .png', lambda root: open(
        os.path.join(root, 'train', 'c1', '0.png'), 'w').write('hello'),
                  '0.png'),
    _folder_probe('class with 1 train image', lambda root: [
        os.remove(os.path.join(root, 'train', 'c3', f'{i}.png'))
        for i in range(1, 6)], 'val_per_class'),
    _folder_probe('size=3', lambda root: None, 'size',
                  config_arg='root={},size=3'),
]

DEGENERATE_PROBES = [
    _warn_probe('head class of 2 images', lambda root: [
        os.remove(os.path.join(root, 'train', 'c0', f'{i}.png'))
        for i in range(2, 12)], 'images'),
    _warn_probe('symlinked class folder', lambda root: os.symlink(
        os.path.join(root, 'train', 'c0'),
        os.path.join(root, 'train', 'c0_copy')), 'c0_copy'),
    _warn_probe('images directly in train/', lambda root: _png(
        os.path.join(root, 'train', 'loose.png'), 2), 'loose.png'),
    _warn_probe('truncated PNG, skipped by flag', lambda root: _truncate(
        os.path.join(root, 'train', 'c1', '0.png'), 200), '0.png',
                extra=['--config.dataset.on_decode_error=skip']),
]


# --- Workdirs, processes and disks ---------------------------------------


class Reference:
  """One uninterrupted quick run: the results every resumed run must give."""

  def __init__(self, base):
    self.workdir = os.path.join(base, 'reference')
    self.done = _main(QUICK, self.workdir)
    if self.done.returncode:
      raise RuntimeError('the reference run failed:\n' + self.done.output)
    self.reports = _reports(self.workdir)


def _same_results(workdir, reference) -> tuple[str, str]:
  try:
    reports = _reports(workdir)
  except FileNotFoundError:
    return 'lost', 'no results.json'
  if reports != reference.reports:
    changed = [k for k in reference.reports if reports.get(k) !=
               reference.reports[k]]
    return 'lost', f'results differ from the uninterrupted run: {changed}'
  return 'correct run', 'results identical to the uninterrupted run'


def _killed_run(reference, kills=7):
  def run(base):
    workdir = os.path.join(base, 'killed')
    rng = random.Random(0)
    total = reference.done.seconds
    for _ in range(kills):
      process = subprocess.Popen(
          [sys.executable, 'main.py', *QUICK, f'--workdir={workdir}'],
          cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
          env=dict(os.environ, JAX_PLATFORMS='cpu'))
      try:
        process.wait(timeout=rng.uniform(0.15, 0.6) * total)
      except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGKILL)
        process.wait()
    done = _main(QUICK, workdir)
    if done.returncode:
      return ('traceback' if 'Traceback' in done.output else 'lost',
              done.last_line)
    outcome, detail = _same_results(workdir, reference)
    return outcome, f'{kills} SIGKILLs, then: {detail}'
  return Probe('SIGKILL at random moments, resumed', 'workdir', run)


def _changed_config(reference):
  def run(base):
    before = conftest.snapshot(reference.workdir)
    done = _main([*QUICK, '--config.distill.temperature=4'],
                 reference.workdir)
    return classify_error(done, 'distill.temperature', before,
                          conftest.snapshot(reference.workdir))
  return Probe('changed config into a finished workdir', 'workdir', run)


def _failed_start_then_corrected(reference):
  def run(base):
    workdir = os.path.join(base, 'failed_start')
    failed = _main([*QUICK, '--config.batch_size=0'], workdir)
    if failed.returncode == 0:
      return 'unchecked', 'batch_size=0 ran'
    done = _main(QUICK, workdir)
    if done.returncode:
      return ('traceback' if 'Traceback' in done.output else 'lost',
              f'the corrected command failed: {done.last_line}')
    return _same_results(workdir, reference)
  return Probe('failed start, then the corrected command', 'workdir', run)


def _two_writers(reference):
  def run(base):
    workdir = os.path.join(base, 'two_writers')
    first = subprocess.Popen(
        [sys.executable, 'main.py', *QUICK, f'--workdir={workdir}'],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        text=True, env=dict(os.environ, JAX_PLATFORMS='cpu'))
    lock = os.path.join(workdir, 'run.lock')
    deadline = time.time() + 300
    while time.time() < deadline and not (
        os.path.exists(lock) and open(lock).read()):
      time.sleep(0.2)
    second = _main(QUICK, workdir)
    _, errors = first.communicate(timeout=900)
    if first.returncode:
      return 'lost', f'the first run failed: {errors.strip()[-200:]}'
    if second.returncode == 0 or not second.last_line.startswith(
        f'FATAL: {workdir}: in use by process {first.pid}'):
      return ('traceback' if 'Traceback' in second.output else 'unchecked',
              f'second run: {second.last_line}')
    outcome, detail = _same_results(workdir, reference)
    return outcome, f'second refused ({second.last_line[:70]}...); {detail}'
  return Probe('two main.py on one workdir', 'workdir', run)


def _mount(path, options) -> bool:
  os.makedirs(path, exist_ok=True)
  return subprocess.run(['mount', '-t', 'tmpfs', '-o', options, 'tmpfs',
                         path], capture_output=True, check=False
                        ).returncode == 0


def _remount(path, options):
  subprocess.run(['mount', '-o', f'remount,{options}', path], check=True)


def _full_disk(reference):
  def run(base):
    mount = os.path.join(base, 'full_disk')
    used = sum(len(b) for b in conftest.snapshot(reference.workdir).values())
    if not _mount(mount, f'size={used // 2}'):
      return 'skipped', 'cannot mount a tmpfs (needs root)'
    try:
      workdir = os.path.join(mount, 'work')
      failed = _main(QUICK, workdir)
      if failed.returncode == 0:
        return 'unchecked', 'finished on a full disk'
      if not failed.last_line.startswith('FATAL: ') or (
          'no space left' not in failed.last_line):
        return 'traceback', failed.last_line
      # Orbax logs, and TensorStore's threads print, the failed writes'
      # tracebacks before our last line; counted, not hidden.
      noise = failed.output.count('Traceback (most recent call last)')
      _remount(mount, 'size=512m')
      done = _main(QUICK, workdir)
      if done.returncode:
        return 'lost', f'resume after space returned: {done.last_line}'
      outcome, detail = _same_results(workdir, reference)
      return outcome, (f'last line {failed.last_line[:90]}... (above it, '
                       f'{noise} tracebacks printed by orbax and TensorStore '
                       f'threads); space returned, resumed: {detail}')
    finally:
      subprocess.run(['umount', mount], check=False)
  return Probe('full disk, then space returns', 'disk', run)


def _read_only(reference, finished):
  def run(base):
    mount = os.path.join(base, 'read_only_' + str(finished))
    if not _mount(mount, 'size=512m'):
      return 'skipped', 'cannot mount a tmpfs (needs root)'
    try:
      workdir = os.path.join(mount, 'work')
      shutil.copytree(reference.workdir, workdir, symlinks=True)
      args = QUICK if finished else [
          *QUICK[:1], "--config.methods=('onehot','kd','tgt_random',"
          "'tgt_gradient')", *QUICK[2:]]
      _remount(mount, 'ro')
      done = _main(args, workdir)
      if finished:
        if done.returncode or 'Traceback' in done.output:
          return 'traceback', done.last_line
        return 'correct run', 'reported its results: ' + (
            'ok' if _reports(workdir) == reference.reports else 'CHANGED')
      return classify_error(done, 'read-only', {}, {})
    finally:
      subprocess.run(['umount', mount], check=False)
  name = ('read-only finished workdir, same config' if finished else
          'read-only workdir, a method left to train')
  return Probe(name, 'disk', run)


# --- Tools -------------------------------------------------------------------


def _tool_error(name, module, make_args, needle):
  def run(base):
    done = _tool(module, *make_args(base))
    return classify_error(done, needle, {}, {})
  return Probe(name, 'tools', run)


def _tool_probes(reference):
  workdir = reference.workdir

  def export(base):
    out = os.path.join(base, 'export_kd')
    if not os.path.exists(out):
      done = _tool('export', f'--workdir={workdir}', '--method=kd',
                   f'--out={out}')
      if done.returncode:
        raise RuntimeError(done.output)
    return out

  def predict_skips(base):
    images = os.path.join(base, 'predict_images')
    for i in range(4):
      _png(os.path.join(images, f'{i}.png'), i, size=8)
    _truncate(os.path.join(images, '1.png'), 60)
    out = os.path.join(base, 'predictions.csv')
    done = _tool('predict', f'--export={export(base)}', f'--images={images}',
                 f'--out={out}')
    if 'Traceback' in done.output or done.returncode:
      return 'traceback', done.last_line
    with open(out) as f:
      rows = f.read().splitlines()
    if len(rows) != 4 or '1.png' not in done.output:
      return 'silent', f'{len(rows)} CSV lines; 1.png not named'
    return 'correct run', (f'{len(rows) - 1} predictions written, 1.png '
                           'skipped and named')

  def evaluate(base):
    before = conftest.snapshot(workdir)
    done = _tool('evaluate', f'--workdir={workdir}',
                 f'--out={os.path.join(base, "evaluated")}')
    if done.returncode or 'Traceback' in done.output:
      return 'traceback', done.last_line
    if conftest.snapshot(workdir) != before:
      return 'lost', 'evaluate changed the workdir'
    return 'correct run', 'evaluated; workdir unchanged'

  def broken_images(base):
    images = os.path.join(base, 'predict_broken')
    _png(os.path.join(images, '0.png'), 0, size=8)
    _truncate(os.path.join(images, '0.png'), 60)
    return [f'--export={export(base)}', f'--images={images}',
            f'--out={os.path.join(base, "p.csv")}', '--on_decode_error=error']

  return [
      Probe('evaluate a finished workdir', 'tools', evaluate),
      Probe('predict, one truncated PNG', 'tools', predict_skips),
      _tool_error('predict --on_decode_error=error', 'predict', broken_images,
                  '0.png'),
      _tool_error('predict, missing image folder', 'predict', lambda base: [
          f'--export={export(base)}', f'--images={base}/nope',
          f'--out={base}/q.csv'], 'nope'),
      _tool_error('export an untrained method', 'export', lambda base: [
          f'--workdir={workdir}', '--method=tgt_gradient',
          f'--out={base}/e2'], 'tgt_gradient'),
      _tool_error('export onto an existing --out', 'export', lambda base: [
          f'--workdir={workdir}', '--method=kd', f'--out={export(base)}'],
                  'export_kd'),
      _tool_error('evaluate a missing workdir', 'evaluate', lambda base: [
          f'--workdir={base}/nowhere'], 'nowhere'),
      _tool_error('sample a missing workdir', 'sample', lambda base: [
          f'--workdir={base}/nowhere', f'--out={base}/s.png'], 'nowhere'),
  ]


# --- The battery ----------------------------------------------------------


def run_battery(base, only=None) -> tuple[list[dict], float]:
  """(one row per probe, the reference run's seconds)."""
  reference = Reference(base)
  probes = [*CONFIG_PROBES, *FOLDER_PROBES, *DEGENERATE_PROBES,
            _changed_config(reference), _failed_start_then_corrected(reference),
            _two_writers(reference), _killed_run(reference),
            _full_disk(reference), _read_only(reference, True),
            _read_only(reference, False), *_tool_probes(reference)]
  rows = []
  for probe in probes:
    if only and probe.name not in only:
      continue
    start = time.time()
    try:
      outcome, detail = probe.run(base)
    except Exception as error:  # pylint: disable=broad-except
      outcome, detail = 'traceback', f'the probe itself failed: {error!r}'
    rows.append({'probe': probe.name, 'group': probe.group,
                 'outcome': outcome, 'detail': detail,
                 'seconds': round(time.time() - start, 1)})
    print(f'{outcome:12s} {rows[-1]["seconds"]:6.1f}s  {probe.name}: '
          f'{detail[:150]}', flush=True)
  return rows, reference.done.seconds


def table(rows, command, reference_seconds) -> str:
  counts = collections.Counter(row['outcome'] for row in rows)
  date = datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d')
  lines = [
      '# Hostile-input probes', '',
      f'Written by `{command}` on {date} (CPU; the reference run took '
      f'{reference_seconds:.0f} s). See the docstring of '
      '`tests/hostile_probes.py` for what each outcome means.', '',
      f'{len(rows)} probes: ' + ', '.join(
          f'{counts[o]} {o}' for o in OUTCOMES if counts[o]) + '.', '',
      '| group | probe | outcome | s | what it printed or did |',
      '| --- | --- | --- | ---: | --- |']
  for row in rows:
    detail = row['detail'].replace('|', '\\|').replace('\n', ' ')
    lines.append(f"| {row['group']} | {row['probe']} | {row['outcome']} | "
                 f"{row['seconds']:.0f} | {detail} |")
  return '\n'.join(lines) + '\n'


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--out', default='docs/probes.md')
  parser.add_argument('--only', default='',
                      help='comma-separated probe names (default: all)')
  parser.add_argument('--keep', default=None,
                      help='work here and keep it (default: a temporary dir)')
  args = parser.parse_args()
  base = args.keep or tempfile.mkdtemp(prefix='tgt_probes_')
  os.makedirs(base, exist_ok=True)
  only = set(filter(None, args.only.split(',')))
  try:
    rows, reference_seconds = run_battery(base, only)
  finally:
    if not args.keep:
      shutil.rmtree(base, ignore_errors=True)
  command = 'python tests/hostile_probes.py' + (
      f' --only={args.only}' if args.only else '')
  with open(os.path.join(REPO, args.out), 'w') as f:
    f.write(table(rows, command, reference_seconds))
  print(json.dumps(collections.Counter(r['outcome'] for r in rows)))


if __name__ == '__main__':
  main()
