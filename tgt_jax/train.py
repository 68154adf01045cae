"""The TGT pipeline as stages, read top to bottom from `train_and_evaluate`.

1. The teacher labeler: trained here on the full train split (its own
   architecture, initialisation and recipe), fine-tuned from a converted
   checkpoint, or restored from a finished stage.
2. The teacher generator, E and G of `teacher_generator.family`
   (generators/families.py: BigBiGAN, the paper's, or a VAE): converted
   from TF-Hub (the paper's BigBiGAN) or trained here without labels (the
   demo's); only when a method generates.
3. The frozen teachers: one object that labels, encodes and generates, with
   E(x) of every student image cached where that is exact.
4. One student per method of `config.methods`, on the long-tail subset.

Every stage resumes from its newest checkpoint, reuses a finished one and
refuses one written with another config (`run_guard`). Each model is
evaluated on the balanced `dataset.eval_split`; results.json / results.md
are rewritten after every stage, so what finished is never lost.

Workdir: `teacher_labeler/`, `teacher_generator/`, `students/<key>/` (orbax
checkpoints), `config.json`, `results.json`, `results.md`, `samples.png`
and the TensorBoard event files.
"""

import contextlib
import dataclasses
import datetime
import errno
import os
import socket
import sys
from typing import Any, Callable

from absl import logging
from clu import metric_writers
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from tgt_jax import compute
from tgt_jax import config_lib
from tgt_jax import embedding_distill
from tgt_jax import errors as errors_lib
from tgt_jax import evaluation
from tgt_jax import files
from tgt_jax import image_ops
from tgt_jax import losses
from tgt_jax import methods
from tgt_jax import monitoring
from tgt_jax import pretrained
from tgt_jax import provenance
from tgt_jax import run_guard
from tgt_jax import sharding
from tgt_jax import student_setup as student_setup_lib
from tgt_jax import teachers as teachers_lib
from tgt_jax import train_steps
from tgt_jax import training_loop
from tgt_jax import visualize
from tgt_jax.data import dataset as dataset_lib
from tgt_jax.data import loading
from tgt_jax.generators import families as generator_families
from tgt_jax.models import build
from tgt_jax.models import classifier as classifier_lib

CACHE_LATENTS = ('auto', 'always', 'never')
# Every stage draws its initialisation and its data order from its own
# stream of config.seed, so the labeler never starts from the student's
# parameters nor reads the student's batches (at paper scale all stages read
# the same train split). Students keep PRNGKey(config.seed) and config.seed
# itself: the same for every method, so methods are compared on paired runs.
ROLES = ('student', 'teacher_labeler', 'teacher_generator')


def init_key(seed: int, role: str) -> jax.Array:
  """The initialisation key of a stage (students: PRNGKey(seed))."""
  key = jax.random.PRNGKey(seed)
  return key if role == 'student' else jax.random.fold_in(
      key, 10 + ROLES.index(role))


def data_seed(seed: int, role: str) -> int:
  """The seed of a stage's data order and augmentation (students: seed)."""
  return seed + 1_000_000 * ROLES.index(role)


# ---------------------------------------------------------------------------
# Config checks: everything a run cannot mean fails here, before any compute.
# ---------------------------------------------------------------------------


def _term_teacher(config: ml_collections.ConfigDict) -> str | None:
  """The teacher stage the config's embedding term reads (the encoder is
  the generator stage's), or None without one."""
  embedding = config.embedding_distill
  if embedding.mode == 'none':
    return None
  return 'teacher_generator' if embedding.source == 'encoder' else (
      'teacher_labeler')


def needs_generator(config: ml_collections.ConfigDict) -> bool:
  """Whether a run needs the teacher generator: a method generates, or a
  loss term uses the encoder's embedding."""
  known = [m for m in config.methods if m in methods.METHODS]
  return bool(methods.generating(known)) or (
      _term_teacher(config) == 'teacher_generator')


def teachers_used(method: str, config: ml_collections.ConfigDict
                  ) -> tuple[str, ...]:
  """The teacher stages a student of `method` depends on, whose training
  compute its result counts: the labeler when it reads the labeler's
  outputs (soft targets, exploration, or a loss term on its embedding), the
  generator when it explores or a loss term reads the encoder. onehot
  alone depends on none."""
  used = methods.get(method)
  term = _term_teacher(config)
  stages = []
  if used.uses_labeler or term == 'teacher_labeler':
    stages.append('teacher_labeler')
  if used.uses_generator or term == 'teacher_generator':
    stages.append('teacher_generator')
  return tuple(stages)


