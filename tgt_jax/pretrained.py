"""Frozen paper-scale teachers from converted checkpoints.

Two kinds of converted checkpoint live here: the BigBiGAN teacher generator
and a pretrained classifier for the teacher labeler (below).

`python -m tgt_jax.generators.convert_bigbigan` turns the TF-Hub module
`deepmind/bigbigan-resnet50/1` into a directory that this module reads:

  DIR/architecture.json   the `teacher_generator` fields the variables fit,
                          how they were converted, and parameter counts;
  DIR/variables/          an orbax checkpoint of
                          {'generator': {'params', 'batch_stats'},
                           'encoder': {'params', 'batch_stats'}}
                          for `Generator(spectral_norm=False)` (spectral norm
                          baked into the kernels) and `Encoder`.

Training reads it through `load_pretrained_teacher_generator`, named by the
config field `teacher_generator.pretrained_checkpoint`.

`python -m tgt_jax.convert_keras_resnet` (or any other converter) writes a
pretrained classifier with `save_classifier`:

  DIR/architecture.json   the `teacher_labeler` fields the weights fit
                          (depth, width, layout options, input
                          normalisation and channel order), num_classes,
                          class names when known, provenance;
  DIR/variables/          an orbax checkpoint of {'params', 'batch_stats'}
                          of `build.classifier_network`.

`load_classifier` reads it for a `teacher_labeler` section (the field
`teacher_labeler.init_checkpoint` names the directory). Nothing here
imports TensorFlow.
"""

import json
import math
import os
from typing import Any, Mapping, Optional

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from tgt_jax.generators import bigbigan
from tgt_jax.models import build

ARCHITECTURE_FILE = 'architecture.json'
VARIABLES_DIR = 'variables'
CHECKPOINT_FORMAT = 'tgt_jax.bigbigan.v1'

# The `teacher_generator` fields that fix the shapes of G's and E's
# variables; a checkpoint fits a config when these agree.
GENERATOR_FIELDS = ('image_size', 'channels', 'latent_dim', 'base_channels',
                    'channel_multipliers', 'embedding_dim',
                    'attention_resolution')
ENCODER_FIELDS = ('encoder_image_size', 'encoder_depth',
                  'encoder_width_multiplier', 'encoder_small_image_stem',
                  'encoder_head_hidden', 'encoder_stride_placement',
                  'encoder_strided_padding')
PARTS = ('generator', 'encoder')
# Fields that older configs and checkpoints may lack: they mean the default
# layout, which is what those were built with.
_OPTIONAL_FIELD_DEFAULTS = dict(bigbigan.ENCODER_LAYOUT_DEFAULTS)

CLASSIFIER_FORMAT = 'tgt_jax.classifier.v1'
# The `teacher_labeler` fields a classifier checkpoint fixes: the network's
# shapes and function, and the input normalisation its weights expect.
CLASSIFIER_NETWORK_FIELDS = ('depth', 'width_multiplier', 'small_image_stem',
                             *build.CLASSIFIER_LAYOUT_DEFAULTS)
CLASSIFIER_INPUT_FIELDS = ('mean', 'std', 'channel_order')
CLASSIFIER_FIELDS = CLASSIFIER_NETWORK_FIELDS + CLASSIFIER_INPUT_FIELDS
CHANNEL_ORDERS = ('rgb', 'bgr')
_CLASSIFIER_FIELD_DEFAULTS = {**build.CLASSIFIER_LAYOUT_DEFAULTS,
                              'channel_order': 'rgb'}


def _as_json_value(value: Any) -> Any:
  # ConfigDict fields may hold tuples; JSON has lists only, so compare and
  # store every sequence as a list.
  if isinstance(value, (tuple, list)):
    return [_as_json_value(v) for v in value]
  return value


