r"""Converts TF-Hub `deepmind/bigbigan-resnet50/1` into a Flax checkpoint.

  python -m tgt_jax.generators.convert_bigbigan --module_dir=MODULE \
      --output=DIR [--config=configs/imagenet_lt.py] [--verify_with_hub]

MODULE is the unpacked TF1-Hub module (it holds `variables/variables.index`);
DIR receives what `tgt_jax.pretrained.load_pretrained_teacher_generator`
reads (set `--config.teacher_generator.pretrained_checkpoint=DIR`). The
architecture the variables must fit is the config's `teacher_generator`
section; the paper configs carry BigBiGAN's. Needs TensorFlow, and
tensorflow-hub for --verify_with_hub (requirements-convert.txt); training
never imports either. Steps, and how to check the port numerically against
the hub's `generate` / `encode`, are in docs/paper_scale.md.

What the conversion does, variable by variable (`tf.train.load_checkpoint`,
no graph is built):
  * every name is looked up in an explicit table, TF name -> Flax path:
    `tf_generator_name_map` for G (names as in the public ports, see
    shared notes bigbigan.md) and `tf_encoder_name_map` below for E;
  * a variable's `/ema_0.9999` copy (the EMA of the weights, which the hub's
    signatures use) replaces it where present (--use_ema);
  * spectral norm is baked in: each kernel becomes W / sigma, sigma from one
    power iteration from its stored `u0` (`networks.spectral_normalize_kernel`,
    the computation the SN module does in eval mode), so the frozen teacher is
    `Generator(spectral_norm=False)`. DeepMind's hub generators keep more
    power-iteration vectors beside `u0` (`u1`, ...): they are consumed,
    ignored and listed in the report (`unused_power_iteration_vectors`);
  * standing BatchNorm statistics: `accumulated_{mean,var}` are copied as
    they are (--standing_stats=raw, the default), as the public ports of
    DeepMind's hub GANs do (ajbrock/BigGAN-PyTorch's TF-Hub converter;
    anvoynov/BigGANsAreWatching, whose BigBiGAN weights
    lukemelas/pytorch-pretrained-gans loads), and they produce good images
    although the `accumulation_counter`s are not 1. --standing_stats=divide
    divides by the counter (compare_gan's sums); --verify_with_hub settles
    it numerically against `generate`;
  * attention `gamma` may be stored as a scalar or with shape [1] (DeepMind's
    hub generators); both load into the scalar Flax param;
  * the conversion fails, listing every problem at once, on a variable that
    no table entry consumes, a table entry with no variable, or any shape
    that does not fit the Flax modules. The discriminator's scopes
    (IGNORED_PREFIXES) are skipped on purpose: TGT never uses D.

The encoder's TF variable names are not public. `tf_encoder_name_map` is our
documented guess (ASSUMPTION, to verify with `tf.train.list_variables` on the
real module; if it differs, the converter lists every unmapped name and
`tf_encoder_name_map` is the one place to edit). Its layout is not public
either: whether each stage's stride sits in its first unit (ours) or its
last (TF-slim ResNet-v2), and how strided convs pad. Every variable shape is
the same either way, so a wrong guess loads without error and computes
another function; --verify_with_hub runs the hub's `encode` and the Flax
encoder under each (stride placement, padding) and names the one that
matches (config fields `teacher_generator.encoder_stride_placement` and
`encoder_strided_padding`). docs/paper_scale.md makes this a required step
before any paper run.
"""

import dataclasses
import functools
import itertools
import json
import os
import re
from typing import Any, Callable, Mapping, Optional, Sequence

from absl import app
from absl import flags
from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from tgt_jax import pretrained
from tgt_jax.generators import bigbigan
from tgt_jax.models import bigbigan as networks
from tgt_jax.models import resnet

# Scope of the generator's variables in the TF-Hub module.
GENERATOR_PREFIX = 'GenEncWrapper/Generator/'
# ASSUMPTION (encoder names are not public): E sits beside G in the wrapper.
ENCODER_PREFIX = 'GenEncWrapper/Encoder/'
# ASSUMPTION: where the hub module keeps the discriminator, which TGT never
# uses. Anything else outside G and E is an error unless named by
# --ignore_prefixes.
IGNORED_PREFIXES = ('GenEncWrapper/Discriminator/', 'Discriminator/')
EMA_SUFFIX = '/ema_0.9999'
STANDING_STATS_MODES = ('raw', 'divide')
_ACCUMULATED = ('accumulated_mean', 'accumulated_var')
_COUNTER = 'accumulation_counter'
# Power-iteration vectors other than `u0` (which the table maps): `u1`, ...
_EXTRA_POWER_ITERATION_VECTOR = re.compile(r'/u[1-9][0-9]*$')
# (stride placement, strided padding) of the encoder backbone, the layouts
# --verify_with_hub compares.
ENCODER_LAYOUTS = tuple(itertools.product(resnet.STRIDE_PLACEMENTS,
                                          resnet.STRIDED_PADDINGS))


