"""The streaming machinery: sources, shards, shuffles, crops, batches.

A `Source` is one split of a dataset as a function of the process; a
`StreamingDataset` turns sources into the `Dataset` interface the stages use
(tf.data, read only by the process that needs it). The benchmarks that feed
it (tfds_pipelines.py) say only where their files are.

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


def strided_count(num_examples: int) -> Callable[[int, int], int]:
  """Shard sizes of `Dataset.shard(count, index)` over num_examples."""
  return lambda index, count: len(range(index, num_examples, count))


def even_count(num_examples: int) -> Callable[[int, int], int]:
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
# Building sources: in memory, TFDS, filtered TFDS.
# ---------------------------------------------------------------------------


def fake_source(images: np.ndarray, labels: np.ndarray) -> Source:
  """An in-memory source of raw uint8 images, sharded by striding."""
  def read(index, count):
    return tf.data.Dataset.from_tensor_slices(
        {'image': images[index::count], 'label': labels[index::count]})
  return Source(read=read, count=strided_count(len(labels)), kind='raw')


def streaming_dataset(name, dataset_config, shot_config, *, class_names,
                       train_labels, sources) -> StreamingDataset:
  counts = np.bincount(train_labels, minlength=len(class_names))
  return StreamingDataset(
      name=name, class_names=tuple(class_names), train_class_counts=counts,
      shot_groups=long_tail.shot_groups_for(counts, shot_config),
      sources=sources, image_size=dataset_config.image_size,
      min_crop_area=dataset_config.min_crop_area,
      eval_crop_fraction=dataset_config.eval_crop_fraction,
      shuffle_buffer=dataset_config.shuffle_buffer)


def tfds_builder(name: str, dataset_config: ml_collections.ConfigDict,
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


def read_tfds(builder, split: str, index: int, count: int,
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


def tfds_labels(builder, split: str,
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
      (label for label in read_tfds(builder, split, 0, 1, even=False).map(
          lambda e: e['label']).as_numpy_iterator()), np.int32)
  os.makedirs(cache_dir, exist_ok=True)
  np.save(path, labels)
  return labels


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

  return Source(read=read, count=strided_count(len(filenames)),
                kind='encoded', cache=cache)