def needs_encoder(config: ml_collections.ConfigDict) -> bool:
  """Whether a run needs the generator's E(x): a method explores from it,
  or a loss term uses its embedding."""
  known = [m for m in config.methods if m in methods.METHODS]
  return bool(methods.encoding(known)) or (
      _term_teacher(config) == 'teacher_generator')


def config_errors(config: ml_collections.ConfigDict, mesh) -> list[str]:
  """Every problem of a resolved config, naming the fields."""
  errors = config_lib.range_errors(config)
  if errors:  # The checks below assume values in range.
    return errors
  errors = config_lib.consistency_errors(config)
  errors += methods.name_errors(config.methods)
  batch_fields = ['batch_size', 'eval_batch_size', 'teacher_labeler.batch_size']
  if needs_generator(config):
    batch_fields.append('teacher_generator.batch_size')
    gen = config.teacher_generator
    if not (gen.pretrained_checkpoint or gen.checkpoint or gen.num_epochs):
      errors.append(
          'teacher_generator: no pretrained_checkpoint, no checkpoint and '
          'num_epochs=0 would leave G and E random. Convert BigBiGAN '
          '(docs/paper_scale.md) and set --config.teacher_generator.'
          'pretrained_checkpoint=DIR.')
    errors += generator_families.config_errors(gen, needs_encoder(config))
  if config.teacher_labeler.init_checkpoint is None:
    errors.append(
        'teacher_labeler.init_checkpoint is required by this config (its '
        'labeler fine-tunes converted ImageNet weights): run `python -m '
        'tgt_jax.convert_keras_resnet --model=resnet'
        f'{config.teacher_labeler.depth} --output=DIR` and pass '
        '--config.teacher_labeler.init_checkpoint=DIR, or choose '
        '`:labeler=scratch` (docs/paper_scale.md, section 3).')
  for field in batch_fields:
    section, _, name = field.rpartition('.')
    value = (config[section] if section else config)[name]
    try:
      sharding.check_batch_size(value, mesh, field)
    except ValueError as error:
      errors.append(str(error))
  if config.dtype not in build.COMPUTE_DTYPES:
    errors.append(f'dtype={config.dtype!r}; choose from '
                  f'{tuple(build.COMPUTE_DTYPES)}.')
  for prefix, recipe in (('', config), ('teacher_labeler.',
                                        config.teacher_labeler)):
    if recipe.optimizer not in train_steps.OPTIMIZERS:
      errors.append(f'{prefix}optimizer={recipe.optimizer!r}; choose from '
                    f'{train_steps.OPTIMIZERS}.')
    if recipe.schedule not in train_steps.SCHEDULES:
      errors.append(f'{prefix}schedule={recipe.schedule!r}; choose from '
                    f'{train_steps.SCHEDULES}.')
  errors += embedding_distill.config_errors(config)
  if config.long_tail_loss not in losses.LONG_TAIL_LOSSES:
    errors.append(f'long_tail_loss={config.long_tail_loss!r}; choose from '
                  f'{losses.LONG_TAIL_LOSSES}.')
  cache = config.exploration.cache_latents
  if cache not in CACHE_LATENTS:
    errors.append(f'exploration.cache_latents={cache!r}; choose from '
                  f'{CACHE_LATENTS}.')
  elif (cache == 'always' and
        config.dataset.name not in loading.IN_MEMORY_NAMES):
    errors.append("exploration.cache_latents='always' needs in-memory data "
                  f'{loading.IN_MEMORY_NAMES}; use \'auto\' or \'never\'.')
  if config.exploration.num_steps < 0:
    errors.append('exploration.num_steps must be >= 0.')
  return errors


ConfigError = errors_lib.ConfigError  # The config cannot run, by field.


def validate(config: ml_collections.ConfigDict, mesh) -> None:
  """Raises one ConfigError listing every problem of a resolved config."""
  problems = config_errors(config, mesh)
  if problems:
    raise ConfigError(problems)


# ---------------------------------------------------------------------------
# A run and its stages.
# ---------------------------------------------------------------------------


