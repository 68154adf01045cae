"""Streaming input pipelines for the paper's long-tail benchmarks.

Datasets (`config.dataset.name`):
  * 'imagenet_lt': TFDS `imagenet_lt` (train 115,846 long-tail images; test
    = the 50,000 ILSVRC-2012 validation images, balanced). Needs the
    ILSVRC-2012 tars in TFDS's manual dir.
  * 'places_lt': TFDS `places365_small` (256x256) filtered by the Places-LT
    split lists shipped in `splits/Places_LT` (OLTR, Liu et al. 2019):
    62,500 train images drawn from Places365-Standard train, 36,500 test
    images = the Places365 validation set.
  * 'sun_lt': SUN-LT (Samuel et al. 2020, DRAGON): SUN Attribute images read
    from a user directory with split lists exported from DRAGON's code
    (`export_dragon_split.py`; steps in docs/paper_scale.md).
  * 'fake': random images and long-tail labels of the right types, in memory,
    for tests and smoke runs; no download.

Every pipeline yields uint8 NHWC images at `dataset.image_size` (the
student's input size) and int32 labels; each model then resizes and
normalises for itself (`image_ops`): the encoder path gets 256x256 in
[-1, 1], the labeler its own size and statistics. Train: random-resized crop
(area 8%..100%, aspect 3/4..4/3) and horizontal flip. Eval: resize the
shorter side to image_size / eval_crop_fraction, centre crop.

Multi-host: each process reads only its own shard of a split and yields its
own rows (`batch_size // process_count`) of every global batch.

Determinism (what a resumed run sees):
  * The order of each epoch is a seeded shuffle of this process's shard,
    seeded by (seed, epoch); augmentation uses stateless ops seeded by
    (seed, the example's position in the stream). Batch `step` therefore
    depends only on (seed, step) and on the shard: resuming at step k skips
    to its epoch and the offset inside it and yields exactly the batches an
    uninterrupted run yields, for the same process count, TFDS version and
    shuffle_buffer.
  * Not exact: a different process count (other shards); a shuffle buffer
    smaller than a shard makes each epoch's order a (deterministic) local
    shuffle, not a uniform permutation; TensorFlow's global random seed, if
    someone sets it, changes the shuffles.
  * Resuming mid-epoch reads (not decodes) the skipped part of that epoch.

Missing data raise `DataUnavailableError` naming the manual steps and paths,
before any model is built.
"""

import dataclasses
import os
from typing import Callable, Iterator, Optional

from absl import logging
import ml_collections
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from tgt_jax.data import dataset as dataset_lib
from tgt_jax.data import long_tail

DATASET_NAMES = ('fake', 'places_lt', 'imagenet_lt', 'sun_lt')
SPLITS_DIR = os.path.join(os.path.dirname(__file__), 'splits')
# OLTR's Places-LT lists (splits/README.md).
PLACES_LT_COUNTS = {'train': 62_500, 'val': 7_300, 'test': 36_500}
PLACES_LT_NUM_CLASSES = 365
# Which TFDS places365_small split each Places-LT list is drawn from.
_PLACES_TFDS_SPLIT = {'train': 'train', 'val': 'train', 'test': 'validation'}
SUN_LT_SPLIT_FILES = {split: f'SUN_LT_{split}.txt'
                      for split in ('train', 'val', 'test')}
SUN_LT_CLASSES_FILE = 'SUN_LT_classes.txt'


DataUnavailableError = dataset_lib.DataUnavailableError


# ---------------------------------------------------------------------------
# Sources: one split, this process's shard, in a fixed order.
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Source:
  """One split of a dataset as a function of the process.

  Attributes:
    read: (process_index, process_count) -> tf.data.Dataset of
      {'image': ..., 'label': int32} in a fixed order: this process's shard.
    count: (process_index, process_count) -> length of that shard.
    kind: what 'image' holds: 'raw' (uint8 HWC), 'encoded' (JPEG/PNG bytes)
      or 'path' (a file to read and decode).
    cache: cache the shard after `read` ('' none, 'memory', or a file
      prefix); worth it when `read` filters a much larger split.
  """
  read: Callable[[int, int], tf.data.Dataset]
  count: Callable[[int, int], int]
  kind: str
  cache: str = ''


def _strided_count(num_examples: int) -> Callable[[int, int], int]:
  """Shard sizes of `Dataset.shard(count, index)` over num_examples."""
  return lambda index, count: len(range(index, num_examples, count))


