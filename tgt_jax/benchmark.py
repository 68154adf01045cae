"""What each method's train step costs, against what its arithmetic costs.

  python -m tgt_jax.benchmark --config=configs/digits_lt.py [--steps=50]
      [--config.<field>=<value> ...]

For every method of the config (and gradient exploration with 1, 2 and 4
steps) it compiles the jitted train step exactly as training does, then
measures, in one process:

- step time (median and 10th-90th percentile over `--steps` steps after
  warm-up) and real images per second;
- FLOPs per step from XLA's cost analysis of the compiled step, and the
  achieved FLOP/s;
- the device's peak, measured here by a large jitted matrix product (f32 on
  CPU, bf16 on GPU/TPU), and the achieved fraction of it;
- compile time, the compiled step's memory analysis, the process's peak RSS;
- the input pipeline alone, in images per second.

Teachers are randomly initialised: timing and FLOPs do not depend on their
values, and nothing needs training first. It prints a table and, as its last
line, one JSON object. It fails loudly if a step is compiled more than once.
"""

import json
import resource
import sys
import time
from typing import Any, Callable

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
from ml_collections import config_flags
import numpy as np

from tgt_jax import sharding
from tgt_jax import train_steps
from tgt_jax.data import sources
from tgt_jax.models import build

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', None, 'Experiment config.',
                                lock_config=True)
flags.DEFINE_integer('steps', 30, 'Timed steps per method, after warm-up.')
flags.DEFINE_integer('warmup_steps', 3, 'Untimed steps after compilation.')
flags.DEFINE_list('gradient_steps', ['1', '2', '4'],
                  'Exploration steps of the extra tgt_gradient variants.')
flags.DEFINE_bool('input_only', False,
                  'Measure only the input pipeline (paper configs on CPU).')
flags.DEFINE_bool('cached_latents', True,
                  'Also time tgt_random and tgt_gradient with E(x) cached '
                  '(exploration.cache_latents), i.e. no encoder pass.')
flags.mark_flags_as_required(['config'])


class RecompilationError(RuntimeError):
  """A step was compiled again after its first call."""


def measure_peak_flops(repeats: int = 10) -> float:
  """FLOP/s of a large jitted matmul: the device's practical peak."""
  on_cpu = jax.devices()[0].platform == 'cpu'
  size, dtype = (1024, jnp.float32) if on_cpu else (8192, jnp.bfloat16)
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


def _cost(compiled) -> float:
  analysis = compiled.cost_analysis()
  if isinstance(analysis, (list, tuple)):  # Older JAX: one dict per program.
    analysis = analysis[0]
  return float(analysis.get('flops', 0.0))


def _memory_bytes(compiled) -> int:
  """Device bytes the compiled step holds: arguments, outputs, temporaries."""
  stats = compiled.memory_analysis()
  if stats is None:
    return 0
  return int(stats.argument_size_in_bytes + stats.output_size_in_bytes +
             stats.temp_size_in_bytes - stats.alias_size_in_bytes)


def benchmark_method(step: Callable, state, teachers, batches, rng,
                     num_steps: int, warmup_steps: int) -> dict[str, float]:
  """Compiles, warms up and times one jitted step; checks no recompile."""
  start = time.perf_counter()
  state, metrics = step(state, teachers, batches[0], rng)
  jax.block_until_ready(metrics)
  first_call_s = time.perf_counter() - start
  # Cost and memory analyses of the executable the call above compiled
  # (lowering again hits JAX's compilation cache).
  compiled = step.lower(state, teachers, batches[0], rng).compile()
  flops = _cost(compiled)
  peak_bytes = _memory_bytes(compiled)
  for i in range(warmup_steps):
    state, metrics = step(state, teachers, batches[i % len(batches)], rng)
  jax.block_until_ready(metrics)
  times = []
  for i in range(num_steps):
    begin = time.perf_counter()
    state, metrics = step(state, teachers, batches[i % len(batches)], rng)
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - begin)
  if step._cache_size() != 1:  # pylint: disable=protected-access
    raise RecompilationError(
        f'The step was compiled {step._cache_size()} times; something in its '  # pylint: disable=protected-access
        'arguments (shape, dtype, sharding, a Python value) changes per step.')
  times = np.asarray(times)
  compile_s = max(0.0, first_call_s - float(np.median(times)))
  return {'step_ms': 1e3 * float(np.median(times)),
          'step_ms_p10': 1e3 * float(np.percentile(times, 10)),
          'step_ms_p90': 1e3 * float(np.percentile(times, 90)),
          'flops': flops, 'compile_s': compile_s, 'peak_bytes': peak_bytes}