@dataclasses.dataclass
class Run:
  """Where a run writes, what it has found so far and how far it is.

  `read_only`: restore every stage's checkpoints and never train or write
  into the workdir (e.g. `python -m tgt_jax.evaluate` while another process
  trains there).
  """
  config: ml_collections.ConfigDict
  workdir: str
  mesh: Any
  writer: metric_writers.MetricWriter
  overwrite: bool = False
  read_only: bool = False
  results: dict[str, Any] = dataclasses.field(default_factory=dict)
  progress: training_loop.RunProgress = dataclasses.field(
      default_factory=lambda: training_loop.RunProgress({}))

  @property
  def dtype(self):
    return build.compute_dtype(self.config)

  def record(self, name: str, value: Any) -> None:
    """Adds a result and rewrites results.json / results.md (process 0)."""
    self.results[name] = value
    if jax.process_index() == 0 and not self.read_only:
      evaluation.write_results(self.results, self.workdir)


@dataclasses.dataclass(frozen=True)
class Stage:
  """A training stage: its checkpoint directory and what it depends on.

  `fingerprint`: the config fields its training reads, checked against (or
  recorded in) the directory; `reused`: the directory was named by a config
  `checkpoint` field and belongs to another run (never trained on).
  """
  name: str
  directory: str
  fingerprint: dict[str, Any]
  num_steps: int
  reused: bool = False


@dataclasses.dataclass(frozen=True)
class Trained:
  """A trained classifier (student or labeler): its model and its state,
  which checkpoint that is ({'checkpoint': 'best'|'last', 'step'}) and
  the compute its training used (`compute.stage_compute`)."""
  classifier: classifier_lib.Classifier
  state: train_steps.TrainState
  chosen: dict[str, Any] = dataclasses.field(default_factory=dict)
  compute: dict[str, Any] = dataclasses.field(default_factory=dict)

  @property
  def variables(self) -> dict[str, Any]:
    return {'params': self.state.params,
            'batch_stats': self.state.batch_stats}


def num_steps_and_epoch(dataset: dataset_lib.Dataset, subset: str,
                        recipe: ml_collections.ConfigDict
                        ) -> tuple[int, float]:
  """(steps of `recipe.num_epochs` over the subset, steps per epoch)."""
  examples = dataset.num_examples(subset)
  return (dataset_lib.steps_for_epochs(examples, recipe.batch_size,
                                       recipe.num_epochs),
          examples / recipe.batch_size)


def fit(run: Run, stage: Stage, state, step: compute.Step,
        batch_fn: Callable[[int], Any],
        validate: Callable[[Any], dict] | None = None
        ) -> tuple[Any, dict[str, Any], dict[str, Any]]:
  """Trains (or resumes, or in a read-only run restores) a stage.

  `validate(state) -> {'overall', ...}` on the validation split, every
  `eval_every_steps` and at the end; the best state by it is kept beside the
  last. Returns the state `config.report_checkpoint` names, which one it
  is ({'checkpoint': 'best' | 'last', 'step': n}) and the stage's training
  compute (`compute.stage_compute`).
  """
  if run.read_only:
    last, last_step = training_loop.restore(stage.directory, state, 'last')
    if last is None:
      raise FileNotFoundError(f'{stage.directory} holds no checkpoint of '
                              f'{stage.name}.')
    return (*_choose(run, stage, last, last_step),
            compute.stage_compute(stage.directory, stage.num_steps))
  if stage.reused and not training_loop.is_stage_complete(stage.directory,
                                                          stage.num_steps):
    # Training on would change someone else's teacher.
    raise ValueError(
        f'{stage.name}.checkpoint={stage.directory} holds no complete '
        f'{stage.num_steps}-step stage. Point it at a finished stage '
        f'directory (e.g. WORKDIR/{stage.name}) trained with the same '
        'config, or leave it empty to train the stage here.')
  run_guard.claim_stage(stage.directory, stage.fingerprint, run.overwrite,
                        stage.reused, write=jax.process_index() == 0)
  last = training_loop.run(
      name=stage.name, directory=stage.directory, state=state,
      step_fn=step,
      batch_for_step=lambda i: sharding.put_batch(batch_fn(i), run.mesh),
      num_steps=stage.num_steps, writer=run.writer,
      log_every=run.config.log_every_steps,
      checkpoint_every=run.config.checkpoint_every_steps,
      keep_checkpoints=run.config.keep_checkpoints,
      evaluate=validate if not stage.reused else None,
      eval_every=run.config.eval_every_steps, progress=run.progress,
      flops_fn=step.flops)
  return (*_choose(run, stage, last, stage.num_steps),
          compute.stage_compute(stage.directory, stage.num_steps))


