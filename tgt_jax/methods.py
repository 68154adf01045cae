"""Which methods exist, and what each one trains the student on.

`METHODS` is the one table: a method is the target its real images get
(the one-hot label, or the labeler's soft label mixed with it), whether
those images are mixed first (mixup), and, for TGT, an explorer that finds
the latents of the generated images. The one train step (train_steps.py)
reads everything else from here. To add a method, add an explorer (if it
generates) and a row.

Mixup (`kd_mixup`, and every TGT method with `mixup.on_tgt`): function
matching (Beyer et al. 2022, "Knowledge distillation: A good teacher is
patient and consistent"): the student and the labeler see the same mixed
image, and the target is the labeler's output on it,

  x_mix = lam * x + (1 - lam) * x[perm],   target h(x_mix),

not the mixture of h(x) and h(x[perm]) nor of the labels. The one-hot part
of the target (distill.alpha < 1) is the mixed label lam * onehot(y) +
(1 - lam) * onehot(y[perm]), as in mixup (Zhang et al. 2018) [ours: so that
kd_mixup is kd on mixed images; at the default alpha = 1 it is the paper's
function matching, the labeler's output alone].

Exploration rules [paper: "sampling or gradient-based methods"; the exact
form of each is ours, see shared notes tgt_method.md]:

  tgt_random    z~ = E(x) + sigma * eps, eps ~ N(0, I)
  tgt_gradient  z^{t+1} = z^t + eta * g / ||g||,
                g = d/dz CE(h(G(z)), f(G(z))) at z^t, T steps from E(x):
                the student-teacher disagreement on the decoded image,
                differentiated through the labeler h and the student f
                (`exploration.labeler_gradient=False` holds h's
                probabilities fixed at each z instead)
  tgt_prior     z~ ~ N(0, I), no encoder (an ablation)

[ours] Inside the disagreement the student runs in inference mode (its
running BatchNorm statistics): each example's latent then moves by its own
disagreement alone, as the rule says, instead of through the statistics of
the whole batch; and it is the function the student computes at test time.
"""

import dataclasses
import difflib
from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import ml_collections

from tgt_jax import exploration
from tgt_jax import losses
from tgt_jax import teachers as teachers_lib


@dataclasses.dataclass(frozen=True)
class ExploreInputs:
  """What an explorer may use besides E(x).

  Attributes:
    teachers: the frozen teachers.
    student_logits: [0, 1] images -> the current student's logits, in
      inference mode and without gradient to its parameters.
    rng: this step's key.
    num_examples: the batch's size.
    config: the experiment config (its exploration and distill sections).
  """
  teachers: teachers_lib.Teachers
  student_logits: Callable[[jax.Array], jax.Array]
  rng: jax.Array
  num_examples: int
  config: ml_collections.ConfigDict


# An explorer: (E(x) or None, inputs) -> the latents to decode [N, d].
Explorer = Callable[[Optional[jax.Array], ExploreInputs], jax.Array]


def explore_random(z: jax.Array, inputs: ExploreInputs) -> jax.Array:
  return exploration.perturb_latent(z, inputs.rng,
                                    inputs.config.exploration.sigma)


def explore_prior(z: None, inputs: ExploreInputs) -> jax.Array:
  del z  # No encoder: the compiled step has no encoder pass.
  return inputs.teachers.sample_prior(inputs.rng, inputs.num_examples)


def disagreement(teachers: teachers_lib.Teachers, student_logits,
                 latents: jax.Array, temperature: float,
                 labeler_gradient: bool = True) -> jax.Array:
  """Per-example CE(softmax(h(G(z)) / tau), f(G(z)) / tau) [N]."""
  generated = teachers.generate(latents)
  teacher_logits, _ = teachers.label(generated)
  if not labeler_gradient:
    teacher_logits = jax.lax.stop_gradient(teacher_logits)
  teacher_probs = jax.nn.softmax(teacher_logits / temperature)
  return losses.soft_cross_entropy(teacher_probs,
                                   student_logits(generated) / temperature)


def explore_gradient(z: jax.Array, inputs: ExploreInputs) -> jax.Array:
  """Ascends the student-teacher disagreement from z = E(x)."""
  cfg = inputs.config.exploration
  if cfg.init_sigma > 0:
    z = exploration.perturb_latent(z, inputs.rng, cfg.init_sigma)

  def per_example(latents):
    return disagreement(inputs.teachers, inputs.student_logits, latents,
                        inputs.config.distill.temperature,
                        cfg.labeler_gradient)

  return exploration.ascend_latent(z, per_example, cfg.step_size,
                                   cfg.num_steps, cfg.normalize)