def benchmark_input(data: sources.Data, batch_size: int, seed: int,
                    max_shift: int, mesh, num_batches: int = 50) -> float:
  """Images per second the train input delivers, placed on device.

  The same `sources.train_batch_fn` training reads: in memory (gather and
  shift) or a tf.data stream (decode, random-resized crop, flip, batch). The
  first batch (stream start-up) is not timed.
  """
  batch_fn = sources.train_batch_fn(data, 'student', batch_size, seed,
                                    max_shift)
  batch = sharding.put_batch(batch_fn(0), mesh)
  jax.block_until_ready(batch)
  start = time.perf_counter()
  for i in range(1, num_batches + 1):
    batch = sharding.put_batch(batch_fn(i), mesh)
  jax.block_until_ready(batch)
  return num_batches * batch_size / (time.perf_counter() - start)


def run_benchmark(config, num_steps: int, warmup_steps: int,
                  gradient_steps=(1, 2, 4), cached_latents: bool = True,
                  input_only: bool = False) -> dict[str, Any]:
  """The benchmark of every method of `config`; returns the JSON object.

  `input_only`: measure the input pipeline alone (e.g. a paper config with
  fake data on a CPU, where its steps would take minutes each).
  """
  mesh = sharding.create_mesh()
  sharding.check_batch_size(config.batch_size, mesh)
  data = sources.load_data(config)
  report = {
      'device': f'{jax.device_count()} x {jax.devices()[0].device_kind}',
      'input_images_per_s': benchmark_input(
          data, config.batch_size, config.seed, config.augment_max_shift,
          mesh)}
  if input_only:
    return report
  num_classes = data.num_classes
  channels = sources.image_channels(data)
  gen_cfg = config.teacher_generator
  rng_l, rng_g, rng_e, rng_s = jax.random.split(jax.random.PRNGKey(0), 4)

  dtype = build.compute_dtype(config)
  labeler = build.classifier(config.teacher_labeler, num_classes, dtype)
  generator = build.generator(gen_cfg, spectral_norm=False, dtype=dtype)
  encoder = build.encoder(gen_cfg, dtype)
  size = config.teacher_labeler.image_size
  enc_size = gen_cfg.encoder_image_size
  teachers = {
      'labeler': labeler.init(
          rng_l, jnp.zeros((1, size, size, channels)), train=False),
      'generator': generator.init(
          rng_g, jnp.zeros((1, gen_cfg.latent_dim)), train=False),
      'encoder': encoder.init(
          rng_e, jnp.zeros((1, enc_size, enc_size, channels)), train=False),
  }
  teachers = sharding.put_replicated(teachers, mesh)
  student = build.classifier(config.student, num_classes, dtype)
  num_train_steps = 1000
  tx, _ = train_steps.create_optimizer(
      config.optimizer, config.peak_learning_rate, 10, num_train_steps,
      config.weight_decay, config.momentum)
  models = train_steps.StepModels(
      student=student, student_config=config.student, tx=tx,
      labeler=labeler, labeler_config=config.teacher_labeler,
      generator=generator, encoder=encoder, encoder_image_size=enc_size)
  s = config.student.image_size
  replicated = sharding.replicated(mesh)
  rows = sharding.local_slice(config.batch_size)
  batch_fn = sources.train_batch_fn(data, 'student', config.batch_size,
                                    config.seed, config.augment_max_shift)
  batches = [sharding.put_batch(batch_fn(i), mesh) for i in range(4)]
  rng = jax.random.PRNGKey(1)
  # Latents as the cache would give them: timing does not depend on values.
  latent_rows = np.random.default_rng(0).normal(
      size=(config.batch_size, gen_cfg.latent_dim)).astype(np.float32)[rows]
  cached_batches = [dict(b, latent=sharding.put_batch(latent_rows, mesh))
                    for b in batches]

  methods = list(config.methods) + [f'tgt_gradient@{k}'
                                    for k in gradient_steps]
  if cached_latents:
    methods += [m + CACHED for m in ('tgt_random', 'tgt_gradient')
                if m in config.methods]
  results = {}
  for method in methods:
    name, method_config = _method_config(config, method)
    state = sharding.put_replicated(
        train_steps.create_train_state(student, tx, (s, s, channels), rng_s),
        mesh)
    step = jax.jit(train_steps.make_train_step(name, models, method_config),
                   out_shardings=(replicated, replicated), donate_argnums=0)
    result = benchmark_method(
        step, state, teachers,
        cached_batches if method.endswith(CACHED) else batches, rng,
        num_steps, warmup_steps)
    result['images_per_s'] = config.batch_size / (result['step_ms'] / 1e3)
    results[method] = result

  peak_flops = measure_peak_flops()
  for result in results.values():
    result['flops_fraction'] = result['flops'] / (
        result['step_ms'] / 1e3) / peak_flops
  return {
      **report, 'peak_flops': peak_flops, 'methods': results,
      'process_peak_rss_bytes': resource.getrusage(
          resource.RUSAGE_SELF).ru_maxrss * 1024,
  }


