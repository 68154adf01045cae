"""Classifiers from config sections, and the compute dtype of a run.

A teacher generator's networks come from its family (tgt_jax/generators/).
"""

from typing import Any

import jax.numpy as jnp
import ml_collections

from tgt_jax.models import classifier as classifier_lib
from tgt_jax.models import resnet

COMPUTE_DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}

# Layout fields of a `student` / `teacher_labeler` section that only a
# converted checkpoint needs (see models/resnet.py); a section without them
# builds the layout this codebase trains.
CLASSIFIER_LAYOUT_DEFAULTS = {
    'stride_placement': 'first',
    'strided_conv': '3x3',
    'strided_padding': 'same',
    'conv_bias': False,
    'batch_norm_epsilon': resnet.BATCH_NORM_EPSILON,
}


def classifier_layout(model_config: ml_collections.ConfigDict
                      ) -> dict[str, Any]:
  """The section's layout fields, defaults filled in."""
  return {name: model_config.get(name, default)
          for name, default in CLASSIFIER_LAYOUT_DEFAULTS.items()}


def compute_dtype(config: ml_collections.ConfigDict) -> Any:
  """`config.dtype`: the compute dtype of every network a run applies.

  Parameters, BatchNorm statistics, logits and latents stay float32 whatever
  it says; 'bfloat16' runs the convolutions and matrix products in bfloat16
  (the fast path of TPUs and recent GPUs; slow on most CPUs).
  """
  name = config.get('dtype', 'float32')
  if name not in COMPUTE_DTYPES:
    raise ValueError(f'dtype={name!r}; choose from {tuple(COMPUTE_DTYPES)} '
                     '(--config.dtype).')
  return COMPUTE_DTYPES[name]


def classifier_network(model_config: ml_collections.ConfigDict,
                       num_classes: Any,
                       dtype: Any = jnp.float32) -> resnet.ResNet:
  """The ResNet of a `student` / `teacher_labeler` section.

  The layout fields (CLASSIFIER_LAYOUT_DEFAULTS) are optional: they describe
  a converted checkpoint's layout (e.g. Keras ResNet-50 weights from
  `tgt_jax.convert_keras_resnet`), and a section without them builds ours.
  Checkpoint code (`pretrained.load_classifier`) builds the bare network
  through here.
  """
  return resnet.create_resnet(
      model_config.depth, num_classes,
      width_multiplier=model_config.width_multiplier,
      small_image_stem=model_config.small_image_stem, dtype=dtype,
      **classifier_layout(model_config))


def classifier(model_config: ml_collections.ConfigDict, num_classes: int,
               dtype: Any = jnp.float32) -> classifier_lib.Classifier:
  """Student or teacher labeler: the one ResNet family and its input recipe.

  `model_config` is a resolved `student` or `teacher_labeler` section.
  """
  return classifier_lib.Classifier(
      network=classifier_network(model_config, num_classes, dtype),
      image_size=model_config.image_size, mean=tuple(model_config.mean),
      std=tuple(model_config.std), channel_order=model_config.channel_order)