class Mixup(NamedTuple):
  """A mixed batch: images = lam * x + (1 - lam) * x[perm]."""
  images: jax.Array
  lam: jax.Array  # Scalar: one coefficient for the whole batch.
  perm: jax.Array  # [N] int: each example's partner.

  def label_probs(self, labels: jax.Array, num_classes: int) -> jax.Array:
    """The mixed images' labels, lam * onehot(y) + (1 - lam) *
    onehot(y[perm]) [N, num_classes]."""
    onehot = jax.nn.one_hot(labels, num_classes)
    return self.lam * onehot + (1.0 - self.lam) * onehot[self.perm]


def mixup(rng: jax.Array, images: jax.Array, concentration: float) -> Mixup:
  """Mixes a batch with a random permutation of itself.

  [ext] One lam ~ Beta(c, c) for the whole batch, as big_vision's
  `utils.mixup` by default (its distillation configs: c = 1) and Zhang et
  al.'s code; big_vision notes that one lam per example "is usually a bad
  idea". [ext] lam is flipped to max(lam, 1 - lam), as big_vision sorts its
  weights: each mixed image is mostly its own example, so y is its dominant
  label (the step's accuracy metric). [ours] The partner is a uniform random
  permutation, as in Zhang et al.'s code (big_vision rolls the batch by
  one). Each draw is a function of `rng` alone.
  """
  lam_rng, perm_rng = jax.random.split(rng)
  lam = jax.random.beta(lam_rng, concentration, concentration)
  lam = jnp.maximum(lam, 1.0 - lam)
  perm = jax.random.permutation(perm_rng, images.shape[0])
  return Mixup(lam * images + (1.0 - lam) * images[perm], lam, perm)


@dataclasses.dataclass(frozen=True)
class Method:
  """What a method trains the student on.

  Attributes:
    soft_targets: real images are distilled from the labeler, with target
      alpha * h(x) + (1 - alpha) * onehot(y) (kd and every TGT method, so
      that TGT differs from kd only by the generated images); False: the
      one-hot label alone.
    explore: finds the latents of one generated image per real image, which
      the student learns with the labeler's soft label; None: real images
      only.
    encodes: the explorer starts from E(x); False skips the encoder.
    mixup: the real images are mixed (`mixup`) before the student and the
      labeler see them; the target is that of the mixed image (module doc).
      [ours] An explorer still starts from E(x) of the unmixed images, so
      the latent cache stays exact and the generated images are TGT's.
  """
  soft_targets: bool
  explore: Optional[Explorer] = None
  encodes: bool = True
  mixup: bool = False

  @property
  def uses_labeler(self) -> bool:
    return self.soft_targets or self.explore is not None

  @property
  def uses_generator(self) -> bool:
    return self.explore is not None


METHODS: dict[str, Method] = {
    'onehot': Method(soft_targets=False),
    'kd': Method(soft_targets=True),
    'kd_mixup': Method(soft_targets=True, mixup=True),
    'tgt_random': Method(soft_targets=True, explore=explore_random),
    'tgt_gradient': Method(soft_targets=True, explore=explore_gradient),
    'tgt_prior': Method(soft_targets=True, explore=explore_prior,
                        encodes=False),
}


def name_errors(names) -> list[str]:
  """One line per name in `names` (config.methods) that is no method, with
  the nearest known name and the list."""
  if not names:
    return [f'methods: empty; name at least one of {tuple(METHODS)}, e.g. '
            '--config.methods="(\'kd\',)".']
  problems = []
  for name in names:
    if name in METHODS:
      continue
    close = difflib.get_close_matches(str(name), METHODS, n=1)
    hint = f' (did you mean {close[0]!r}?)' if close else ''
    problems.append(f'methods: unknown method {name!r}{hint}; choose from '
                    f'{tuple(METHODS)}, e.g. --config.methods="(\'kd\',)".')
  return problems


def get(name: str) -> Method:
  """The method called `name`; a ValueError lists the known ones."""
  problems = name_errors([name])
  if problems:
    raise ValueError(problems[0])
  return METHODS[name]


def in_run(name: str, config: ml_collections.ConfigDict) -> Method:
  """The method `name` as a run of `config` trains it: with
  `config.mixup.on_tgt`, a TGT method also mixes its real images."""
  method = get(name)
  if config.mixup.on_tgt and method.uses_generator:
    return dataclasses.replace(method, mixup=True)
  return method


def trained_name(name: str, config: ml_collections.ConfigDict) -> str:
  """What a run of `config` trains as `name`: e.g. 'tgt_random+mixup' (the
  start of its results.json key)."""
  added = in_run(name, config).mixup and not get(name).mixup
  return f'{name}+mixup' if added else name


def generating(names) -> list[str]:
  """The names among `names` whose method decodes generated images."""
  return [name for name in names if get(name).uses_generator]


def encoding(names) -> list[str]:
  """The names among `names` whose method explores from E(x)."""
  return [name for name in generating(names) if get(name).encodes]
