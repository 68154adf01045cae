"""The TGT pipeline as stages: teacher labeler, teacher generator, students.

`train_and_evaluate(config, workdir)` runs, in order,

1. the teacher labeler (trained on the full train split, or restored),
2. the teacher generator, BigBiGAN's E and G (trained without labels on the
   full train split, or restored), only if a TGT method is asked for,
3. one student per entry of `config.methods`, on the long-tail subset,

reusing every stage whose checkpoint is already complete and resuming any
stage that was interrupted. Each model is evaluated on the balanced test
split; `results.json` / `results.md` are rewritten after every stage, so what
finished is never lost.

Workdir layout: `teacher_labeler/`, `teacher_generator/`, `students/<method>/`
(orbax checkpoints), `results.json`, `results.md`, `samples.png` and the
TensorBoard event files.
"""

import dataclasses
import logging as std_logging
import os
from typing import Any

from absl import logging
from clu import metric_writers
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from tgt_jax import embedding_distill
from tgt_jax import evaluation
from tgt_jax import generator_training
from tgt_jax import image_ops
from tgt_jax import pretrained
from tgt_jax import run_guard
from tgt_jax import sharding
from tgt_jax import train_steps
from tgt_jax import training_loop
from tgt_jax import visualize
from tgt_jax.data import pipeline
from tgt_jax.data import sources
from tgt_jax.models import build

TGT_METHODS = ('tgt_random', 'tgt_gradient', 'tgt_prior')


class _QuietOrbax(std_logging.Filter):
  """Orbax logs every save at INFO; keep its warnings and errors only."""

  def filter(self, record):
    return record.levelno >= std_logging.WARNING or (
        '/orbax/' not in record.pathname)


def quiet_orbax_logs() -> None:
  """Call once from a program's main: keeps the log to our own progress."""
  logging.get_absl_handler().addFilter(_QuietOrbax())


def validate_config(config: ml_collections.ConfigDict, mesh) -> None:
  """Fails before any compute on what the config cannot mean."""
  for method in config.methods:
    if method not in train_steps.METHODS:
      raise ValueError(f'Unknown method {method!r} in config.methods; choose '
                       f'from {train_steps.METHODS}.')
  sharding.check_batch_size(config.batch_size, mesh, 'batch_size')
  sharding.check_batch_size(config.eval_batch_size, mesh, 'eval_batch_size')
  sharding.check_batch_size(config.teacher_labeler.batch_size, mesh,
                            'teacher_labeler.batch_size')
  embedding_distill.validate_config(config)
  build.compute_dtype(config)  # Raises on an unknown dtype.
  cache = config.exploration.get('cache_latents', 'auto')
  if cache not in CACHE_LATENTS:
    raise ValueError(f'exploration.cache_latents={cache!r}; choose from '
                     f'{CACHE_LATENTS}.')
  if any(m in TGT_METHODS for m in config.methods):
    sharding.check_batch_size(config.teacher_generator.batch_size, mesh,
                              'teacher_generator.batch_size')


def _uses_generator(config) -> bool:
  return any(m in TGT_METHODS for m in config.methods)


@dataclasses.dataclass
class Context:
  """What every stage needs: config, data, devices, output."""
  config: ml_collections.ConfigDict
  workdir: str
  data: sources.Data  # In memory (digits, folders) or streamed (TFDS).
  mesh: Any
  writer: metric_writers.MetricWriter
  overwrite: bool = False  # Move aside what a different config wrote.
  # E(x) of the student images: the teachers are fixed for the run, so
  # `_latent_cache` encodes them once and every TGT student reuses it.
  student_latents: Any = None


def _num_train_steps(ctx: Context, subset: str,
                     optim: ml_collections.ConfigDict) -> int:
  """Steps of a stage: `optim.num_epochs` over the subset at its batch size."""
  return pipeline.steps_for_epochs(
      sources.num_train_examples(ctx.data, subset), optim.batch_size,
      optim.num_epochs)


