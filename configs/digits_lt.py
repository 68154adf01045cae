"""TGT on the bundled handwritten digits, made long-tailed: the CPU demo.

Command (9 minutes and 3.4 GiB on a 2-core CPU, measured; see the README):

  python main.py --config=configs/digits_lt.py

`configs/digits_lt.py:quick` is the same pipeline shrunk to about two minutes
(tests, CI, a first look; its accuracies mean nothing). Expected result (3
student seeds, README): overall / few-shot accuracy about 91 / 72-74% for
`onehot` and `kd`, 95-97 / 84-90% for `tgt_gradient` and `tgt_random`.

Data. scikit-learn's 1,797 real 8x8 digits ship inside the package
(`tgt_jax/data/assets`). A fixed stratified split puts 40 images a class in a
balanced test split (400 images); the remaining ~140 a class form the full
train split, on which the two teachers train. The student's train set is a
long-tailed subset of the train split: class c keeps
round(130 * 50 ** (-c / 9)) images, i.e. 130, 84, 54, 35, 23, 15, 10, 6, 4, 3
(364 images, imbalance factor 50).

Shot groups. The paper's thresholds (many > 100, few < 20 training images)
assume head classes of ~1,000 images; here the head class has 130, so we
[ours] scale them down to many > 50 and few < 10, keeping the paper's 5:1 ratio
of the two thresholds and giving every group at least 3 classes:
many = {0, 1, 2}, medium = {3, 4, 5, 6}, few = {7, 8, 9}.

Every value below is [ours] (chosen for this demo) unless its comment says
otherwise; the paper's Table 6 has no digits row.
"""

import ml_collections

