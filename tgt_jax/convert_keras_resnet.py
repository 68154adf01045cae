r"""Converts a Keras applications ResNet-50/101/152 into a teacher labeler.

  python -m tgt_jax.convert_keras_resnet --model=resnet50 --output=DIR \
      [--weights=imagenet|PATH.h5|PATH.weights.h5] [--num_classes=1000]

`--weights=imagenet` (the default) makes Keras download its ImageNet-1k
weights (`keras.applications.ResNet50(weights='imagenet')`, cached in
~/.keras/models); a path loads a weights file saved from the same Keras
model (`model.save_weights`, or the legacy `.h5` files Keras publishes),
with `--num_classes` if its head is not 1000-way. DIR receives what
`tgt_jax.pretrained.load_classifier` reads (the field
`teacher_labeler.init_checkpoint` names it); docs/paper_scale.md section 3
says how to use it and which labelers leak a benchmark's test split.

The Keras models are ResNet v1 with a layout of their own, which the Flax
`ResNet` reproduces through options (written to DIR/architecture.json as the
`teacher_labeler` fields the weights fit):
  * every conv has a bias (`conv_bias=True`);
  * a bottleneck block strides its first 1x1 conv, not the 3x3
    (`strided_conv='1x1'`), in the first unit of stages 2..4
    (`stride_placement='first'`); no 3x3 conv strides, so
    `strided_padding` does not matter (recorded as 'same');
  * BatchNorm epsilon 1.001e-5 (`batch_norm_epsilon`);
  * input: Keras's 'caffe' preprocessing, RGB -> BGR, x * 255 minus the
    BGR means (103.939, 116.779, 123.68), no scaling. In our unit-range
    convention (`image_ops.classifier_input`): `channel_order='bgr'`,
    mean = those means / 255, std = 1 / 255 (BGR order);
  * the stem (7x7/2 conv after 3-pixel zero padding, 3x3/2 max-pool after
    1-pixel zero padding) is ours: the pool follows a ReLU, so zero and -inf
    padding give the same maximum.
Keras's ImageNet class names come only from a download
(`decode_predictions`), so they are not stored; num_classes is.

Every Keras weight is looked up in an explicit table (`keras_name_map`),
Keras `layer/weight` -> Flax (collection, *path); the conversion fails,
listing every problem at once, on a weight no entry consumes, an entry with
no weight, or a shape that does not fit. Needs TensorFlow/Keras (already in
requirements.txt); training never imports Keras.
"""

import os
import re
from typing import Any, Mapping, Sequence

from absl import app
from absl import flags
from absl import logging
import jax
import numpy as np

from tgt_jax import pretrained
from tgt_jax.models import resnet

# --model -> (depth, keras.applications constructor).
KERAS_MODELS = {'resnet50': (50, 'ResNet50'),
                'resnet101': (101, 'ResNet101'),
                'resnet152': (152, 'ResNet152')}
KERAS_BATCH_NORM_EPSILON = 1.001e-5
# `keras.applications.imagenet_utils.preprocess_input(mode='caffe')`: the
# ImageNet channel means on the 0..255 scale, BGR order.
KERAS_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
# Keras stage names conv2..conv5 are our stages 1..4 (Keras's conv1 is the
# stem).
_KERAS_FIRST_STAGE = 2


class ConversionError(ValueError):
  """The Keras weights do not map onto the Flax ResNet; lists every problem."""


def keras_input_normalization() -> dict[str, Any]:
  """Keras 'caffe' preprocessing as `teacher_labeler` mean/std/channel_order.

  Keras computes x_bgr * 255 - m for x in [0, 1]; that is
  (x_bgr - m / 255) / (1 / 255).
  """
  return {'mean': [m / 255.0 for m in KERAS_CAFFE_MEAN_BGR],
          'std': [1.0 / 255.0] * 3,
          'channel_order': 'bgr'}