def _train_classifier(ctx: Context, *, name: str, directory: str,
                      models: train_steps.StepModels, method: str,
                      teachers: dict, subset: str,
                      optim: ml_collections.ConfigDict, seed: int,
                      max_shift: int, fingerprint: dict,
                      reused: bool = False,
                      embedding_distillation: bool = False) -> dict:
  """Trains one classifier (labeler or student) with `method`'s step.

  `subset`: the part of the train split it learns from, 'teacher' (all of
  it) or 'student' (the long-tail subset); see `sources`.
  `fingerprint`: the config fields the stage depends on, checked against
  (or recorded in) `directory` (see `run_guard`); `reused`: the directory
  belongs to another run (a config's `checkpoint` field).
  `embedding_distillation`: add the config's embedding_distill term (a
  student only); its g/h state rides in the TrainState's `aux`.
  """
  config = ctx.config
  _claim_stage(ctx, directory, fingerprint, reused)
  num_steps = _num_train_steps(ctx, subset, optim)
  steps_per_epoch = (sources.num_train_examples(ctx.data, subset) /
                     optim.batch_size)
  tx, _ = train_steps.create_optimizer(
      optim.get('optimizer', 'sgd'), optim.peak_learning_rate,
      int(optim.warmup_epochs * steps_per_epoch), num_steps,
      optim.weight_decay, optim.get('momentum', 0.9))
  models = dataclasses.replace(models, tx=tx)
  c = models.student_config
  state = train_steps.create_train_state(
      models.student, tx,
      (c.image_size, c.image_size, sources.image_channels(ctx.data)),
      jax.random.PRNGKey(seed))
  state = sharding.put_replicated(state, ctx.mesh)
  replicated = sharding.replicated(ctx.mesh)
  make_step = (embedding_distill.make_train_step if embedding_distillation
               else train_steps.make_train_step)
  step = jax.jit(make_step(method, models, config),
                 out_shardings=(replicated, replicated), donate_argnums=0)
  step_rng = jax.random.fold_in(jax.random.PRNGKey(seed), 1)
  local_batches = sources.train_batch_fn(
      ctx.data, subset, optim.batch_size, seed, max_shift,
      _latent_cache(ctx, models, teachers, method))

  def batch_for_step(i):
    return sharding.put_batch(local_batches(i), ctx.mesh)

  if embedding_distillation:
    aux = embedding_distill.initial_state(
        method, models, config, teachers, sources.image_shape(ctx.data),
        batch_for_step, jax.random.fold_in(jax.random.PRNGKey(seed), 3))
    state = sharding.put_replicated(state.replace(aux=aux), ctx.mesh)

  state = training_loop.run(
      name=name, directory=directory, state=state,
      step_fn=lambda s, b: step(s, teachers, b, step_rng),
      batch_for_step=batch_for_step, num_steps=num_steps, writer=ctx.writer,
      log_every=config.log_every_steps,
      checkpoint_every=config.checkpoint_every_steps)
  return {'params': state.params, 'batch_stats': state.batch_stats}


CACHE_LATENTS = ('auto', 'always', 'never')


def _latent_cache(ctx: Context, models: train_steps.StepModels,
                  teachers: dict, method: str) -> dict | None:
  """{'latent': E(x) of every student image}, or None to encode each step.

  `exploration.cache_latents`: 'auto' caches where it is exact (in-memory
  data, no augmentation: the encoder would see the same image every
  epoch), 'always' also under augmentation (E of the un-augmented image),
  'never' encodes every step.
  """
  mode = ctx.config.exploration.get('cache_latents', 'auto')
  if method not in ('tgt_random', 'tgt_gradient') or mode == 'never':
    return None
  streaming = sources.is_streaming(ctx.data)
  if mode == 'auto' and (streaming or ctx.config.augment_max_shift > 0):
    return None
  if streaming:
    raise ValueError("exploration.cache_latents='always' needs in-memory data "
                     "(digits, image folders); use 'auto' or 'never'.")

  if ctx.student_latents is None:

    @jax.jit
    def encode(images):
      return models.encode(teachers, image_ops.uint8_to_unit(images))

    ctx.student_latents = evaluation.batched_apply(
        encode, ctx.data.student_images, ctx.config.eval_batch_size, ctx.mesh)
    logging.info('Cached E(x) of the %d student images (%s).',
                 len(ctx.student_latents), mode)
  return {'latent': ctx.student_latents}


def _claim_stage(ctx: Context, directory: str, fingerprint: dict,
                 reused: bool) -> None:
  run_guard.claim_stage(directory, fingerprint, ctx.overwrite, reused,
                        write=jax.process_index() == 0)


def _classifier_logits_fn(model, model_config, variables):
  """uint8 images -> logits, jitted, for evaluation."""
  @jax.jit
  def logits_fn(images):
    inputs = image_ops.classifier_input(
        image_ops.uint8_to_unit(images), model_config.image_size,
        model_config.mean, model_config.std)
    return model.apply(variables, inputs, train=False)[0]
  return logits_fn


def _evaluate_classifier(ctx: Context, model, model_config,
                         variables) -> dict:
  logits, labels = sources.eval_outputs(
      _classifier_logits_fn(model, model_config, variables), ctx.data,
      ctx.config.eval_batch_size, ctx.mesh)
  return evaluation.accuracy_report(labels, logits, ctx.data.shot_groups)