class ConversionError(ValueError):
  """The checkpoint does not map onto the Flax modules; lists every problem."""


@dataclasses.dataclass
class ConversionReport:
  """What a conversion consumed and decided, for the log and the JSON."""
  used_ema: list[str] = dataclasses.field(default_factory=list)
  ignored: list[str] = dataclasses.field(default_factory=list)
  # `u1`, ... beside the `u0` that baking uses: consumed, not used.
  unused_power_iteration_vectors: list[str] = dataclasses.field(
      default_factory=list)
  counters: dict[str, float] = dataclasses.field(default_factory=dict)
  parameter_counts: dict[str, dict[str, int]] = dataclasses.field(
      default_factory=dict)


# ---------------------------------------------------------------------------
# Reading.
# ---------------------------------------------------------------------------


def checkpoint_prefix(module_dir: str) -> str:
  """The TF checkpoint inside an unpacked TF1-Hub module directory."""
  prefix = os.path.join(module_dir, 'variables', 'variables')
  if not os.path.exists(prefix + '.index'):
    raise FileNotFoundError(
        f'{prefix}.index not found. --module_dir must be the unpacked TF-Hub '
        'module, e.g. after `mkdir -p MODULE && curl -L '
        '"https://tfhub.dev/deepmind/bigbigan-resnet50/1?tf-hub-format='
        'compressed" | tar -xz -C MODULE` (see docs/paper_scale.md).')
  return prefix


