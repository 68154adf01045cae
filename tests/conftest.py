"""Shared fixtures and the test tiers.

Tiers: the default run (`JAX_PLATFORMS=cpu pytest`) is the fast tier: unit
tests on tiny models and in-memory data, under 3 minutes on 2 CPU cores.
pytest-xdist runs them on one worker per core (`-n auto` in pyproject.toml;
`-n 0` runs them in this process, for a debugger), so no test may depend on
another's files or on running first.
Tests marked `integration` (whole stages, several processes, converters
against real-size models) and `e2e` (python main.py as a user runs it) run
with the one switch `--all-tiers`:

  JAX_PLATFORMS=cpu pytest --all-tiers

Nothing here trains: the step-level tests need a student, a labeler, an
encoder and a frozen generator with the right shapes, and random weights
(filled with NumPy, no init compile) give them in about a second.
"""

import os

# Before jax is imported anywhere: the tests are CPU tests.
os.environ.setdefault('JAX_PLATFORMS', 'cpu')

import dataclasses  # pylint: disable=g-import-not-at-top,g-bad-import-order

import jax  # pylint: disable=g-import-not-at-top

# Tiny models: XLA's compile time dominates the suite, and the tests check
# values, not speed. The one full-size step compiles with the optimisations
# back on (test_streams.py).
jax.config.update('jax_disable_most_optimizations', True)

import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
import ml_collections  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top
import optax  # pylint: disable=g-import-not-at-top
import pytest  # pylint: disable=g-import-not-at-top

from tgt_jax import config_lib  # pylint: disable=g-import-not-at-top
from tgt_jax import sharding  # pylint: disable=g-import-not-at-top
from tgt_jax import student_setup as student_setup_lib  # pylint: disable=g-import-not-at-top
from tgt_jax import teachers as teachers_lib  # pylint: disable=g-import-not-at-top
from tgt_jax import train_steps  # pylint: disable=g-import-not-at-top
from tgt_jax.models import build  # pylint: disable=g-import-not-at-top
from tgt_jax.models import classifier as classifier_lib  # pylint: disable=g-import-not-at-top

NUM_CLASSES = 10
TINY_BATCH_SIZE = 8
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SLOW_TIERS = ('integration', 'e2e')


def pytest_addoption(parser):
  parser.addoption('--all-tiers', action='store_true', default=False,
                   help='Also run the integration and end-to-end tiers.')


def pytest_collection_modifyitems(config, items):
  if config.getoption('--all-tiers'):
    return
  skip = pytest.mark.skip(reason='slow tier: run with --all-tiers')
  for item in items:
    if any(tier in item.keywords for tier in SLOW_TIERS):
      item.add_marker(skip)


def subprocess_env(**variables: str) -> dict[str, str]:
  """The environment of a test's subprocess (main.py, a helper script).

  CPU JAX, the repository and tests/ importable (for conftest and the
  tests' config files), plus `variables`.
  """
  env = dict(os.environ, JAX_PLATFORMS='cpu', **variables)
  env['PYTHONPATH'] = os.pathsep.join(
      [REPO, os.path.join(REPO, 'tests')] +
      ([env['PYTHONPATH']] if env.get('PYTHONPATH') else []))
  return env


def tiny_config() -> ml_collections.ConfigDict:
  """The digits demo shrunk by `config_lib.shrink(config, 'tiny')`: every
  network a few channels wide, batches of 8, logging every step.

  Only sizes and schedules change; the hyper-parameters the demo sets
  (learning rates, loss weights, exploration scales) stay, and a test that
  depends on one of them sets it itself. Not resolved: see `resolved`.
  """
  # Imported here so that a broken demo config fails only the tests that use
  # it, not the collection of every test module.
  from configs import digits_lt  # pylint: disable=g-import-not-at-top
  config = digits_lt.get_config()
  config_lib.shrink(config, 'tiny')
  return config


