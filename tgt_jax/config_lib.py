"""The one config schema every experiment overrides, and what follows from it.

`base_config()` holds every field a run reads, with defaults. The experiment
files in `configs/` start from it and override what differs (the digits demo,
image folders, the paper's long-tail benchmarks). Fields left `None` are
derived from the dataset by `resolve()`, which every program calls once,
after the command line's `--config.<field>` overrides:

  student.image_size, teacher_labeler.image_size   <- dataset.image_size
  student/teacher_labeler.small_image_stem          <- image_size < 64
  student/teacher_labeler.mean, .std                <- 0.5 per channel
  teacher_generator.channels                        <- dataset.channels
  teacher_generator.image_size                      <- the smallest 4 * 2^k
                                                       >= dataset.image_size
  teacher_generator.channel_multipliers             <- one GBlock per
                                                       doubling from 4x4
  teacher_generator.attention_resolution            <- image_size // 2 (>= 8)
  teacher_generator.latent_dim                      <- 8 per latent chunk
  teacher_generator.encoder_image_size              <- dataset.image_size
  teacher_generator.encoder_small_image_stem        <- its size < 64
  teacher_generator.discriminator_channel_multipliers <- one DBlock per halving
  dataset.max_shift                                 <- dataset.image_size // 8
  shot_groups.*_threshold                           <- from the student's
                                                       class counts (data)

`check_consistency()` then fails, naming the fields, on a combination that
cannot work (e.g. a student input size other than the pipeline's, or a
mean/std of the wrong length), so nothing is ever resized or reshaped
silently. Set a derived field explicitly to override it.

Tags in comments: [paper] stated in the TGT paper, [ext] another primary
source, [ours] our choice (the paper's Table 6 values were not available to
us).
"""

import dataclasses
import math
from typing import Any

import ml_collections
from ml_collections import config_dict

from tgt_jax import errors
from tgt_jax.data import image_folder
from tgt_jax.generators import families as generator_families
from tgt_jax.models import resnet

# Table 6 of the paper lists these rows; every paper config sets each one
# with a comment naming its source.
TABLE_6_FIELDS = (
    'num_epochs', 'optimizer', 'schedule', 'warmup_epochs',
    'peak_learning_rate', 'batch_size', 'teacher_labeler.image_size',
    'teacher_generator.image_size', 'student.image_size', 'exploration.sigma',
    'exploration.step_size', 'exploration.num_steps')

# Below this input size the ImageNet stem (7x7/2 conv, 3x3/2 max-pool)
# would leave too few pixels for four stages; a 3x3/1 stem is used instead.
SMALL_IMAGE_STEM_BELOW = 64
LATENT_DIMS_PER_CHUNK = 8
# Widest generator stage, in units of base_channels (BigGAN-128's 16).
MAX_CHANNEL_MULTIPLIER = 16


def _classifier(depth: int, width_multiplier: float
                ) -> ml_collections.ConfigDict:
  """A ResNet classifier (student or labeler) and its input recipe."""
  model = ml_collections.ConfigDict()
  model.depth = depth  # 18, 34, 50, 101 or 152.
  model.width_multiplier = width_multiplier  # Stage widths 64 * 2^i * this.
  model.small_image_stem = config_dict.placeholder(bool)  # None: derived.
  model.image_size = config_dict.placeholder(int)  # None: dataset's.
  model.mean = config_dict.placeholder(tuple)  # Unit range, per channel.
  model.std = config_dict.placeholder(tuple)
  model.channel_order = 'rgb'  # 'bgr' for Caffe-style checkpoints.
  # Layout options that converted checkpoints need (models/resnet.py);
  # the defaults are this codebase's ResNet v1.5.
  model.conv_bias = False
  model.strided_conv = '3x3'  # Bottleneck conv that strides: '3x3' | '1x1'.
  model.stride_placement = 'first'  # Unit of a stage that strides.
  model.strided_padding = 'same'  # Strided 3x3 convs: 'same' | 'symmetric'.
  model.batch_norm_epsilon = 1e-5
  return model


def _recipe(section: ml_collections.ConfigDict, *, num_epochs: float,
            batch_size: int, peak_learning_rate: float,
            warmup_epochs: float, weight_decay: float) -> None:
  """The optimisation fields of a trained classifier (Table 6 rows)."""
  section.num_epochs = num_epochs
  section.batch_size = batch_size  # Global, real images per step.
  section.optimizer = 'sgd'  # 'sgd' (Nesterov) | 'adamw'.
  section.momentum = 0.9
  # 'cosine': linear warm-up then cosine decay to 0; 'step': warm-up, then
  # the rate times decay_factor at each of decay_epochs; 'constant'.
  section.schedule = 'cosine'
  section.warmup_epochs = warmup_epochs
  section.peak_learning_rate = peak_learning_rate
  section.weight_decay = weight_decay  # On kernels only, not BN or biases.
  section.decay_epochs = ()  # 'step' only.
  section.decay_factor = 0.1  # 'step' only.


def _labeler(depth: int, width_multiplier: float,
             **recipe: float) -> ml_collections.ConfigDict:
  """The teacher labeler's section: a classifier, where it comes from, and
  its own optimisation recipe."""
  labeler = _classifier(depth, width_multiplier)
  labeler.checkpoint = ''  # A finished labeler stage to reuse.
  labeler.init_checkpoint = ''  # A converted classifier to fine-tune.
  _recipe(labeler, **recipe)
  return labeler