def _even_count(num_examples: int) -> Callable[[int, int], int]:
  """Shard sizes of `tfds.even_splits(split, count)` (remainder first)."""
  return lambda index, count: (num_examples // count +
                               (index < num_examples % count))


def _read_exactly(source: Source, index: int, count: int) -> tf.data.Dataset:
  """`source.read`, failing when a pass yields another number of examples.

  This is where data on disk that do not match the split lists (e.g. fewer
  than Places-LT's 62,500 train images found in places365_small) surface,
  at the end of the first pass, instead of silently shifting epochs.
  """
  return source.read(index, count).apply(
      tf.data.experimental.assert_cardinality(source.count(index, count)))


def _decode(image: tf.Tensor, kind: str) -> tf.Tensor:
  """Any source's 'image' to uint8 [H, W, 3]."""
  if kind == 'raw':
    return image
  if kind == 'path':
    image = tf.io.read_file(image)
  image = tf.io.decode_image(image, channels=3, expand_animations=False)
  image.set_shape([None, None, 3])
  return image


def _to_uint8(image: tf.Tensor) -> tf.Tensor:
  return tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)


def random_resized_crop_and_flip(image: tf.Tensor, size: int, seed: tf.Tensor,
                                 min_area: float) -> tf.Tensor:
  """Inception-style crop, resize to size x size and random flip; stateless."""
  crop_seed, flip_seed = tf.unstack(
      tf.random.experimental.stateless_split(seed, 2))
  begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
      tf.shape(image),
      bounding_boxes=tf.constant([0.0, 0.0, 1.0, 1.0], tf.float32, [1, 1, 4]),
      seed=crop_seed, min_object_covered=min_area,
      aspect_ratio_range=(3 / 4, 4 / 3), area_range=(min_area, 1.0),
      max_attempts=10, use_image_if_no_bounding_boxes=True)
  image = tf.slice(image, begin, crop_size)
  image = tf.image.resize(image, [size, size], 'bilinear', antialias=True)
  image = tf.image.stateless_random_flip_left_right(image, flip_seed)
  return _to_uint8(image)


def resize_and_centre_crop(image: tf.Tensor, size: int,
                           crop_fraction: float) -> tf.Tensor:
  """Shorter side to round(size / crop_fraction), then the central square."""
  shape = tf.cast(tf.shape(image)[:2], tf.float32)
  target = tf.round(size / crop_fraction)
  scale = target / tf.reduce_min(shape)
  new_shape = tf.cast(tf.maximum(tf.round(shape * scale), size), tf.int32)
  image = tf.image.resize(image, new_shape, 'bilinear', antialias=True)
  top = (new_shape[0] - size) // 2
  left = (new_shape[1] - size) // 2
  image = image[top:top + size, left:left + size]
  image.set_shape([size, size, 3])
  return _to_uint8(image)


# ---------------------------------------------------------------------------
# The dataset the training stages use.
# ---------------------------------------------------------------------------


class TrainBatches:
  """`batch_for_step(step)` over a stream: this process's rows of batch step.

  Consecutive calls read on from one tf.data iterator; a call for any other
  step (a resume, a restart) rebuilds the stream at that step.
  """

  def __init__(self, data: 'StreamingDataset', batch_size: int, seed: int,
               process_index: int, process_count: int):
    if batch_size % process_count:
      raise ValueError(f'batch_size={batch_size} is not divisible by the '
                       f'number of processes ({process_count}).')
    self._data = data
    self._local_batch = batch_size // process_count
    self._seed = seed
    self._process_index = process_index
    self._process_count = process_count
    self._iterator = None
    self._next_step = None

  def dataset(self, start_step: int) -> tf.data.Dataset:
    """The stream of local batches from `start_step` on (infinite)."""
    data, source = self._data, self._data.sources['train']
    index, count = self._process_index, self._process_count
    shard_size = source.count(index, count)
    if shard_size < 1:
      raise ValueError(f'Process {index} of {count} has no training examples.')
    base = data.train_shard(index, count)
    buffer_size = min(shard_size, data.shuffle_buffer)
    seed = tf.constant(self._seed, tf.int64)

    def one_epoch(epoch):
      # A fixed seed per epoch (not reshuffle_each_iteration) is what makes
      # the order of epoch e independent of where the stream started.
      return base.shuffle(buffer_size, seed=seed * 1_000_003 + epoch,
                          reshuffle_each_iteration=False)

    start_position = start_step * self._local_batch
    start_epoch, offset = divmod(start_position, shard_size)
    stream = tf.data.Dataset.range(start_epoch, 2**62).flat_map(one_epoch)
    stream = stream.skip(offset).enumerate(start=start_position)

    def preprocess(position, example):
      # Unique per (process, position), so every row of every global batch
      # draws its own augmentation.
      example_seed = tf.stack([seed, position * count + index])
      image = random_resized_crop_and_flip(
          _decode(example['image'], source.kind), data.image_size,
          example_seed, data.min_crop_area)
      return {'image': image, 'label': tf.cast(example['label'], tf.int32)}

    stream = stream.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE,
                        deterministic=True)
    stream = stream.batch(self._local_batch, drop_remainder=True)
    return stream.prefetch(tf.data.AUTOTUNE)

  def __call__(self, step: int) -> dict[str, np.ndarray]:
    if self._iterator is None or step != self._next_step:
      self._iterator = self.dataset(step).as_numpy_iterator()
    self._next_step = step + 1
    return next(self._iterator)