def resolved(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  return config_lib.resolve(config)


@dataclasses.dataclass(frozen=True)
class TinySetup:
  """Step-level test material: a student, frozen teachers, a state, a batch."""
  config: ml_collections.ConfigDict  # Resolved.
  student: classifier_lib.Classifier
  tx: optax.GradientTransformation
  teachers: teachers_lib.Teachers
  state: train_steps.TrainState
  batch: dict[str, jax.Array]


def make_tiny_setup(config: ml_collections.ConfigDict | None = None,
                    seed: int = 0) -> TinySetup:
  """Random student, labeler, encoder and frozen generator for `config`.

  The optimiser is plain SGD with momentum at a constant rate, so one step
  always moves the parameters whatever the config's warm-up says.
  """
  config = resolved(config or tiny_config())
  channels = config.dataset.channels
  teachers = teachers_lib.random_teachers(config, NUM_CLASSES, channels,
                                          seed=seed)
  student = build.classifier(config.student, NUM_CLASSES)
  tx = optax.sgd(0.1, momentum=0.9)
  size = student.image_size
  variables = teachers_lib.random_variables(
      student.network, (1, size, size, channels), seed * 5 + 3)
  state = train_steps.TrainState(
      step=jnp.zeros((), jnp.int32), params=variables['params'],
      batch_stats=variables['batch_stats'],
      # Zeros (SGD momentum), shaped by tx.init without running it op by op.
      opt_state=jax.tree.map(
          lambda x: jnp.asarray(np.zeros(x.shape, x.dtype)),
          jax.eval_shape(tx.init, variables['params'])))
  data_rng = np.random.default_rng(seed)
  size = config.dataset.image_size
  batch = {
      'image': jnp.asarray(data_rng.integers(
          0, 256, (config.batch_size, size, size, channels), np.uint8)),
      'label': jnp.asarray(data_rng.integers(
          0, NUM_CLASSES, (config.batch_size,), np.int32)),
      'index': jnp.arange(config.batch_size, dtype=jnp.int32),
  }
  return TinySetup(config=config, student=student, tx=tx, teachers=teachers,
                   state=state, batch=batch)


def student_setup(tiny: TinySetup, method: str,
                  config: ml_collections.ConfigDict | None = None, mesh=None,
                  donate: bool = False) -> student_setup_lib.StudentSetup:
  """`student_setup.create` of `method` under `config` (resolved; default
  the tiny one), as training builds a student (the config's loss terms and
  long-tail adjustment, one count per class), but from the tiny student's
  variables and with its optimiser. The step keeps its input state unless
  told, so the setup's state can be stepped from again."""
  config = config or tiny.config
  image_shape = tuple(tiny.batch['image'].shape[1:])
  return student_setup_lib.create(
      config, method,
      student_setup_lib.StudentData.uniform(NUM_CLASSES, image_shape,
                                            config.batch_size),
      tiny.teachers, mesh or sharding.create_mesh(), jax.random.PRNGKey(0),
      variables={'params': tiny.state.params,
                 'batch_stats': tiny.state.batch_stats},
      tx=tiny.tx, donate=donate)


@pytest.fixture(scope='session')
def tiny() -> TinySetup:
  """One shared tiny setup; its arrays are immutable, so sharing is safe."""
  return make_tiny_setup()


def snapshot(directory):
  """{relative path: bytes} of every file under `directory`."""
  files = {}
  for root, _, names in os.walk(directory):
    for name in names:
      path = os.path.join(root, name)
      with open(path, 'rb') as f:
        files[os.path.relpath(path, directory)] = f.read()
  return files


def tree_allclose(a, b, rtol: float = 0.0, atol: float = 0.0) -> bool:
  """Same structure and every leaf within tolerance (exact by default)."""
  if jax.tree.structure(a) != jax.tree.structure(b):
    return False
  return all(
      np.allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)
      for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def timeless(results: dict) -> dict:
  """results.json without the wall times: the one value two runs of a
  config cannot share (every other entry, FLOPs included, is exact)."""
  return {name: ({**value, 'compute': {k: v for k, v in value['compute'].items()
                                       if k != 'wall_s'}}
                 if isinstance(value, dict) and 'compute' in value else value)
          for name, value in results.items()}


def host(tree):
  return jax.tree.map(np.asarray, jax.device_get(tree))