def base_config() -> ml_collections.ConfigDict:
  """Every field a run reads, with the small-data defaults of the demo."""
  config = ml_collections.ConfigDict()
  config.seed = 0
  # The students a run trains, in order; the method table is
  # tgt_jax/methods.py (tgt_prior, an ablation, is not run by default).
  config.methods = ('onehot', 'kd', 'tgt_random', 'tgt_gradient')
  # Compute dtype of every network ('float32' | 'bfloat16'); parameters,
  # BatchNorm statistics, logits and latents stay float32.
  config.dtype = 'float32'

  config.dataset = ml_collections.ConfigDict()
  # 'digits' | 'mnist' (bundled: data/bundled.py) | 'image_folder' |
  # 'imagenet_lt' | 'places_lt' | 'sun_lt' | 'fake' (random, for smoke
  # runs).
  config.dataset.name = 'digits'
  config.dataset.root = ''  # image_folder: ROOT/{train,test}/<class>/*.
  config.dataset.data_dir = ''  # TFDS data_dir, or sun_lt's images folder.
  config.dataset.split_dir = ''  # sun_lt: the exported DRAGON lists.
  config.dataset.cache_dir = ''  # TFDS label caches (default in data_dir).
  # What the input pipeline delivers: the student's input size.
  config.dataset.image_size = 8
  config.dataset.channels = 1
  config.dataset.test_per_class = 40  # Bundled: balanced test split.
  config.dataset.split_seed = 0  # Bundled: the test split never moves.
  # In memory: a balanced validation split carved from the train split
  # before anything trains on it (the test split is untouched); None: 10%
  # of the smallest class, at least 1 [ours]. Streams use the benchmark's
  # own val lists.
  config.dataset.val_per_class = config_dict.placeholder(int)
  config.dataset.on_decode_error = 'error'  # image_folder: 'error' | 'skip'.
  # In-memory augmentation of training images [ours]: a random crop within
  # max_shift pixels of zero padding (None: image_size // 8) and, if flip,
  # random horizontal flips. Streams use random-resized crops and flips.
  config.dataset.max_shift = config_dict.placeholder(int)
  config.dataset.flip = False
  # The split results.json reports: 'test' | 'val'.
  config.dataset.eval_split = 'test'
  config.dataset.cache = ''  # Streams: '' | 'memory' | a file prefix.
  config.dataset.shuffle_buffer = 16_384  # Streams: images per process.
  config.dataset.min_crop_area = 0.08  # Streams [ext: Inception crops].
  config.dataset.eval_crop_fraction = 0.875  # Streams: 224 of 256 [ext].

  config.long_tail = ml_collections.ConfigDict()
  config.long_tail.enabled = True  # Draw an exponential subset of train.
  config.long_tail.imbalance_factor = 50.0  # Head count / tail count.
  config.long_tail.max_count = 0  # Head class; 0: the smallest class's size.
  config.long_tail.seed = 0  # Which images are kept; fixed across seeds.

  # many: > many_threshold student train images; few: < few_threshold.
  # None [ours]: geometric thirds of the counts from head h to tail t,
  # many > h / r^(1/3) and few < h / r^(2/3) with r = h / t (for the OLTR
  # benchmarks set 100 / 20 [ext]).
  config.shot_groups = ml_collections.ConfigDict()
  config.shot_groups.many_threshold = config_dict.placeholder(float)
  config.shot_groups.few_threshold = config_dict.placeholder(float)

  # The student: the compact model TGT trains.
  config.student = _classifier(depth=18, width_multiplier=0.125)
  # Its optimisation: the Table 6 rows, at the top level as in the paper.
  _recipe(config, num_epochs=150.0, batch_size=64, peak_learning_rate=0.1,
          warmup_epochs=5.0, weight_decay=5e-4)

  # The teacher labeler: a stronger classifier than the student, trained
  # here with its own recipe and initialisation, restored from a finished
  # stage (`checkpoint`), or fine-tuned from a converted checkpoint
  # (`init_checkpoint`, see tgt_jax/convert_keras_resnet.py).
  config.teacher_labeler = _labeler(
      depth=18, width_multiplier=0.25, num_epochs=40.0, batch_size=64,
      peak_learning_rate=0.1, warmup_epochs=2.0, weight_decay=5e-4)

  # The teacher generator: an encoder E and a generator G of `family`
  # (tgt_jax/generators/families.py), converted from TF-Hub
  # (`pretrained_checkpoint`, the paper's BigBiGAN) or trained here. Every
  # family reads image_size, channels, latent_dim, base_channels,
  # channel_multipliers, encoder_image_size, checkpoint, num_epochs and
  # batch_size; `vae.*` are the VAE's, the others BigBiGAN's.
  gen = config.teacher_generator = ml_collections.ConfigDict()
  gen.family = 'bigbigan'  # [paper] | 'vae' [ours].
  gen.pretrained_checkpoint = ''  # A generators.convert_bigbigan output.
  gen.checkpoint = ''  # A finished generator stage to reuse.
  gen.image_size = config_dict.placeholder(int)  # G's output side.
  gen.channels = config_dict.placeholder(int)
  gen.latent_dim = config_dict.placeholder(int)  # None: 8 per chunk.
  gen.base_channels = 16
  gen.channel_multipliers = config_dict.placeholder(tuple)
  gen.embedding_dim = 16
  gen.attention_resolution = config_dict.placeholder(int)  # 0: none.
  gen.encoder_image_size = config_dict.placeholder(int)
  gen.encoder_depth = 18
  gen.encoder_width_multiplier = 0.25
  gen.encoder_small_image_stem = config_dict.placeholder(bool)
  gen.encoder_head_hidden = (128,)
  # Which unit of each encoder stage strides, and how strided convs pad:
  # the hub module's are not public; `convert_bigbigan --verify_with_hub`
  # reports the combination that matches (docs/paper_scale.md).
  gen.encoder_stride_placement = 'first'
  gen.encoder_strided_padding = 'same'
  # Only to train a generator here (the demo): the discriminator and the
  # optimisation.
  gen.discriminator_base_channels = 16
  gen.discriminator_channel_multipliers = config_dict.placeholder(tuple)
  gen.discriminator_latent_hidden = (128, 128)
  gen.discriminator_joint_hidden = (256,)
  gen.num_epochs = 50.0
  gen.batch_size = 64
  gen.learning_rate = 2e-4  # Adam, as BigGAN [ext].
  gen.discriminator_learning_rate = 2e-4
  gen.adam_b1 = 0.0  # BigGAN's betas [ext].
  gen.adam_b2 = 0.999
  # [ours] Not BigBiGAN: L1 of G(E(x)) - x and L2 of E(G(z)) - z, which make
  # a small model's E and G inverses within minutes; 0 turns them off.
  gen.reconstruction_weight = 100.0
  gen.latent_reconstruction_weight = 1.0
  # family='vae' (generators/vae.py): beta on the KL (1: the ELBO) and
  # Adam's rate [ours].
  gen.vae = ml_collections.ConfigDict()
  gen.vae.beta = 1.0
  gen.vae.learning_rate = 1e-3

  # A long-tail loss on every student (train_steps.LongTailAdjustment):
  # 'none' | 'logit_adjusted' (Menon et al. 2021, tau = 1) |
  # 'balanced_softmax' (Ren et al. 2020); results keyed <method>+<loss>.
  config.long_tail_loss = 'none'

  # Distillation targets (kd and every TGT method, so that TGT differs from
  # kd only by the generated samples) [ours].
  config.distill = ml_collections.ConfigDict()
  config.distill.temperature = 1.0  # tau, with the usual tau^2 factor.
  config.distill.alpha = 1.0  # Weight of the labeler's soft label.
  config.distill.generated_weight = 1.0  # lambda on generated images.

  # Mixup of the real images (methods.mixup): kd_mixup, function matching
  # (Beyer et al. 2022), always mixes; on_tgt also mixes the real images of
  # every TGT method (results keyed <method>+mixup).
  config.mixup = ml_collections.ConfigDict()
  # [ext] lam ~ Beta(c, c), one per batch: big_vision's distillation configs
  # use c = 1 (lam uniform).
  config.mixup.concentration = 1.0
  config.mixup.on_tgt = False  # [ours] Off: TGT as the paper states it.

  # Exploration of the latent (Table 6 rows sigma, eta, num steps).
  config.exploration = ml_collections.ConfigDict()
  config.exploration.sigma = 0.5  # Isotropic perturbation scale.
  config.exploration.step_size = 1.0  # eta, the length of each step.
  config.exploration.num_steps = 1
  config.exploration.normalize = True  # z += eta * g / ||g||.
  config.exploration.init_sigma = 0.0  # Noise before the gradient steps.
  # True: g differentiates CE(h(G(z)), f(G(z))) through both the labeler h
  # and the student f (the documented rule); False: h's probabilities are a
  # fixed target at each z and only f's path is differentiated.
  config.exploration.labeler_gradient = True
  # E(x) of every student image: 'auto' encodes each image once and keeps
  # it where that is exact (in-memory data, no augmentation), else encodes
  # every step; 'always' keeps E of the un-augmented image; 'never'.
  config.exploration.cache_latents = 'auto'

  # Embedding distillation (Ding & Lerch 2024 on EAsT), an extra loss term
  # on any method: (1 - w) * task + w * D(student features, t(e)).
  config.embedding_distill = ml_collections.ConfigDict()
  # 'none' | 'raw' (EAsT) | 'compressed' (Ding & Lerch) |
  # 'random_projection' (ours: g fixed at its random initialisation).
  config.embedding_distill.mode = 'none'
  # Whose embedding: 'labeler' (supervised, its pooled pre-logit features) |
  # 'encoder' (BigBiGAN's E, pooled backbone features: learnt without
  # labels, the setting the compression method was proposed for).
  config.embedding_distill.source = 'labeler'
  config.embedding_distill.weight = 0.6  # [paper] EAsT's w range 0.6..0.9.
  # [paper] EAsT's distance correlation; 'cosine_gram' (EAsT's other) or
  # 'projected_mse' (ours: with a trained student projection).
  config.embedding_distill.distance = 'distance_correlation'
  config.embedding_distill.compressed_dim = 32  # [ours] d_c.
  config.embedding_distill.pretrain_steps = 0  # [ours] 0: g trains jointly.
  # [ours] Adam for g and its head; EAsT trains with 1e-4 over far more
  # steps than the demo's.
  config.embedding_distill.teacher_learning_rate = 1e-3

  config.log_every_steps = 100
  config.checkpoint_every_steps = 500
  # How many of each stage's newest checkpoints stay on disk (0: all of
  # them, e.g. for tgt_jax.experiments.selection_rule) [ours].
  config.keep_checkpoints = 2
  # Validation (the val split) during every stage, every this many steps
  # and at the end; 0: only at the end.
  config.eval_every_steps = 200
  # Which checkpoint of each classifier results.json reports and the frozen
  # teachers use: 'last' or 'best' (by validation overall accuracy, the
  # later of ties; kept beside the last either way). [ours] 'last': stated
  # before the runs, a 'best' rule had to beat it on split-half validation
  # accuracy by an interval excluding 0, and none did over 20 demo runs
  # (`python -m tgt_jax.experiments.selection_rule`, docs/selection_rule.md).
  config.report_checkpoint = 'last'
  config.eval_batch_size = 256
  config.num_grid_samples = 10  # Columns of samples.png.
  return config