def keras_architecture(depth: int, num_classes: int) -> dict[str, Any]:
  """The `teacher_labeler` fields Keras ResNet v1 weights fit."""
  return {'depth': depth, 'width_multiplier': 1.0, 'small_image_stem': False,
          'conv_bias': True, 'strided_conv': '1x1',
          'stride_placement': 'first', 'strided_padding': 'same',
          'batch_norm_epsilon': KERAS_BATCH_NORM_EPSILON,
          **keras_input_normalization(), 'num_classes': num_classes}


def keras_name_map(depth: int) -> dict[str, tuple[str, ...]]:
  """Keras ResNet v1 weight names -> Flax (collection, *path).

  Keras names a bottleneck unit `conv{stage}_block{unit}_{k}_{conv|bn}`
  with k = 1, 2, 3 along the residual branch and k = 0 for the projection
  shortcut (first unit of each stage only); the stem is `conv1_conv`,
  `conv1_bn` and the head `predictions`. Conv weights are `kernel` (HWIO,
  as Flax) and `bias`; BatchNorm weights `gamma`, `beta`, `moving_mean`,
  `moving_variance`; the head's are `kernel` [in, out] and `bias`.

  Args:
    depth: 50, 101 or 152.

  Returns:
    {'layer/weight': ('params' | 'batch_stats', module, ..., leaf)}.
  """
  if depth not in (50, 101, 152):
    raise ValueError(f'Keras applications have ResNet-50/101/152 (v1), not '
                     f'depth {depth}.')
  stage_sizes, _ = resnet.RESNET_DEPTHS[depth]
  name_map = {}

  def conv(keras_layer: str, flax_path: tuple[str, ...]) -> None:
    name_map[f'{keras_layer}/kernel'] = ('params', *flax_path, 'kernel')
    name_map[f'{keras_layer}/bias'] = ('params', *flax_path, 'bias')

  def batch_norm(keras_layer: str, flax_path: tuple[str, ...]) -> None:
    name_map[f'{keras_layer}/gamma'] = ('params', *flax_path, 'scale')
    name_map[f'{keras_layer}/beta'] = ('params', *flax_path, 'bias')
    name_map[f'{keras_layer}/moving_mean'] = ('batch_stats', *flax_path,
                                              'mean')
    name_map[f'{keras_layer}/moving_variance'] = ('batch_stats', *flax_path,
                                                  'var')

  conv('conv1_conv', ('stem_conv',))
  batch_norm('conv1_bn', ('stem_bn',))
  for stage, num_units in enumerate(stage_sizes):
    for unit in range(1, num_units + 1):
      keras_unit = f'conv{stage + _KERAS_FIRST_STAGE}_block{unit}'
      flax_unit = f'stage{stage + 1}_block{unit}'
      for k in (1, 2, 3):
        conv(f'{keras_unit}_{k}_conv', (flax_unit, f'conv{k}'))
        batch_norm(f'{keras_unit}_{k}_bn', (flax_unit, f'bn{k}'))
      if unit == 1:
        conv(f'{keras_unit}_0_conv', (flax_unit, 'shortcut_conv'))
        batch_norm(f'{keras_unit}_0_bn', (flax_unit, 'shortcut_bn'))
  name_map['predictions/kernel'] = ('params', 'classifier', 'kernel')
  name_map['predictions/bias'] = ('params', 'classifier', 'bias')
  return name_map


def keras_model_weights(model: Any) -> dict[str, np.ndarray]:
  """Every weight of a live Keras model as {'layer/weight': array}."""
  weights = {}
  for layer in model.layers:
    for variable in layer.weights:
      # Keras 3 names a variable 'kernel'; tf.keras 'conv1_conv/kernel:0'.
      short_name = variable.name.split('/')[-1].split(':')[0]
      weights[f'{layer.name}/{short_name}'] = np.asarray(variable.numpy())
  return weights