def _choose(run: Run, stage: Stage, last, last_step: int):
  """The state config.report_checkpoint names, and which one it is."""
  if run.config.report_checkpoint == 'best':
    best, step = training_loop.restore(stage.directory, last, 'best')
    if best is not None:
      return best, {'checkpoint': 'best', 'step': step}
  return last, {'checkpoint': 'last', 'step': last_step}


def teacher_stage(run: Run, dataset, name: str, num_steps: int) -> Stage:
  checkpoint = run.config[name].checkpoint
  return Stage(name=name,
               directory=checkpoint or os.path.join(run.workdir, name),
               fingerprint=run_guard.teacher_fingerprint(run.config, name),
               num_steps=num_steps, reused=bool(checkpoint))


def _validator(run: Run, dataset: dataset_lib.Dataset,
               classifier: classifier_lib.Classifier):
  """state -> accuracy report on the validation split (None without one)."""
  if not dataset.has_split('val'):
    return None
  accuracy = accuracy_fn(run, dataset, classifier, 'val')
  return lambda state: accuracy({'params': state.params,
                                 'batch_stats': state.batch_stats})


def train_labeler(run: Run, dataset: dataset_lib.Dataset) -> Trained:
  """Stage 1: the teacher labeler, on the full train split, with onehot."""
  cfg = run.config.teacher_labeler
  classifier = build.classifier(cfg, dataset.num_classes, run.dtype)
  num_steps, steps_per_epoch = num_steps_and_epoch(dataset, 'teacher', cfg)
  tx = train_steps.create_optimizer(cfg, steps_per_epoch, num_steps)
  rng = init_key(run.config.seed, 'teacher_labeler')
  variables = classifier.init(rng, dataset.image_shape[-1])
  if cfg.init_checkpoint and not run.read_only:
    variables = pretrained.initial_classifier_variables(
        cfg.init_checkpoint, cfg, variables)
  state = sharding.put_replicated(
      train_steps.create_train_state(variables, tx), run.mesh)
  raw_step = train_steps.make_train_step('onehot', classifier, tx, run.config)
  step = compute.Step(train_steps.jit_step(raw_step, run.mesh), raw_step,
                      before=(None,), after=(jax.random.fold_in(rng, 1),))
  state, chosen, record = fit(
      run, teacher_stage(run, dataset, 'teacher_labeler', num_steps), state,
      step, dataset.train_batches('teacher', cfg.batch_size,
                                  data_seed(run.config.seed,
                                            'teacher_labeler')),
      _validator(run, dataset, classifier))
  return Trained(classifier, state, chosen, record)


def train_generator(run: Run, dataset: dataset_lib.Dataset,
                    labeler: Trained
                    ) -> tuple[teachers_lib.Teachers, dict[str, Any] | None]:
  """Stage 2: the frozen teacher generator, with the labeler, as teachers.

  Converted when `teacher_generator.pretrained_checkpoint` is set (the
  paper's BigBiGAN), else its family trained here on images alone (the
  demo's), validated by the labeler's accuracy on G(E(x)) of validation
  images. Returns the teachers and the generator's training compute (None
  when converted: its training was not done here).
  """
  cfg = run.config.teacher_generator
  frozen = teachers_lib.Teachers(
      labeler_network=labeler.classifier, labeler=labeler.variables,
      generator_model=generator_families.model(cfg, run.dtype))
  record = None
  if cfg.pretrained_checkpoint:
    _, variables = pretrained.load_pretrained_teacher_generator(
        cfg.pretrained_checkpoint, cfg)
  else:
    variables, chosen, record = _train_generator(run, dataset, frozen)
    run.record('teacher_generator', {**chosen, 'compute': record})
  return frozen.replace(
      generator=sharding.put_replicated(variables, run.mesh)), record


def _train_generator(run: Run, dataset: dataset_lib.Dataset,
                     frozen: teachers_lib.Teachers):
  """The family's training here: (frozen variables, chosen, compute)."""
  cfg = run.config.teacher_generator
  trainer = generator_families.get(cfg).trainer(cfg)
  rng = init_key(run.config.seed, 'teacher_generator')
  state = sharding.put_replicated(trainer.init(rng), run.mesh)
  step = compute.Step(train_steps.jit_step(trainer.step, run.mesh),
                      trainer.step, after=(jax.random.fold_in(rng, 1),))
  num_steps, _ = num_steps_and_epoch(dataset, 'teacher', cfg)
  # Unaugmented, and the labels stay on the host: G learns the images.
  batches = dataset.train_batches(
      'teacher', cfg.batch_size,
      data_seed(run.config.seed, 'teacher_generator'), augment=False)

  def validate(state):
    teachers = frozen.replace(generator=trainer.frozen_variables(state))
    return {'overall': reconstruction_agreement(run, dataset, teachers,
                                                'val')}

  can_validate = (dataset.has_split('val') and
                  frozen.generator_model.has_encoder)
  state, chosen, record = fit(
      run, teacher_stage(run, dataset, 'teacher_generator', num_steps),
      state, step, lambda i: {'image': batches(i)['image']},
      validate if can_validate else None)
  return trainer.frozen_variables(state), chosen, record