def table(report: dict[str, Any]) -> str:
  """A plain-text table of the report, with the cost ratios against kd."""
  if 'methods' not in report:
    return (f'device: {report["device"]}; input pipeline '
            f'{report["input_images_per_s"]:.0f} images/s')
  lines = [f'device: {report["device"]}; peak {report["peak_flops"]:.3g} '
           f'FLOP/s; input pipeline {report["input_images_per_s"]:.0f} '
           'images/s',
           f'{"method":<28}{"step ms":>9}{"p10-p90":>15}{"img/s":>9}'
           f'{"GFLOP":>9}{"% peak":>8}{"compile s":>10}{"MiB":>8}'
           f'{"t/t_kd":>8}{"F/F_kd":>8}']
  methods = report['methods']
  kd = methods.get('kd')
  for name, r in methods.items():
    ratio_t = r['step_ms'] / kd['step_ms'] if kd else float('nan')
    ratio_f = r['flops'] / kd['flops'] if kd and kd['flops'] else float('nan')
    lines.append(
        f'{name:<28}{r["step_ms"]:>9.2f}'
        f'{r["step_ms_p10"]:>7.2f}-{r["step_ms_p90"]:<7.2f}'
        f'{r["images_per_s"]:>9.0f}{r["flops"] / 1e9:>9.3f}'
        f'{100 * r["flops_fraction"]:>8.1f}{r["compile_s"]:>10.1f}'
        f'{r["peak_bytes"] / 2**20:>8.1f}{ratio_t:>8.2f}{ratio_f:>8.2f}')
  return '\n'.join(lines)


def main(argv):
  del argv
  report = run_benchmark(FLAGS.config, FLAGS.steps, FLAGS.warmup_steps,
                         tuple(int(k) for k in FLAGS.gradient_steps),
                         FLAGS.cached_latents, FLAGS.input_only)
  print(table(report))
  sys.stdout.flush()
  print(json.dumps(report))


if __name__ == '__main__':
  app.run(main)
