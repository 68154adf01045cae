r"""TGT on your own images: one folder per class, one flag.

Command:

  python main.py --config=configs/image_folder.py:root=DIR

with DIR/train/<class>/*.{png,jpg,jpeg,bmp,gif} and DIR/test/<class>/*
(class names are the train folder names, sorted; a test class must also be
a train class). Arguments (`:k=v,k=v`):

  root=DIR       the folder (required).
  size=32        side of the square images every model is built for; each
                 image is centre-cropped and resized to it once, on load.
  channels=3     3 (RGB) or 1 (grey-scale).
  quick=False    True: fewer epochs, about the digits demo's `:quick` cost
                 at size 32 (a first look; its accuracies mean nothing).

Everything else follows from these (config_lib.resolve): the models' input
sizes and normalisation, the generator's depth for the size (one GBlock per
doubling from 4x4; a size that is not 4 * 2^k gets the next larger
generator, whose images each model resizes), and the augmentation for
natural images: random crops within size/8 pixels of zero padding and
random horizontal flips [ours; the CIFAR recipe].

Long tail. With `long_tail.enabled` (default) the student trains on an
exponential subset of train/: the head class is the first class in sorted
folder order and keeps `long_tail.max_count` images (0, the default: as many
as the smallest class has), and class c keeps
max_count * imbalance_factor^(-c / (K - 1)) (imbalance factor 50). To train
on all of train/ as it is, pass --config.long_tail.enabled=False; the
head class is then whichever has most images. The teachers always learn
from all of train/. Shot groups follow the student's own head class
(geometric thirds of the count range, config_lib), unless
--config.shot_groups.many_threshold / few_threshold are set.

Models [ours, untuned]: ResNet-18 student at 1/4 width, labeler at 1/2
width, the BigBiGAN modules at small width, trained here (no download).
"""

import ml_collections

from tgt_jax import config_lib
from tgt_jax import errors


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  args = config_lib.parse_arg(arg, root='', size=32, channels=3, quick=False)
  if not args.root:
    raise errors.ConfigError(
        'root: configs/image_folder.py needs the folder; pass '
        '--config=configs/image_folder.py:root=DIR (with '
        'DIR/train/<class>/* and DIR/test/<class>/*).')
  config = config_lib.base_config()
  config.dataset.name = 'image_folder'
  config.dataset.root = args.root
  config.dataset.image_size = args.size
  config.dataset.channels = args.channels
  config.dataset.flip = True  # Natural images; max_shift: size // 8.
  config.student.width_multiplier = 0.25
  config.teacher_labeler.width_multiplier = 0.5
  if args.quick:
    config_lib.shrink(config, 'quick')
  return config