def read_tf_checkpoint(prefix: str) -> dict[str, np.ndarray]:
  """All variables of a TF checkpoint, by name (TensorFlow needed here only)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  reader = tf.train.load_checkpoint(prefix)
  return {name: np.asarray(reader.get_tensor(name))
          for name, _ in tf.train.list_variables(prefix)}


def resolve_ema(variables: Mapping[str, np.ndarray], use_ema: bool,
                report: ConversionReport) -> dict[str, np.ndarray]:
  """Folds `X/ema_0.9999` into `X`: the EMA value wins when `use_ema`.

  Either way both names are consumed, so neither is reported as unmapped.
  An EMA copy without its base variable stands in for it.
  """
  resolved = {name: value for name, value in variables.items()
              if not name.endswith(EMA_SUFFIX)}
  for name, value in variables.items():
    if not name.endswith(EMA_SUFFIX):
      continue
    base = name[:-len(EMA_SUFFIX)]
    if use_ema or base not in resolved:
      resolved[base] = value
      report.used_ema.append(base)
  return resolved


# ---------------------------------------------------------------------------
# Name tables.
# ---------------------------------------------------------------------------


def _path_str(path: Sequence[Any]) -> list[str]:
  return [getattr(k, 'key', str(k)) for k in path]


def tf_generator_name_map(num_gblocks: int = 5,
                          attention: bool = True) -> dict[str, tuple[str, ...]]:
  """Maps TF-Hub generator variable names to Flax (collection, *path).

  TF names are relative to `GENERATOR_PREFIX` and exclude a possible
  `/ema_0.9999` suffix (the EMA copy, which converters should prefer). TF
  numbers blocks `GBlock, GBlock_1, ..., GBlock_4` and their two BNs
  `BatchNorm, BatchNorm_1`; Flax numbers both from 0. The rest is
  one-to-one: `w` -> 'kernel', `b` -> 'bias', `u0` [1, out] -> 'spectral'
  'u' [out] (for `bake_spectral_norm`, or bake directly with
  `spectral_normalize_kernel`), `accumulated_{mean,var}` -> 'batch_stats'
  '{mean,var}' (divide by `accumulation_counter` if it is not 1; the counter
  itself has no Flax counterpart). Kernels need no transpose (TF dense
  [in, out] and conv HWIO, as Flax).

  Args:
    num_gblocks: len(channel_multipliers) - 1 (5 for BigGAN-128).
    attention: whether the generator has a self-attention block.

  Returns:
    {tf_name: ('params' | 'batch_stats' | 'spectral', module, ..., leaf)}.
  """
  name_map = {'linear/w': ('params', 'linear', 'kernel')}

  def add_spectral_layer(tf_scope: str, flax_path: tuple[str, ...],
                         use_bias: bool) -> None:
    name_map[f'{tf_scope}/w'] = ('params', *flax_path, 'kernel')
    if use_bias:
      name_map[f'{tf_scope}/b'] = ('params', *flax_path, 'bias')
    name_map[f'{tf_scope}/u0'] = ('spectral', *flax_path, 'u')

  def add_standing_stats(tf_scope: str, flax_path: tuple[str, ...]) -> None:
    name_map[f'{tf_scope}/accumulated_mean'] = ('batch_stats', *flax_path,
                                                'mean')
    name_map[f'{tf_scope}/accumulated_var'] = ('batch_stats', *flax_path,
                                               'var')

  add_spectral_layer('GenZ/G_linear', ('GenZ_G_linear',), use_bias=True)
  for index in range(num_gblocks):
    tf_block = 'GBlock' if index == 0 else f'GBlock_{index}'
    flax_block = f'GBlock_{index}'
    for conv in ('conv0', 'conv1', 'conv_sc'):
      add_spectral_layer(f'{tf_block}/{conv}', (flax_block, conv),
                         use_bias=True)
    for tf_norm, flax_norm in (('BatchNorm', 'BatchNorm_0'),
                               ('BatchNorm_1', 'BatchNorm_1')):
      for dense in ('scale', 'offset'):
        add_spectral_layer(f'{tf_block}/{tf_norm}/{dense}',
                           (flax_block, flax_norm, dense), use_bias=False)
      add_standing_stats(f'{tf_block}/{tf_norm}', (flax_block, flax_norm))
  if attention:
    for conv in ('theta', 'phi', 'g', 'o_conv'):
      add_spectral_layer(f'attention/{conv}', ('attention', conv),
                         use_bias=False)
    name_map['attention/gamma'] = ('params', 'attention', 'gamma')
  name_map['BatchNorm/scale'] = ('params', 'BatchNorm', 'scale')
  name_map['BatchNorm/offset'] = ('params', 'BatchNorm', 'offset')
  add_standing_stats('BatchNorm', ('BatchNorm',))
  add_spectral_layer('conv_2d', ('conv_2d',), use_bias=True)
  return name_map


# The BigGAN-128 generator of `deepmind/bigbigan-resnet50/1`.
TF_GENERATOR_NAME_MAP = tf_generator_name_map()


def tf_encoder_name_map(
    abstract_encoder: Mapping[str, Any]) -> dict[str, tuple[str, ...]]:
  """Maps TF encoder variable names to Flax (collection, *path).

  ASSUMPTION -- the real names are not public. Our scheme mirrors the Flax
  module tree (`backbone/stage{s}_block{b}/conv{k}`, `preact_bn`,
  `shortcut_conv`, `bn{k}`, `final_bn`, `head_{i}`, `head_out`) with TF leaf
  names: conv/dense `w` and `b`; BatchNorm `scale`, `offset`, `moving_mean`,
  `moving_variance` (or `accumulated_{mean,var}` with a counter, which the
  converter treats as for G). Relative to ENCODER_PREFIX.

  Args:
    abstract_encoder: {'params', 'batch_stats'} shapes of the Flax Encoder.

  Returns:
    {tf_name: ('params' | 'batch_stats', module, ..., leaf)}.
  """
  name_map = {}
  for collection, tree in abstract_encoder.items():
    for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]:
      *scope, leaf = _path_str(path)
      siblings = tree
      for key in scope:
        siblings = siblings[key]
      is_norm = 'scale' in siblings or collection == 'batch_stats'
      tf_leaf = {
          ('params', 'kernel'): 'w',
          ('params', 'bias'): 'offset' if is_norm else 'b',
          ('params', 'scale'): 'scale',
          ('batch_stats', 'mean'): 'moving_mean',
          ('batch_stats', 'var'): 'moving_variance',
      }[(collection, leaf)]
      name_map['/'.join([*scope, tf_leaf])] = (collection, *scope, leaf)
  return name_map


# ---------------------------------------------------------------------------
# Conversion.
# ---------------------------------------------------------------------------


def _set_path(tree: dict, path: Sequence[str], value: Any) -> None:
  for key in path[:-1]:
    tree = tree.setdefault(key, {})
  tree[path[-1]] = value


def _get_path(tree: Mapping, path: Sequence[str]) -> Any:
  for key in path:
    if not isinstance(tree, Mapping) or key not in tree:
      return None
    tree = tree[key]
  return tree


def _convert_scope(resolved: Mapping[str, np.ndarray], prefix: str,
                   name_map: Mapping[str, tuple[str, ...]],
                   abstract: Mapping[str, Any], standing_stats: str,
                   consumed: set[str], problems: list[str],
                   report: ConversionReport) -> dict[str, dict]:
  """Fills the collections of `abstract` from the TF variables under prefix."""
  out: dict[str, dict] = {collection: {} for collection in abstract}
  for tf_name, (collection, *path) in sorted(name_map.items()):
    full_name = prefix + tf_name
    want = _get_path(abstract.get(collection, {}), path)
    if want is None:
      problems.append(f'{full_name}: the table maps it to {collection}/'
                      f'{"/".join(path)}, which the Flax module lacks')
      continue
    if full_name not in resolved:
      problems.append(f'{full_name}: missing from the checkpoint (needed for '
                      f'{collection}/{"/".join(path)}, shape '
                      f'{tuple(want.shape)})')
      continue
    value = np.asarray(resolved[full_name], np.float32)
    consumed.add(full_name)
    scope, leaf = tf_name.rsplit('/', 1)
    counter_name = f'{prefix}{scope}/{_COUNTER}'
    if leaf in _ACCUMULATED and counter_name in resolved:
      # Consumed with its statistics, even if those fail a check below.
      consumed.add(counter_name)
    # TF stores the power-iteration vector as [1, out]; Flax as [out].
    if collection == 'spectral' and value.size == np.prod(want.shape):
      value = value.reshape(want.shape)
    # DeepMind's hub generators store scalars such as the attention gamma
    # with shape [1].
    if tuple(want.shape) == () and value.shape == (1,):
      value = value.reshape(())
    if value.shape != tuple(want.shape):
      problems.append(f'{full_name}: shape {value.shape} does not fit '
                      f'{collection}/{"/".join(path)} {tuple(want.shape)}')
      continue
    if leaf in _ACCUMULATED:
      if counter_name in resolved:
        counter = float(np.asarray(resolved[counter_name]).reshape(-1)[0])
        report.counters[counter_name] = counter
        if standing_stats == 'divide':
          if not counter > 0:
            problems.append(f'{counter_name} is {counter}; cannot divide the '
                            'standing statistics by it (try '
                            '--standing_stats=raw)')
            continue
          value = value / counter
      elif standing_stats == 'divide':
        problems.append(f'{counter_name}: missing, but --standing_stats='
                        'divide needs it (use raw if the statistics are '
                        'stored as averages)')
        continue
    _set_path(out[collection], path, value)

  # Every Flax leaf must have been filled: otherwise the table is incomplete.
  for collection, tree in abstract.items():
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
      keys = _path_str(path)
      if _get_path(out[collection], keys) is None:
        target = f'{collection}/{"/".join(keys)}'
        if not any(target in problem for problem in problems):
          problems.append(f'{target} (shape {tuple(leaf.shape)}): no TF '
                          'variable maps to it')
  return out


def _abstract_sn_generator(gen_config: ml_collections.ConfigDict):
  """Shapes of the spectral-norm generator: params, batch_stats, spectral."""
  generator = bigbigan.generator(gen_config, spectral_norm=True)
  z = jax.ShapeDtypeStruct((1, gen_config.latent_dim), jnp.float32)
  return jax.eval_shape(
      lambda x: generator.init(jax.random.PRNGKey(0), x, train=False), z)


def generator_name_map(
    gen_config: ml_collections.ConfigDict) -> dict[str, tuple[str, ...]]:
  """`tf_generator_name_map` for the config's block count."""
  return tf_generator_name_map(
      num_gblocks=len(gen_config.channel_multipliers) - 1,
      attention=bool(gen_config.attention_resolution))