def caches_latents(config: ml_collections.ConfigDict,
                   dataset: dataset_lib.Dataset) -> bool:
  """Whether E(x) of the student images is computed once and kept.

  'auto' keeps it where that is exact: in memory and without augmentation
  (the encoder would see the same image every epoch).
  """
  mode = config.exploration.cache_latents
  if (not methods.encoding(config.methods) or mode == 'never' or
      not dataset.in_memory):
    return False
  augments = dataset.max_shift > 0 or dataset.flip
  return mode == 'always' or not augments


def frozen_teachers(run: Run, dataset: dataset_lib.Dataset, labeler: Trained,
                    generator: teachers_lib.Teachers | None
                    ) -> teachers_lib.Teachers:
  """Stage 3: labeler, encoder and generator as one frozen object."""
  teachers = (generator or teachers_lib.Teachers()).replace(
      labeler_network=labeler.classifier, labeler=labeler.variables)
  if (generator is not None and not run.read_only and
      caches_latents(run.config, dataset)):
    latents, _ = _over_split(run, dataset, teachers_lib.encode_fn(teachers),
                             'student')
    logging.info('Cached E(x) of the %d student images.', len(latents))
    teachers = teachers.replace(
        latents=sharding.put_replicated(jnp.asarray(latents), run.mesh))
  return teachers


def student_setup(run: Run, dataset: dataset_lib.Dataset,
                  teachers: teachers_lib.Teachers, method: str,
                  batches: dataset_lib.BatchFn
                  ) -> student_setup_lib.StudentSetup:
  """The student of `method`, built by `student_setup.create` from
  PRNGKey(config.seed); its loss terms pre-train on the student's first
  `batches` unless the run is read-only (it restores the trained state)."""
  return student_setup_lib.create(
      run.config, method, student_setup_lib.StudentData.of(dataset),
      teachers, run.mesh, init_key(run.config.seed, 'student'),
      pretrain_batches=None if run.read_only else (
          lambda i: sharding.put_batch(batches(i), run.mesh)))


def train_student(run: Run, dataset: dataset_lib.Dataset,
                  teachers: teachers_lib.Teachers,
                  method: str) -> tuple[str, Trained]:
  """Stage 4: one student, with `method`'s step and the config's loss terms.

  Returns (its key in results.json, e.g. 'kd+emb_compressed', the student).
  """
  config = run.config
  batches = dataset.train_batches('student', config.batch_size,
                                  data_seed(config.seed, 'student'))
  setup = student_setup(run, dataset, teachers, method, batches)
  stage = Stage(name=setup.key,
                directory=os.path.join(run.workdir, 'students', setup.key),
                fingerprint=run_guard.run_fingerprint(config),
                num_steps=setup.num_steps)
  state, chosen, record = fit(run, stage, setup.state,
                              setup.stage_step(teachers), batches,
                              _validator(run, dataset, setup.classifier))
  return setup.key, Trained(setup.classifier, state, chosen, record)


# ---------------------------------------------------------------------------
# Evaluation and samples.
# ---------------------------------------------------------------------------


def _logits_fn(classifier: classifier_lib.Classifier):
  """A jitted (variables, uint8 images) -> logits: the variables are an
  argument, so they are not baked into the program."""
  return jax.jit(lambda variables, images: classifier.apply(
      variables, image_ops.uint8_to_unit(images))[0])


def _over_split(run: Run, dataset: dataset_lib.Dataset, fn: Callable,
                split: str | None = None):
  """(fn of every image of `split`, labels); default: the config's
  eval_split."""
  return evaluation.predict(
      fn, dataset.eval_batches(split or run.config.dataset.eval_split,
                               run.config.eval_batch_size), run.mesh)