def depth_of_keras_weights(weights: Mapping[str, Any]) -> int:
  """ResNet depth from the unit names `conv{stage}_block{unit}_...`."""
  units = {}
  for name in weights:
    match = re.match(r'conv(\d+)_block(\d+)_', name)
    if match:
      stage, unit = int(match.group(1)), int(match.group(2))
      units[stage] = max(units.get(stage, 0), unit)
  stage_sizes = tuple(units.get(stage + _KERAS_FIRST_STAGE, 0)
                      for stage in range(4))
  for depth, (sizes, bottleneck) in resnet.RESNET_DEPTHS.items():
    if bottleneck and tuple(sizes) == stage_sizes and depth >= 50:
      return depth
  raise ConversionError(
      f'The Keras weights have units per stage {stage_sizes}, which is no '
      'Keras ResNet v1 (50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: '
      '(3, 8, 36, 3)). ResNetV2 and ResNeXt models are not supported.')


def _get_path(tree: Mapping[str, Any], path: Sequence[str]) -> Any:
  for key in path:
    if not isinstance(tree, Mapping) or key not in tree:
      return None
    tree = tree[key]
  return tree


def _set_path(tree: dict, path: Sequence[str], value: Any) -> None:
  for key in path[:-1]:
    tree = tree.setdefault(key, {})
  tree[path[-1]] = value


def convert_weights(weights: Mapping[str, np.ndarray], depth: int,
                    num_classes: int) -> dict[str, Any]:
  """Keras weights by name -> {'params', 'batch_stats'} of the Flax ResNet.

  Args:
    weights: {'layer/weight': array}, e.g. from `keras_model_weights`.
    depth: 50, 101 or 152.
    num_classes: size of the Keras `predictions` layer.

  Returns:
    {'params', 'batch_stats'} as float32 numpy arrays, for
    `build.classifier_network` of `keras_architecture(depth, num_classes)`.

  Raises:
    ConversionError: listing every unmapped, missing or misshapen weight.
  """
  architecture = keras_architecture(depth, num_classes)
  abstract = pretrained.abstract_classifier_variables(architecture,
                                                      num_classes)
  name_map = keras_name_map(depth)
  problems = []
  converted: dict[str, dict] = {'params': {}, 'batch_stats': {}}
  for keras_name, (collection, *path) in name_map.items():
    target = f'{collection}/{"/".join(path)}'
    want = _get_path(abstract[collection], path)
    if want is None:
      problems.append(f'{keras_name}: the table maps it to {target}, which '
                      'the Flax ResNet lacks')
      continue
    if keras_name not in weights:
      problems.append(f'{keras_name}: missing from the Keras weights (needed '
                      f'for {target}, shape {tuple(want.shape)})')
      continue
    value = np.asarray(weights[keras_name], np.float32)
    if value.shape != tuple(want.shape):
      problems.append(f'{keras_name}: shape {value.shape} does not fit '
                      f'{target} {tuple(want.shape)}')
      continue
    _set_path(converted[collection], path, value)
  for keras_name in sorted(set(weights) - set(name_map)):
    problems.append(f'{keras_name}: shape {np.shape(weights[keras_name])} is '
                    'not mapped to any Flax variable')
  # The table must cover the whole Flax tree, or the model would be
  # half-initialised.
  for collection, tree in abstract.items():
    for key_path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
      path = [key.key for key in key_path]
      if _get_path(converted[collection], path) is None:
        target = f'{collection}/{"/".join(path)}'
        if not any(target in problem for problem in problems):
          problems.append(f'{target} (shape {tuple(leaf.shape)}): no Keras '
                          'weight maps to it')
  if problems:
    raise ConversionError(
        f'{len(problems)} problem(s) converting the Keras ResNet-{depth} '
        'weights:\n  ' + '\n  '.join(problems))
  return converted


def convert_keras_model(model: Any) -> tuple[dict[str, Any], dict[str, Any]]:
  """A live Keras ResNet50/101/152 -> (Flax variables, architecture).

  The model must have its classifier head (`include_top=True`); its input
  size does not matter (the weights are the same at any size).
  """
  weights = keras_model_weights(model)
  depth = depth_of_keras_weights(weights)
  if 'predictions/kernel' not in weights:
    raise ConversionError(
        'The Keras model has no `predictions` layer: build it with '
        'include_top=True (the teacher labeler needs a classifier head).')
  num_classes = int(weights['predictions/kernel'].shape[-1])
  variables = convert_weights(weights, depth, num_classes)
  return variables, keras_architecture(depth, num_classes)