def expected_generator_tf_shapes(
    gen_config: ml_collections.ConfigDict) -> dict[str, tuple[int, ...]]:
  """The converter's view of G's TF variables: full name -> shape.

  Derived from the name table and the Flax module, with the conventions of
  DeepMind's hub generators (`u0` is [1, out], the attention `gamma` [1],
  one scalar `accumulation_counter` per BatchNorm); EMA copies and the
  unused `u1`, ... are not listed, and a scalar `gamma` loads too. Tests
  compare it with the names and shapes documented for the hub module.
  """
  abstract = _abstract_sn_generator(gen_config)
  shapes = {}
  for tf_name, (collection, *path) in generator_name_map(gen_config).items():
    shape = tuple(_get_path(abstract[collection], path).shape)
    if collection == 'spectral' or shape == ():
      shape = (1, *shape)
    shapes[GENERATOR_PREFIX + tf_name] = shape
    scope, leaf = tf_name.rsplit('/', 1)
    if leaf == 'accumulated_mean':
      shapes[f'{GENERATOR_PREFIX}{scope}/{_COUNTER}'] = ()
  return shapes


def convert_variables(
    variables: Mapping[str, np.ndarray],
    gen_config: ml_collections.ConfigDict,
    *,
    use_ema: bool = True,
    standing_stats: str = 'raw',
    parts: Sequence[str] = pretrained.PARTS,
    ignore_prefixes: Sequence[str] = IGNORED_PREFIXES,
) -> tuple[dict[str, Any], ConversionReport]:
  """TF variables by name -> frozen Flax variables of G and E.

  Args:
    variables: every variable of the checkpoint, {tf_name: array}.
    gen_config: the `teacher_generator` section to fit.
    use_ema: prefer `X/ema_0.9999` over `X`.
    standing_stats: copy the accumulated BN statistics 'raw' (what the
      public ports of DeepMind's hub GANs do), or 'divide' them by their
      `accumulation_counter` (compare_gan's sums).
    parts: 'generator' and/or 'encoder'; the other's scope is skipped.
    ignore_prefixes: scopes skipped on purpose (the discriminator).

  Returns:
    ({part: {'params', 'batch_stats'}} as float32 numpy, report).

  Raises:
    ConversionError: listing every unmapped, missing or misshapen variable.
  """
  if standing_stats not in STANDING_STATS_MODES:
    raise ValueError(f'standing_stats must be one of {STANDING_STATS_MODES}, '
                     f'got {standing_stats!r}.')
  unknown_parts = set(parts) - set(pretrained.PARTS)
  if unknown_parts or not parts:
    raise ValueError(f'parts must be a non-empty subset of {pretrained.PARTS},'
                     f' got {tuple(parts)}.')
  report = ConversionReport()
  resolved = resolve_ema(variables, use_ema, report)
  consumed: set[str] = set()
  problems: list[str] = []
  converted = {}

  if 'generator' in parts:
    abstract = _abstract_sn_generator(gen_config)
    raw = _convert_scope(resolved, GENERATOR_PREFIX,
                         generator_name_map(gen_config), abstract,
                         standing_stats, consumed, problems, report)
    if not problems:
      # One compiled program for all kernels: op-by-op dispatch would compile
      # each distinct kernel shape separately.
      baked = jax.jit(networks.bake_spectral_norm)(raw['params'],
                                                   raw['spectral'])
      converted['generator'] = {
          'params': jax.tree.map(lambda x: np.asarray(x, np.float32), baked),
          'batch_stats': raw['batch_stats']}
  if 'encoder' in parts:
    abstract = pretrained.abstract_teacher_variables(
        gen_config, ('encoder',))['encoder']
    converted['encoder'] = _convert_scope(
        resolved, ENCODER_PREFIX, tf_encoder_name_map(abstract), abstract,
        standing_stats, consumed, problems, report)

  converted_prefixes = tuple(
      {'generator': GENERATOR_PREFIX, 'encoder': ENCODER_PREFIX}[p]
      for p in parts)
  for name in sorted(set(resolved) - consumed):
    if (name.startswith(converted_prefixes) and
        _EXTRA_POWER_ITERATION_VECTOR.search(name)):
      consumed.add(name)
      report.unused_power_iteration_vectors.append(name)
  skipped_prefixes = tuple(ignore_prefixes) + tuple(
      {'generator': GENERATOR_PREFIX, 'encoder': ENCODER_PREFIX}[p]
      for p in pretrained.PARTS if p not in parts)
  for name in sorted(set(resolved) - consumed):
    if name.startswith(skipped_prefixes):
      report.ignored.append(name)
    else:
      problems.append(f'{name}: shape {np.shape(resolved[name])} is not '
                      'mapped to any Flax variable')
  if problems:
    raise ConversionError(
        f'{len(problems)} problem(s) converting the checkpoint:\n  ' +
        '\n  '.join(problems))
  report.parameter_counts = {
      part: {collection: pretrained.count_parameters(tree)
             for collection, tree in part_variables.items()}
      for part, part_variables in converted.items()}
  return converted, report


