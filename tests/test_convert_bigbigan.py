"""Tests of the TF-Hub BigBiGAN converter on a synthetic TF checkpoint.

The synthetic checkpoint carries the generator's real variable names
(shared notes bigbigan.md, written out independently below) at a small
width, with EMA copies, `u0` vectors and standing statistics with a counter.
Its expected output comes from a TensorFlow re-implementation of BigBiGAN's
generator written here from the same description, reading TF names
directly: a wrong or permuted mapping in the converter changes the output.
"""

import os
import re

import jax

jax.config.update('jax_disable_most_optimizations', True)

import ml_collections  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top
import pytest  # pylint: disable=g-import-not-at-top

from tgt_jax import convert_bigbigan  # pylint: disable=g-import-not-at-top
from tgt_jax import pretrained  # pylint: disable=g-import-not-at-top

tf = pytest.importorskip('tensorflow')

G = 'GenEncWrapper/Generator/'
E = convert_bigbigan.ENCODER_PREFIX
EMA = '/ema_0.9999'
COUNTER_VALUE = 4.0


def _gen_config(**overrides) -> ml_collections.ConfigDict:
  """BigBiGAN's architecture fields; the defaults are the paper's."""
  fields = dict(image_size=128, channels=3, latent_dim=120, base_channels=96,
                channel_multipliers=(16, 16, 8, 4, 2, 1), embedding_dim=128,
                attention_resolution=64, encoder_image_size=256,
                encoder_depth=50, encoder_width_multiplier=1.0,
                encoder_small_image_stem=False,
                encoder_head_hidden=(4096, 4096))
  fields.update(overrides)
  return ml_collections.ConfigDict(fields)


# Same block structure and TF names as the paper model (5 GBlocks, 6 latent
# chunks, attention at 64x64, 128x128 output), narrow and with small latents.
SMALL = dict(base_channels=4, latent_dim=12, embedding_dim=8,
             encoder_image_size=32, encoder_width_multiplier=1 / 16,
             encoder_small_image_stem=True, encoder_head_hidden=(16,))


