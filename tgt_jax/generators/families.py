"""The teacher-generator families: `config.teacher_generator.family` names a
row of `FAMILIES`.

A family is one module (its `TeacherGenerator`, and a `Trainer` to train it
in the pipeline; generators/interface.py) plus one row here. The rest of the
code (the frozen teachers, the explorers, the generator stage, the sample
grid) reads a generator only through the interface.
"""

import ml_collections

from tgt_jax.generators import bigbigan
from tgt_jax.generators import interface
from tgt_jax.generators import vae

FAMILIES: dict[str, interface.Family] = {
    # The paper's [paper]: converted from TF-Hub, or trained here small.
    'bigbigan': interface.Family(model=bigbigan.BigBiGAN,
                                 trainer=bigbigan.trainer, converted=True),
    # [ours] A convolutional VAE: trains reliably on a CPU in a minute.
    'vae': interface.Family(model=vae.VAE, trainer=vae.trainer),
}


def get(gen_config: ml_collections.ConfigDict) -> interface.Family:
  """The row of `teacher_generator.family`."""
  return FAMILIES[gen_config.family]


def model(gen_config: ml_collections.ConfigDict,
          dtype) -> interface.TeacherGenerator:
  """The frozen teacher of a resolved `teacher_generator` section."""
  return get(gen_config).model.from_config(gen_config, dtype)


def config_errors(gen_config: ml_collections.ConfigDict,
                  needs_encoder: bool) -> list[str]:
  """What the chosen family cannot do for a run, by field (the family name
  itself is checked with config_lib.CHOICES).

  Args:
    gen_config: the resolved `teacher_generator` section.
    needs_encoder: whether the run needs E(x) (a method that starts from
      it, or encoder features for a loss term).
  """
  name = gen_config.family
  family = FAMILIES[name]
  errors = []
  if needs_encoder and not family.model.has_encoder:
    errors.append(
        f'teacher_generator.family={name!r} has no encoder E(x), which this '
        'run needs (a method that explores from E(x), or '
        'embedding_distill.source=encoder): run only tgt_prior among the '
        'TGT methods (--config.methods="(\'kd\',\'tgt_prior\')"), or choose '
        'a family with an encoder: '
        f'{tuple(n for n, f in FAMILIES.items() if f.model.has_encoder)}.')
  if gen_config.pretrained_checkpoint and not family.converted:
    errors.append(
        f'teacher_generator.pretrained_checkpoint is set, but a converted '
        f'checkpoint holds {[n for n, f in FAMILIES.items() if f.converted]}, '
        f'not teacher_generator.family={name!r}: unset one of them.')
  if (family.trainer is None and not gen_config.pretrained_checkpoint and
      not gen_config.checkpoint):
    errors.append(
        f'teacher_generator.family={name!r} cannot be trained here: set '
        'teacher_generator.pretrained_checkpoint or .checkpoint.')
  return errors
