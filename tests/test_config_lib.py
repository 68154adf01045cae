"""The one config schema: every config, derived fields, errors by field."""

import importlib.util
import os
import re

import jax
import ml_collections
import numpy as np
import pytest

import conftest
from tgt_jax import config_lib
from tgt_jax import methods
from tgt_jax import sharding
from tgt_jax import train
from tgt_jax.data import long_tail

CONFIGS_DIR = os.path.join(conftest.REPO, 'configs')
PAPER_CONFIGS = ('places_lt', 'imagenet_lt', 'sun_lt')


def load_config(name: str, arg: str = '') -> ml_collections.ConfigDict:
  """configs/<name>.py's get_config(arg), loaded as config_flags does."""
  spec = importlib.util.spec_from_file_location(
      name, os.path.join(CONFIGS_DIR, f'{name}.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


# Every config file with every argument it documents.
ALL_VARIANTS = [('digits_lt', ''), ('digits_lt', 'quick'),
                ('mnist_lt', ''), ('mnist_lt', 'quick'),
                ('image_folder', 'root=/data/x'),
                ('image_folder', 'root=/data/x,size=64,channels=1,quick=True')]
ALL_VARIANTS += [(name, arg) for name in PAPER_CONFIGS
                 for arg in ('', 'smoke', 'fake_data', 'labeler=scratch',
                             'labeler=keras_resnet50,smoke')]


def leaf_paths(config, prefix=''):
  for key, value in config.items():
    if isinstance(value, ml_collections.ConfigDict):
      yield from leaf_paths(value, f'{prefix}{key}.')
    else:
      yield prefix + key


@pytest.mark.parametrize('name, arg', ALL_VARIANTS)
def test_every_config_overrides_the_one_schema(name, arg):
  config = load_config(name, arg)
  schema = set(leaf_paths(config_lib.base_config()))
  extra = set(leaf_paths(config)) - schema
  # Only the fake data's own fields are added, by config_lib.use_fake_data.
  assert all(path.startswith('dataset.fake_') for path in extra), extra
  resolved = config_lib.resolve(config)
  assert not [p for p in leaf_paths(resolved)
              if resolved[p.split('.')[0]] is None], 'unresolved section'
  mesh = sharding.create_mesh()
  errors = train.config_errors(resolved, mesh)
  if name in PAPER_CONFIGS and 'smoke' not in arg:
    # The converted teachers are required, and say how to get them (random
    # data for timing, 'fake_data', does not make random teachers a run).
    assert any('pretrained_checkpoint' in e for e in errors), errors
    keras = 'keras' in arg or (arg in ('', 'fake_data') and
                               name != 'imagenet_lt')
    if keras and 'fake_data' not in arg:
      assert any('convert_keras_resnet --model=resnet' in e
                 for e in errors), errors
    errors = [e for e in errors if 'pretrained_checkpoint' not in e and
              'init_checkpoint' not in e]
  assert not errors


def test_derived_fields_follow_the_dataset():
  config = config_lib.base_config()
  config.dataset.image_size = 32
  config.dataset.channels = 3
  resolved = config_lib.resolve(config)
  for model in (resolved.student, resolved.teacher_labeler):
    assert model.image_size == 32
    assert model.small_image_stem
    assert tuple(model.mean) == (0.5, 0.5, 0.5)
  gen = resolved.teacher_generator
  assert (gen.image_size, gen.channels, gen.encoder_image_size) == (32, 3, 32)
  assert tuple(gen.channel_multipliers) == (8, 4, 2, 1)
  assert gen.attention_resolution == 16
  assert tuple(gen.discriminator_channel_multipliers) == (1, 2, 4, 8)
  assert resolved.dataset.max_shift == 4
  # A set field is kept; resolving twice changes nothing.
  config.student.image_size = 32
  config.teacher_generator.image_size = 64
  again = config_lib.resolve(config_lib.resolve(config))
  assert again.teacher_generator.image_size == 64
  assert tuple(again.teacher_generator.channel_multipliers) == (16, 8, 4, 2,
                                                                1)


@pytest.mark.parametrize('size, resolution, multipliers', [
    (8, 8, (2, 1)), (16, 16, (4, 2, 1)), (28, 32, (8, 4, 2, 1)),
    (128, 128, (16, 16, 8, 4, 2, 1))])
def test_generator_depth_for_a_resolution(size, resolution, multipliers):
  assert config_lib.generator_resolution(size) == resolution
  assert config_lib.generator_channel_multipliers(resolution) == multipliers


@pytest.mark.parametrize('field, value, message', [
    ('student.image_size', 16, 'student.image_size=16 but the input pipeline'),
    ('student.mean', (0.5, 0.5, 0.5), 'student.mean=(0.5, 0.5, 0.5) has 3'),
    ('teacher_generator.channels', 3, 'teacher_generator.channels=3 but'),
    ('teacher_generator.channel_multipliers', (4, 2, 1),
     'teacher_generator.image_size=8 but channel_multipliers=(4, 2, 1)'),
    ('teacher_generator.attention_resolution', 4,
     'attention_resolution=4 is not a GBlock'),
    ('teacher_generator.latent_dim', 13, 'latent_dim=13 must split'),
    ('shot_groups.few_threshold', None, 'set both or neither'),
])
def test_an_inconsistent_config_names_the_fields(field, value, message):
  config = conftest.tiny_config()
  section, name = field.split('.')
  config[section][name] = value
  errors = config_lib.consistency_errors(config_lib.resolve(config))
  assert any(message in e for e in errors), errors
  with pytest.raises(ValueError, match=re.escape(message)):
    config_lib.check_consistency(config_lib.resolve(config))


def test_validate_lists_every_problem_with_its_field():
  config = conftest.tiny_config()
  config.methods = ('onehot', 'distil', 'kd_mixup')
  config.batch_size = 6
  config.schedule = 'linear'
  config.dtype = 'float16'
  config.exploration.cache_latents = 'sometimes'
  mesh = sharding.create_mesh(jax.devices()[:1])
  with pytest.raises(train.ConfigError) as error:
    train.validate(config_lib.resolve(config), mesh)
  text = str(error.value)
  for expected in ("methods: unknown method 'distil'",
                   "schedule='linear'",
                   "dtype='float16'", "cache_latents='sometimes'"):
    assert expected in text
  for method in methods.METHODS:
    assert method in text


def test_a_misspelt_method_gets_the_nearest_name():
  assert methods.name_errors(('kd', 'tgt_gradiant')) == [
      "methods: unknown method 'tgt_gradiant' (did you mean "
      "'tgt_gradient'?); choose from " + str(tuple(methods.METHODS)) +
      ', e.g. --config.methods="(\'kd\',)".']
  assert methods.name_errors(())[0].startswith('methods: empty;')


def test_a_generator_that_would_stay_random_is_refused():
  config = conftest.tiny_config()
  config.teacher_generator.num_epochs = 0
  errors = train.config_errors(config_lib.resolve(config),
                               sharding.create_mesh())
  assert any('leave G and E random' in e for e in errors)
  config.methods = ('onehot', 'kd')  # No method generates: no generator.
  assert not train.config_errors(config_lib.resolve(config),
                                 sharding.create_mesh())


def test_parse_arg_types_and_errors():
  args = config_lib.parse_arg('root=/a/b,size=64,quick', root='', size=32,
                              quick=False, channels=3)
  assert (args.root, args.size, args.quick, args.channels) == ('/a/b', 64,
                                                               True, 3)
  with pytest.raises(ValueError, match=r"sise: unknown config argument.*"
                     r"\['channels', 'quick', 'root', 'size'\]"):
    config_lib.parse_arg('sise=3', root='', size=32, quick=False, channels=3)
  with pytest.raises(ValueError, match="size='big'"):
    config_lib.parse_arg('size=big', size=32)


def test_image_folder_config_needs_a_root_and_suits_natural_images():
  with pytest.raises(ValueError, match='root=DIR'):
    load_config('image_folder', '')
  config = config_lib.resolve(load_config('image_folder',
                                          'root=/x,size=64,channels=1'))
  assert config.dataset.flip and config.dataset.max_shift == 8
  assert config.student.image_size == config.teacher_labeler.image_size == 64
  assert config.teacher_generator.channels == 1
  assert config.shot_groups.many_threshold is None  # From the head class.


def test_shrink_keeps_the_code_paths():
  config = load_config('digits_lt', 'quick')
  full = load_config('digits_lt')
  assert config.num_epochs < full.num_epochs
  assert config.student.width_multiplier == full.student.width_multiplier
  with pytest.raises(ValueError, match="'quick' or 'tiny'"):
    config_lib.shrink(full, 'small')


def test_mnist_demo_config_is_what_its_docstring_says():
  config = load_config('mnist_lt')
  resolved = config_lib.resolve(config)
  gen = resolved.teacher_generator
  # The generator's size is resolve's own choice for 28x28, stated.
  assert gen.image_size == config_lib.generator_resolution(28) == 32
  assert tuple(gen.channel_multipliers) == (8, 4, 2, 1)
  assert gen.encoder_image_size == resolved.student.image_size == 28
  assert not (resolved.student.small_image_stem or
              resolved.teacher_labeler.small_image_stem or
              gen.encoder_small_image_stem)
  # The standard errors the docstring quotes: sqrt(p (1 - p) / n), n = 500
  # validation and 1,000 test images (and the digits' 80), in points.
  from configs import mnist_lt  # pylint: disable=g-import-not-at-top
  doc = ' '.join(mnist_lt.__doc__.split())
  for p, n, quoted in ((0.90, 500, '1.34'), (0.95, 500, '0.97'),
                       (0.90, 1000, '0.95'), (0.95, 1000, '0.69'),
                       (0.90, 80, '3.4')):
    assert f'{100 * np.sqrt(p * (1 - p) / n):.{len(quoted) - 2}f}' == quoted
    assert quoted in doc
  assert config.dataset.val_per_class * 10 == 500
  assert config.dataset.test_per_class * 10 == 1000
  quick = load_config('mnist_lt', 'quick')
  assert quick.num_epochs < config.num_epochs
  assert quick.teacher_generator.base_channels == gen.base_channels


def test_default_shot_thresholds_follow_the_head_class():
  # The digits demo's counts (head 130, tail 3): thresholds 130 / 43.3^(1/3)
  # = 37.0 and 130 / 43.3^(2/3) = 10.5, a third of the classes in each.
  counts = np.array([130, 84, 54, 35, 23, 15, 10, 6, 4, 3])
  many, few = long_tail.default_shot_thresholds(counts)
  assert (many, few) == pytest.approx((37.0, 10.54), abs=0.02)
  groups = long_tail.shot_groups(counts, many, few)
  assert groups['many'].tolist() == [0, 1, 2]
  assert groups['medium'].tolist() == [3, 4, 5]
  assert groups['few'].tolist() == [6, 7, 8, 9]
  # A head class 10x larger scales both thresholds by 10.
  assert long_tail.default_shot_thresholds(counts * 10) == pytest.approx(
      (10 * many, 10 * few))


# ---------------------------------------------------------------------------
# The paper configs.
# ---------------------------------------------------------------------------


def _parameter_count(config, section):
  classifier = train.build.classifier(config[section], 365)
  size = classifier.image_size
  shapes = jax.eval_shape(
      lambda: classifier.network.init(
          jax.random.PRNGKey(0), jax.numpy.zeros((1, size, size, 3)),
          train=False))
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes['params']))