# ---------------------------------------------------------------------------
# Config-string arguments, big_vision style: 'root=DIR,size=64,quick=True'.
# ---------------------------------------------------------------------------


def _parse_value(text: str, default: Any) -> Any:
  if isinstance(default, bool):
    if text.lower() not in ('true', 'false', '1', '0'):
      raise ValueError(f'expected True or False, got {text!r}')
    return text.lower() in ('true', '1')
  if default is None or isinstance(default, str):
    return text
  return type(default)(text)


def parse_arg(arg: str, **defaults: Any) -> ml_collections.ConfigDict:
  """Parses a config file's argument 'k1=v1,k2=v2' (or 'flag' for True).

  Every key must be one of `defaults`, whose values give the types; a bare
  word sets a bool key to True. Raises a ConfigError naming the known keys.
  """
  result = ml_collections.ConfigDict(defaults)
  for item in filter(None, (part.strip() for part in arg.split(','))):
    key, has_value, text = item.partition('=')
    if key not in defaults:
      raise errors.ConfigError(
          f'{key}: unknown config argument in {arg!r}; the arguments are '
          f'{sorted(defaults)} (e.g. --config=configs/<file>.py:'
          f'{sorted(defaults)[0]}=...).')
    if not has_value:
      if not isinstance(defaults[key], bool):
        raise errors.ConfigError(
            f'{key}: the config argument needs a value; write {key}=...')
      result[key] = True
      continue
    try:
      result[key] = _parse_value(text, defaults[key])
    except ValueError as error:
      raise errors.ConfigError(
          f'{key}={text!r}: {error}; write {key}=<a '
          f'{type(defaults[key]).__name__}> in the config argument.'
      ) from None
  return result


