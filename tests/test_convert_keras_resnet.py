"""Tests of the Keras ResNet -> teacher labeler converter, offline.

The source model is `keras.applications.ResNet50(weights=None)` at 64x64
with every weight random, BatchNorm statistics and affine included (at
their initial values, BatchNorm would be nearly the identity and conv biases
zero, so a mapping that mixed those up would still pass). Keras runs on its
own 'caffe' preprocessing of the images; the converted Flax ResNet runs on
`image_ops.classifier_input` with the normalisation the converter records.
Nothing is downloaded.
"""

import json
import re

import jax

jax.config.update('jax_disable_most_optimizations', True)

import ml_collections  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top
import pytest  # pylint: disable=g-import-not-at-top

from tgt_jax import convert_keras_resnet  # pylint: disable=g-import-not-at-top
from tgt_jax import image_ops  # pylint: disable=g-import-not-at-top
from tgt_jax import pretrained  # pylint: disable=g-import-not-at-top
from tgt_jax.models import build  # pylint: disable=g-import-not-at-top

keras = pytest.importorskip('keras')

IMAGE_SIZE = 64
NUM_CLASSES = 1000


def _randomize(model, seed=0):
  """Random BatchNorm statistics and affine, and random biases."""
  rng = np.random.default_rng(seed)
  for layer in model.layers:
    if isinstance(layer, keras.layers.BatchNormalization):
      channels = layer.gamma.shape[0]
      layer.set_weights([rng.uniform(0.5, 1.5, channels),
                         rng.normal(0.0, 0.2, channels),
                         rng.normal(0.0, 0.2, channels),
                         rng.uniform(0.5, 2.0, channels)])
    elif isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)):
      kernel, bias = layer.get_weights()
      layer.set_weights([kernel, rng.normal(0.0, 0.1, bias.shape)])


def _labeler_section(architecture, **overrides):
  """A teacher_labeler section as a config would hold it."""
  fields = {field: architecture[field]
            for field in pretrained.CLASSIFIER_FIELDS}
  fields.update(image_size=IMAGE_SIZE, **overrides)
  for name in ('mean', 'std'):
    fields[name] = tuple(fields[name])
  return ml_collections.ConfigDict(fields)


def _flax_logits(architecture, variables, unit_images):
  network = build.classifier_network(
      ml_collections.ConfigDict(architecture), architecture['num_classes'])

  @jax.jit
  def logits(variables, unit_images):
    inputs = image_ops.classifier_input(
        unit_images, IMAGE_SIZE, architecture['mean'], architecture['std'],
        architecture['channel_order'])
    return network.apply(variables, inputs, train=False)[0]

  return np.asarray(logits(variables, unit_images))


@pytest.fixture(scope='module')
def keras_resnet50():
  """(model, weights by name, unit images, Keras logits)."""
  model = keras.applications.ResNet50(
      weights=None, input_shape=(IMAGE_SIZE, IMAGE_SIZE, 3),
      classes=NUM_CLASSES, classifier_activation=None)
  _randomize(model)
  unit_images = np.random.default_rng(1).uniform(
      0.0, 1.0, (4, IMAGE_SIZE, IMAGE_SIZE, 3)).astype(np.float32)
  keras_inputs = keras.applications.resnet.preprocess_input(unit_images *
                                                            255.0)
  logits = np.asarray(model(keras_inputs, training=False))
  return model, convert_keras_resnet.keras_model_weights(model), unit_images, (
      logits)


@pytest.fixture(scope='module')
def converted(keras_resnet50):
  model, _, _, _ = keras_resnet50
  return convert_keras_resnet.convert_keras_model(model)


def _assert_logits_close(actual, expected):
  # float32 through 50 layers: relative to the logits' scale.
  scale = np.max(np.abs(expected))
  np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-4 * scale)


def test_name_table_covers_keras_and_flax_one_to_one(keras_resnet50):
  _, weights, _, _ = keras_resnet50
  name_map = convert_keras_resnet.keras_name_map(50)
  assert set(name_map) == set(weights)
  assert len(set(name_map.values())) == len(name_map)
  assert name_map['conv2_block1_0_conv/kernel'] == (
      'params', 'stage1_block1', 'shortcut_conv', 'kernel')
  assert name_map['conv5_block3_2_bn/moving_variance'] == (
      'batch_stats', 'stage4_block3', 'bn2', 'var')
  assert name_map['conv1_bn/gamma'] == ('params', 'stem_bn', 'scale')
  assert name_map['predictions/bias'] == ('params', 'classifier', 'bias')