@pytest.mark.parametrize('name', PAPER_CONFIGS)
@pytest.mark.parametrize('labeler', config_lib.PAPER_LABELERS)
def test_paper_labeler_is_a_larger_network_than_the_student(name, labeler):
  config = config_lib.resolve(load_config(name, f'labeler={labeler}'))
  student = (config.student.depth, config.student.width_multiplier)
  teacher = (config.teacher_labeler.depth,
             config.teacher_labeler.width_multiplier)
  assert student != teacher
  assert (_parameter_count(config, 'teacher_labeler') >
          2 * _parameter_count(config, 'student'))


@pytest.mark.parametrize('name', PAPER_CONFIGS)
def test_paper_config_has_every_table_6_row_with_its_source(name):
  config = load_config(name)
  with open(os.path.join(CONFIGS_DIR, f'{name}.py')) as f:
    source = f.read()
  table = source[source.index('# ---- Table 6 rows ----'):]
  for field in config_lib.TABLE_6_FIELDS:
    value = config
    for part in field.split('.'):
      value = value[part]
    assert value is not None, field
    line = next(l for l in table.splitlines()
                if f'config.{field} =' in l)
    # The value's source is on its line or the next (a wrapped line).
    following = table[table.index(line):].splitlines()[:2]
    assert any(tag in ' '.join(following)
               for tag in ('[paper]', '[ext]', '[ours]')), field