def split_logits_fn(run: Run, dataset: dataset_lib.Dataset,
                    classifier: classifier_lib.Classifier,
                    split: str | None = None
                    ) -> Callable[[Any], tuple[np.ndarray, np.ndarray]]:
  """variables -> (logits of `classifier` on every image of `split`, their
  labels), compiled once for every call."""
  logits_fn = _logits_fn(classifier)
  return lambda variables: _over_split(
      run, dataset, lambda images: logits_fn(variables, images), split)


def accuracy_fn(run: Run, dataset: dataset_lib.Dataset,
                classifier: classifier_lib.Classifier,
                split: str | None = None) -> Callable[[Any], dict]:
  """variables -> accuracy report of `classifier` on `split`, compiled once
  for every call (validation calls it every `eval_every_steps`)."""
  logits_fn = split_logits_fn(run, dataset, classifier, split)

  def accuracy(variables):
    logits, labels = logits_fn(variables)
    return evaluation.accuracy_report(labels, logits, dataset.shot_groups)
  return accuracy


def evaluate(run: Run, dataset: dataset_lib.Dataset, model: Trained,
             split: str | None = None) -> dict:
  """Accuracy report of a classifier on `split` (default: the config's
  eval_split), with the checkpoint it came from and its training compute."""
  report = accuracy_fn(run, dataset, model.classifier, split)(
      model.variables)
  return {**report, **model.chosen, 'compute': model.compute}


@jax.jit
def _reconstruction_logits(teachers: teachers_lib.Teachers, images):
  """The labeler's logits on G(E(x)). At module level, so that the
  generator's validation compiles it once, not at every evaluation."""
  unit = image_ops.uint8_to_unit(images)
  return teachers.label(teachers.generate(teachers.encode(unit)))[0]


def reconstruction_agreement(run: Run, dataset: dataset_lib.Dataset,
                             teachers: teachers_lib.Teachers,
                             split: str | None = None) -> float:
  """Labeler accuracy on G(E(x)) of `split` images against the labels of x."""
  logits, labels = _over_split(
      run, dataset, lambda images: _reconstruction_logits(teachers, images),
      split)
  return float(np.mean(np.argmax(logits, -1) == labels))


def latent_displacement(run: Run, dataset: dataset_lib.Dataset,
                        teachers: teachers_lib.Teachers, method: str,
                        student: Trained, split: str | None = None) -> float:
  """Mean ||z~ - E(x)|| of `method`'s explorations of `split` images with
  the trained student: how far it moves from the data (to compare
  exploration rules at equal step length)."""
  teachers = teachers.replace(latents=None)
  rng = jax.random.PRNGKey(run.config.seed)

  @jax.jit
  def distances(teachers, variables, images):
    unit = image_ops.uint8_to_unit(images)
    explored = train_steps.explore(method, student.classifier, variables,
                                   teachers, {}, unit, rng, run.config)
    return jnp.linalg.norm(explored - teachers.encode(unit), axis=-1)

  values, _ = _over_split(
      run, dataset,
      lambda images: distances(teachers, student.variables, images), split)
  return float(np.mean(values))


def sample_rows(config: ml_collections.ConfigDict,
                dataset: dataset_lib.Dataset,
                teachers: teachers_lib.Teachers,
                students: dict[str, Trained], num: int,
                prior_samples: int = 0) -> tuple[dict, dict]:
  """Rows of the sample grid and the labeler's label of every image.

  Real eval images, their reconstructions G(E(x)), and a row per TGT method
  in `students`: what that method explores from the same images with the
  student it trained (tgt_prior: prior samples), named as trained (e.g.
  'tgt_random+mixup explored'). If a student mixes its real images, a row
  of the same images mixed (methods.mixup): their labels are its targets.
  `prior_samples` > 0 adds a row of G(z), z ~ N(0, I).
  """
  images, _ = dataset.grid_examples(num)
  real = image_ops.uint8_to_unit(jnp.asarray(images))
  teachers = teachers.replace(latents=None)  # These images are not cached.
  rng = jax.random.PRNGKey(config.seed)
  rows = {'real': real}
  if teachers.generator_model.has_encoder:
    rows['reconstructed G(E(x))'] = teachers.generate(teachers.encode(real))
  for method, student in students.items():
    if methods.get(method).uses_generator:
      latents = train_steps.explore(
          method, student.classifier, student.variables, teachers, {}, real,
          rng, config)
      rows[f'{methods.trained_name(method, config)} explored'] = (
          teachers.generate(latents))
  if any(methods.in_run(method, config).mixup for method in students):
    rows['mixup x_mix'] = methods.mixup(jax.random.fold_in(rng, 2), real,
                                        config.mixup.concentration).images
  if prior_samples:
    rows['prior G(z)'] = teachers.generate(teachers.sample_prior(
        jax.random.fold_in(rng, 1), prior_samples))
  rows = {k: np.asarray(v) for k, v in rows.items()}
  labels = {k: np.argmax(np.asarray(teachers.label(v)[0]), -1)
            for k, v in rows.items()}
  return rows, labels