@pytest.mark.parametrize('depth', [50, 101, 152])
def test_name_table_fills_the_flax_network_exactly(depth):
  architecture = convert_keras_resnet.keras_architecture(depth, NUM_CLASSES)
  abstract = pretrained.abstract_classifier_variables(architecture,
                                                      NUM_CLASSES)
  flax_paths = {(collection, *[key.key for key in path])
                for collection, tree in abstract.items()
                for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]}
  name_map = convert_keras_resnet.keras_name_map(depth)
  assert set(name_map.values()) == flax_paths
  # Per unit: 3 convs x (kernel, bias) + 3 BNs x 4; per stage one
  # projection (conv + BN, 6); stem 6; head 2.
  stage_sizes = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3),
                 152: (3, 8, 36, 3)}[depth]
  assert len(name_map) == 18 * sum(stage_sizes) + 6 * 4 + 6 + 2


def test_converted_resnet50_matches_keras_logits(keras_resnet50, converted):
  _, _, unit_images, keras_logits = keras_resnet50
  variables, architecture = converted
  assert architecture['depth'] == 50
  assert architecture['num_classes'] == NUM_CLASSES
  # The comparison must bite: informative, input-dependent logits.
  assert np.std(keras_logits) > 1.0
  assert np.max(np.abs(keras_logits[0] - keras_logits[1])) > 1.0
  _assert_logits_close(_flax_logits(architecture, variables, unit_images),
                       keras_logits)


def test_permuted_mapping_changes_the_logits(keras_resnet50):
  _, weights, unit_images, keras_logits = keras_resnet50
  # Two units of one stage: same shapes, so only the numbers can tell.
  swapped = dict(weights)
  for weight in ('2_conv/kernel', '2_bn/moving_mean'):
    a, b = f'conv3_block2_{weight}', f'conv3_block3_{weight}'
    swapped[a], swapped[b] = weights[b], weights[a]
  variables = convert_keras_resnet.convert_weights(swapped, 50, NUM_CLASSES)
  architecture = convert_keras_resnet.keras_architecture(50, NUM_CLASSES)
  logits = _flax_logits(architecture, variables, unit_images)
  assert np.max(np.abs(logits - keras_logits)) > 0.1 * np.max(
      np.abs(keras_logits))


def test_keras_preprocessing_in_unit_range_convention():
  normalization = convert_keras_resnet.keras_input_normalization()
  unit_images = np.random.default_rng(2).uniform(
      0.0, 1.0, (2, 8, 8, 3)).astype(np.float32)
  ours = image_ops.classifier_input(unit_images, 8, normalization['mean'],
                                    normalization['std'],
                                    normalization['channel_order'])
  theirs = keras.applications.resnet.preprocess_input(unit_images * 255.0)
  np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-3)


def test_conversion_lists_every_problem(keras_resnet50):
  _, weights, _, _ = keras_resnet50
  broken = dict(weights)
  del broken['conv4_block2_1_bn/beta']
  broken['conv3_block1_0_conv/kernel'] = np.zeros((1, 1, 256, 7), np.float32)
  broken['conv4_block7_1_conv/kernel'] = np.zeros((1, 1, 4, 4), np.float32)
  with pytest.raises(convert_keras_resnet.ConversionError) as error:
    convert_keras_resnet.convert_weights(broken, 50, NUM_CLASSES)
  message = str(error.value)
  assert '3 problem(s)' in message
  assert ('conv4_block2_1_bn/beta: missing from the Keras weights (needed '
          'for params/stage3_block2/bn1/bias') in message
  assert ('conv3_block1_0_conv/kernel: shape (1, 1, 256, 7) does not fit '
          'params/stage2_block1/shortcut_conv/kernel (1, 1, 256, 512)'
          ) in message
  assert 'conv4_block7_1_conv/kernel: shape (1, 1, 4, 4) is not mapped' in (
      message)
  with pytest.raises(convert_keras_resnet.ConversionError,
                     match=r'units per stage \(3, 4, 6, 0\)'):
    convert_keras_resnet.depth_of_keras_weights(
        {name: value for name, value in weights.items()
         if not name.startswith('conv5')})


# The command-line path end to end; the conversion is tested above.
@pytest.mark.integration
# Keras's own `save_weights` warns under numpy 2; not ours to fix.
@pytest.mark.filterwarnings('ignore:__array__ implementation:'
                            'DeprecationWarning')
