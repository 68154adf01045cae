"""Frozen paper-scale teachers from converted checkpoints.

`python -m tgt_jax.convert_bigbigan` turns the TF-Hub module
`deepmind/bigbigan-resnet50/1` into a directory that this module reads:

  DIR/architecture.json   the `teacher_generator` fields the variables fit,
                          how they were converted, and parameter counts;
  DIR/variables/          an orbax checkpoint of
                          {'generator': {'params', 'batch_stats'},
                           'encoder': {'params', 'batch_stats'}}
                          for `Generator(spectral_norm=False)` (spectral norm
                          baked into the kernels) and `Encoder`.

Training reads it through `load_pretrained_teacher_generator`, named by the
config field `teacher_generator.pretrained_checkpoint`. Nothing here imports
TensorFlow.
"""

import json
import os
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

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
                  'encoder_head_hidden')
PARTS = ('generator', 'encoder')


def _as_json_value(value: Any) -> Any:
  # ConfigDict fields may hold tuples; JSON has lists only, so compare and
  # store every sequence as a list.
  if isinstance(value, (tuple, list)):
    return [_as_json_value(v) for v in value]
  return value


def architecture_from_config(
    gen_config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The shape-defining `teacher_generator` fields, JSON-ready."""
  return {field: _as_json_value(gen_config[field])
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
  abstract = {}
  if 'generator' in parts:
    generator = build.generator(gen_config, spectral_norm=False)
    z = jax.ShapeDtypeStruct((1, gen_config.latent_dim), jnp.float32)
    variables = jax.eval_shape(
        lambda x: generator.init(jax.random.PRNGKey(0), x, train=False), z)
    abstract['generator'] = {'params': variables['params'],
                             'batch_stats': variables['batch_stats']}
  if 'encoder' in parts:
    encoder = build.encoder(gen_config)
    size = gen_config.encoder_image_size
    x = jax.ShapeDtypeStruct((1, size, size, gen_config.channels), jnp.float32)
    variables = jax.eval_shape(
        lambda x: encoder.init(jax.random.PRNGKey(0), x, train=False), x)
    abstract['encoder'] = {'params': variables['params'],
                           'batch_stats': variables.get('batch_stats', {})}
  return abstract


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
  os.makedirs(directory, exist_ok=True)
  variables_path = os.path.join(os.path.abspath(directory), VARIABLES_DIR)
  if os.path.exists(variables_path):
    raise FileExistsError(f'{variables_path} exists already; choose a new '
                          '--output directory or delete it.')
  host_variables = jax.tree.map(np.asarray, dict(variables))
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(variables_path, host_variables)
  checkpointer.wait_until_finished()
  checkpointer.close()
  info = {
      'format': CHECKPOINT_FORMAT,
      'parts': sorted(variables),
      'teacher_generator': architecture_from_config(gen_config),
      'parameter_counts': {
          part: {collection: count_parameters(tree)
                 for collection, tree in part_variables.items()}
          for part, part_variables in variables.items()},
      'conversion': dict(conversion_info),
  }
  with open(os.path.join(directory, ARCHITECTURE_FILE), 'w') as f:
    json.dump(info, f, indent=2, sort_keys=True)
    f.write('\n')


def read_architecture(directory: str) -> dict[str, Any]:
  """DIR/architecture.json, or a FileNotFoundError naming the converter."""
  path = os.path.join(directory, ARCHITECTURE_FILE)
  if not os.path.isfile(path):
    raise FileNotFoundError(
        f'{path} not found: teacher_generator.pretrained_checkpoint must be a '
        'directory written by `python -m tgt_jax.convert_bigbigan '
        '--module_dir=MODULE --output=DIR` (see docs/paper_scale.md).')
  with open(path) as f:
    info = json.load(f)
  if info.get('format') != CHECKPOINT_FORMAT:
    raise ValueError(f'{path} has format {info.get("format")!r}; this code '
                     f'reads {CHECKPOINT_FORMAT!r}. Re-run the converter.')
  return info


def load_pretrained_teacher_generator(
    directory: str, gen_config: ml_collections.ConfigDict,
    parts: tuple[str, ...] = PARTS,
    dtype: Any = jnp.float32) -> tuple[dict[str, Any], dict[str, Any]]:
  """The frozen BigBiGAN teacher converted into `directory`.

  Args:
    directory: written by `tgt_jax.convert_bigbigan`.
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
  saved = info['teacher_generator']
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

  checkpointer = ocp.StandardCheckpointer()
  restored = checkpointer.restore(
      os.path.join(os.path.abspath(directory), VARIABLES_DIR))
  checkpointer.close()
  variables = {part: {'params': restored[part]['params'],
                      'batch_stats': restored[part].get('batch_stats', {})}
               for part in parts}
  problems = shape_mismatches(variables,
                              abstract_teacher_variables(gen_config, parts))
  if problems:
    raise ValueError(
        f'The variables in {directory} do not fit the modules built from the '
        'config:\n  ' + '\n  '.join(problems[:50]) +
        (f'\n  ... and {len(problems) - 50} more' if len(problems) > 50
         else ''))
  modules = {}
  if 'generator' in parts:
    modules['generator'] = build.generator(gen_config, spectral_norm=False,
                                           dtype=dtype)
  if 'encoder' in parts:
    modules['encoder'] = build.encoder(gen_config, dtype)
  return modules, variables
