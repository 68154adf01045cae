"""What each method's train step costs, against what its arithmetic costs.

  python -m tgt_jax.benchmark --config=configs/digits_lt.py [--steps=50]
      [--config.<field>=<value> ...]

For every method of the config (and gradient exploration with 1, 2 and 4
steps) it builds the student as training does (`student_setup.create`: the
config's loss terms, long-tail adjustment and optimiser included), compiles
its jitted train step, then measures, in one process:

- step time (median and 10th-90th percentile over `--steps` steps after
  warm-up) and real images per second;
- FLOPs per step from XLA's cost analysis of the lowered step (before the
  device's own passes, so GPU convolutions count too; `compute.step_flops`,
  the count training records in results.json), and the achieved FLOP/s;
- the device's peak, measured here by a large jitted matrix product in the
  config's dtype, and the achieved fraction of it;
- compile time, the compiled step's memory analysis, the process's peak RSS;
- the input pipeline alone, in images per second (`--synthetic_input`
  times the steps on random batches instead, loading no data).

Teachers are randomly initialised: timing and FLOPs do not depend on their
values, and nothing needs training first. It prints a table and, as its last
line, one JSON object. It fails loudly if a step is compiled more than once.
"""

import json
import resource
import sys
import time
from typing import Any

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
from ml_collections import config_flags
import numpy as np

from tgt_jax import compute
from tgt_jax import config_lib
from tgt_jax import sharding
from tgt_jax import student_setup
from tgt_jax import teachers as teachers_lib
from tgt_jax.data import dataset as dataset_lib
from tgt_jax.data import loading
from tgt_jax.models import build

FLAGS = flags.FLAGS


def define_flags():
  """The command line (only when run as a program: tests import this
  module beside others that define --config)."""
  config_flags.DEFINE_config_file('config', None, 'Experiment config (required '
                                  'unless --table_from).',
                                  lock_config=True)
  flags.DEFINE_integer('steps', 30, 'Timed steps per method, after warm-up.')
  flags.DEFINE_integer('warmup_steps', 3, 'Untimed steps after compilation.')
  flags.DEFINE_list('gradient_steps', ['1', '2', '4'],
                    'Exploration steps of the extra tgt_gradient variants '
                    '(the config\'s own count is the tgt_gradient row).')
  flags.DEFINE_bool('input_only', False,
                    'Measure only the input pipeline (paper configs on CPU).')
  flags.DEFINE_string('table_from', None,
                      'Only print the table of a saved report (a file holding '
                      'the JSON line a run printed last), e.g. '
                      'docs/benchmarks/*.json.')
  flags.DEFINE_bool('synthetic_input', False,
                    'Time the steps on random batches, loading no data (for '
                    'machines without TensorFlow, e.g. an accelerator host).')
  flags.DEFINE_bool('cached_latents', True,
                    'Also time tgt_random and tgt_gradient with E(x) cached '
                    '(exploration.cache_latents), i.e. no encoder pass.')


class RecompilationError(RuntimeError):
  """A step was compiled again after its first call."""


def measure_peak_flops(dtype, repeats: int = 10) -> float:
  """FLOP/s of a large jitted matmul in `dtype`: the device's practical
  peak for the step's arithmetic (float32 may use TF32 on GPUs)."""
  on_cpu = jax.devices()[0].platform == 'cpu'
  size = 1024 if on_cpu else 8192
  a = jnp.ones((size, size), dtype)
  matmul = jax.jit(lambda x: x @ x)
  matmul(a).block_until_ready()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    matmul(a).block_until_ready()
    times.append(time.perf_counter() - start)
  return 2.0 * size**3 / float(np.median(times))


CACHED = '+cached_latents'


def _method_config(config, method: str):
  """`tgt_gradient@K` is tgt_gradient with K exploration steps; a
  '+cached_latents' suffix feeds E(x) with the batch (timed separately)."""
  name, _, steps = method.removesuffix(CACHED).partition('@')
  method_config = config
  if steps:
    method_config = config.copy_and_resolve_references()
    method_config.exploration.num_steps = int(steps)
  return name, method_config


def method_setup(config, name: str, data: student_setup.StudentData,
                 teachers, mesh, variables: dict[str, Any]
                 ) -> student_setup.StudentSetup:
  """The student benchmark row `name` times: built by the function training
  builds its students with, so with the config's loss terms, long-tail
  adjustment and optimiser (only its initial variables are random)."""
  method, method_config = _method_config(config, name)
  return student_setup.create(method_config, method, data, teachers, mesh,
                              jax.random.PRNGKey(config.seed),
                              variables=variables)


def _memory_bytes(compiled) -> int:
  """Device bytes the compiled step holds: arguments, outputs, temporaries."""
  stats = compiled.memory_analysis()
  if stats is None:
    return 0
  return int(stats.argument_size_in_bytes + stats.output_size_in_bytes +
             stats.temp_size_in_bytes - stats.alias_size_in_bytes)