def convert_module(module_dir: str, output: str,
                   gen_config: ml_collections.ConfigDict, *,
                   use_ema: bool = True, standing_stats: str = 'raw',
                   parts: Sequence[str] = pretrained.PARTS,
                   ignore_prefixes: Sequence[str] = IGNORED_PREFIXES
                   ) -> ConversionReport:
  """Reads MODULE/variables/variables, converts, writes OUTPUT."""
  prefix = checkpoint_prefix(module_dir)
  variables = read_tf_checkpoint(prefix)
  logging.info('Read %d variables from %s.', len(variables), prefix)
  converted, report = convert_variables(
      variables, gen_config, use_ema=use_ema, standing_stats=standing_stats,
      parts=parts, ignore_prefixes=ignore_prefixes)
  pretrained.save_teacher_generator(
      output, converted, gen_config,
      {'source': os.path.abspath(module_dir), 'use_ema': use_ema,
       'standing_stats': standing_stats,
       'accumulation_counters': sorted(set(report.counters.values())),
       'ema_variables_used': len(report.used_ema),
       'ignored_variables': len(report.ignored),
       'unused_power_iteration_vectors': len(
           report.unused_power_iteration_vectors)})
  return report


# ---------------------------------------------------------------------------
# Numeric check against the hub module (needs tensorflow-hub and the module).
# ---------------------------------------------------------------------------