# The methods a run trains, in order. `tgt_prior` (latents drawn from N(0, I),
# no encoder) is an ablation and not run by default.
DEFAULT_METHODS = ('onehot', 'kd', 'tgt_random', 'tgt_gradient')


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  """Returns the demo config; `arg='quick'` shrinks it to about a minute."""
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.methods = DEFAULT_METHODS

  config.dataset = ml_collections.ConfigDict()
  config.dataset.name = 'digits'  # 'digits' (bundled) or 'image_folder'.
  config.dataset.root = ''  # image_folder: ROOT/{train,test}/<class>/*.png
  config.dataset.image_size = 8  # The digits' native size.
  config.dataset.channels = 1
  config.dataset.test_per_class = 40  # digits only: balanced test split.
  config.dataset.split_seed = 0  # Fixed: the test split never moves.
  config.dataset.on_decode_error = 'error'  # image_folder: 'error' | 'skip'.

  config.long_tail = ml_collections.ConfigDict()
  config.long_tail.enabled = True
  config.long_tail.imbalance_factor = 50.0  # [ours] head / tail count.
  config.long_tail.max_count = 130  # [ours] head class; <= smallest class.
  config.long_tail.seed = 0  # Which images are kept; fixed across run seeds.

  config.shot_groups = ml_collections.ConfigDict()
  config.shot_groups.many_threshold = 50  # [ours] scaled, see docstring.
  config.shot_groups.few_threshold = 10  # [ours] scaled, see docstring.

  # Student: the compact model TGT trains.
  config.student = ml_collections.ConfigDict()
  config.student.depth = 18
  config.student.width_multiplier = 0.125  # [ours] 8..64 channels.
  config.student.small_image_stem = True
  config.student.image_size = 8
  config.student.mean = (0.5,)  # Per-channel input normalisation.
  config.student.std = (0.5,)

  # Student optimisation: the Table 6 rows, with digits values [ours].
  config.num_epochs = 150.0  # [ours] over the 364 long-tail images.
  config.batch_size = 64  # [ours] real images per step (global).
  config.optimizer = 'sgd'  # [ours] SGD with Nesterov momentum.
  config.momentum = 0.9
  config.schedule = 'cosine'  # [ours]
  config.warmup_epochs = 5.0  # [ours]
  config.peak_learning_rate = 0.1  # [ours]
  config.weight_decay = 5e-4  # [ours]
  # [ours] Random shifts of up to one pixel: the digits' analogue of the
  # crop-and-flip augmentation of the paper-scale pipelines.
  config.augment_max_shift = 1

  # Teacher labeler: a larger ResNet trained in-repo on the full, balanced
  # train split (or loaded from `checkpoint`).
  config.teacher_labeler = ml_collections.ConfigDict()
  config.teacher_labeler.checkpoint = ''  # A stage checkpoint dir to reuse.
  config.teacher_labeler.depth = 18
  config.teacher_labeler.width_multiplier = 0.25  # [ours] 2x the student.
  config.teacher_labeler.small_image_stem = True
  config.teacher_labeler.image_size = 8
  config.teacher_labeler.mean = (0.5,)
  config.teacher_labeler.std = (0.5,)
  config.teacher_labeler.num_epochs = 40.0  # [ours]
  config.teacher_labeler.batch_size = 64
  config.teacher_labeler.peak_learning_rate = 0.1
  config.teacher_labeler.warmup_epochs = 2.0
  config.teacher_labeler.weight_decay = 5e-4
  # [ours] One-pixel random shifts: the labeler must label generated digits,
  # which are never pixel-perfect, so it should not overfit exact positions.
  config.teacher_labeler.max_shift = 1

  # Teacher generator: the BigBiGAN modules at demo width, trained in-repo on
  # the full train split without labels.
  config.teacher_generator = ml_collections.ConfigDict()
  config.teacher_generator.checkpoint = ''
  config.teacher_generator.image_size = 16  # [ours] generator output size.
  config.teacher_generator.channels = 1
  config.teacher_generator.latent_dim = 24  # [ours] 3 chunks of 8.
  config.teacher_generator.base_channels = 16
  config.teacher_generator.channel_multipliers = (4, 2, 1)  # 4 -> 8 -> 16.
  config.teacher_generator.embedding_dim = 16
  config.teacher_generator.attention_resolution = 8
  config.teacher_generator.encoder_image_size = 8  # [ours] native size.
  config.teacher_generator.encoder_depth = 18
  config.teacher_generator.encoder_width_multiplier = 0.25
  config.teacher_generator.encoder_small_image_stem = True
  config.teacher_generator.encoder_head_hidden = (128,)
  config.teacher_generator.discriminator_base_channels = 16
  config.teacher_generator.discriminator_channel_multipliers = (1, 2, 4)
  config.teacher_generator.discriminator_latent_hidden = (128, 128)
  config.teacher_generator.discriminator_joint_hidden = (256,)
  config.teacher_generator.num_epochs = 50.0  # [ours]
  config.teacher_generator.batch_size = 64
  config.teacher_generator.learning_rate = 2e-4  # [ours] Adam, as BigGAN.
  config.teacher_generator.discriminator_learning_rate = 2e-4
  config.teacher_generator.adam_b1 = 0.0  # BigGAN's Adam betas [ext].
  config.teacher_generator.adam_b2 = 0.999
  # [ours] Not part of BigBiGAN: an L1 pixel reconstruction term on
  # G(z_mean(x)) and an L2 latent term on E(G(z)) make the tiny model's encoder
  # and generator reliable inverses within a CPU-minute budget. In our trials
  # (50 epochs) pixel weights 10 / 30 / 100 gave 61 / 77 / 81% reconstruction
  # agreement, and a latent weight of 5 instead of 1 fell to 37%.
  config.teacher_generator.reconstruction_weight = 100.0
  config.teacher_generator.latent_reconstruction_weight = 1.0

  # Distillation targets on real images (used by kd and both TGT variants, so
  # that TGT differs from kd only by the generated samples) [ours].
  config.distill = ml_collections.ConfigDict()
  config.distill.temperature = 1.0  # [ours] tau, with the usual tau^2.
  config.distill.alpha = 1.0  # [ours] weight of the labeler's soft label.
  config.distill.generated_weight = 1.0  # [ours] lambda on generated images.

  # Exploration of the latent (Table 6 rows sigma, eta, num steps).
  config.exploration = ml_collections.ConfigDict()
  config.exploration.sigma = 0.5  # [ours] isotropic perturbation scale.
  config.exploration.step_size = 1.0  # [ours] eta, normalised step.
  config.exploration.num_steps = 1  # [ours]
  config.exploration.normalize = True  # [ours] z += eta * g / ||g||.
  config.exploration.init_sigma = 0.0  # [ours] noise before gradient steps.
  # E(x) of each real image: 'auto' computes it once per image and caches it
  # where that is exact (no augmentation), else encodes every step; see
  # train._latent_cache. With this demo's one-pixel shifts, 'auto' encodes.
  config.exploration.cache_latents = 'auto'

  # Embedding distillation (tgt_jax/embedding_distill.py; Ding & Lerch 2024 on
  # EAsT): the labeler's 128-d embedding, raw or compressed by a trainable g,
  # guides the student's 64-d pooled features. Any mode but 'none' trains and
  # reports every method as '<method>+emb_<mode>'.
  config.embedding_distill = ml_collections.ConfigDict()
  # 'none' | 'raw' (EAsT) | 'compressed' (the paper) | 'random_projection'
  # (ours: g fixed at its random initialisation, an ablation).
  config.embedding_distill.mode = 'none'
  # [paper] w in (1 - w) * task + w * distance: EAsT's range is 0.6..0.9; the
  # lowest keeps most of the task loss our SGD settings were tuned for.
  config.embedding_distill.weight = 0.6
  # [paper] EAsT's distance correlation; 'cosine_gram' is EAsT's other one,
  # 'projected_mse' (a trained student projection) our ablation.
  config.embedding_distill.distance = 'distance_correlation'
  config.embedding_distill.compressed_dim = 32  # [ours] d_c; 10 classes < 32.
  config.embedding_distill.pretrain_steps = 0  # [ours] 0: g trains jointly.
  # [ours] Adam for g and h; EAsT trains with Adam 1e-4 over far more steps
  # than this demo's ~850.
  config.embedding_distill.teacher_learning_rate = 1e-3

  # Compute dtype of every network the run applies: 'float32' or 'bfloat16'
  # (parameters and BatchNorm statistics stay float32). [ours] float32: CPUs
  # have no fast bfloat16 path.
  config.dtype = 'float32'

  config.log_every_steps = 100
  config.checkpoint_every_steps = 500
  config.eval_batch_size = 256
  config.num_grid_samples = 10  # Columns of the sample grid PNG.

  if arg == 'quick':
    _shrink_to_quick(config)
  elif arg:
    raise ValueError(f"Unknown config argument {arg!r}; use '' or 'quick'.")
  return config


def _shrink_to_quick(config: ml_collections.ConfigDict) -> None:
  """The same pipeline, fewer epochs: about two minutes on 2 CPU cores."""
  config.num_epochs = 10
  config.teacher_labeler.num_epochs = 3
  config.teacher_generator.num_epochs = 3
  config.log_every_steps = 20
  config.checkpoint_every_steps = 50