def benchmark_method(step: compute.Step, state, batches, num_steps: int,
                     warmup_steps: int) -> dict[str, float]:
  """Compiles, warms up and times one step as training calls it (its FLOPs
  are those training records); checks that it never compiles again."""
  start = time.perf_counter()
  state, metrics = step(state, batches[0])
  jax.block_until_ready(metrics)
  first_call_s = time.perf_counter() - start
  flops = step.flops(state, batches[0])
  # Memory of the executable the call above compiled (lowering and
  # compiling again hit JAX's caches).
  peak_bytes = _memory_bytes(step.jitted.lower(
      state, *step.before, batches[0], *step.after).compile())
  for i in range(warmup_steps):
    state, metrics = step(state, batches[i % len(batches)])
  jax.block_until_ready(metrics)
  times = []
  for i in range(num_steps):
    begin = time.perf_counter()
    state, metrics = step(state, batches[i % len(batches)])
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - begin)
  compiled = step.jitted._cache_size()  # pylint: disable=protected-access
  if compiled != 1:
    raise RecompilationError(
        f'The step was compiled {compiled} times; something in its '
        'arguments (shape, dtype, sharding, a Python value) changes per step.')
  times = np.asarray(times)
  compile_s = max(0.0, first_call_s - float(np.median(times)))
  return {'step_ms': 1e3 * float(np.median(times)),
          'step_ms_p10': 1e3 * float(np.percentile(times, 10)),
          'step_ms_p90': 1e3 * float(np.percentile(times, 90)),
          'flops': flops, 'compile_s': compile_s, 'peak_bytes': peak_bytes}


def benchmark_input(dataset: dataset_lib.Dataset, batch_size: int, seed: int,
                    mesh, num_batches: int = 50) -> float:
  """Images per second the student's train input delivers, on device.

  The same `Dataset.train_batches` training reads: in memory (gather and
  augment) or a tf.data stream (decode, random-resized crop, flip, batch).
  The first batch (stream start-up) is not timed.
  """
  batch_fn = dataset.train_batches('student', batch_size, seed)
  batch = sharding.put_batch(batch_fn(0), mesh)
  jax.block_until_ready(batch)
  start = time.perf_counter()
  for i in range(1, num_batches + 1):
    batch = sharding.put_batch(batch_fn(i), mesh)
  jax.block_until_ready(batch)
  return num_batches * batch_size / (time.perf_counter() - start)


# Examples a synthetic run's indices (and its latent cache) range over.
SYNTHETIC_EXAMPLES = 1024


def synthetic_batches(config, num_classes: int, num: int = 4,
                      num_examples: int = SYNTHETIC_EXAMPLES
                      ) -> list[dict[str, np.ndarray]]:
  """Random uint8 batches of the config's shape (no input pipeline), with
  example indices for a latent cache of `num_examples`."""
  rng = np.random.default_rng(0)
  size, channels = config.dataset.image_size, config.dataset.channels
  rows = sharding.local_slice(config.batch_size)
  return [{'image': rng.integers(0, 256, (config.batch_size, size, size,
                                          channels), np.uint8)[rows],
           'label': rng.integers(0, num_classes, config.batch_size,
                                 dtype=np.int32)[rows],
           'index': rng.integers(0, num_examples, config.batch_size,
                                 dtype=np.int32)[rows]}
          for _ in range(num)]


SYNTHETIC_CLASSES = {'imagenet_lt': 1000, 'places_lt': 365, 'sun_lt': 717}


