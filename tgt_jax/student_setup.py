"""A student of one method, assembled in one place.

`create(config, method, data, teachers, mesh, rng)` builds everything a
student's training starts from: its classifier, the config's loss terms and
long-tail adjustment, the optimiser, its key in results.json, the initial
`TrainState` (replicated over the mesh) and the jitted step. Training
(`train.train_student`), the benchmark and the tests all build their
students here, so the step the benchmark times is the step training takes,
loss terms and long-tail adjustment included.
"""

import dataclasses
from typing import Any, Callable

import jax
import ml_collections
import optax

from tgt_jax import compute
from tgt_jax import methods
from tgt_jax import sharding
from tgt_jax import teachers as teachers_lib
from tgt_jax import train_steps
from tgt_jax.data import dataset as dataset_lib
from tgt_jax.models import build
from tgt_jax.models import classifier as classifier_lib


@dataclasses.dataclass(frozen=True)
class StudentData:
  """What a student's setup reads of the data it trains on.

  `student_class_counts` (the long-tail subset) and `teacher_class_counts`
  (the labeler's train split) set the long-tail adjustment;
  `num_examples` (of the student's subset) the optimiser's schedule.
  """
  num_classes: int
  image_shape: tuple[int, int, int]
  student_class_counts: tuple[int, ...]
  teacher_class_counts: tuple[int, ...]
  num_examples: int

  @classmethod
  def of(cls, dataset: dataset_lib.Dataset) -> 'StudentData':
    # Tuples, not arrays: the dataclass stays comparable and hashable.
    return cls(num_classes=dataset.num_classes,
               image_shape=tuple(dataset.image_shape),
               student_class_counts=tuple(
                   int(c) for c in dataset.student_class_counts),
               teacher_class_counts=tuple(
                   int(c) for c in dataset.teacher_class_counts),
               num_examples=dataset.num_examples('student'))

  @classmethod
  def uniform(cls, num_classes: int, image_shape: tuple[int, int, int],
              num_examples: int) -> 'StudentData':
    """Data without a dataset (e.g. the benchmark's synthetic batches): one
    count per class. The adjustment's values then differ from a real run's;
    its arithmetic, which is all a timing sees, does not."""
    ones = (1,) * num_classes
    return cls(num_classes, tuple(image_shape), ones, ones, num_examples)


@dataclasses.dataclass(frozen=True)
class StudentSetup:
  """A student of one method, ready to train.

  `step(state, teachers, batch, step_rng) -> (state, metrics)` is
  `train_step` jitted over the mesh; `state` is the initial state at step 0,
  replicated; `num_steps` and `steps_per_epoch` the schedule `tx` follows.
  """
  method: str
  classifier: classifier_lib.Classifier
  terms: tuple[Any, ...]
  long_tail: train_steps.LongTailAdjustment | None
  tx: optax.GradientTransformation
  key: str
  num_steps: int
  steps_per_epoch: float
  state: train_steps.TrainState
  train_step: train_steps.StepFn
  step: train_steps.StepFn
  step_rng: jax.Array

  def stage_step(self, teachers) -> compute.Step:
    """The step as the training loop calls it, `(state, batch)`, with the
    frozen `teachers` and the step key; its `flops` are what training
    records and the benchmark reports."""
    return compute.Step(self.step, self.train_step, before=(teachers,),
                        after=(self.step_rng,))


def loss_setup(config: ml_collections.ConfigDict, data: StudentData
               ) -> tuple[tuple[Any, ...],
                          train_steps.LongTailAdjustment | None]:
  """(the config's loss terms, its long-tail adjustment or None)."""
  terms = train_steps.loss_terms(config, data.num_classes)
  long_tail = train_steps.LongTailAdjustment.create(
      config.long_tail_loss, data.student_class_counts,
      data.teacher_class_counts)
  return terms, long_tail


def result_key(config: ml_collections.ConfigDict, method: str,
               data: StudentData) -> str:
  """The student's key in results.json and students/, e.g.
  'kd+logit_adjusted+emb_compressed'."""
  return train_steps.result_key(methods.trained_name(method, config),
                                *loss_setup(config, data))


def classifier(config: ml_collections.ConfigDict, data: StudentData
               ) -> classifier_lib.Classifier:
  """The student's classifier, in the config's compute dtype."""
  return build.classifier(config.student, data.num_classes,
                          build.compute_dtype(config))


def random_variables(student: classifier_lib.Classifier, channels: int,
                     seed: int) -> dict[str, Any]:
  """Variables of the student's shapes filled with NumPy, on the host, for
  `create(variables=...)` in benchmarks and tests: no init compile, and
  each setup places its own device copy (a donating step frees the one it
  is given)."""
  size = student.image_size
  return jax.device_get(teachers_lib.random_variables(
      student.network, (1, size, size, channels), seed))


def create(config: ml_collections.ConfigDict, method: str, data: StudentData,
           teachers, mesh, rng: jax.Array, *,
           variables: dict[str, Any] | None = None,
           tx: optax.GradientTransformation | None = None,
           pretrain_batches: Callable[[int], Any] | None = None,
           donate: bool = True) -> StudentSetup:
  """The student of `method` under a resolved `config`.

  Args:
    config: the resolved config (its `student`, optimiser, `distill`,
      `exploration`, `embedding_distill` and `long_tail_loss`).
    method: a row of the method table.
    data: what the setup reads of the training data.
    teachers: the frozen teachers (the loss terms' states are shaped by, and
      pre-trained against, them).
    mesh: the device mesh the state is replicated on and the step runs over.
    rng: the student's key: the classifier's initialisation, the loss
      terms' (folded with 3, then the term's index) and the steps' base key
      (folded with 1).
    variables: initial classifier variables instead of its `init` from
      `rng` (benchmarks and tests: `random_variables`, no init compile).
    tx: an optimiser instead of the config's (tests: one whose first step
      moves the parameters whatever the warm-up).
    pretrain_batches: `batches(i)`, on device: each loss term pre-trains on
      them; None skips it (a read-only run restores the trained state, and
      a benchmark times the step alone).
    donate: whether the step donates (frees) the state it is given.
  """
  student = classifier(config, data)
  terms, long_tail = loss_setup(config, data)
  num_steps = dataset_lib.steps_for_epochs(data.num_examples,
                                           config.batch_size,
                                           config.num_epochs)
  steps_per_epoch = data.num_examples / config.batch_size
  if tx is None:
    tx = train_steps.create_optimizer(config, steps_per_epoch, num_steps)
  term_states = {}
  for term in terms:
    term_rng = jax.random.fold_in(jax.random.fold_in(rng, 3), len(term_states))
    term_states[term.name] = term.init(term_rng, teachers, data.image_shape)
    if pretrain_batches is not None:
      term_states[term.name] = term.pretrain(
          term_states[term.name], method, teachers, pretrain_batches, config,
          jax.random.fold_in(term_rng, 1))
  if variables is None:
    variables = student.init(rng, data.image_shape[-1])
  state = sharding.put_replicated(
      train_steps.create_train_state(variables, tx, term_states), mesh)
  train_step = train_steps.make_train_step(method, student, tx, config,
                                           terms, long_tail)
  return StudentSetup(
      method=method, classifier=student, terms=terms, long_tail=long_tail,
      tx=tx, key=train_steps.result_key(methods.trained_name(method, config),
                                   terms, long_tail),
      num_steps=num_steps, steps_per_epoch=steps_per_epoch, state=state,
      train_step=train_step,
      step=train_steps.jit_step(train_step, mesh, donate),
      step_rng=jax.random.fold_in(rng, 1))