def _existing_stage_directory(field: str, directory: str,
                              num_steps: int) -> None:
  """A checkpoint named in the config must hold a finished stage.

  Training on into it would change someone else's teacher, so refuse.
  """
  if not training_loop.is_stage_complete(directory, num_steps):
    raise ValueError(
        f'{field}={directory} holds no complete {num_steps}-step stage. '
        'Point it at a finished stage directory written by this codebase '
        f'(e.g. WORKDIR/{field.split(".")[0]}) trained with the same config, '
        'or leave it empty to train the stage here.')


def teacher_labeler_stage(ctx: Context) -> tuple[Any, dict]:
  """The labeler: restored from its checkpoint, or trained here."""
  cfg = ctx.config.teacher_labeler
  model = build.classifier(cfg, ctx.data.num_classes,
                           build.compute_dtype(ctx.config))
  directory = cfg.checkpoint or os.path.join(ctx.workdir, 'teacher_labeler')
  if cfg.checkpoint:
    _existing_stage_directory('teacher_labeler.checkpoint', directory,
                              _num_train_steps(ctx, 'teacher', cfg))
  variables = _train_classifier(
      ctx, name='teacher_labeler', directory=directory,
      models=train_steps.StepModels(student=model, student_config=cfg,
                                    tx=None),
      method='onehot', teachers={}, subset='teacher', optim=cfg,
      seed=ctx.config.seed, max_shift=cfg.max_shift,
      fingerprint=run_guard.teacher_fingerprint(ctx.config,
                                                'teacher_labeler'),
      reused=bool(cfg.checkpoint))
  return model, variables


def teacher_generator_stage(ctx: Context) -> tuple[dict, dict]:
  """BigBiGAN's frozen E and G: {'encoder': vars, 'generator': vars}.

  Converted from TF-Hub when `teacher_generator.pretrained_checkpoint` is
  set (the paper's teacher), else trained here (the demo's).
  """
  cfg = ctx.config.teacher_generator
  if cfg.get('pretrained_checkpoint'):
    modules, variables = pretrained.load_pretrained_teacher_generator(
        cfg.pretrained_checkpoint, cfg, dtype=build.compute_dtype(ctx.config))
    return modules, sharding.put_replicated(variables, ctx.mesh)
  modules = generator_training.create_modules(cfg)
  state = generator_training.create_state(
      modules, cfg, jax.random.PRNGKey(ctx.config.seed))
  directory = cfg.checkpoint or os.path.join(ctx.workdir, 'teacher_generator')
  num_steps = _num_train_steps(ctx, 'teacher', cfg)
  if cfg.checkpoint:
    _existing_stage_directory('teacher_generator.checkpoint', directory,
                              num_steps)
  _claim_stage(ctx, directory,
               run_guard.teacher_fingerprint(ctx.config, 'teacher_generator'),
               reused=bool(cfg.checkpoint))
  state = sharding.put_replicated(state, ctx.mesh)
  replicated = sharding.replicated(ctx.mesh)
  step = jax.jit(generator_training.make_train_step(modules, cfg),
                 out_shardings=(replicated, replicated), donate_argnums=0)
  step_rng = jax.random.fold_in(jax.random.PRNGKey(ctx.config.seed), 2)
  local_batches = sources.train_batch_fn(ctx.data, 'teacher', cfg.batch_size,
                                         ctx.config.seed)

  def batch_for_step(i):
    # Unsupervised: the labels stay on the host.
    return sharding.put_batch({'image': local_batches(i)['image']}, ctx.mesh)

  state = training_loop.run(
      name='teacher_generator', directory=directory, state=state,
      step_fn=lambda s, b: step(s, b, step_rng),
      batch_for_step=batch_for_step, num_steps=num_steps, writer=ctx.writer,
      log_every=ctx.config.log_every_steps,
      checkpoint_every=ctx.config.checkpoint_every_steps)
  frozen = generator_training.frozen_teacher_variables(state)
  # Trained in float32 [ours: GAN training is the least robust step]; the
  # frozen teacher then computes in the run's dtype.
  dtype = build.compute_dtype(ctx.config)
  modules = {'encoder': build.encoder(cfg, dtype),
             'generator': build.generator(cfg, spectral_norm=False,
                                          dtype=dtype)}
  return modules, frozen


def reconstruction_agreement(ctx: Context, models: train_steps.StepModels,
                             teachers: dict) -> float:
  """Labeler accuracy on G(E(x)) of test images against the labels of x."""
  @jax.jit
  def logits_fn(images):
    unit = image_ops.uint8_to_unit(images)
    reconstructed = models.generate(teachers, models.encode(teachers, unit))
    return models.labeler_logits(teachers, reconstructed)

  logits, labels = sources.eval_outputs(logits_fn, ctx.data,
                                        ctx.config.eval_batch_size, ctx.mesh)
  return float(np.mean(np.argmax(logits, -1) == labels))