def run_benchmark(config, num_steps: int, warmup_steps: int,
                  gradient_steps=(1, 2, 4), cached_latents: bool = True,
                  input_only: bool = False,
                  synthetic_input: bool = False) -> dict[str, Any]:
  """The benchmark of every method of `config`; returns the JSON object.

  `input_only`: measure the input pipeline alone (e.g. a paper config with
  fake data on a CPU, where its steps would take minutes each).
  `synthetic_input`: time the steps on random batches without loading any
  data (machines without TensorFlow); the class count is the benchmark's.
  """
  config = config_lib.resolve(config)
  mesh = sharding.create_mesh()
  sharding.check_batch_size(config.batch_size, mesh)
  report = {'device': f'{jax.device_count()} x '
                      f'{jax.devices()[0].device_kind}',
            'batch_size': config.batch_size, 'dtype': config.dtype}
  if synthetic_input:
    num_classes = SYNTHETIC_CLASSES.get(
        config.dataset.name, config.dataset.get('fake_num_classes', 10))
    host_batches = synthetic_batches(config, num_classes)
    size = config.dataset.image_size
    data = student_setup.StudentData.uniform(
        num_classes, (size, size, config.dataset.channels),
        num_examples=SYNTHETIC_EXAMPLES)
  else:
    dataset = loading.load_dataset(config)
    report['input_images_per_s'] = benchmark_input(
        dataset, config.batch_size, config.seed, mesh)
    if input_only:
      return report
    data = student_setup.StudentData.of(dataset)
    batch_fn = dataset.train_batches('student', config.batch_size,
                                     config.seed)
    host_batches = [batch_fn(i) for i in range(4)]
    if 'index' not in host_batches[0]:
      host_batches = [dict(b, index=np.zeros(len(b['label']), np.int32))
                      for b in host_batches]
  batches = [sharding.put_batch(b, mesh) for b in host_batches]
  teachers = sharding.put_replicated(
      teachers_lib.random_teachers(config, data.num_classes,
                                   data.image_shape[-1]), mesh)
  # A latent cache as training would hold it: timing does not depend on
  # the values, only on the gather replacing the encoder pass.
  cached = teachers.replace(latents=sharding.put_replicated(
      jnp.zeros((data.num_examples, config.teacher_generator.latent_dim)),
      mesh))
  variables = student_setup.random_variables(
      student_setup.classifier(config, data), data.image_shape[-1], seed=4)

  # tgt_gradient at the config's own step count is already in the list.
  default_steps = (config.exploration.num_steps
                   if 'tgt_gradient' in config.methods else None)
  names = list(config.methods) + [f'tgt_gradient@{k}' for k in gradient_steps
                                  if k != default_steps]
  if cached_latents:
    names += [m + CACHED for m in ('tgt_random', 'tgt_gradient')
              if m in config.methods]
  results = {}
  for name in names:
    setup = method_setup(config, name, data, teachers, mesh, variables)
    result = benchmark_method(
        setup.stage_step(cached if name.endswith(CACHED) else teachers),
        setup.state, batches, num_steps, warmup_steps)
    result['images_per_s'] = config.batch_size / (result['step_ms'] / 1e3)
    results[name] = result

  peak_flops = measure_peak_flops(build.compute_dtype(config))
  for result in results.values():
    result['flops_fraction'] = None if result['flops'] is None else (
        result['flops'] / (result['step_ms'] / 1e3) / peak_flops)
  return {
      **report, 'peak_flops': peak_flops, 'methods': results,
      'process_peak_rss_bytes': resource.getrusage(
          resource.RUSAGE_SELF).ru_maxrss * 1024,
  }


def _gflop(flops: float | None) -> str:
  if flops is None:  # XLA gave no count.
    return '-'
  gflop = flops / 1e9
  return f'{gflop:,.0f}' if gflop >= 100 else f'{gflop:.3f}'


def table(report: dict[str, Any]) -> str:
  """A plain-text table of the report, with the cost ratios against kd."""
  source = ('synthetic input' if 'input_images_per_s' not in report else
            f'input pipeline {report["input_images_per_s"]:.0f} images/s')
  if 'methods' not in report:
    return f'device: {report["device"]}; {source}'
  lines = [f'device: {report["device"]}; batch {report["batch_size"]}, '
           f'{report["dtype"]}; peak ({report["dtype"]} matmul) '
           f'{report["peak_flops"]:.3g} FLOP/s; {source}',
           f'{"method":<28}{"step ms":>9}{"p10-p90":>17}{"img/s":>8}'
           f'{"GFLOP":>10}{"% peak":>8}{"compile s":>10}{"MiB":>9}'
           f'{"t/t_kd":>8}{"F/F_kd":>8}']
  methods = report['methods']
  kd = methods.get('kd')
  for name, r in methods.items():
    ratio_t = r['step_ms'] / kd['step_ms'] if kd else float('nan')
    ratio_f = (r['flops'] / kd['flops'] if kd and kd['flops'] and r['flops']
               else float('nan'))
    fraction = (float('nan') if r['flops_fraction'] is None else
                r['flops_fraction'])
    lines.append(
        f'{name:<28}{r["step_ms"]:>9.2f}'
        f'{r["step_ms_p10"]:>9.2f}-{r["step_ms_p90"]:<7.2f}'
        f'{r["images_per_s"]:>8.0f}{_gflop(r["flops"]):>10}'
        f'{100 * fraction:>8.1f}{r["compile_s"]:>10.1f}'
        f'{r["peak_bytes"] / 2**20:>9.0f}{ratio_t:>8.2f}{ratio_f:>8.2f}')
  return '\n'.join(lines)


def main(argv):
  del argv
  if FLAGS.table_from:
    with open(FLAGS.table_from) as f:
      print(table(json.load(f)))
    return
  report = run_benchmark(FLAGS.config, FLAGS.steps, FLAGS.warmup_steps,
                         tuple(int(k) for k in FLAGS.gradient_steps),
                         FLAGS.cached_latents, FLAGS.input_only,
                         FLAGS.synthetic_input)
  print(table(report))
  sys.stdout.flush()
  print(json.dumps(report))


if __name__ == '__main__':
  define_flags()
  app.run(main)