def _call_signature(signature, value):
  """Calls a one-input TF signature whatever its input is named."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  _, kwargs = signature.structured_input_signature
  (name,) = kwargs
  return signature(**{name: tf.constant(value)})


# An encoder layout matches the hub when max |z_mean difference| is at most
# this fraction of max(1, max |hub z_mean|): float32 ResNet-50s that agree
# differ by ~1e-4..1e-3, a wrong layout by order 1.
LAYOUT_MATCH_TOLERANCE = 1e-2


@functools.partial(jax.jit, static_argnums=0)
def _encoder_z_mean(encoder: networks.Encoder, variables: Mapping[str, Any],
                    images: jax.Array) -> jax.Array:
  # Static module: equal encoders (same layout) reuse one compilation.
  return encoder.apply(variables, images, train=False)[0]


def _layout_name(placement: str, padding: str) -> str:
  return f'stride_placement={placement},strided_padding={padding}'


def _layout_flags(placement: str, padding: str) -> str:
  return (f'--config.teacher_generator.encoder_stride_placement={placement} '
          f'--config.teacher_generator.encoder_strided_padding={padding}')


def compare_encoder_layouts(
    gen_config: ml_collections.ConfigDict,
    encoder_variables: Mapping[str, Any],
    hub_encode: Callable[[np.ndarray], np.ndarray],
    images: np.ndarray,
    tolerance: float = LAYOUT_MATCH_TOLERANCE) -> dict[str, Any]:
  """Which encoder layout computes the hub's `encode`.

  The converted variables fit every (stride placement, strided padding)
  layout, so each is run on the same images and compared with the hub.

  Args:
    gen_config: the `teacher_generator` section (its layout fields are the
      configured choice).
    encoder_variables: {'params', 'batch_stats'} of the converted encoder.
    hub_encode: images [N, S, S, C] in [-1, 1] -> the hub's z_mean [N, D].
    images: the encoder's inputs.
    tolerance: see LAYOUT_MATCH_TOLERANCE.

  Returns:
    A JSON-ready dict: 'encode_z_mean_max_abs_diff' {layout name: max |hub -
    Flax|}, 'matching_layout' ({'encoder_stride_placement',
    'encoder_strided_padding'} of the closest layout if it is within the
    tolerance, else None), 'configured_layout', 'configured_layout_matches',
    'tolerance' (absolute, scaled to the hub's z_mean).
  """
  hub_z_mean = np.asarray(hub_encode(images), np.float32)
  differences = {}
  for placement, padding in ENCODER_LAYOUTS:
    layout_config = ml_collections.ConfigDict(gen_config.to_dict())
    layout_config.encoder_stride_placement = placement
    layout_config.encoder_strided_padding = padding
    z_mean = _encoder_z_mean(bigbigan.encoder(layout_config),
                             encoder_variables, images)
    differences[placement, padding] = float(np.max(np.abs(
        hub_z_mean - np.asarray(z_mean))))
  closest = min(differences, key=differences.get)
  absolute_tolerance = tolerance * max(1.0, float(np.max(np.abs(hub_z_mean))))
  matching = closest if differences[closest] <= absolute_tolerance else None
  configured = tuple(bigbigan.encoder_layout(gen_config).values())
  as_fields = lambda layout: (None if layout is None else {
      'encoder_stride_placement': layout[0],
      'encoder_strided_padding': layout[1]})
  return {
      'encode_z_mean_max_abs_diff': {_layout_name(*layout): difference
                                     for layout, difference
                                     in differences.items()},
      'matching_layout': as_fields(matching),
      'configured_layout': as_fields(configured),
      'configured_layout_matches': matching == configured,
      'tolerance': absolute_tolerance,
  }


def encoder_layout_warning(layout_check: Mapping[str, Any]) -> Optional[str]:
  """A loud message when the configured encoder layout is not the hub's."""
  if layout_check['configured_layout_matches']:
    return None
  configured = tuple(layout_check['configured_layout'].values())
  table = '\n'.join(f'    {name}: {difference:.3g}' for name, difference in
                    layout_check['encode_z_mean_max_abs_diff'].items())
  banner = '!' * 78
  if layout_check['matching_layout'] is None:
    return (
        f'{banner}\nWARNING: NO encoder layout reproduces the hub\'s encode '
        f'(max |z_mean difference| per layout, tolerance '
        f'{layout_check["tolerance"]:.3g}):\n{table}\nThe encoder differs '
        'elsewhere (variable names, head widths, the final BN-CReLU, the '
        'stem\'s max-pool padding, ...): do not use it for a paper run; '
        'see docs/paper_scale.md, "Assumptions to verify".\n' + banner)
  matching = tuple(layout_check['matching_layout'].values())
  return (
      f'{banner}\nWARNING: the config\'s encoder layout '
      f'({_layout_name(*configured)}) does NOT compute the hub\'s encode; '
      f'{_layout_name(*matching)} does (max |z_mean difference| per layout, '
      f'tolerance {layout_check["tolerance"]:.3g}):\n{table}\nSet\n    '
      f'{_layout_flags(*matching)}\n(in the config, or on the command line '
      'of every run) and convert again: architecture.json records the '
      'layout, and the loader refuses a config that differs.\n' + banner)


def verify_converted(output: str, gen_config: ml_collections.ConfigDict, *,
                     hub_generate: Optional[Callable[[np.ndarray],
                                                     np.ndarray]] = None,
                     hub_encode: Optional[Callable[[np.ndarray],
                                                   np.ndarray]] = None,
                     num_samples: int = 4, seed: int = 0) -> dict[str, Any]:
  """Compares the converted checkpoint in OUTPUT with the hub's signatures.

  Args:
    output: a directory written by `convert_module`.
    gen_config: the `teacher_generator` section it was converted for.
    hub_generate: z [N, latent_dim] -> images [N, R, R, C] in [-1, 1] (the
      hub's `generate`), or None to skip G.
    hub_encode: images in [-1, 1] at the encoder size -> z_mean (the hub's
      `encode`), or None to skip E.
    num_samples: images to compare.
    seed: of the latents (and of the images when G is skipped).

  Returns:
    A JSON-ready dict: 'generate_max_abs_diff' when G was compared, and
    `compare_encoder_layouts`'s keys when E was. The encoder's inputs are
    the hub's own generated images resized to the encoder size (or uniform
    noise in [-1, 1] without G), so no data are needed.
  """
  info = pretrained.read_architecture(output)
  parts = tuple(part for part, signature in (('generator', hub_generate),
                                             ('encoder', hub_encode))
                if signature is not None and part in info['parts'])
  modules, variables = pretrained.load_pretrained_teacher_generator(
      output, gen_config, parts)
  rng = np.random.default_rng(seed)
  result: dict[str, Any] = {}
  z = rng.standard_normal((num_samples, gen_config.latent_dim)).astype(
      np.float32)
  size = gen_config.encoder_image_size
  encoder_input = rng.uniform(
      -1.0, 1.0, (num_samples, size, size, gen_config.channels)).astype(
          np.float32)
  if 'generator' in parts:
    hub_images = np.asarray(hub_generate(z), np.float32)
    flax_images = np.asarray(jax.jit(
        lambda v, z: modules['generator'].apply(v, z, train=False))(
            variables['generator'], z))
    result['generate_max_abs_diff'] = float(np.max(np.abs(hub_images -
                                                          flax_images)))
    encoder_input = hub_images_256(hub_images, gen_config)
  if 'encoder' in parts:
    result.update(compare_encoder_layouts(gen_config, variables['encoder'],
                                          hub_encode, encoder_input))
  return result


def verify_with_hub(module_dir: str, output: str,
                    gen_config: ml_collections.ConfigDict,
                    num_samples: int = 4, seed: int = 0) -> dict[str, Any]:
  """`verify_converted` against the hub module's `generate` and `encode`.

  Expect differences around 1e-4..1e-3 (float32, different conv
  algorithms). For `generate`, an error of order 0.1..1 means a wrong
  mapping or wrong standing statistics (try the other --standing_stats);
  for `encode`, the per-layout differences name the encoder layout that
  matches (`encoder_layout_warning` says what to set when it is not the
  config's).
  """
  import tensorflow_hub as hub  # pylint: disable=g-import-not-at-top
  module = hub.load(module_dir, tags=[])
  hub_generate = lambda z: np.asarray(
      _call_signature(module.signatures['generate'], z)['default'])
  hub_encode = lambda x: np.asarray(
      _call_signature(module.signatures['encode'], x)['z_mean'])
  return verify_converted(output, gen_config, hub_generate=hub_generate,
                          hub_encode=hub_encode, num_samples=num_samples,
                          seed=seed)


def hub_images_256(images: np.ndarray,
                   gen_config: ml_collections.ConfigDict) -> np.ndarray:
  """Generated [-1, 1] images at the encoder's input size (bilinear)."""
  size = gen_config.encoder_image_size
  resized = jax.image.resize(jnp.asarray(images),
                             (images.shape[0], size, size, images.shape[-1]),
                             'bilinear')
  return np.asarray(resized, np.float32)


# ---------------------------------------------------------------------------
# Command line.
# ---------------------------------------------------------------------------


def _flags():
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  flags.DEFINE_string('module_dir', None, 'Unpacked TF-Hub module directory.')
  flags.DEFINE_string('output', None, 'Output directory for the checkpoint.')
  config_flags.DEFINE_config_file(
      'config', 'configs/imagenet_lt.py',
      'A paper config; its teacher_generator section fixes the architecture.')
  flags.DEFINE_bool('use_ema', True, 'Prefer the /ema_0.9999 copies.')
  flags.DEFINE_enum('standing_stats', 'raw', STANDING_STATS_MODES,
                    'Copy the accumulated BN statistics as they are (raw, as '
                    'the public ports of DeepMind\'s hub GANs do), or divide '
                    'them by their accumulation_counter.')
  flags.DEFINE_list('parts', list(pretrained.PARTS),
                    'Which of generator,encoder to convert.')
  flags.DEFINE_list('ignore_prefixes', list(IGNORED_PREFIXES),
                    'Variable scopes to skip on purpose.')
  flags.DEFINE_bool('verify_with_hub', False,
                    'After converting, compare with the hub signatures and '
                    'report which encoder layout matches (needs '
                    'tensorflow-hub). Required once before any paper run.')
  flags.mark_flags_as_required(['module_dir', 'output'])


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  # Orbax logs every step of a save at INFO; the summary below is printed.
  logging.set_verbosity(logging.WARNING)
  flag_values = flags.FLAGS
  gen_config = flag_values.config.teacher_generator
  report = convert_module(
      flag_values.module_dir, flag_values.output, gen_config,
      use_ema=flag_values.use_ema, standing_stats=flag_values.standing_stats,
      parts=tuple(flag_values.parts),
      ignore_prefixes=tuple(flag_values.ignore_prefixes))
  for part, counts in report.parameter_counts.items():
    print(f'{part}: {counts["params"]:,} parameters, '
          f'{counts["batch_stats"]:,} BatchNorm statistics')
  counters = sorted(set(report.counters.values()))
  print(f'EMA copies used: {len(report.used_ema)}; skipped on purpose: '
        f'{len(report.ignored)} (e.g. {report.ignored[:3]}); accumulation '
        f'counters: {counters} (standing statistics: '
        f'{flag_values.standing_stats})')
  unused = report.unused_power_iteration_vectors
  print(f'Power-iteration vectors beside u0, consumed and not used: '
        f'{len(unused)}' + ''.join(f'\n  {name}' for name in unused))
  print(f'Wrote {flag_values.output}')
  if flag_values.verify_with_hub:
    result = verify_with_hub(flag_values.module_dir, flag_values.output,
                             gen_config)
    with open(os.path.join(flag_values.output, 'verify_with_hub.json'),
              'w') as f:
      json.dump(result, f, indent=2, sort_keys=True)
      f.write('\n')
    print(json.dumps(result, indent=2, sort_keys=True))
    if 'encode_z_mean_max_abs_diff' in result:
      warning = encoder_layout_warning(result)
      if warning:
        logging.warning('%s', warning)
        print(warning)
      else:
        print('The config\'s encoder layout matches the hub\'s encode.')


if __name__ == '__main__':
  _flags()
  app.run(main)