def save_samples(run: Run, dataset: dataset_lib.Dataset,
                 teachers: teachers_lib.Teachers,
                 students: dict[str, Trained]) -> None:
  """samples.png (see `sample_rows`), also shown in TensorBoard."""
  rows, labels = sample_rows(run.config, dataset, teachers, students,
                             run.config.num_grid_samples)
  path = os.path.join(run.workdir, 'samples.png')
  visualize.save_sample_grid(path, rows, labels, dataset.class_names)
  run.writer.write_images(0, {'samples': visualize.read_png(path)[None]})


# ---------------------------------------------------------------------------
# The pipeline.
# ---------------------------------------------------------------------------


def plan(config: ml_collections.ConfigDict,
         dataset: dataset_lib.Dataset) -> dict[str, int]:
  """{stage name: steps} of every stage a run trains, in order."""
  planned = {'teacher_labeler': num_steps_and_epoch(
      dataset, 'teacher', config.teacher_labeler)[0]}
  if (needs_generator(config) and
      not config.teacher_generator.pretrained_checkpoint):
    planned['teacher_generator'] = num_steps_and_epoch(
        dataset, 'teacher', config.teacher_generator)[0]
  data = student_setup_lib.StudentData.of(dataset)
  for method in config.methods:
    planned[student_setup_lib.result_key(config, method, data)] = (
        num_steps_and_epoch(dataset, 'student', config)[0])
  return planned


LOCK_FILE = 'run.lock'  # Held (flock) by the one process training there.
# What opening a file in a read-only workdir raises.
_READ_ONLY_ERRNOS = (errno.EROFS, errno.EACCES, errno.EPERM)


def _hold_workdir(workdir: str, exit_stack: contextlib.ExitStack) -> bool:
  """Takes the workdir's lock until `exit_stack` closes: one writer per
  workdir. False if the workdir is read-only (nothing can be written, so
  there is nothing to guard); a WorkdirError names the holder if another
  process trains there."""
  stamp = datetime.datetime.now(datetime.timezone.utc).strftime(
      '%Y-%m-%d %H:%M:%S UTC')
  holder = (f'process {os.getpid()} on {socket.gethostname()} since '
            f'{stamp} ({" ".join(sys.argv) or "python"})')
  path = os.path.join(workdir, LOCK_FILE)
  try:
    exit_stack.enter_context(files.exclusive_lock(path, holder))
  except files.LockHeldError as error:
    raise errors_lib.WorkdirError(
        f'{workdir}: in use by {error.holder}; wait for that run to end (or '
        'stop it), or pass another --workdir. Reading it meanwhile is safe: '
        f'python -m tgt_jax.evaluate --workdir={workdir}') from None
  except OSError as error:
    if error.errno not in _READ_ONLY_ERRNOS:
      raise
    return False
  return True


def open_run(config: ml_collections.ConfigDict, workdir: str, *,
             overwrite: bool = False, read_only: bool = False,
             exit_stack: contextlib.ExitStack | None = None
             ) -> tuple[Run, dataset_lib.Dataset]:
  """Resolves and checks the config, loads the data, claims the workdir.

  Bad config values and bad data fail before anything is written. A run
  that trains (not `read_only`) holds the workdir's lock until
  `exit_stack` closes; if the workdir turns out to be read-only, the run
  becomes `read_only` (see `train_and_evaluate`). A read-only run writes
  nothing into the workdir.
  """
  # The values as set first: a bad one would also spoil the fields that
  # `resolve` derives from it, each then reported as if set by hand.
  problems = config_lib.range_errors(config)
  if problems:
    raise ConfigError(problems)
  config = config_lib.resolve(config)
  mesh = sharding.create_mesh()
  validate(config, mesh)
  dataset = loading.load_dataset(config)
  if not read_only:
    first = jax.process_index() == 0
    os.makedirs(workdir, exist_ok=True)
    if first and not _hold_workdir(workdir, exit_stack):
      read_only = True
    run_guard.claim_workdir(workdir, config, overwrite,
                            write=first and not read_only)
  run = Run(config=config, workdir=workdir, mesh=mesh, overwrite=overwrite,
            read_only=read_only,
            writer=monitoring.create_writer(
                workdir, enabled=jax.process_index() == 0 and not read_only),
            results={} if read_only else evaluation.read_results(workdir),
            progress=training_loop.RunProgress(plan(config, dataset)))
  logging.info('Devices: %s. %s', jax.devices(), config_lib.input_sizes(config))
  logging.info('Data: %s', dataset.describe())
  return run, dataset