def architecture_from_config(
    gen_config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The shape-defining `teacher_generator` fields, JSON-ready."""
  return {field: _as_json_value(
      gen_config.get(field, _OPTIONAL_FIELD_DEFAULTS[field])
      if field in _OPTIONAL_FIELD_DEFAULTS else gen_config[field])
          for field in GENERATOR_FIELDS + ENCODER_FIELDS}


def count_parameters(tree: Any) -> int:
  """Number of scalars in a pytree of arrays (or shape structs)."""
  return int(sum(np.prod(leaf.shape, dtype=np.int64)
                 for leaf in jax.tree_util.tree_leaves(tree)))


def abstract_teacher_variables(
    gen_config: ml_collections.ConfigDict,
    parts: tuple[str, ...] = PARTS) -> dict[str, Any]:
  """Shapes of the frozen teacher's variables for `gen_config`, no FLOPs.

  Returns {'generator': {'params', 'batch_stats'}, 'encoder': {...}} of
  `jax.ShapeDtypeStruct`, restricted to `parts`.
  """
  abstract = bigbigan.BigBiGAN.from_config(gen_config).abstract_variables()
  return {part: abstract[part] for part in parts}


def shape_mismatches(tree: Any, abstract: Any) -> list[str]:
  """'path: problem' lines where `tree` differs from `abstract` in structure
  or leaf shape (empty when they agree)."""
  problems = []
  flat_tree = {jax.tree_util.keystr(p): v for p, v in
               jax.tree_util.tree_flatten_with_path(tree)[0]}
  flat_abstract = {jax.tree_util.keystr(p): v for p, v in
                   jax.tree_util.tree_flatten_with_path(abstract)[0]}
  for path in sorted(set(flat_abstract) - set(flat_tree)):
    problems.append(f'{path}: missing from the checkpoint '
                    f'(expected shape {tuple(flat_abstract[path].shape)})')
  for path in sorted(set(flat_tree) - set(flat_abstract)):
    problems.append(f'{path}: in the checkpoint but not in the model')
  for path in sorted(set(flat_tree) & set(flat_abstract)):
    got, want = tuple(flat_tree[path].shape), tuple(flat_abstract[path].shape)
    if got != want:
      problems.append(f'{path}: checkpoint shape {got}, model shape {want}')
  return problems


def save_teacher_generator(directory: str, variables: Mapping[str, Any],
                           gen_config: ml_collections.ConfigDict,
                           conversion_info: Mapping[str, Any]) -> None:
  """Writes DIR/variables (orbax) and DIR/architecture.json.

  Args:
    directory: output directory; must not hold a checkpoint already.
    variables: {'generator': {'params', 'batch_stats'}, 'encoder': ...}.
    gen_config: the `teacher_generator` section the variables fit.
    conversion_info: provenance recorded in the JSON (source, EMA, ...).
  """
  abstract = abstract_teacher_variables(gen_config, tuple(variables))
  problems = shape_mismatches(variables, abstract)
  if problems:
    raise ValueError('Refusing to save variables that do not fit the '
                     'architecture:\n  ' + '\n  '.join(problems))
  _write(directory, variables, {
      'format': CHECKPOINT_FORMAT,
      'parts': sorted(variables),
      'teacher_generator': architecture_from_config(gen_config),
      'parameter_counts': {
          part: {collection: count_parameters(tree)
                 for collection, tree in part_variables.items()}
          for part, part_variables in variables.items()},
      'conversion': dict(conversion_info),
  })


def _write(directory: str, variables: Mapping[str, Any],
           record: Mapping[str, Any]) -> None:
  """DIR/variables (orbax, host arrays), then DIR/architecture.json; never
  over an existing checkpoint."""
  os.makedirs(directory, exist_ok=True)
  variables_path = os.path.join(os.path.abspath(directory), VARIABLES_DIR)
  if os.path.exists(variables_path):
    raise FileExistsError(f'{variables_path} exists already; choose a new '
                          '--output directory or delete it.')
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(variables_path, jax.tree.map(np.asarray, dict(variables)))
  checkpointer.wait_until_finished()
  checkpointer.close()
  with open(os.path.join(directory, ARCHITECTURE_FILE), 'w') as f:
    json.dump(record, f, indent=2, sort_keys=True)
    f.write('\n')


# What to run when a checkpoint of each format is missing.
_HOW_TO_MAKE = {
    CHECKPOINT_FORMAT: (
        'teacher_generator.pretrained_checkpoint must be a directory written '
        'by `python -m tgt_jax.generators.convert_bigbigan --module_dir=MODULE '
        '--output=DIR` (see docs/paper_scale.md).'),
    CLASSIFIER_FORMAT: (
        'teacher_labeler.init_checkpoint must be a directory written by a '
        'classifier converter, e.g. `python -m tgt_jax.convert_keras_resnet '
        '--model=resnet50 --output=DIR` (see docs/paper_scale.md, section 3).'),
}


def read_architecture(directory: str,
                      checkpoint_format: str = CHECKPOINT_FORMAT
                      ) -> dict[str, Any]:
  """DIR/architecture.json of a `checkpoint_format` checkpoint (BigBiGAN's
  by default), or an error saying how to make one."""
  path = os.path.join(directory, ARCHITECTURE_FILE)
  if not os.path.isfile(path):
    raise FileNotFoundError(f'{path} not found: '
                            f'{_HOW_TO_MAKE[checkpoint_format]}')
  with open(path) as f:
    info = json.load(f)
  if info.get('format') != checkpoint_format:
    raise ValueError(f'{path} has format {info.get("format")!r}; this code '
                     f'reads {checkpoint_format!r}. Re-run the converter.')
  return info


def restore_variables(directory: str) -> dict[str, Any]:
  """The variable tree saved under DIR/variables (by a converter, or by
  `tgt_jax.export`)."""
  checkpointer = ocp.StandardCheckpointer()
  restored = checkpointer.restore(
      os.path.join(os.path.abspath(directory), VARIABLES_DIR))
  checkpointer.close()
  return restored


def _check_fit(variables: Any, abstract: Any, message: str) -> None:
  """Raises ValueError(`message` and the first 50 misfits), if any."""
  problems = shape_mismatches(variables, abstract)
  if problems:
    raise ValueError(
        message + ':\n  ' + '\n  '.join(problems[:50]) +
        (f'\n  ... and {len(problems) - 50} more' if len(problems) > 50
         else ''))


def load_pretrained_teacher_generator(
    directory: str, gen_config: ml_collections.ConfigDict,
    parts: tuple[str, ...] = PARTS,
    dtype: Any = jnp.float32) -> tuple[dict[str, Any], dict[str, Any]]:
  """The frozen BigBiGAN teacher converted into `directory`.

  Args:
    directory: written by `tgt_jax.generators.convert_bigbigan`.
    gen_config: the config's `teacher_generator` section; its architecture
      fields must equal those the checkpoint was converted for.
    parts: which of 'generator', 'encoder' to load (tgt_prior needs no
      encoder).
    dtype: compute dtype of the returned modules (`build.compute_dtype`).

  Returns:
    (modules, variables): modules {'generator': Generator(spectral_norm=
    False), 'encoder': Encoder}, variables {part: {'params', 'batch_stats'}}
    as host numpy arrays (place them on devices with
    `sharding.put_replicated`).

  Raises:
    FileNotFoundError: if the directory holds no converted checkpoint.
    ValueError: listing every architecture field that differs from the
      config, or every variable whose shape does not fit the modules.
  """
  info = read_architecture(directory)
  missing_parts = [p for p in parts if p not in info['parts']]
  if missing_parts:
    raise ValueError(f'{directory} holds {info["parts"]} but {missing_parts} '
                     'are needed; re-run the converter with '
                     f'--parts={",".join(PARTS)}.')
  wanted = architecture_from_config(gen_config)
  saved = {**_OPTIONAL_FIELD_DEFAULTS, **info['teacher_generator']}
  fields = GENERATOR_FIELDS * ('generator' in parts) + ENCODER_FIELDS * (
      'encoder' in parts)
  differences = [f'teacher_generator.{field}: config {wanted[field]!r}, '
                 f'checkpoint {saved.get(field)!r}'
                 for field in fields if saved.get(field) != wanted[field]]
  if differences:
    raise ValueError(
        f'The converted teacher in {directory} does not fit the config:\n  ' +
        '\n  '.join(differences) + '\nSet these config fields to the '
        "checkpoint's values (the paper-scale configs carry BigBiGAN's), or "
        'convert again for this architecture.')

  restored = restore_variables(directory)
  variables = {part: {'params': restored[part]['params'],
                      'batch_stats': restored[part].get('batch_stats', {})}
               for part in parts}
  _check_fit(variables, abstract_teacher_variables(gen_config, parts),
             f'The variables in {directory} do not fit the modules built from '
             'the config')
  modules = {}
  if 'generator' in parts:
    modules['generator'] = bigbigan.generator(gen_config, spectral_norm=False,
                                           dtype=dtype)
  if 'encoder' in parts:
    modules['encoder'] = bigbigan.encoder(gen_config, dtype)
  return modules, variables


# ---------------------------------------------------------------------------
# Pretrained classifiers (the teacher labeler).
# ---------------------------------------------------------------------------


def _same_value(a: Any, b: Any) -> bool:
  """Config vs checkpoint value: exact, but floats up to rounding."""
  a, b = _as_json_value(a), _as_json_value(b)
  if isinstance(a, list) and isinstance(b, list):
    return len(a) == len(b) and all(_same_value(x, y) for x, y in zip(a, b))
  if isinstance(a, bool) or isinstance(b, bool):
    return a is b
  if isinstance(a, (int, float)) and isinstance(b, (int, float)):
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=0.0)
  return a == b


def config_flag_value(value: Any) -> str:
  """`value` as it goes after `--config.<field>=` on a shell command line."""
  value = _as_json_value(value)
  if isinstance(value, list):
    trailing_comma = ',' if len(value) == 1 else ''
    return "'(" + ', '.join(repr(v) for v in value) + trailing_comma + ")'"
  return str(value)


def abstract_classifier_variables(architecture: Mapping[str, Any],
                                  num_classes: Optional[int]
                                  ) -> dict[str, Any]:
  """{'params', 'batch_stats'} shapes of the classifier, no FLOPs."""
  network = build.classifier_network(ml_collections.ConfigDict(
      dict(architecture)), num_classes)
  channels = len(architecture.get('mean', (0.0, 0.0, 0.0)))
  # Shapes do not depend on the image size: global pooling ends the net.
  x = jax.ShapeDtypeStruct((1, 32, 32, channels), jnp.float32)
  variables = jax.eval_shape(
      lambda x: network.init(jax.random.PRNGKey(0), x, train=False), x)
  return {'params': variables['params'],
          'batch_stats': variables.get('batch_stats', {})}


def save_classifier(directory: str, variables: Mapping[str, Any],
                    architecture: Mapping[str, Any],
                    info: Mapping[str, Any]) -> None:
  """Writes a pretrained classifier: DIR/variables and DIR/architecture.json.

  Args:
    directory: output directory; must not hold a checkpoint already.
    variables: {'params', 'batch_stats'} of `build.classifier_network`.
    architecture: every CLASSIFIER_FIELDS entry (the `teacher_labeler`
      values the weights fit), 'num_classes', and optionally 'class_names'
      (one per class).
    info: provenance recorded in the JSON (source, weights, versions).

  Raises:
    ValueError: if a field is missing or unknown, or a variable does not fit
      the network the fields describe.
    FileExistsError: if DIR/variables exists.
  """
  problems = [f'{field}: missing' for field in
              CLASSIFIER_FIELDS + ('num_classes',) if field not in architecture]
  problems += [f'{field}: not a classifier field (allowed: '
               f'{CLASSIFIER_FIELDS + ("num_classes", "class_names")})'
               for field in architecture
               if field not in CLASSIFIER_FIELDS + ('num_classes',
                                                    'class_names')]
  if architecture.get('channel_order', 'rgb') not in CHANNEL_ORDERS:
    problems.append(f'channel_order: {architecture["channel_order"]!r} is not '
                    f'one of {CHANNEL_ORDERS}')
  num_classes = architecture.get('num_classes')
  class_names = architecture.get('class_names')
  if class_names is not None and len(class_names) != num_classes:
    problems.append(f'class_names: {len(class_names)} names for '
                    f'{num_classes} classes')
  if not problems:
    abstract = abstract_classifier_variables(
        {f: architecture[f] for f in CLASSIFIER_FIELDS}, num_classes)
    problems = shape_mismatches(dict(variables), abstract)
  if problems:
    raise ValueError('Refusing to save a classifier that does not fit its '
                     'architecture:\n  ' + '\n  '.join(problems))
  record = {
      'format': CLASSIFIER_FORMAT,
      'teacher_labeler': {field: _as_json_value(architecture[field])
                          for field in CLASSIFIER_FIELDS},
      'num_classes': num_classes,
      'parameter_counts': {collection: count_parameters(tree)
                           for collection, tree in variables.items()},
      'conversion': dict(info),
  }
  if class_names is not None:
    record['class_names'] = list(class_names)
  _write(directory, variables, record)


def load_classifier(directory: str,
                    labeler_config: ml_collections.ConfigDict,
                    num_classes: int) -> dict[str, Any]:
  """The pretrained classifier in `directory`, for a `teacher_labeler` section.

  Every CLASSIFIER_FIELDS entry of the checkpoint must equal the config's
  (the layout fields and `channel_order` default as in `build` when the
  section lacks them), and every variable must fit the network the config
  builds.

  Args:
    directory: written by `save_classifier` (e.g. by
      `python -m tgt_jax.convert_keras_resnet`).
    labeler_config: the config's `teacher_labeler` section.
    num_classes: the run's class count.

  Returns:
    {'params', 'batch_stats'} as host numpy arrays. When `num_classes`
    equals the checkpoint's, this is the whole classifier. Otherwise
    `params` holds the backbone only, WITHOUT the 'classifier' head (a
    1000-way ImageNet head means nothing for 365 Places classes): the caller
    must initialise a new head and fine-tune before the labeler is used.

  Raises:
    FileNotFoundError: if the directory holds no classifier checkpoint.
    ValueError: listing every field that differs from the config (with the
      flags that fix it), or every variable that does not fit.
  """
  info = read_architecture(directory, CLASSIFIER_FORMAT)
  saved = info['teacher_labeler']
  differences, fixes = [], []
  for field in CLASSIFIER_FIELDS:
    if field in _CLASSIFIER_FIELD_DEFAULTS:
      wanted = labeler_config.get(field, _CLASSIFIER_FIELD_DEFAULTS[field])
    else:
      wanted = labeler_config.get(field)
    if not _same_value(wanted, saved.get(field)):
      differences.append(f'teacher_labeler.{field}: config '
                         f'{_as_json_value(wanted)!r}, checkpoint '
                         f'{saved.get(field)!r}')
      fixes.append(f'--config.teacher_labeler.{field}='
                   f'{config_flag_value(saved.get(field))}')
  if differences:
    raise ValueError(
        f'The pretrained classifier in {directory} does not fit the config:\n'
        '  ' + '\n  '.join(differences) + '\nSet these fields to the '
        "checkpoint's values (its weights compute the intended function "
        'only with its own layout and input normalisation):\n  ' +
        ' '.join(fixes))

  checkpoint_classes = info['num_classes']
  restored = restore_variables(directory)
  variables = {'params': dict(restored['params']),
               'batch_stats': restored.get('batch_stats', {})}
  _check_fit(variables,
             abstract_classifier_variables(saved, checkpoint_classes),
             f'The variables in {directory} do not fit the network its '
             'architecture.json describes')
  if num_classes != checkpoint_classes:
    logging.warning(
        'The pretrained classifier in %s has %d classes, the run %d: '
        'returning its backbone without the classifier head, which must be '
        'initialised anew and fine-tuned.', directory, checkpoint_classes,
        num_classes)
    del variables['params']['classifier']
  return variables


def initial_classifier_variables(directory: str,
                                 labeler_config: ml_collections.ConfigDict,
                                 fresh: Mapping[str, Any]) -> dict[str, Any]:
  """Variables to fine-tune the labeler from: the converted classifier in
  `directory`, with the freshly initialised head of `fresh` where the class
  counts differ (a 1000-way ImageNet head means nothing for Places)."""
  num_classes = fresh['params']['classifier']['kernel'].shape[-1]
  loaded = load_classifier(directory, labeler_config, num_classes)
  params = dict(loaded['params'])
  params.setdefault('classifier', fresh['params']['classifier'])
  variables = {'params': params, 'batch_stats': loaded['batch_stats']}
  problems = shape_mismatches(variables, dict(fresh))
  if problems:
    raise ValueError(f'The classifier in {directory} does not fit '
                     'teacher_labeler:\n  ' + '\n  '.join(problems[:20]))
  return jax.tree.map(jnp.asarray, variables)