def documented_generator_shapes(ch=96, multipliers=(16, 16, 8, 4, 2, 1),
                                latent=120, embedding=128,
                                attention_resolution=64):
  """TF name -> shape of every generator variable, from bigbigan.md.

  Written independently of the converter's tables: BigGAN-128 with
  hierarchical z, a single learned class row, conditional BN on
  concat(z_chunk, embedding), SN layers with `u0` of shape [1, out].
  """
  chunk = latent // len(multipliers)
  cond = chunk + embedding
  shapes = {}

  def sn(scope, shape, bias):
    shapes[G + scope + '/w'] = shape
    shapes[G + scope + '/u0'] = (1, shape[-1])
    if bias:
      shapes[G + scope + '/b'] = (shape[-1],)

  def standing(scope, channels):
    shapes[G + scope + '/accumulated_mean'] = (channels,)
    shapes[G + scope + '/accumulated_var'] = (channels,)
    shapes[G + scope + '/accumulation_counter'] = ()

  shapes[G + 'linear/w'] = (1, embedding)
  sn('GenZ/G_linear', (chunk, 4 * 4 * ch * multipliers[0]), bias=True)
  resolution = 4
  for i in range(len(multipliers) - 1):
    block = 'GBlock' if i == 0 else f'GBlock_{i}'
    c_in, c_out = ch * multipliers[i], ch * multipliers[i + 1]
    sn(f'{block}/conv0', (3, 3, c_in, c_out), bias=True)
    sn(f'{block}/conv1', (3, 3, c_out, c_out), bias=True)
    sn(f'{block}/conv_sc', (1, 1, c_in, c_out), bias=True)
    for norm, channels in (('BatchNorm', c_in), ('BatchNorm_1', c_out)):
      sn(f'{block}/{norm}/scale', (cond, channels), bias=False)
      sn(f'{block}/{norm}/offset', (cond, channels), bias=False)
      standing(f'{block}/{norm}', channels)
    resolution *= 2
    if resolution == attention_resolution:
      sn('attention/theta', (1, 1, c_out, c_out // 8), bias=False)
      sn('attention/phi', (1, 1, c_out, c_out // 8), bias=False)
      sn('attention/g', (1, 1, c_out, c_out // 2), bias=False)
      sn('attention/o_conv', (1, 1, c_out // 2, c_out), bias=False)
      shapes[G + 'attention/gamma'] = ()
  shapes[G + 'BatchNorm/scale'] = (ch,)
  shapes[G + 'BatchNorm/offset'] = (ch,)
  standing('BatchNorm', ch)
  sn('conv_2d', (3, 3, ch, 3), bias=True)
  return shapes


def synthetic_generator_checkpoint(shapes, seed=0):
  """Random values for `shapes` in TF's storage conventions.

  Weights (`w`, `b`, the class row, attention gamma, the final BN affine)
  get an EMA copy holding the value the module really uses; the base
  variable holds a different value. Standing statistics are stored as sums
  over COUNTER_VALUE batches.
  """
  rng = np.random.default_rng(seed)
  variables = {}
  for name, shape in shapes.items():
    leaf = name.rsplit('/', 1)[1]
    if leaf == 'accumulation_counter':
      variables[name] = np.float32(COUNTER_VALUE)
    elif leaf == 'accumulated_mean':
      variables[name] = COUNTER_VALUE * 0.3 * rng.standard_normal(shape)
    elif leaf == 'accumulated_var':
      variables[name] = COUNTER_VALUE * rng.uniform(0.5, 2.0, shape)
    elif leaf == 'u0':
      variables[name] = rng.standard_normal(shape)
    else:
      scale = 0.5 if leaf in ('gamma', 'b', 'offset') else 1.0
      value = scale * rng.standard_normal(shape)
      variables[name + EMA] = value
      variables[name] = 3.0 * value + 1.0  # The raw weights: not to be used.
  return {k: np.asarray(v, np.float32) for k, v in variables.items()}


def tf_reference_generator(variables, z, multipliers, attention_resolution):
  """BigBiGAN's G in TensorFlow, straight from TF names (see bigbigan.md)."""

  def get(name):
    return tf.constant(variables.get(G + name + EMA, variables.get(G + name)))

  def sn_kernel(scope):
    w = get(scope + '/w')
    matrix = tf.reshape(w, [-1, w.shape[-1]])
    u = tf.reshape(get(scope + '/u0'), [1, -1])
    v = tf.math.l2_normalize(tf.matmul(u, matrix, transpose_b=True),
                             epsilon=1e-8)
    u = tf.math.l2_normalize(tf.matmul(v, matrix), epsilon=1e-8)
    sigma = tf.matmul(tf.matmul(v, matrix), u, transpose_b=True)[0, 0]
    return w / sigma

  def conv(x, scope, bias=True):
    y = tf.nn.conv2d(x, sn_kernel(scope), 1, 'SAME')
    return y + get(scope + '/b') if bias else y

  def standing_norm(x, scope):
    mean = get(scope + '/accumulated_mean') / get(
        scope + '/accumulation_counter')
    var = get(scope + '/accumulated_var') / get(
        scope + '/accumulation_counter')
    return (x - mean) * tf.math.rsqrt(var + 1e-4)

  def cond_norm(x, cond, scope):
    gamma = tf.matmul(cond, sn_kernel(scope + '/scale'))
    beta = tf.matmul(cond, sn_kernel(scope + '/offset'))
    return (standing_norm(x, scope) * (1 + gamma[:, None, None, :]) +
            beta[:, None, None, :])

  def upsample(x):
    return tf.repeat(tf.repeat(x, 2, axis=1), 2, axis=2)

  z = tf.constant(z)
  chunks = tf.split(z, len(multipliers), axis=1)
  n = z.shape[0]
  embedding = tf.tile(get('linear/w'), [n, 1])
  x = tf.matmul(chunks[0], sn_kernel('GenZ/G_linear')) + get('GenZ/G_linear/b')
  x = tf.reshape(x, [n, 4, 4, -1])
  for i in range(len(multipliers) - 1):
    block = 'GBlock' if i == 0 else f'GBlock_{i}'
    cond = tf.concat([chunks[i + 1], embedding], axis=1)
    y = tf.nn.relu(cond_norm(x, cond, f'{block}/BatchNorm'))
    y = conv(upsample(y), f'{block}/conv0')
    y = tf.nn.relu(cond_norm(y, cond, f'{block}/BatchNorm_1'))
    y = conv(y, f'{block}/conv1')
    x = y + conv(upsample(x), f'{block}/conv_sc')
    if x.shape[1] == attention_resolution:
      _, h, w, c = x.shape
      pool = lambda t: tf.nn.max_pool2d(t, 2, 2, 'VALID')
      theta = tf.reshape(conv(x, 'attention/theta', False), [n, h * w, -1])
      phi = tf.reshape(pool(conv(x, 'attention/phi', False)), [n, -1, c // 8])
      g = tf.reshape(pool(conv(x, 'attention/g', False)), [n, -1, c // 2])
      attention = tf.nn.softmax(tf.matmul(theta, phi, transpose_b=True))
      o = tf.reshape(tf.matmul(attention, g), [n, h, w, c // 2])
      x = x + get('attention/gamma') * conv(o, 'attention/o_conv', False)
  x = standing_norm(x, 'BatchNorm') * get('BatchNorm/scale') + get(
      'BatchNorm/offset')
  x = conv(tf.nn.relu(x), 'conv_2d')
  return np.asarray(tf.tanh(x))


def synthetic_encoder_checkpoint(gen_config, seed=1):
  """Random encoder variables under our (assumed) TF naming scheme."""
  abstract = pretrained.abstract_teacher_variables(gen_config,
                                                   ('encoder',))['encoder']
  rng = np.random.default_rng(seed)
  variables, expected = {}, {'params': {}, 'batch_stats': {}}
  for tf_name, (collection, *path) in convert_bigbigan.tf_encoder_name_map(
      abstract).items():
    leaf = abstract[collection]
    for key in path:
      leaf = leaf[key]
    if path[-1] == 'var':
      value = rng.uniform(0.5, 2.0, leaf.shape)
    else:
      value = 0.1 * rng.standard_normal(leaf.shape)
    value = value.astype(np.float32)
    variables[E + tf_name] = value
    tree = expected[collection]
    for key in path[:-1]:
      tree = tree.setdefault(key, {})
    tree[path[-1]] = value
  return variables, expected


@pytest.fixture(scope='module')
def small_checkpoint():
  config = _gen_config(**SMALL)
  shapes = documented_generator_shapes(
      ch=config.base_channels, latent=config.latent_dim,
      embedding=config.embedding_dim)
  generator_variables = synthetic_generator_checkpoint(shapes)
  encoder_variables, encoder_expected = synthetic_encoder_checkpoint(config)
  variables = {**generator_variables, **encoder_variables,
               # The discriminator is skipped on purpose.
               'GenEncWrapper/Discriminator/linear/w': np.zeros((3, 1),
                                                                np.float32)}
  return config, variables, encoder_expected


def _generate(config, variables, z):
  generator = pretrained.build.generator(config, spectral_norm=False)
  # Jitted: op-by-op dispatch would compile every layer on its own.
  return np.asarray(jax.jit(lambda v, x: generator.apply(v, x, train=False))(
      variables, z))


def _write_tf_checkpoint(prefix, variables):
  names = sorted(variables)
  tf.raw_ops.SaveV2(prefix=prefix, tensor_names=names,
                    shape_and_slices=[''] * len(names),
                    tensors=[tf.constant(variables[n]) for n in names])


def test_documented_names_and_shapes_match_converter_at_paper_size():
  documented = documented_generator_shapes()
  expected = convert_bigbigan.expected_generator_tf_shapes(_gen_config())
  assert set(documented) - set(expected) == set(), 'documented but unmapped'
  assert set(expected) - set(documented) == set(), 'mapped but undocumented'
  wrong = {n: (documented[n], expected[n]) for n in documented
           if documented[n] != expected[n]}
  assert not wrong
  # 5 GBlocks x (3 SN convs x 3 + 2 CBN x (2 SN dense x 2 + 3 stats)) + rest.
  assert len(documented) == 136


def test_conversion_matches_tf_reference(small_checkpoint):
  config, variables, _ = small_checkpoint
  converted, report = convert_bigbigan.convert_variables(variables, config)
  assert report.ignored == ['GenEncWrapper/Discriminator/linear/w']
  assert set(report.counters.values()) == {COUNTER_VALUE}
  z = np.random.default_rng(3).standard_normal(
      (2, config.latent_dim)).astype(np.float32)
  expected = tf_reference_generator(variables, z, config.channel_multipliers,
                                    config.attention_resolution)
  images = _generate(config, converted['generator'], z)
  assert images.shape == (2, 128, 128, 3)
  # Outputs must be informative (not saturated) for the comparison to bite.
  assert 0.05 < np.std(images) and np.mean(np.abs(images) > 0.999) < 0.5
  # 1e-3: BigGAN code and our port place the 1e-4 epsilon of the
  # power-iteration normalisation differently (relative effect ~1e-4).
  np.testing.assert_allclose(images, expected, atol=1e-3)


def test_permuted_mapping_changes_output(small_checkpoint):
  config, variables, _ = small_checkpoint
  swapped = dict(variables)
  for suffix in ('/w' + EMA, '/u0', '/b' + EMA):  # conv0 <-> conv1: same shape
    a, b = G + 'GBlock/conv0' + suffix, G + 'GBlock/conv1' + suffix
    swapped[a], swapped[b] = variables[b], variables[a]
  converted, _ = convert_bigbigan.convert_variables(swapped, config)
  z = np.random.default_rng(3).standard_normal(
      (2, config.latent_dim)).astype(np.float32)
  expected = tf_reference_generator(variables, z, config.channel_multipliers,
                                    config.attention_resolution)
  images = _generate(config, converted['generator'], z)
  assert np.max(np.abs(images - expected)) > 1e-2


def test_ema_copies_and_counter_division_are_used(small_checkpoint):
  config, variables, _ = small_checkpoint
  with_ema, _ = convert_bigbigan.convert_variables(variables, config)
  without_ema, report = convert_bigbigan.convert_variables(
      variables, config, use_ema=False)
  assert not report.used_ema
  raw, _ = convert_bigbigan.convert_variables(variables, config,
                                              standing_stats='raw')
  linear = with_ema['generator']['params']['linear']['kernel']
  np.testing.assert_array_equal(linear, variables[G + 'linear/w' + EMA])
  np.testing.assert_array_equal(
      without_ema['generator']['params']['linear']['kernel'],
      variables[G + 'linear/w'])
  stats = with_ema['generator']['batch_stats']['GBlock_2']['BatchNorm_1']
  np.testing.assert_allclose(
      stats['var'],
      variables[G + 'GBlock_2/BatchNorm_1/accumulated_var'] / COUNTER_VALUE)
  np.testing.assert_array_equal(
      raw['generator']['batch_stats']['BatchNorm']['mean'],
      variables[G + 'BatchNorm/accumulated_mean'])


def test_baked_kernel_is_one_power_iteration_from_u0(small_checkpoint):
  config, variables, _ = small_checkpoint
  converted, _ = convert_bigbigan.convert_variables(variables, config)
  w = variables[G + 'GBlock_1/conv0/w' + EMA].astype(np.float64)
  u = variables[G + 'GBlock_1/conv0/u0'].reshape(-1).astype(np.float64)
  matrix = w.reshape(-1, w.shape[-1])
  v = matrix @ u
  v /= np.linalg.norm(v)
  u_new = v @ matrix
  u_new /= np.linalg.norm(u_new)
  sigma = v @ matrix @ u_new
  np.testing.assert_allclose(
      converted['generator']['params']['GBlock_1']['conv0']['kernel'],
      w / sigma, rtol=1e-4, atol=1e-6)


def test_encoder_round_trip(small_checkpoint):
  config, variables, expected = small_checkpoint
  converted, _ = convert_bigbigan.convert_variables(variables, config)
  jax.tree.map(np.testing.assert_array_equal, converted['encoder'], expected)


@pytest.mark.parametrize('change, message', [
    ('extra', 'GBlock_3/extra/w: shape (2, 2) is not mapped'),
    ('shape', 'GBlock_4/conv1/w: shape (3, 3, 4, 5) does not fit'),
    ('missing', 'attention/gamma: missing from the checkpoint'),
    ('encoder_extra', 'Encoder/backbone/mystery/w: shape (2, 2) is not '
                      'mapped'),
    ('outside', 'global_step: shape () is not mapped'),
])
def test_conversion_fails_loudly(small_checkpoint, change, message):
  config, variables, _ = small_checkpoint
  variables = dict(variables)
  if change == 'extra':
    variables[G + 'GBlock_3/extra/w'] = np.zeros((2, 2), np.float32)
  elif change == 'shape':
    variables[G + 'GBlock_4/conv1/w' + EMA] = np.zeros((3, 3, 4, 5),
                                                       np.float32)
  elif change == 'missing':
    del variables[G + 'attention/gamma']
    del variables[G + 'attention/gamma' + EMA]
  elif change == 'encoder_extra':
    variables[E + 'backbone/mystery/w'] = np.zeros((2, 2), np.float32)
  else:
    variables['global_step'] = np.int64(7)
  with pytest.raises(convert_bigbigan.ConversionError,
                     match=re.escape(message)):
    convert_bigbigan.convert_variables(variables, config)


def test_convert_module_writes_a_loadable_checkpoint(small_checkpoint,
                                                     tmp_path):
  config, variables, _ = small_checkpoint
  module_dir = tmp_path / 'module'
  os.makedirs(module_dir / 'variables')
  _write_tf_checkpoint(str(module_dir / 'variables' / 'variables'), variables)
  output = str(tmp_path / 'converted')
  report = convert_bigbigan.convert_module(str(module_dir), output, config)
  assert report.parameter_counts['generator']['params'] > 0
  info = pretrained.read_architecture(output)
  assert info['teacher_generator']['base_channels'] == 4
  assert info['conversion']['accumulation_counters'] == [COUNTER_VALUE]

  modules, loaded = pretrained.load_pretrained_teacher_generator(output,
                                                                 config)
  z = np.random.default_rng(3).standard_normal(
      (2, config.latent_dim)).astype(np.float32)
  expected = tf_reference_generator(variables, z, config.channel_multipliers,
                                    config.attention_resolution)
  images = _generate(config, loaded['generator'], z)
  np.testing.assert_allclose(np.asarray(images), expected, atol=1e-3)
  z_mean, z_scale = modules['encoder'].apply(
      loaded['encoder'], np.zeros((2, 32, 32, 3), np.float32), train=False)
  assert z_mean.shape == z_scale.shape == (2, config.latent_dim)

  wrong = _gen_config(**{**SMALL, 'base_channels': 8})
  with pytest.raises(ValueError, match='teacher_generator.base_channels: '
                                       'config 8, checkpoint 4'):
    pretrained.load_pretrained_teacher_generator(output, wrong)
  with pytest.raises(FileNotFoundError, match='convert_bigbigan'):
    pretrained.load_pretrained_teacher_generator(str(tmp_path), config)
  with pytest.raises(FileNotFoundError, match='module_dir'):
    convert_bigbigan.checkpoint_prefix(str(tmp_path / 'nowhere'))