def test_cli_path_writes_a_checkpoint_the_labeler_loads(keras_resnet50,
                                                        tmp_path):
  model, _, unit_images, keras_logits = keras_resnet50
  weights_file = str(tmp_path / 'resnet50.weights.h5')
  model.save_weights(weights_file)
  output = str(tmp_path / 'labeler')
  # What `--model=resnet50 --weights=PATH` runs: Keras's own 224x224 model
  # (the weights do not depend on the input size) loading the file.
  architecture = convert_keras_resnet.convert('resnet50', output,
                                              weights=weights_file)
  with open(tmp_path / 'labeler' / 'architecture.json') as f:
    record = json.load(f)
  assert record['format'] == pretrained.CLASSIFIER_FORMAT
  assert record['num_classes'] == NUM_CLASSES and 'class_names' not in record
  assert record['teacher_labeler'] == {
      'depth': 50, 'width_multiplier': 1.0, 'small_image_stem': False,
      'conv_bias': True, 'strided_conv': '1x1', 'stride_placement': 'first',
      'strided_padding': 'same', 'batch_norm_epsilon': 1.001e-5,
      'mean': [103.939 / 255, 116.779 / 255, 123.68 / 255],
      'std': [1 / 255] * 3, 'channel_order': 'bgr'}
  # Keras counts the BatchNorm statistics as (non-trainable) parameters.
  counts = record['parameter_counts']
  assert counts['params'] == 25_583_592 == sum(
      int(np.prod(w.shape)) for w in model.trainable_weights)
  assert counts['params'] + counts['batch_stats'] == model.count_params()

  section = _labeler_section(architecture)
  variables = pretrained.load_classifier(output, section, NUM_CLASSES)
  _assert_logits_close(_flax_logits(architecture, variables, unit_images),
                       keras_logits)

  # Another label space: the backbone without the 1000-way head.
  backbone = pretrained.load_classifier(output, section, 365)
  assert 'classifier' not in backbone['params']
  assert set(backbone['params']) == set(variables['params']) - {'classifier'}

  flags = convert_keras_resnet.labeler_flags(output, architecture)
  assert f'--config.teacher_labeler.init_checkpoint={output}' in flags
  assert '--config.teacher_labeler.channel_order=bgr' in flags


def test_load_classifier_names_every_mismatched_field(keras_resnet50,
                                                      converted, tmp_path):
  del keras_resnet50
  variables, architecture = converted
  output = str(tmp_path / 'labeler')
  pretrained.save_classifier(output, variables, architecture,
                             {'source': 'test'})
  # A section written for our own layout: none of the Keras fields.
  ours = ml_collections.ConfigDict(dict(
      depth=50, width_multiplier=1.0, small_image_stem=False, image_size=224,
      mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)))
  with pytest.raises(ValueError) as error:
    pretrained.load_classifier(output, ours, NUM_CLASSES)
  message = str(error.value)
  for line in ("teacher_labeler.conv_bias: config False, checkpoint True",
               "teacher_labeler.strided_conv: config '3x3', checkpoint '1x1'",
               'teacher_labeler.batch_norm_epsilon: config 1e-05, checkpoint '
               '1.001e-05',
               "teacher_labeler.channel_order: config 'rgb', checkpoint 'bgr'",
               'teacher_labeler.mean: config [0.485, 0.456, 0.406], '
               'checkpoint [0.407',
               'teacher_labeler.std: config'):
    assert line in message, line
  assert 'teacher_labeler.depth' not in message
  assert '--config.teacher_labeler.strided_conv=1x1' in message
  assert "--config.teacher_labeler.std='(0.00392156862745098, " in message

  with pytest.raises(ValueError,
                     match=re.escape('teacher_labeler.depth: config 101, '
                                     'checkpoint 50')):
    pretrained.load_classifier(output, _labeler_section(architecture,
                                                        depth=101),
                               NUM_CLASSES)
  with pytest.raises(FileExistsError, match='exists already'):
    pretrained.save_classifier(output, variables, architecture, {})
  with pytest.raises(FileNotFoundError, match='convert_keras_resnet'):
    pretrained.load_classifier(str(tmp_path), ours, NUM_CLASSES)


def test_save_classifier_refuses_variables_that_do_not_fit(converted,
                                                           tmp_path):
  variables, architecture = converted
  wrong = convert_keras_resnet.keras_architecture(101, NUM_CLASSES)
  with pytest.raises(ValueError, match=r'stage3_block7.*missing'):
    pretrained.save_classifier(str(tmp_path / 'x'), variables, wrong, {})
  incomplete = {k: v for k, v in architecture.items() if k != 'conv_bias'}
  with pytest.raises(ValueError, match='conv_bias: missing'):
    pretrained.save_classifier(str(tmp_path / 'y'), variables, incomplete,
                               {})
