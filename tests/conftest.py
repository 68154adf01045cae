"""Shared fixtures: a tiny TGT config and randomly initialised frozen teachers.

Nothing here trains. The step-level tests need a student, a labeler, an
encoder and a (spectral-norm-free, i.e. frozen-teacher) generator with the
right shapes; random initialisation gives them in about a second.
"""

import os

# Before jax is imported anywhere: the tests are CPU tests.
os.environ.setdefault('JAX_PLATFORMS', 'cpu')

import dataclasses  # pylint: disable=g-import-not-at-top,g-bad-import-order
from typing import Any

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
import ml_collections  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top
import optax  # pylint: disable=g-import-not-at-top
import pytest  # pylint: disable=g-import-not-at-top

from tgt_jax import train_steps  # pylint: disable=g-import-not-at-top
from tgt_jax.models import build  # pylint: disable=g-import-not-at-top

NUM_CLASSES = 10
TINY_BATCH_SIZE = 8
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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
  """digits_lt's quick config with every network shrunk to a few channels.

  Only shapes and widths are overridden here, plus short schedules; the
  hyper-parameters that the demo tunes (learning rates, loss weights,
  exploration scales) are whatever configs/digits_lt.py says, and a test that
  depends on one of them sets it itself.
  """
  # Imported here so that a broken demo config fails only the tests that use
  # it, not the collection of every test module.
  from configs import digits_lt  # pylint: disable=g-import-not-at-top
  config = digits_lt.get_config('quick')
  config.batch_size = TINY_BATCH_SIZE
  config.eval_batch_size = TINY_BATCH_SIZE
  config.num_epochs = 1
  config.log_every_steps = 1
  config.checkpoint_every_steps = 1000

  for section in (config.student, config.teacher_labeler):
    section.depth = 18
    section.width_multiplier = 0.0625  # 4..32 channels.
  config.teacher_labeler.batch_size = TINY_BATCH_SIZE
  config.teacher_labeler.num_epochs = 1

  gen = config.teacher_generator
  gen.image_size = 16
  gen.channels = 1
  gen.latent_dim = 12  # 3 chunks of 4.
  gen.base_channels = 4
  gen.channel_multipliers = (4, 2, 1)  # 4 -> 8 -> 16.
  gen.embedding_dim = 8
  gen.attention_resolution = 8
  gen.encoder_image_size = 16
  gen.encoder_depth = 18
  gen.encoder_width_multiplier = 0.0625
  gen.encoder_head_hidden = (16,)
  gen.discriminator_base_channels = 4
  gen.discriminator_channel_multipliers = (1, 2, 4)
  gen.discriminator_latent_hidden = (16, 16)
  gen.discriminator_joint_hidden = (16,)
  gen.batch_size = TINY_BATCH_SIZE
  gen.num_epochs = 1
  return config


def random_variables(module, rng: jax.Array, input_shape) -> dict[str, Any]:
  """Variables shaped like `module.init`'s, filled without compiling init.

  Jitting a network's init costs one to two seconds of XLA compile time per
  network on CPU; this fills the same tree with NumPy instead, in the spirit
  of Flax's defaults: kernels LeCun-normal (variance 1 / fan-in), BatchNorm
  scales and running variances 1, running means 0, and small random biases,
  offsets and attention gains (so no path is switched off).
  """
  abstract = jax.eval_shape(
      lambda k: module.init(k, jnp.zeros(input_shape), train=False), rng)
  numpy_rng = np.random.default_rng(np.asarray(jax.random.key_data(rng)))

  def fill(path, leaf):
    name = path[-1].key
    if leaf.ndim >= 2:
      fan_in = int(np.prod(leaf.shape[:-1]))
      value = numpy_rng.normal(size=leaf.shape) / np.sqrt(fan_in)
    elif name in ('scale', 'var'):
      value = np.ones(leaf.shape)
    elif name == 'mean':
      value = np.zeros(leaf.shape)
    else:
      value = 0.1 * numpy_rng.normal(size=leaf.shape)
    return jnp.asarray(value, leaf.dtype)

  return jax.tree_util.tree_map_with_path(fill, abstract)


@dataclasses.dataclass(frozen=True)
class TinyTeachers:
  """Step-level test material: modules, frozen teachers, a student state."""
  config: ml_collections.ConfigDict
  models: train_steps.StepModels
  teachers: dict[str, Any]
  state: train_steps.TrainState
  batch: dict[str, jax.Array]


def make_tiny_teachers(config: ml_collections.ConfigDict,
                       seed: int = 0) -> TinyTeachers:
  """Random-init student, labeler, encoder and frozen generator for `config`.

  The optimiser is plain SGD with a constant learning rate, so one step always
  moves the parameters whatever the config's warm-up says.
  """
  keys = [jax.random.PRNGKey(seed * 5 + i) for i in range(4)]
  gen = config.teacher_generator
  labeler = build.classifier(config.teacher_labeler, NUM_CLASSES)
  student = build.classifier(config.student, NUM_CLASSES)
  encoder = build.encoder(gen)
  generator = build.generator(gen, spectral_norm=False)

  channels = config.dataset.channels
  lab = config.teacher_labeler
  enc_size = gen.encoder_image_size
  labeler_vars = random_variables(
      labeler, keys[0], (1, lab.image_size, lab.image_size, channels))
  encoder_vars = random_variables(encoder, keys[1],
                                  (1, enc_size, enc_size, gen.channels))
  generator_vars = random_variables(generator, keys[2], (1, gen.latent_dim))
  teachers = {'labeler': labeler_vars, 'encoder': encoder_vars,
              'generator': generator_vars}

  tx = optax.sgd(0.1, momentum=0.9)
  models = train_steps.StepModels(
      student=student, student_config=config.student, tx=tx, labeler=labeler,
      labeler_config=lab, generator=generator, encoder=encoder,
      encoder_image_size=enc_size)
  c = config.student
  student_vars = random_variables(
      student, keys[3], (1, c.image_size, c.image_size, channels))
  state = train_steps.TrainState(
      step=jnp.zeros((), jnp.int32), params=student_vars['params'],
      batch_stats=student_vars['batch_stats'],
      # Zeros (SGD momentum), shaped by tx.init without running it op by op.
      opt_state=jax.tree.map(
          lambda x: jnp.asarray(np.zeros(x.shape, x.dtype)),
          jax.eval_shape(tx.init, student_vars['params'])))

  data_rng = np.random.default_rng(seed)
  size = config.dataset.image_size
  batch = {
      'image': jnp.asarray(data_rng.integers(
          0, 256, (config.batch_size, size, size, channels), np.uint8)),
      'label': jnp.asarray(data_rng.integers(
          0, NUM_CLASSES, (config.batch_size,), np.int32)),
  }
  return TinyTeachers(config=config, models=models, teachers=teachers,
                      state=state, batch=batch)


@pytest.fixture(scope='session')
def tiny_teachers() -> TinyTeachers:
  """One shared tiny setup; its arrays are immutable, so sharing is safe."""
  return make_tiny_teachers(tiny_config())


def tree_allclose(a, b, rtol: float = 0.0, atol: float = 0.0) -> bool:
  """Same structure and every leaf within tolerance (exact by default)."""
  if jax.tree.structure(a) != jax.tree.structure(b):
    return False
  return all(
      np.allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)
      for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