def open_workdir(workdir: str, methods_to_restore=None, split=None,
                 checkpoint=None) -> tuple[Run, dataset_lib.Dataset]:
  """A read-only run of the config a finished (or running) `workdir` was
  trained with (its config.json), optionally narrowed to some methods,
  evaluated on another split or reporting the other checkpoint."""
  config = run_guard.read_run_config(workdir)
  if methods_to_restore:
    config.methods = tuple(methods_to_restore)
  if split:
    config.dataset.eval_split = split
  if checkpoint:
    config.report_checkpoint = checkpoint
  return open_run(config, workdir, read_only=True)


def run_stages(run: Run, dataset: dataset_lib.Dataset, evaluate_all: bool = True
               ) -> tuple[teachers_lib.Teachers, dict[str, Trained]]:
  """The stages, top to bottom, each evaluated and recorded unless not
  `evaluate_all`. Returns the frozen teachers and the students by method."""
  config = run.config
  labeler = train_labeler(run, dataset)
  if evaluate_all:
    run.record('teacher_labeler', evaluate(run, dataset, labeler))

  generator = None
  # The training compute of each teacher trained here, for its students'.
  teacher_compute = {'teacher_labeler': labeler.compute}
  if needs_generator(config):
    generator, teacher_compute['teacher_generator'] = train_generator(
        run, dataset, labeler)
  teachers = frozen_teachers(run, dataset, labeler, generator)
  if (generator is not None and generator.generator_model.has_encoder and
      evaluate_all):
    run.record('reconstruction_agreement',
               reconstruction_agreement(run, dataset, teachers))

  students = {}
  for method in config.methods:
    key, students[method] = train_student(run, dataset, teachers, method)
    if evaluate_all:
      report = evaluate(run, dataset, students[method])
      report['compute'] = compute.with_teachers(report['compute'], [
          teacher_compute[stage]
          for stage in teachers_used(method, config)
          if teacher_compute.get(stage) is not None])
      if methods.get(method).uses_generator:
        report['latent_displacement'] = latent_displacement(
            run, dataset, teachers, method, students[method])
      run.record(key, report)
      logging.info('%s: %s', key, {k: v for k, v in run.results[key].items()
                                   if k != 'per_class'})
  return teachers, students


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       overwrite: bool = False) -> dict[str, Any]:
  """Runs every stage and returns the results written to results.json.

  A workdir written with a different config is refused unless `overwrite`
  (see `run_guard`), and so is one where another process trains
  (`LOCK_FILE`). Results of models this run does not train (a method
  dropped from `config.methods`) are kept in results.json, which also
  records where the results come from (`run_info`). A read-only workdir
  of a finished run with the same config reports its results.
  """
  with contextlib.ExitStack() as exit_stack:
    run, dataset = open_run(config, workdir, overwrite=overwrite,
                            exit_stack=exit_stack)
    if run.read_only:
      return _finished_results(run, dataset)
    run.record('run_info', {**provenance.provenance(),
                            'split': run.config.dataset.eval_split})
    monitoring.write_config(run.writer, run.config)
    teachers, students = run_stages(run, dataset)
    if teachers.generator is not None and jax.process_index() == 0:
      save_samples(run, dataset, teachers, students)
    run.writer.close()
    return run.results


def _finished_results(run: Run, dataset: dataset_lib.Dataset
                      ) -> dict[str, Any]:
  """The results of a read-only workdir whose run finished (every planned
  stage has its result), or a WorkdirError saying what is missing."""
  results = evaluation.read_results(run.workdir)
  missing = [name for name in plan(run.config, dataset)
             if name not in results]
  if missing:
    raise errors_lib.WorkdirError(
        f'{run.workdir}: read-only, and its run has not finished (no '
        f'result for {missing}); make it writable or pass another '
        '--workdir.')
  logging.info('%s is read-only and its run with this config finished; '
               'its results (results.md):\n%s', run.workdir,
               evaluation.results_table(results))
  return results
