"""The training compute of a stage: FLOPs of its step, steps, wall time.

Every stage (the labeler, the generator, each student) records

    flops_per_step  XLA's count of one step (`step_flops`), None if the
                    backend gives none;
    steps           the steps the stage trains (its schedule's, whichever
                    checkpoint the run reports);
    train_flops     flops_per_step * steps (None without a count);
    wall_s          seconds of the training loop that produced the final
                    state, over every process that ran it (`training_loop`).

A student's record adds `teacher_flops`, the `train_flops` of the teachers
trained here that it depends on (`train.teachers_used`), and
`total_flops`, its own plus theirs. The count is the step's whole program:
in a TGT step it includes the frozen teachers' passes (the labeler's
labels, the generator's decoding, the exploration's gradient through G,
the labeler and the student), as in kd it includes the labeler's forward
pass.

The record of a stage lives beside its checkpoints, in
<stage>/compute.json: {"flops_per_step": float | null, "wall_s": {step:
seconds}}, the seconds written before the checkpoint of that step is
saved, so every checkpoint a resume can start from has its time.
"""

import dataclasses
import os
from typing import Any, Callable, Mapping, Optional, Sequence

from absl import logging
import jax

from tgt_jax import files

COMPUTE_FILE = 'compute.json'


def step_flops(raw_step: Callable, *args) -> Optional[float]:
  """FLOPs of one step from XLA's cost analysis of the program lowered for
  the CPU, before any device pass: the count depends on the program, not
  the device, and on GPUs the compiled program's convolutions are cuDNN
  calls that its own cost analysis leaves out (and the GPU client has no
  analysis of the lowered program). None, with a warning saying why, when
  XLA gives no count: a missing number is never replaced by a guess."""
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype),
                          args)
  try:
    with jax.default_device(jax.devices('cpu')[0]):
      analysis = jax.jit(raw_step).lower(*abstract).cost_analysis()
  except RuntimeError as error:  # E.g. JAX_PLATFORMS without 'cpu'.
    logging.warning('No FLOP count of the step: %s', error)
    return None
  if isinstance(analysis, (list, tuple)):  # Older JAX: one dict per program.
    analysis = analysis[0] if analysis else None
  if not analysis or analysis.get('flops') is None:
    logging.warning('XLA\'s cost analysis of the step has no FLOP count; '
                    'flops_per_step is recorded as None.')
    return None
  return float(analysis['flops'])


@dataclasses.dataclass(frozen=True)
class Step:
  """A stage's step as the training loop calls it, `step(state, batch)`,
  and its FLOPs.

  `jitted(state, *before, batch, *after)` is what runs; `raw` is the same
  function unjitted, which `flops` lowers with the same arguments (abstract:
  large teachers never become constants of the counted program).
  """
  jitted: Callable
  raw: Callable
  before: tuple[Any, ...] = ()
  after: tuple[Any, ...] = ()

  def __call__(self, state, batch):
    return self.jitted(state, *self.before, batch, *self.after)

  def flops(self, state, batch) -> Optional[float]:
    return step_flops(self.raw, state, *self.before, batch, *self.after)


def read(directory: str) -> dict[str, Any]:
  """The stage's compute.json ({} if it has none, e.g. a stage trained
  before it was recorded)."""
  return files.read_json(os.path.join(directory, COMPUTE_FILE), {})


def write(directory: str, record: Mapping[str, Any]) -> None:
  files.write_json(os.path.join(directory, COMPUTE_FILE), dict(record))


def seconds_at(record: Mapping[str, Any], step: int) -> Optional[float]:
  """Wall seconds the record holds for the checkpoint at `step` (0 at step
  0; None if the step has no entry)."""
  if step == 0:
    return 0.0
  return record.get('wall_s', {}).get(str(step))


def times(flops: Optional[float], count: int) -> Optional[float]:
  return None if flops is None else flops * count


def stage_compute(directory: str, steps: int) -> dict[str, Any]:
  """The record of the stage in `directory` that trained `steps` steps."""
  record = read(directory)
  flops = record.get('flops_per_step')
  return {'flops_per_step': flops, 'steps': steps,
          'train_flops': times(flops, steps),
          'wall_s': seconds_at(record, steps)}


def total(values: Sequence[Optional[float]]) -> Optional[float]:
  """Their sum, or None if any is unknown (a partial sum would
  undercount)."""
  return None if any(v is None for v in values) else float(sum(values))


def with_teachers(student: Mapping[str, Any],
                  teachers: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
  """A student's record with `teacher_flops` (the `train_flops` of the
  `teachers` it depends on) and `total_flops`."""
  teacher_flops = total([t['train_flops'] for t in teachers])
  return {**student, 'teacher_flops': teacher_flops,
          'total_flops': total([student['train_flops'], teacher_flops])}
