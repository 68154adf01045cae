"""Every field of every config is read by some code: none does nothing.

One tiny run of the pipeline with every method (kd_mixup reads the mixup
section), embedding compression (pre-trained g) and a piecewise-constant
labeler schedule, the VAE family's trainer, and the loaders of every
dataset, under a recorder of
config reads (config_reads.py). A field that no code reads (for instance a
Table 6 row that changes nothing) fails the test by name.
"""


import pytest

import config_reads
import conftest
from test_config_lib import ALL_VARIANTS
from test_config_lib import leaf_paths
from test_config_lib import load_config
from test_streams import _make_sun_dir
from tgt_jax import config_lib
from tgt_jax import train
from tgt_jax.data import dataset as dataset_lib
from tgt_jax.data import loading
from tgt_jax.generators import families as generator_families

pytestmark = pytest.mark.integration


def _pipeline_config():
  config = conftest.tiny_config()
  config.methods = ('onehot', 'kd', 'kd_mixup', 'tgt_random', 'tgt_gradient',
                    'tgt_prior')
  config.num_epochs = 0.05
  config.teacher_labeler.num_epochs = 0.05
  for recipe in (config, config.teacher_labeler):
    recipe.schedule = 'step'
    recipe.decay_epochs = (0.02,)
  config.teacher_generator.num_epochs = 0.05
  config.embedding_distill.mode = 'compressed'
  config.embedding_distill.pretrain_steps = 1
  return config


def _load(recorder, config, expect=None):
  recorder.register(config)
  if expect is None:
    return loading.load_dataset(config_lib.resolve(config))
  with pytest.raises(expect):
    loading.load_dataset(config_lib.resolve(config))


def _load_imagenet_lt_mock(recorder, tmp):
  """imagenet_lt through TFDS's mock (test_streams): its caches are read."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  config = load_config('imagenet_lt')
  config.dataset.cache_dir = tmp
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(tfds.core.DatasetBuilder, 'is_prepared', lambda self: True)
    with tfds.testing.mock_data(num_examples=4,
                                policy=tfds.testing.MockPolicy.USE_CODE):
      _load(recorder, config)


@pytest.fixture(scope='module')
def reads(tmp_path_factory):
  tmp = tmp_path_factory.mktemp('reads')
  with config_reads.record_reads() as recorder:
    config = _pipeline_config()
    recorder.register(config)
    train.train_and_evaluate(config, str(tmp / 'pipeline'))
    # The VAE family's own fields: what its trainer reads.
    vae_config = _pipeline_config()
    vae_config.teacher_generator.family = 'vae'
    recorder.register(vae_config)
    vae_gen = config_lib.resolve(vae_config).teacher_generator
    generator_families.get(vae_gen).trainer(vae_gen)
    folder = load_config('image_folder', f'root={tmp / "images"}')
    from test_end_to_end import _image_folder  # pylint: disable=g-import-not-at-top
    _image_folder(str(tmp / 'images'))
    _load(recorder, folder)
    _load(recorder, load_config('mnist_lt'))
    _load(recorder, load_config('places_lt', 'smoke'))
    places = load_config('places_lt')
    places.dataset.data_dir = str(tmp / 'no_tfds')
    _load(recorder, places, dataset_lib.DataUnavailableError)
    _load_imagenet_lt_mock(recorder, str(tmp))
    sun = load_config('sun_lt')
    sun.dataset.data_dir, sun.dataset.split_dir = _make_sun_dir(
        str(tmp / 'sun'))
    sun.dataset.image_size = 16
    _load(recorder, sun)
  return recorder.reads


@pytest.mark.parametrize('name, arg', ALL_VARIANTS)
def test_every_field_is_read(name, arg, reads):
  config = load_config(name, arg)
  unread = sorted(p for p in leaf_paths(config) if p not in reads)
  assert not unread, f'No code reads these fields of {name}:{arg}: {unread}'