# ---------------------------------------------------------------------------
# Shrinking a config: one function for demos, smoke runs and tests.
# ---------------------------------------------------------------------------


def shrink(config: ml_collections.ConfigDict, size: str) -> None:
  """Shrinks `config` in place, keeping every code path.

  'quick': the same models, few epochs (a first look in about two minutes;
  its accuracies mean nothing). 'tiny': every network a few channels wide,
  one epoch, logging every step (smoke runs and tests). Derived fields are
  reset, so that `resolve` fits them to the (possibly smaller) data.
  """
  if size == 'quick':
    config.num_epochs = 10
    config.teacher_labeler.num_epochs = 3
    config.teacher_generator.num_epochs = 3
    config.log_every_steps = 20
    config.checkpoint_every_steps = 50
    config.eval_every_steps = 100
    return
  if size != 'tiny':
    raise ValueError(f"shrink size must be 'quick' or 'tiny', got {size!r}.")
  for model in (config.student, config.teacher_labeler):
    model.depth = 18
    model.strided_conv = '3x3'  # Basic blocks have no 1x1 conv to stride.
    model.width_multiplier = 1 / 16
    model.small_image_stem = None
    model.image_size = None
  for recipe in (config, config.teacher_labeler):
    recipe.num_epochs = 1
    recipe.batch_size = 8
    recipe.warmup_epochs = 0
  gen = config.teacher_generator
  for field in ('image_size', 'channel_multipliers', 'attention_resolution',
                'latent_dim',
                'encoder_image_size', 'encoder_small_image_stem',
                'discriminator_channel_multipliers'):
    gen[field] = None
  gen.base_channels = 4
  gen.embedding_dim = 8
  gen.encoder_depth = 18
  gen.encoder_width_multiplier = 1 / 16
  gen.encoder_head_hidden = (16,)
  gen.discriminator_base_channels = 4
  gen.discriminator_latent_hidden = (16, 16)
  gen.discriminator_joint_hidden = (16,)
  gen.num_epochs = 1
  gen.batch_size = 8
  config.log_every_steps = 1
  config.checkpoint_every_steps = 1000
  config.eval_every_steps = 0
  config.eval_batch_size = 8
  config.num_grid_samples = 3


# ---------------------------------------------------------------------------
# Derived fields and consistency.
# ---------------------------------------------------------------------------


def generator_resolution(image_size: int) -> int:
  """The smallest side 4 * 2^k (k >= 1) a BigGAN generator makes, >= size."""
  resolution = 8
  while resolution < image_size:
    resolution *= 2
  return resolution


def generator_channel_multipliers(resolution: int) -> tuple[int, ...]:
  """Seed width and one GBlock per doubling from 4x4 to `resolution`.

  Widths halve block by block and end at 1 (x base_channels), capped at
  MAX_CHANNEL_MULTIPLIER: 16 -> (4, 2, 1), 32 -> (8, 4, 2, 1), 128 ->
  (16, 16, 8, 4, 2, 1), BigGAN-128's [ext].
  """
  num_blocks = resolution.bit_length() - 3  # log2(resolution / 4).
  return tuple(min(2**k, MAX_CHANNEL_MULTIPLIER)
               for k in range(num_blocks, -1, -1))


def _set_default(section: ml_collections.ConfigDict, field: str,
                 value: Any) -> None:
  if section[field] is None:
    section[field] = value