def build_keras_model(model_name: str, weights: str = 'imagenet',
                      num_classes: int = 1000) -> Any:
  """`keras.applications.<ResNet>` with `weights` ('imagenet' downloads)."""
  import keras  # pylint: disable=g-import-not-at-top
  if model_name not in KERAS_MODELS:
    raise ValueError(f'--model={model_name!r}; choose one of '
                     f'{tuple(KERAS_MODELS)}.')
  if weights != 'imagenet' and not os.path.isfile(weights):
    raise FileNotFoundError(
        f'--weights={weights!r} is neither "imagenet" nor an existing .h5 / '
        '.weights.h5 file saved from the same Keras model.')
  constructor_name = KERAS_MODELS[model_name][1]
  constructor = getattr(keras.applications, constructor_name)
  try:
    # Logits: our classifier head has no softmax.
    return constructor(weights=weights, classes=num_classes,
                       classifier_activation=None)
  except ValueError as error:
    if weights == 'imagenet':
      raise
    raise ValueError(
        f'--weights={weights} does not load into keras.applications.'
        f'{constructor_name}(classes={num_classes}): pass the --model the '
        'file was saved from, and --num_classes if its head is not '
        f'1000-way. Keras says: {str(error)[:500]}') from error


def convert(model_name: str, output: str, weights: str = 'imagenet',
            num_classes: int = 1000) -> dict[str, Any]:
  """Builds the Keras model, converts it and writes OUTPUT; returns the
  architecture written."""
  import keras  # pylint: disable=g-import-not-at-top
  model = build_keras_model(model_name, weights, num_classes)
  variables, architecture = convert_keras_model(model)
  pretrained.save_classifier(
      output, variables, architecture,
      {'source': f'keras.applications.{KERAS_MODELS[model_name][1]}',
       'weights': weights if weights == 'imagenet' else os.path.abspath(
           weights),
       'keras_version': keras.__version__,
       # ImageNet weights were trained and evaluated at 224x224.
       'source_image_size': 224 if weights == 'imagenet' else None})
  return architecture


def labeler_flags(output: str, architecture: Mapping[str, Any]) -> list[str]:
  """The `--config.teacher_labeler.*` flags that fit the converted weights."""
  flag_list = [f'--config.teacher_labeler.init_checkpoint={output}']
  for field in pretrained.CLASSIFIER_FIELDS:
    flag_list.append(f'--config.teacher_labeler.{field}='
                     f'{pretrained.config_flag_value(architecture[field])}')
  return flag_list


def _flags() -> None:
  flags.DEFINE_enum('model', 'resnet50', list(KERAS_MODELS),
                    'Which keras.applications ResNet (v1).')
  flags.DEFINE_string('output', None, 'Output directory for the checkpoint.')
  flags.DEFINE_string('weights', 'imagenet',
                      '"imagenet" (Keras downloads its ImageNet-1k weights) '
                      'or a .h5 / .weights.h5 file of the same model.')
  flags.DEFINE_integer('num_classes', 1000,
                       'Classes of the weights file (imagenet: 1000).')
  flags.mark_flags_as_required(['output'])


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  # Orbax logs every step of a save at INFO; the summary below is printed.
  logging.set_verbosity(logging.WARNING)
  flag_values = flags.FLAGS
  architecture = convert(flag_values.model, flag_values.output,
                         flag_values.weights, flag_values.num_classes)
  info = pretrained.read_architecture(flag_values.output,
                                      pretrained.CLASSIFIER_FORMAT)
  counts = info['parameter_counts']
  print(f'ResNet-{architecture["depth"]}: {counts["params"]:,} parameters, '
        f'{counts["batch_stats"]:,} BatchNorm statistics, '
        f'{architecture["num_classes"]} classes.')
  print(f'Wrote {flag_values.output}. A teacher_labeler section fits it '
        'with:\n  ' + ' \\\n  '.join(labeler_flags(flag_values.output,
                                                   architecture)))


if __name__ == '__main__':
  _flags()
  app.run(main)