def _save_samples(ctx: Context, models: train_steps.StepModels,
                  teachers: dict, students: dict) -> None:
  """samples.png: one test image per class, reconstructed and explored."""
  data, config = ctx.data, ctx.config
  images, _ = sources.grid_examples(data, config.num_grid_samples)
  real = image_ops.uint8_to_unit(jnp.asarray(images))
  rng = jax.random.PRNGKey(config.seed)
  rows = {'real': real,
          'reconstructed': models.generate(teachers,
                                           models.encode(teachers, real))}
  for method in ('tgt_random', 'tgt_gradient'):
    student = students.get(method) or next(iter(students.values()), None)
    if student is None or not _uses_generator(config):
      continue
    student_models = dataclasses.replace(models, student=student['model'])
    state = train_steps.TrainState(
        step=jnp.zeros((), jnp.int32), params=student['variables']['params'],
        batch_stats=student['variables']['batch_stats'], opt_state=None)
    latents = train_steps.explore_latents(method, student_models, state,
                                          teachers, real, rng, config)
    rows[method.replace('tgt_', '') + ' explored'] = models.generate(
        teachers, latents)
  rows = {k: np.asarray(v) for k, v in rows.items()}
  labels = {k: np.argmax(np.asarray(models.labeler_logits(teachers, v)), -1)
            for k, v in rows.items()}
  visualize.save_sample_grid(os.path.join(ctx.workdir, 'samples.png'), rows,
                             labels, data.class_names)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       overwrite: bool = False) -> dict:
  """Runs every stage and returns the results written to results.json.

  A workdir written with a different config is refused unless `overwrite`
  (see `run_guard`). Results of models this run does not train (a method
  dropped from `config.methods`) are kept in results.json.
  """
  mesh = sharding.create_mesh()
  validate_config(config, mesh)
  data = sources.load_data(config)  # Fails on bad data before any write.
  os.makedirs(workdir, exist_ok=True)
  run_guard.claim_workdir(workdir, config, overwrite,
                          write=jax.process_index() == 0)
  writer = metric_writers.create_default_writer(
      workdir, just_logging=jax.process_index() > 0)
  ctx = Context(config=config, workdir=workdir, data=data, mesh=mesh,
                writer=writer, overwrite=overwrite)
  logging.info('Devices: %s; student train set: %d images, per class %s.',
               jax.devices(), sources.num_train_examples(data, 'student'),
               data.student_class_counts.tolist())

  results: dict[str, Any] = evaluation.read_results(workdir)

  def publish():
    if jax.process_index() == 0:
      evaluation.write_results(results, workdir)

  labeler, labeler_variables = teacher_labeler_stage(ctx)
  results['teacher_labeler'] = _evaluate_classifier(
      ctx, labeler, config.teacher_labeler, labeler_variables)
  publish()

  teachers = {'labeler': labeler_variables}
  models = train_steps.StepModels(
      student=None, student_config=config.student, tx=None, labeler=labeler,
      labeler_config=config.teacher_labeler)
  if _uses_generator(config):
    generator_modules, generator_variables = teacher_generator_stage(ctx)
    teachers.update(generator_variables)
    models = dataclasses.replace(
        models, generator=generator_modules['generator'],
        encoder=generator_modules['encoder'],
        encoder_image_size=config.teacher_generator.encoder_image_size)
    results['reconstruction_agreement'] = reconstruction_agreement(
        ctx, models, teachers)
    logging.info('Reconstruction agreement: %.4f',
                 results['reconstruction_agreement'])
    publish()

  students = {}
  embedding_mode = embedding_distill.mode_of(config)
  for method in config.methods:
    # e.g. 'kd+emb_compressed': the key in results.json and students/<key>.
    key = embedding_distill.result_key(method, embedding_mode)
    student = build.classifier(config.student, data.num_classes,
                               build.compute_dtype(config))
    variables = _train_classifier(
        ctx, name=key, directory=os.path.join(workdir, 'students', key),
        models=dataclasses.replace(models, student=student), method=method,
        teachers=teachers, subset='student', optim=config, seed=config.seed,
        max_shift=config.augment_max_shift,
        fingerprint=run_guard.run_fingerprint(config),
        embedding_distillation=embedding_mode != 'none')
    students[method] = {'model': student, 'variables': variables}
    results[key] = _evaluate_classifier(ctx, student, config.student,
                                        variables)
    logging.info('%s: %s', key, {k: v for k, v in results[key].items()
                                 if k != 'per_class'})
    publish()

  if _uses_generator(config) and jax.process_index() == 0:
    _save_samples(ctx, models, teachers, students)
  writer.close()
  return results