def resolve(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A copy of `config` with every derived field filled (see module doc).

  Idempotent; fields already set are kept. Shot-group thresholds, which
  need the data's class counts, stay None here (see data.long_tail).
  """
  config = config.copy_and_resolve_references()
  data = config.dataset
  _set_default(data, 'max_shift', data.image_size // 8)
  for model in (config.student, config.teacher_labeler):
    _set_default(model, 'image_size', data.image_size)
    _set_default(model, 'small_image_stem',
                 model.image_size < SMALL_IMAGE_STEM_BELOW)
    _set_default(model, 'mean', (0.5,) * data.channels)
    _set_default(model, 'std', (0.5,) * data.channels)
  gen = config.teacher_generator
  _set_default(gen, 'channels', data.channels)
  _set_default(gen, 'image_size', generator_resolution(data.image_size))
  _set_default(gen, 'channel_multipliers',
               generator_channel_multipliers(gen.image_size))
  _set_default(gen, 'attention_resolution', max(8, gen.image_size // 2))
  # [ours] 8 latent dimensions for each of G's hierarchical chunks (the seed
  # and one per GBlock; BigBiGAN: 6 chunks of 20 [ext]).
  _set_default(gen, 'latent_dim', LATENT_DIMS_PER_CHUNK *
               len(gen.channel_multipliers))
  _set_default(gen, 'encoder_image_size', data.image_size)
  _set_default(gen, 'encoder_small_image_stem',
               gen.encoder_image_size < SMALL_IMAGE_STEM_BELOW)
  # The discriminator mirrors G: one DBlock per halving down to 4x4.
  num_blocks = len(gen.channel_multipliers)
  _set_default(gen, 'discriminator_channel_multipliers',
               tuple(2**k for k in range(num_blocks)))
  return config


def consistency_errors(config: ml_collections.ConfigDict) -> list[str]:
  """Every combination of a resolved config that cannot work, by field."""
  errors = []
  data, gen = config.dataset, config.teacher_generator
  channels = data.channels
  if channels not in (1, 3):
    errors.append(f'dataset.channels={channels}: must be 1 or 3.')
  if config.student.image_size != data.image_size:
    errors.append(
        f'student.image_size={config.student.image_size} but the input '
        f'pipeline delivers dataset.image_size={data.image_size}: set them '
        'equal (the pipeline yields the student\'s input size; the teachers '
        'resize for themselves).')
  for name in ('student', 'teacher_labeler'):
    model = config[name]
    for field in ('mean', 'std'):
      if len(model[field]) != channels:
        errors.append(f'{name}.{field}={tuple(model[field])} has '
                      f'{len(model[field])} values for dataset.channels='
                      f'{channels}.')
    if model.channel_order == 'bgr' and channels != 3:
      errors.append(f"{name}.channel_order='bgr' needs dataset.channels=3.")
  if gen.channels != channels:
    errors.append(f'teacher_generator.channels={gen.channels} but '
                  f'dataset.channels={channels}: the encoder reads and the '
                  'generator makes images of the dataset\'s channels.')
  num_chunks = len(gen.channel_multipliers)
  resolution = 4 * 2**(num_chunks - 1)
  if resolution != gen.image_size:
    errors.append(
        f'teacher_generator.image_size={gen.image_size} but '
        f'channel_multipliers={tuple(gen.channel_multipliers)} has '
        f'{num_chunks - 1} GBlocks (4x4 doubled to {resolution}); leave '
        'channel_multipliers unset to derive it.')
  block_resolutions = [8 * 2**i for i in range(num_chunks - 1)]
  if gen.attention_resolution and (gen.attention_resolution
                                   not in block_resolutions):
    errors.append(f'teacher_generator.attention_resolution='
                  f'{gen.attention_resolution} is not a GBlock output '
                  f'resolution {block_resolutions} (0 for none).')
  if gen.latent_dim % num_chunks:
    errors.append(f'teacher_generator.latent_dim={gen.latent_dim} must split '
                  f'into len(channel_multipliers)={num_chunks} equal chunks.')
  many, few = (config.shot_groups.many_threshold,
               config.shot_groups.few_threshold)
  if (many is None) != (few is None):
    errors.append('shot_groups.many_threshold and few_threshold: set both or '
                  'neither (None derives both from the class counts).')
  elif many is not None and few > many:
    errors.append(f'shot_groups.few_threshold={few} exceeds many_threshold='
                  f'{many}.')
  return errors


# ---------------------------------------------------------------------------
# Declared ranges: every numeric field of every config, checked in one place
# (`range_errors`) before anything is read, trained or written.
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Range:
  """The legal values of a numeric field: low <= v <= high (strict where
  `*_open`); `integer` asks for an int; `derived`: None is legal (resolve
  derives it, or it means 'off'). A tuple field checks each element."""
  low: float | None = None
  high: float | None = None
  low_open: bool = False
  high_open: bool = False
  integer: bool = False
  derived: bool = False

  def contains(self, value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
      return False
    if self.integer and not isinstance(value, int):
      return False
    if not math.isfinite(value):
      return False
    if self.low is not None and (value <= self.low if self.low_open
                                 else value < self.low):
      return False
    return self.high is None or (value < self.high if self.high_open
                                 else value <= self.high)

  def describe(self) -> str:
    kind = 'an integer' if self.integer else 'a number'
    bounds = []
    if self.low is not None:
      bounds.append(f'{">" if self.low_open else ">="} {self.low:g}')
    if self.high is not None:
      bounds.append(f'{"<" if self.high_open else "<="} {self.high:g}')
    return f'{kind} {" and ".join(bounds)}'.strip()

  def example(self) -> Any:
    """A value outside the range (tests feed it to every field)."""
    if self.low is not None:
      if self.integer:
        return int(self.low if self.low_open else self.low - 1)
      return float(self.low - (0 if self.low_open else 0.5))
    if self.high is not None:
      return self.high + 1
    return math.nan  # Unbounded: only NaN and infinities are out.


# The smallest side any model here is built for: the generator's first
# GBlock output (4x4 doubled) and the student's four stages on a 3x3/1 stem.
MIN_IMAGE_SIZE = 8
_COUNT = Range(low=1, integer=True)  # Batches, widths, intervals.
_STEPS = Range(low=0, integer=True)
_SEED = Range(low=0, integer=True)
_POSITIVE = Range(low=0, low_open=True)  # Learning rates, epochs, scales.
_NON_NEGATIVE = Range(low=0)  # Loss weights, noise scales.
_FRACTION = Range(low=0, high=1)
_OPEN_FRACTION = Range(low=0, high=1, low_open=True)  # (0, 1].
_BETA = Range(low=0, high=1, high_open=True)  # Momenta, Adam betas.
_IMAGE_SIZE = Range(low=MIN_IMAGE_SIZE, integer=True)
_DERIVED_IMAGE_SIZE = dataclasses.replace(_IMAGE_SIZE, derived=True)
_CLASSIFIER_RANGES = {
    'depth': _COUNT, 'width_multiplier': _POSITIVE,
    'image_size': _DERIVED_IMAGE_SIZE, 'batch_norm_epsilon': _POSITIVE,
    'mean': Range(derived=True), 'std': Range(low=0, low_open=True,
                                              derived=True)}
_RECIPE_RANGES = {
    'num_epochs': _POSITIVE, 'batch_size': _COUNT,
    'peak_learning_rate': _POSITIVE, 'warmup_epochs': _NON_NEGATIVE,
    'weight_decay': _NON_NEGATIVE, 'momentum': _BETA,
    'decay_epochs': _NON_NEGATIVE, 'decay_factor': _OPEN_FRACTION}
RANGES = {
    'seed': _SEED,
    **_RECIPE_RANGES,
    **{f'student.{k}': v for k, v in _CLASSIFIER_RANGES.items()},
    **{f'teacher_labeler.{k}': v for k, v in
       {**_CLASSIFIER_RANGES, **_RECIPE_RANGES}.items()},
    'dataset.image_size': _IMAGE_SIZE,
    'dataset.channels': Range(low=1, high=3, integer=True),
    'dataset.test_per_class': _COUNT,
    'dataset.split_seed': _SEED,
    'dataset.val_per_class': dataclasses.replace(_COUNT, derived=True),
    'dataset.max_shift': dataclasses.replace(_STEPS, derived=True),
    'dataset.shuffle_buffer': _COUNT,
    'dataset.min_crop_area': _OPEN_FRACTION,
    'dataset.eval_crop_fraction': _OPEN_FRACTION,
    'dataset.fake_num_classes': Range(low=2, integer=True),
    'dataset.fake_max_count': _COUNT,
    'dataset.fake_imbalance_factor': Range(low=1),
    'dataset.fake_test_per_class': _COUNT,
    'dataset.fake_source_size': _COUNT,
    'dataset.fake_seed': _SEED,
    'long_tail.imbalance_factor': Range(low=1),
    'long_tail.max_count': _STEPS,  # 0: the smallest class's size.
    'long_tail.seed': _SEED,
    'shot_groups.many_threshold': dataclasses.replace(_NON_NEGATIVE,
                                                      derived=True),
    'shot_groups.few_threshold': dataclasses.replace(_NON_NEGATIVE,
                                                     derived=True),
    'teacher_generator.image_size': _DERIVED_IMAGE_SIZE,
    'teacher_generator.channels': Range(low=1, high=3, integer=True,
                                        derived=True),
    'teacher_generator.latent_dim': dataclasses.replace(_COUNT, derived=True),
    'teacher_generator.base_channels': _COUNT,
    'teacher_generator.channel_multipliers': dataclasses.replace(
        _COUNT, derived=True),
    'teacher_generator.embedding_dim': _COUNT,
    'teacher_generator.attention_resolution': dataclasses.replace(
        _STEPS, derived=True),  # 0: no attention.
    'teacher_generator.encoder_image_size': _DERIVED_IMAGE_SIZE,
    'teacher_generator.encoder_depth': _COUNT,
    'teacher_generator.encoder_width_multiplier': _POSITIVE,
    'teacher_generator.encoder_head_hidden': _COUNT,
    'teacher_generator.discriminator_base_channels': _COUNT,
    'teacher_generator.discriminator_channel_multipliers': dataclasses.replace(
        _COUNT, derived=True),
    'teacher_generator.discriminator_latent_hidden': _COUNT,
    'teacher_generator.discriminator_joint_hidden': _COUNT,
    # 0: no generator training (a converted or reused generator).
    'teacher_generator.num_epochs': _NON_NEGATIVE,
    'teacher_generator.batch_size': _COUNT,
    'teacher_generator.learning_rate': _POSITIVE,
    'teacher_generator.discriminator_learning_rate': _POSITIVE,
    'teacher_generator.adam_b1': _BETA,
    'teacher_generator.adam_b2': _BETA,
    'teacher_generator.reconstruction_weight': _NON_NEGATIVE,
    'teacher_generator.latent_reconstruction_weight': _NON_NEGATIVE,
    'teacher_generator.vae.beta': _NON_NEGATIVE,  # 0: a plain autoencoder.
    'teacher_generator.vae.learning_rate': _POSITIVE,
    'distill.temperature': _POSITIVE,
    'mixup.concentration': _POSITIVE,  # lam ~ Beta(c, c) needs c > 0.
    'distill.alpha': _FRACTION,
    'distill.generated_weight': _NON_NEGATIVE,
    'exploration.sigma': _NON_NEGATIVE,
    'exploration.step_size': _NON_NEGATIVE,
    'exploration.num_steps': _STEPS,
    'exploration.init_sigma': _NON_NEGATIVE,
    'embedding_distill.weight': _FRACTION,
    'embedding_distill.compressed_dim': _COUNT,
    'embedding_distill.pretrain_steps': _STEPS,
    'embedding_distill.teacher_learning_rate': _POSITIVE,
    'log_every_steps': _COUNT,
    'checkpoint_every_steps': _COUNT,
    'keep_checkpoints': _STEPS,  # 0: every checkpoint.
    'eval_every_steps': _STEPS,  # 0: only at the end.
    'eval_batch_size': _COUNT,
    'num_grid_samples': _COUNT,
}


_RESNET_CHOICES = {
    'stride_placement': resnet.STRIDE_PLACEMENTS,
    'strided_conv': resnet.STRIDED_CONVS,
    'strided_padding': resnet.STRIDED_PADDINGS,
    'channel_order': ('rgb', 'bgr'),
}
# The string fields with a fixed set of values, checked with RANGES (before
# resolve, compute and the workdir), whether or not the run uses the field:
# a typo is a mistake either way. The string fields whose values a module
# above this one owns (dtype, optimizer, schedule, methods, long_tail_loss,
# exploration.cache_latents, embedding_distill.mode) are checked by
# train.config_errors against their owners' tuples.
CHOICES = {
    'report_checkpoint': ('best', 'last'),
    'dataset.eval_split': ('test', 'val'),
    'dataset.on_decode_error': image_folder.DECODE_ERROR_MODES,
    **{f'{model}.{k}': v for model in ('student', 'teacher_labeler')
       for k, v in _RESNET_CHOICES.items()},
    'teacher_generator.encoder_stride_placement': resnet.STRIDE_PLACEMENTS,
    'teacher_generator.encoder_strided_padding': resnet.STRIDED_PADDINGS,
    'teacher_generator.family': tuple(generator_families.FAMILIES),
    'embedding_distill.source': ('labeler', 'encoder'),
    'embedding_distill.distance': ('distance_correlation', 'cosine_gram'),
}


def _leaves(config: ml_collections.ConfigDict, prefix: str = ''):
  # items(), a bulk read: checking every field's range is not using it
  # (tests/test_config_fields.py asks which fields some code uses).
  for key, value in config.items():
    if isinstance(value, ml_collections.ConfigDict):
      yield from _leaves(value, f'{prefix}{key}.')
    else:
      yield f'{prefix}{key}', value


def numeric_fields(config: ml_collections.ConfigDict) -> list[str]:
  """Every field of `config` that holds (or may hold) numbers."""
  out = []
  for field, value in _leaves(config):
    section, _, name = field.rpartition('.')
    kind = (config[section] if section else config).get_type(name)
    if ((kind in (int, float) and not isinstance(value, bool)) or
        (isinstance(value, (tuple, list)) and value and
         all(isinstance(v, (int, float)) and not isinstance(v, bool)
             for v in value))):
      out.append(field)
  return out


def range_errors(config: ml_collections.ConfigDict) -> list[str]:
  """One line for every numeric field outside its declared range (RANGES)
  and every string field not among its CHOICES, naming the flag that sets
  it."""
  problems = []
  for field, value in _leaves(config):
    if field in CHOICES:
      if value not in CHOICES[field]:
        problems.append(
            f'{field}={value!r}: must be one of {CHOICES[field]}; pass '
            f'--config.{field}={CHOICES[field][0]} or another of them.')
      continue
    declared = RANGES.get(field)
    if declared is None or (value is None and declared.derived):
      continue
    values = value if isinstance(value, (tuple, list)) else (value,)
    if not all(declared.contains(v) for v in values):
      what = 'each value ' if isinstance(value, (tuple, list)) else ''
      problems.append(
          f'{field}={value!r}: {what}must be {declared.describe()}; pass '
          f'--config.{field}=<value> with such a value.')
  return problems


def check_consistency(config: ml_collections.ConfigDict) -> None:
  """Raises a ConfigError listing `consistency_errors`, if any."""
  problems = consistency_errors(config)
  if problems:
    raise errors.ConfigError(problems)


def input_sizes(config: ml_collections.ConfigDict) -> str:
  """One line saying what each model sees, for the run's log."""
  gen = config.teacher_generator
  return (f'input sizes: data {config.dataset.image_size}px x '
          f'{config.dataset.channels}; student {config.student.image_size}, '
          f'labeler {config.teacher_labeler.image_size}, encoder '
          f'{gen.encoder_image_size}, generator output {gen.image_size} '
          '(each model resizes what it is given to its own size)')


# ---------------------------------------------------------------------------
# Paper scale: what the three long-tail benchmarks share.
# ---------------------------------------------------------------------------

# ImageNet channel statistics (torchvision and Flax ImageNet models) [ext].
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Keras applications ResNet v1 ('caffe' preprocessing) [ext]: BGR, minus
# these means on 0..255, no scaling; here in unit range.
KERAS_CAFFE_MEAN_BGR = (103.939 / 255, 116.779 / 255, 123.68 / 255)
KERAS_CAFFE_STD = (1 / 255,) * 3


def linear_scaled_learning_rate(batch_size: int, base: float = 0.1) -> float:
  """base per 256 examples (Goyal et al. 2017) [ext]; the base is ours."""
  return base * batch_size / 256


def paper_scale(config: ml_collections.ConfigDict, dataset_name: str) -> None:
  """The overrides every paper benchmark config shares (ImageNet-size models,
  the converted BigBiGAN teacher, streamed data); each config then sets its
  Table 6 rows."""
  config.dataset.name = dataset_name
  config.dataset.image_size = 224  # The student's input [ours].
  config.dataset.channels = 3
  # The benchmarks' train splits are long-tailed already: no subsampling.
  config.long_tail.enabled = False
  # many: > 100 train images, few: < 20 [ext: OLTR, Liu et al. 2019].
  config.shot_groups.many_threshold = 100
  config.shot_groups.few_threshold = 20

  # [ours] The compact student: ResNet-18 at 224, from scratch; the labeler
  # (a ResNet-50 or larger) is the strong model TGT distils from.
  config.student = _classifier(depth=18, width_multiplier=1.0)
  config.student.small_image_stem = False
  config.student.mean = IMAGENET_MEAN
  config.student.std = IMAGENET_STD
  _recipe(config, num_epochs=90, batch_size=256,
          peak_learning_rate=linear_scaled_learning_rate(256),
          warmup_epochs=5, weight_decay=5e-4)

  # [ours] Default labeler: a ResNet-50 trained here from its own
  # initialisation on the benchmark's train split, with its own recipe.
  # `keras_labeler` swaps in an ImageNet-pretrained Keras ResNet to
  # fine-tune (docs/paper_scale.md: which of these leak the test split).
  labeler = config.teacher_labeler = _labeler(
      depth=50, width_multiplier=1.0, num_epochs=90, batch_size=256,
      peak_learning_rate=linear_scaled_learning_rate(256), warmup_epochs=5,
      weight_decay=1e-4)
  labeler.small_image_stem = False
  labeler.mean = IMAGENET_MEAN
  labeler.std = IMAGENET_STD

  # The teacher generator: BigBiGAN ResNet-50 [paper], converted from TF-Hub
  # (`python -m tgt_jax.generators.convert_bigbigan`); architecture [ext:
  # BigBiGAN].
  # None: required; a run without it stops and says how to make it.
  gen = config.teacher_generator
  gen.pretrained_checkpoint = config_dict.placeholder(str)
  gen.image_size = 128  # [ext] G's output.
  gen.channels = 3
  gen.latent_dim = 120  # [ext] 6 chunks of 20.
  gen.base_channels = 96  # [ext] BigGAN's ch.
  gen.channel_multipliers = (16, 16, 8, 4, 2, 1)  # [ext] BigGAN-128.
  gen.embedding_dim = 128  # [ext]
  gen.attention_resolution = 64  # [ext]
  gen.encoder_image_size = 256  # [ext] E's input.
  gen.encoder_depth = 50  # [ext] ResNet-v2-50.
  gen.encoder_width_multiplier = 1.0
  gen.encoder_small_image_stem = False
  # ASSUMPTION: the hub encoder's head widths are not public (shared notes
  # bigbigan.md); the converter reports any mismatch.
  gen.encoder_head_hidden = (4096, 4096)
  # Only to train a generator here (smoke runs): the discriminator at
  # BigGAN's widths; a paper run converts G and E, never trains them.
  gen.discriminator_base_channels = 96
  gen.discriminator_channel_multipliers = (1, 2, 4, 8, 16, 16)
  gen.discriminator_latent_hidden = (2048, 2048)
  gen.discriminator_joint_hidden = (2048, 2048)
  gen.num_epochs = 0
  gen.batch_size = 256
  gen.reconstruction_weight = 0.0
  gen.latent_reconstruction_weight = 0.0

  # [ours] d_c from the labeler's 2048-d embedding; [paper] EAsT's Adam rate.
  config.embedding_distill.compressed_dim = 128
  config.embedding_distill.teacher_learning_rate = 1e-4
  config.log_every_steps = 100
  config.checkpoint_every_steps = 1000
  config.eval_every_steps = 2000  # [ours] About 8 evaluations an epoch.
  config.eval_batch_size = 512


def keras_labeler(config: ml_collections.ConfigDict, depth: int) -> None:
  """The labeler as a Keras applications ResNet-`depth` (v1) fine-tuned from
  its ImageNet weights: the layout and preprocessing of those weights [ext:
  keras.applications.resnet], and a fine-tuning recipe [ours]. The converted
  weights are required (`python -m tgt_jax.convert_keras_resnet`)."""
  labeler = config.teacher_labeler
  labeler.depth = depth
  labeler.conv_bias = True
  labeler.strided_conv = '1x1'
  labeler.stride_placement = 'first'
  labeler.batch_norm_epsilon = 1.001e-5
  labeler.channel_order = 'bgr'
  labeler.mean = KERAS_CAFFE_MEAN_BGR
  labeler.std = KERAS_CAFFE_STD
  labeler.init_checkpoint = config_dict.placeholder(str)  # Required.
  # [ours] Fine-tuning: 30 epochs at a tenth of the from-scratch rate.
  labeler.num_epochs = 30
  labeler.peak_learning_rate = linear_scaled_learning_rate(
      labeler.batch_size, base=0.01)
  labeler.warmup_epochs = 1


def use_fake_data(config: ml_collections.ConfigDict) -> None:
  """Random images and labels instead of the benchmark: nothing to download.

  For the input benchmark and for timing steps at paper scale with the
  full-size models: raw uint8 256x320 images (no JPEG decode), the real
  crop, resize, flip and batching. [ours] 100 classes of up to 16 images
  keep them under 250 MB. Teachers are not required (timing only).
  """
  config.dataset.name = 'fake'
  config.dataset.cache = ''
  config.dataset.shuffle_buffer = 1024
  config.dataset.update(dict(
      fake_num_classes=100, fake_max_count=16, fake_imbalance_factor=8.0,
      fake_test_per_class=2, fake_source_size=256, fake_seed=0))
  config.teacher_generator.pretrained_checkpoint = ''
  if config.teacher_labeler.init_checkpoint is None:
    config.teacher_labeler.init_checkpoint = ''


def smoke(config: ml_collections.ConfigDict) -> None:
  """A paper config on fake data with tiny models and a few steps: every
  code path (both teachers trained here, every method) in a CPU minute."""
  use_fake_data(config)
  # Train counts 8, 6, 5, 3, 3, 2 of 20x25 images.
  config.dataset.update(dict(
      image_size=16, shuffle_buffer=64, fake_num_classes=6, fake_max_count=8,
      fake_imbalance_factor=4.0, fake_source_size=20))
  config.shot_groups.many_threshold = None  # Derived from the fake counts.
  config.shot_groups.few_threshold = None
  shrink(config, 'tiny')
  config.peak_learning_rate = 0.01
  # A Keras labeler keeps its layout (its code path) but starts afresh.
  config.teacher_labeler.init_checkpoint = ''


PAPER_LABELERS = ('scratch', 'keras_resnet50', 'keras_resnet101',
                  'keras_resnet152')


def paper_variant(config: ml_collections.ConfigDict, arg: str,
                  default_labeler: str) -> None:
  """A paper config's argument: 'smoke', 'fake_data' and/or 'labeler=...'.

  labeler: 'scratch' (a ResNet-50 trained here) or 'keras_resnet50|101|152'
  (fine-tuned from converted Keras ImageNet weights).
  """
  args = parse_arg(arg, smoke=False, fake_data=False, labeler=default_labeler)
  if args.labeler not in PAPER_LABELERS:
    raise ValueError(f'labeler={args.labeler!r}; choose from '
                     f'{PAPER_LABELERS}.')
  if args.labeler != 'scratch':
    keras_labeler(config, int(args.labeler.removeprefix('keras_resnet')))
  if args.smoke:
    smoke(config)
  elif args.fake_data:
    use_fake_data(config)