@dataclasses.dataclass(frozen=True)
class StreamingDataset(dataset_lib.Dataset):
  """A long-tail benchmark: streaming train split, balanced eval splits.

  `sources` holds 'train' and 'test' (and 'val' where the benchmark has
  one). The teachers and the student all learn from the long-tail train
  split ([ours]: the paper's labeler data are not known to us), so both
  subsets are the train split. Training batches are augmented by
  random-resized crops and flips whatever `augment` says: streams exist for
  the paper's benchmarks, whose recipe augments.
  """
  name: str
  class_names: tuple[str, ...]
  train_class_counts: np.ndarray
  shot_groups: dict[str, np.ndarray]
  sources: dict[str, Source]
  image_size: int
  min_crop_area: float = 0.08
  eval_crop_fraction: float = 0.875
  shuffle_buffer: int = 16_384
  # One train shard dataset per (index, count), so that its cache (e.g. the
  # filtered Places-LT images) is filled once and serves every stage.
  _train_shards: dict[tuple[int, int], tf.data.Dataset] = dataclasses.field(
      default_factory=dict, compare=False, repr=False)

  @property
  def image_shape(self) -> tuple[int, int, int]:
    return (self.image_size, self.image_size, 3)

  @property
  def student_class_counts(self) -> np.ndarray:
    return self.train_class_counts

  @property
  def teacher_class_counts(self) -> np.ndarray:
    return self.train_class_counts

  def num_examples(self, subset: str) -> int:
    dataset_lib.check_subset(subset)
    return int(self.sources['train'].count(0, 1))

  def train_shard(self, index: int, count: int) -> tf.data.Dataset:
    """This process's train examples, undecoded, cached as configured."""
    source = self.sources['train']
    if (index, count) not in self._train_shards:
      shard = _read_exactly(source, index, count)
      if source.cache:
        shard = shard.cache('' if source.cache == 'memory' else
                            f'{source.cache}_train_{index}of{count}')
      self._train_shards[index, count] = shard
    return self._train_shards[index, count]

  def train_batches(self, subset: str, batch_size: int, seed: int,
                    augment: bool = True,
                    process_index: Optional[int] = None,
                    process_count: Optional[int] = None) -> TrainBatches:
    """`batch_for_step` for this process (default: JAX's process)."""
    del augment  # Streams always crop and flip (see the class docstring).
    dataset_lib.check_subset(subset)
    index, count = _process(process_index, process_count)
    return TrainBatches(self, batch_size, seed, index, count)

  def has_split(self, split: str) -> bool:
    return split != 'train' and split in self.sources

  def _eval_source(self, split: str) -> Source:
    if split not in self.sources or split == 'train':
      raise ValueError(
          f'{self.name} has no {split!r} split to evaluate on; it has '
          f'{sorted(s for s in self.sources if s != "train")}.')
    return self.sources[split]

  def eval_dataset(self, split: str, batch_size: int,
                   process_index: Optional[int] = None,
                   process_count: Optional[int] = None) -> tf.data.Dataset:
    """This process's rows of every eval batch, padded, with a 'mask'.

    Every process yields the same number of batches (so the jitted eval
    step runs in lockstep); rows beyond a shard's end are zeros with mask
    False.
    """
    source = self._eval_source(split)
    index, count = _process(process_index, process_count)
    if batch_size % count:
      raise ValueError(f'eval batch_size={batch_size} is not divisible by '
                       f'the number of processes ({count}).')
    local_batch = batch_size // count
    shard_size = source.count(index, count)
    num_batches = -(-max(source.count(i, count) for i in range(count)) //
                    local_batch)

    def preprocess(example):
      image = resize_and_centre_crop(_decode(example['image'], source.kind),
                                     self.image_size, self.eval_crop_fraction)
      return {'image': image, 'label': tf.cast(example['label'], tf.int32),
              'mask': tf.constant(True)}

    stream = _read_exactly(source, index, count).map(
        preprocess, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    padding = num_batches * local_batch - shard_size
    if padding:
      stream = stream.concatenate(tf.data.Dataset.from_tensors({
          'image': tf.zeros([self.image_size, self.image_size, 3], tf.uint8),
          'label': tf.constant(0, tf.int32),
          'mask': tf.constant(False)}).repeat(padding))
    return stream.batch(local_batch).prefetch(tf.data.AUTOTUNE)

  def eval_batches(self, split: str, batch_size: int,
                   process_index: Optional[int] = None,
                   process_count: Optional[int] = None
                   ) -> Iterator[dict[str, np.ndarray]]:
    """Iterates `eval_dataset` as numpy: 'image' uint8, 'label', 'mask'."""
    return self.eval_dataset(split, batch_size, process_index,
                             process_count).as_numpy_iterator()

  def grid_examples(self, num: int,
                    max_batches: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Process 0's view of the first test batches: the same everywhere."""
    found = {}
    for index, batch in enumerate(self.eval_batches('test', 256, 0, 1)):
      for image, label, mask in zip(batch['image'], batch['label'],
                                    batch['mask']):
        if mask and label < num and int(label) not in found:
          found[int(label)] = image
      if len(found) == num or index + 1 >= max_batches:
        break
    labels = np.asarray(sorted(found), np.int32)
    return np.stack([found[c] for c in labels]), labels


def _process(index: Optional[int], count: Optional[int]) -> tuple[int, int]:
  if index is None or count is None:
    import jax  # pylint: disable=g-import-not-at-top
    return jax.process_index(), jax.process_count()
  return index, count


# ---------------------------------------------------------------------------
# Fake data.
# ---------------------------------------------------------------------------


def fake_source(images: np.ndarray, labels: np.ndarray) -> Source:
  """An in-memory source of raw uint8 images, sharded by striding."""
  def read(index, count):
    return tf.data.Dataset.from_tensor_slices(
        {'image': images[index::count], 'label': labels[index::count]})
  return Source(read=read, count=_strided_count(len(labels)), kind='raw')


def _fake_split(counts: np.ndarray, source_size: int,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
  labels = np.repeat(np.arange(len(counts)), counts).astype(np.int32)
  rng.shuffle(labels)
  # A per-class tint over noise: learnable, so smoke runs are not all chance.
  tints = np.linspace(0, 255, len(counts))[labels]
  noise = rng.integers(0, 128, (len(labels), source_size,
                                source_size + source_size // 4, 3))
  images = np.clip(noise + tints[:, None, None, None] / 2, 0, 255)
  return images.astype(np.uint8), labels


def load_fake(dataset_config: ml_collections.ConfigDict,
              shot_config: ml_collections.ConfigDict) -> StreamingDataset:
  """Random long-tail data: exponential train counts, balanced test split."""
  rng = np.random.default_rng(dataset_config.fake_seed)
  num_classes = dataset_config.fake_num_classes
  train_counts = long_tail.exponential_class_counts(
      num_classes, dataset_config.fake_max_count,
      dataset_config.fake_imbalance_factor)
  train = _fake_split(train_counts, dataset_config.fake_source_size, rng)
  test = _fake_split(np.full(num_classes, dataset_config.fake_test_per_class),
                     dataset_config.fake_source_size, rng)
  val = _fake_split(np.full(num_classes, dataset_config.fake_test_per_class),
                    dataset_config.fake_source_size, rng)
  return _streaming_dataset(
      'fake', dataset_config, shot_config,
      class_names=tuple(f'class_{c}' for c in range(num_classes)),
      train_labels=train[1],
      sources={'train': fake_source(*train), 'test': fake_source(*test),
               'val': fake_source(*val)})


def _streaming_dataset(name, dataset_config, shot_config, *, class_names,
                       train_labels, sources) -> StreamingDataset:
  counts = np.bincount(train_labels, minlength=len(class_names))
  return StreamingDataset(
      name=name, class_names=tuple(class_names), train_class_counts=counts,
      shot_groups=long_tail.shot_groups_for(counts, shot_config),
      sources=sources, image_size=dataset_config.image_size,
      min_crop_area=dataset_config.min_crop_area,
      eval_crop_fraction=dataset_config.eval_crop_fraction,
      shuffle_buffer=dataset_config.shuffle_buffer)


# ---------------------------------------------------------------------------
# TFDS: ImageNet-LT and Places-LT.
# ---------------------------------------------------------------------------


def _tfds_builder(name: str, dataset_config: ml_collections.ConfigDict,
                  how_to_prepare: str):
  """The prepared TFDS builder, or DataUnavailableError with the steps."""
  data_dir = dataset_config.data_dir or None
  builder = tfds.builder(name, data_dir=data_dir)
  if not builder.is_prepared():
    raise DataUnavailableError(
        f'TFDS dataset {name!r} is not prepared in {builder.data_dir} '
        f'(--config.dataset.data_dir={dataset_config.data_dir!r}).\n'
        f'{how_to_prepare}\nThen pass --config.dataset.data_dir=DATA_DIR '
        '(see docs/paper_scale.md).')
  return builder


def _read_tfds(builder, split: str, index: int, count: int,
               even: bool) -> tf.data.Dataset:
  """Encoded examples of `split` in file order; this process's shard.

  even: read only this process's part of the split (tfds.even_splits);
  otherwise every process reads it all and the caller shards after
  filtering.
  """
  if even and count > 1:
    split = tfds.even_splits(split, n=count)[index]
  read_config = tfds.ReadConfig(shuffle_seed=0, interleave_cycle_length=16,
                                enable_ordering_guard=True)
  options = tf.data.Options()
  options.deterministic = True
  read_config.options = options
  return builder.as_dataset(
      split=split, shuffle_files=False, read_config=read_config,
      decoders={'image': tfds.decode.SkipDecoding()})


IMAGENET_LT_HOW_TO = (
    'ImageNet-LT needs the ILSVRC-2012 archives, which cannot be downloaded '
    'automatically:\n'
    '  1. Register at https://image-net.org and download '
    'ILSVRC2012_img_train.tar (138 GB) and ILSVRC2012_img_val.tar (6.3 GB).\n'
    '  2. Put both in MANUAL_DIR (TFDS default: DATA_DIR/downloads/manual).\n'
    '  3. tfds build imagenet_lt --data_dir=DATA_DIR --manual_dir=MANUAL_DIR\n'
    '     (it also fetches the ImageNet-LT train/val lists from the OLTR '
    'Google Drive).')


def load_imagenet_lt(dataset_config: ml_collections.ConfigDict,
                     shot_config: ml_collections.ConfigDict
                     ) -> StreamingDataset:
  """TFDS imagenet_lt: long-tail train split, 50,000-image balanced test."""
  builder = _tfds_builder('imagenet_lt', dataset_config, IMAGENET_LT_HOW_TO)
  class_names = tuple(builder.info.features['label'].names)
  # Counted by reading, not taken from the TFDS metadata, so that the epoch
  # arithmetic rests on what the files really hold.
  labels = {split: _tfds_labels(builder, split, dataset_config)
            for split in ('train', 'validation', 'test')}

  def source(split):
    def read(index, count):
      return _read_tfds(builder, split, index, count, even=True).map(
          lambda e: {'image': e['image'], 'label': e['label']})

    return Source(read=read, count=_even_count(len(labels[split])),
                  kind='encoded',
                  cache=dataset_config.cache if split == 'train' else '')

  # ImageNet-LT's val split is TFDS's 'validation' (20 images a class).
  return _streaming_dataset(
      'imagenet_lt', dataset_config, shot_config, class_names=class_names,
      train_labels=labels['train'],
      sources={'train': source('train'), 'val': source('validation'),
               'test': source('test')})


def _tfds_labels(builder, split: str,
                 dataset_config: ml_collections.ConfigDict) -> np.ndarray:
  """All labels of a TFDS split, cached as .npy after the first pass."""
  cache_dir = dataset_config.cache_dir or os.path.join(
      builder.data_dir, 'tgt_jax_cache')
  path = os.path.join(cache_dir, f'{builder.name}_{split}_labels.npy')
  if os.path.exists(path):
    return np.load(path)
  logging.info('Reading the labels of %s/%s once (cached in %s).',
               builder.name, split, path)
  labels = np.fromiter(
      (label for label in _read_tfds(builder, split, 0, 1, even=False).map(
          lambda e: e['label']).as_numpy_iterator()), np.int32)
  os.makedirs(cache_dir, exist_ok=True)
  np.save(path, labels)
  return labels


PLACES_HOW_TO = (
    'Places-LT reads TFDS places365_small (Places365-Standard, 256x256):\n'
    '  tfds build places365_small --data_dir=DATA_DIR\n'
    '  (downloads about 30 GB from http://data.csail.mit.edu/places/places365/:'
    ' train_256_places365standard.tar, val_256.tar, test_256.tar and '
    'filelist_places365-standard.tar).')


def places_tfds_filename(split_path: str) -> str:
  """A Places-LT list path -> the `filename` feature of places365_small.

  'train/apartment_building-outdoor/00000794.jpg' ->
  'data_256/a/apartment_building/outdoor/00000794.jpg' (the "easy directory
  structure" joins nested categories with '-');
  'val/airfield/Places365_val_00003597.jpg' ->
  'val_256/Places365_val_00003597.jpg'.
  """
  folder, category, file_name = split_path.split('/')
  if folder == 'train':
    nested = category.replace('-', '/')
    return f'data_256/{category[0]}/{nested}/{file_name}'
  if folder == 'val':
    return f'val_256/{file_name}'
  raise ValueError(f'Unexpected Places-LT path {split_path!r}: expected '
                   "'train/<category>/<file>' or 'val/<category>/<file>'.")


def read_places_lt_split(split: str,
                         splits_dir: str = SPLITS_DIR
                         ) -> tuple[list[str], np.ndarray]:
  """(TFDS filenames, labels) of a shipped Places-LT list; counts asserted."""
  path = os.path.join(splits_dir, 'Places_LT', f'Places_LT_{split}.txt')
  paths, labels = long_tail.read_split_file(path, PLACES_LT_NUM_CLASSES)
  if len(paths) != PLACES_LT_COUNTS[split]:
    raise ValueError(f'{path} has {len(paths)} entries; Places-LT {split} has '
                     f'{PLACES_LT_COUNTS[split]}. The shipped list is damaged.')
  return [places_tfds_filename(p) for p in paths], labels


def filtered_tfds_source(read_all: Callable[[], tf.data.Dataset],
                         filenames: list[str], labels: np.ndarray,
                         cache: str = '') -> Source:
  """Keeps the listed files of a TFDS split, labelled as the list says.

  `read_all()` yields {'image', 'label', 'filename'} for the whole split; a
  hash table keeps listed files and checks that TFDS's label agrees with
  the list's (which catches a wrong path mapping). Every process filters the
  whole split, then takes its stride of the kept examples, so shards are
  even; cache the result (`cache='memory'`) so later epochs skip the filter.
  """
  table = tf.lookup.StaticHashTable(
      tf.lookup.KeyValueTensorInitializer(
          tf.constant(filenames), tf.constant(labels, tf.int32)),
      default_value=-1)

  def read(index, count):
    def relabel(example):
      label = table.lookup(example['filename'])
      return {'image': example['image'], 'label': label,
              'tfds_label': tf.cast(example['label'], tf.int32)}

    def check(example):
      tf.debugging.assert_equal(
          example['label'], example['tfds_label'],
          message='Places-LT list label differs from TFDS places365 label')
      return {'image': example['image'], 'label': example['label']}

    kept = read_all().map(relabel).filter(lambda e: e['label'] >= 0)
    return kept.map(check).shard(count, index)

  return Source(read=read, count=_strided_count(len(filenames)),
                kind='encoded', cache=cache)


def load_places_lt(dataset_config: ml_collections.ConfigDict,
                   shot_config: ml_collections.ConfigDict) -> StreamingDataset:
  """Places-LT from TFDS places365_small and the shipped lists."""
  builder = _tfds_builder('places365_small', dataset_config, PLACES_HOW_TO)
  class_names = tuple(builder.info.features['label'].names)
  if len(class_names) != PLACES_LT_NUM_CLASSES:
    raise ValueError(f'places365_small has {len(class_names)} classes, '
                     f'expected {PLACES_LT_NUM_CLASSES}.')

  def source(split, cache):
    filenames, labels = read_places_lt_split(split)
    tfds_split = _PLACES_TFDS_SPLIT[split]
    return filtered_tfds_source(
        lambda: _read_tfds(builder, tfds_split, 0, 1, even=False),
        filenames, labels, cache), labels

  train, train_labels = source('train', dataset_config.cache)
  return _streaming_dataset(
      'places_lt', dataset_config, shot_config, class_names=class_names,
      train_labels=train_labels,
      sources={'train': train, 'val': source('val', '')[0],
               'test': source('test', '')[0]})


# ---------------------------------------------------------------------------
# SUN-LT: SUN Attribute images with DRAGON's split, from a directory.
# ---------------------------------------------------------------------------

SUN_LT_HOW_TO = (
    'SUN-LT (DRAGON split of the SUN Attribute images) is built by hand:\n'
    '  1. Images: download SUNAttributeDB_Images.tar.gz from '
    'https://cs.brown.edu/~gmpatter/sunattributes.html and unpack it so that '
    'IMAGES_DIR/a/abbey/sun_*.jpg exist (IMAGES_DIR = the "images" folder).\n'
    '  2. Split: clone https://github.com/dvirsamuel/DRAGON, download its '
    'data.tar (README "Data Preparation") into the clone, create its conda '
    'environment, and in it run\n'
    '     python tgt_jax/data/export_dragon_split.py '
    '--dragon_root=DRAGON_CLONE --output_dir=SPLIT_DIR\n'
    '     which writes SUN_LT_{train,val,test}.txt and SUN_LT_classes.txt.\n'
    '  3. Pass --config.dataset.data_dir=IMAGES_DIR '
    '--config.dataset.split_dir=SPLIT_DIR.')


def load_sun_lt(dataset_config: ml_collections.ConfigDict,
                shot_config: ml_collections.ConfigDict) -> StreamingDataset:
  """SUN-LT from `dataset.data_dir` (images) and `dataset.split_dir`."""
  images_dir, split_dir = dataset_config.data_dir, dataset_config.split_dir
  missing = [p for p in [images_dir, split_dir]
             if not p or not os.path.isdir(p)]
  split_files = {s: os.path.join(split_dir or '', f)
                 for s, f in SUN_LT_SPLIT_FILES.items()}
  classes_file = os.path.join(split_dir or '', SUN_LT_CLASSES_FILE)
  missing += [p for p in [*split_files.values(), classes_file]
              if not os.path.isfile(p)]
  if missing:
    raise DataUnavailableError(
        f'SUN-LT files not found: {missing}.\n{SUN_LT_HOW_TO}')
  with open(classes_file) as f:
    class_names = tuple(line.strip() for line in f if line.strip())

  def source(split):
    paths, labels = long_tail.read_split_file(split_files[split],
                                              len(class_names))
    absent = [p for p in paths[:5] if not os.path.isfile(
        os.path.join(images_dir, p))]
    if absent:
      raise DataUnavailableError(
          f'SUN-LT {split} lists {absent[0]!r}, not found under {images_dir}.'
          f'\n{SUN_LT_HOW_TO}')
    full_paths = np.asarray([os.path.join(images_dir, p) for p in paths])

    def read(index, count):
      return tf.data.Dataset.from_tensor_slices(
          {'image': full_paths[index::count], 'label': labels[index::count]})

    return Source(read=read, count=_strided_count(len(paths)),
                  kind='path'), labels

  train, train_labels = source('train')
  return _streaming_dataset(
      'sun_lt', dataset_config, shot_config, class_names=class_names,
      train_labels=train_labels,
      sources={'train': train, 'val': source('val')[0],
               'test': source('test')[0]})


# ---------------------------------------------------------------------------
# Entry point.
# ---------------------------------------------------------------------------


def load(config: ml_collections.ConfigDict) -> StreamingDataset:
  """The benchmark `config.dataset.name` names, checked to exist on disk.

  Raises:
    DataUnavailableError: naming the manual steps and the paths, before any
      image is read.
    ValueError: for an unknown dataset name.
  """
  loaders = {'fake': load_fake, 'places_lt': load_places_lt,
             'imagenet_lt': load_imagenet_lt, 'sun_lt': load_sun_lt}
  name = config.dataset.name
  if name not in loaders:
    raise ValueError(f'Unknown streaming dataset {name!r}; choose one of '
                     f'{DATASET_NAMES}.')
  return loaders[name](config.dataset, config.shot_groups)
