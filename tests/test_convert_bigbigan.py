"""Tests of the TF-Hub BigBiGAN converter on a synthetic TF checkpoint.

The synthetic checkpoint carries the generator's real variable names
(shared notes bigbigan.md, written out independently below) at a small
width, in the layout of DeepMind's hub generators: EMA copies, `u0` and `u1`
power-iteration vectors, the attention `gamma` with shape [1], and standing
statistics usable as they are beside accumulation counters that are not 1.
Its expected output comes from a TensorFlow re-implementation of BigBiGAN's
generator written here from the same description, reading TF names
directly: a wrong or permuted mapping in the converter changes the output.
"""

import json
import os
import re

import jax

jax.config.update('jax_disable_most_optimizations', True)

import ml_collections  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top
import pytest  # pylint: disable=g-import-not-at-top

from tgt_jax import pretrained  # pylint: disable=g-import-not-at-top
from tgt_jax.generators import bigbigan  # pylint: disable=g-import-not-at-top
from tgt_jax.generators import convert_bigbigan  # pylint: disable=g-import-not-at-top

tf = pytest.importorskip('tensorflow')

G = 'GenEncWrapper/Generator/'
E = convert_bigbigan.ENCODER_PREFIX
EMA = '/ema_0.9999'
# Not 1, as in DeepMind's hub generators, whose accumulated statistics the
# public ports nevertheless use as they are.
COUNTER_VALUE = 7.0
# DeepMind's hub generators keep two power-iteration vectors per SN layer.
HUB_POWER_ITERATION_VECTORS = ('u0', 'u1')
# Spectrally normalised layers of BigBiGAN's G: GenZ, 5 GBlocks x (3 convs
# + 2 CBNs x 2 dense), 4 attention convs, the output conv.
NUM_SPECTRAL_LAYERS = 1 + 5 * (3 + 4) + 4 + 1


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
                                attention_resolution=64,
                                power_iteration_vectors=('u0',)):
  """TF name -> shape of every generator variable, from bigbigan.md.

  Written independently of the converter's tables: BigGAN-128 with
  hierarchical z, a single learned class row, conditional BN on
  concat(z_chunk, embedding), SN layers with `u0` (and in DeepMind's hub
  modules `u1`) of shape [1, out], the attention gamma of shape [1].
  """
  chunk = latent // len(multipliers)
  cond = chunk + embedding
  shapes = {}

  def sn(scope, shape, bias):
    shapes[G + scope + '/w'] = shape
    for u in power_iteration_vectors:
      shapes[G + scope + '/' + u] = (1, shape[-1])
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
      shapes[G + 'attention/gamma'] = (1,)
  shapes[G + 'BatchNorm/scale'] = (ch,)
  shapes[G + 'BatchNorm/offset'] = (ch,)
  standing('BatchNorm', ch)
  sn('conv_2d', (3, 3, ch, 3), bias=True)
  return shapes


def synthetic_generator_checkpoint(shapes, seed=0):
  """Random values for `shapes` in TF's storage conventions.

  Weights (`w`, `b`, the class row, attention gamma, the final BN affine)
  get an EMA copy holding the value the module really uses; the base
  variable holds a different value. Standing statistics are usable as they
  are, although their counters say COUNTER_VALUE (DeepMind's layout, as the
  public ports read it).
  """
  rng = np.random.default_rng(seed)
  variables = {}
  for name, shape in shapes.items():
    leaf = name.rsplit('/', 1)[1]
    if leaf == 'accumulation_counter':
      variables[name] = np.float32(COUNTER_VALUE)
    elif leaf == 'accumulated_mean':
      variables[name] = 0.3 * rng.standard_normal(shape)
    elif leaf == 'accumulated_var':
      variables[name] = rng.uniform(0.5, 2.0, shape)
    elif re.fullmatch(r'u[0-9]+', leaf):
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
    # The accumulated statistics as they are, as the public ports use them.
    mean = get(scope + '/accumulated_mean')
    var = get(scope + '/accumulated_var')
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
      embedding=config.embedding_dim,
      power_iteration_vectors=HUB_POWER_ITERATION_VECTORS)
  generator_variables = synthetic_generator_checkpoint(shapes)
  encoder_variables, encoder_expected = synthetic_encoder_checkpoint(config)
  variables = {**generator_variables, **encoder_variables,
               # The discriminator is skipped on purpose.
               'GenEncWrapper/Discriminator/linear/w': np.zeros((3, 1),
                                                                np.float32)}
  return config, variables, encoder_expected


def _generate(config, variables, z):
  generator = bigbigan.generator(config, spectral_norm=False)
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
  assert variables[G + 'attention/gamma' + EMA].shape == (1,)
  converted, report = convert_bigbigan.convert_variables(variables, config)
  assert report.ignored == ['GenEncWrapper/Discriminator/linear/w']
  assert set(report.counters.values()) == {COUNTER_VALUE}
  # Every u1 is consumed, ignored and listed; u0 is what baking uses.
  assert len(report.unused_power_iteration_vectors) == NUM_SPECTRAL_LAYERS
  assert all(name.startswith(G) and name.endswith('/u1')
             for name in report.unused_power_iteration_vectors)
  assert converted['generator']['params']['attention']['gamma'].shape == ()
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


def test_ema_copies_and_standing_statistics(small_checkpoint):
  config, variables, _ = small_checkpoint
  with_ema, _ = convert_bigbigan.convert_variables(variables, config)
  without_ema, report = convert_bigbigan.convert_variables(
      variables, config, use_ema=False)
  assert not report.used_ema
  divided, _ = convert_bigbigan.convert_variables(variables, config,
                                                  standing_stats='divide')
  linear = with_ema['generator']['params']['linear']['kernel']
  np.testing.assert_array_equal(linear, variables[G + 'linear/w' + EMA])
  np.testing.assert_array_equal(
      without_ema['generator']['params']['linear']['kernel'],
      variables[G + 'linear/w'])
  # Raw by default: the accumulated statistics as they are.
  np.testing.assert_array_equal(
      with_ema['generator']['batch_stats']['BatchNorm']['mean'],
      variables[G + 'BatchNorm/accumulated_mean'])
  # --standing_stats=divide stays an option.
  stats = divided['generator']['batch_stats']['GBlock_2']['BatchNorm_1']
  np.testing.assert_allclose(
      stats['var'],
      variables[G + 'GBlock_2/BatchNorm_1/accumulated_var'] / COUNTER_VALUE)


@pytest.mark.parametrize('gamma_shape', [(), (1,)])
@pytest.mark.parametrize('power_iteration_vectors',
                         [('u0',), ('u0', 'u1'), ('u0', 'u1', 'u2')])
def test_gamma_shapes_and_extra_power_iteration_vectors(
    small_checkpoint, gamma_shape, power_iteration_vectors):
  config, hub_layout, _ = small_checkpoint
  variables = {name: value for name, value in hub_layout.items()
               if not re.search(r'/u[1-9]$', name)}
  for name in [n for n in variables if n.endswith('/u0')]:
    for u in power_iteration_vectors[1:]:
      variables[name[:-2] + u] = -variables[name]
  for suffix in ('', EMA):
    name = G + 'attention/gamma' + suffix
    variables[name] = variables[name].reshape(gamma_shape)
  converted, report = convert_bigbigan.convert_variables(variables, config)
  expected, _ = convert_bigbigan.convert_variables(hub_layout, config)
  jax.tree.map(np.testing.assert_array_equal, converted, expected)
  assert len(report.unused_power_iteration_vectors) == NUM_SPECTRAL_LAYERS * (
      len(power_iteration_vectors) - 1)


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


# The command-line path end to end; `convert_variables` is tested above.
@pytest.mark.integration
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
  assert info['teacher_generator']['encoder_stride_placement'] == 'first'
  assert info['teacher_generator']['encoder_strided_padding'] == 'same'
  assert info['conversion']['standing_stats'] == 'raw'
  assert info['conversion']['accumulation_counters'] == [COUNTER_VALUE]
  assert info['conversion']['unused_power_iteration_vectors'] == (
      NUM_SPECTRAL_LAYERS)

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
  last = _gen_config(**SMALL, encoder_stride_placement='last')
  with pytest.raises(ValueError,
                     match="teacher_generator.encoder_stride_placement: "
                           "config 'last', checkpoint 'first'"):
    pretrained.load_pretrained_teacher_generator(output, last)
  # A checkpoint converted before the layout fields existed has the default
  # layout.
  with open(os.path.join(output, 'architecture.json')) as f:
    old_info = json.load(f)
  for field in ('encoder_stride_placement', 'encoder_strided_padding'):
    del old_info['teacher_generator'][field]
  with open(os.path.join(output, 'architecture.json'), 'w') as f:
    json.dump(old_info, f)
  pretrained.load_pretrained_teacher_generator(output, config)
  with pytest.raises(FileNotFoundError, match='convert_bigbigan'):
    pretrained.load_pretrained_teacher_generator(str(tmp_path), config)
  with pytest.raises(FileNotFoundError, match='module_dir'):
    convert_bigbigan.checkpoint_prefix(str(tmp_path / 'nowhere'))


# ---------------------------------------------------------------------------
# --verify_with_hub's choice of encoder layout, with a fake hub.
# ---------------------------------------------------------------------------

# An encoder small enough to compile in about a second per layout.
VERIFY = dict(SMALL, encoder_depth=18, encoder_image_size=16)


@pytest.fixture(scope='module')
def converted_encoder(tmp_path_factory):
  """An encoder-only checkpoint with weights that make every layout differ."""
  config = _gen_config(**VERIFY)
  encoder = bigbigan.encoder(config)
  images = np.zeros((1, 16, 16, 3), np.float32)
  variables = jax.jit(lambda x: encoder.init(jax.random.PRNGKey(0), x,
                                             train=False))(images)
  rng = np.random.default_rng(4)

  def randomize(path, leaf):
    # Kernels keep their variance-preserving init, so z_mean stays O(1);
    # BatchNorm statistics and affine get random values.
    if path[-1].key == 'kernel':
      return np.asarray(leaf)
    if path[-1].key == 'var':
      return rng.uniform(0.5, 2.0, leaf.shape).astype(np.float32)
    return (np.asarray(leaf) +
            0.2 * rng.standard_normal(leaf.shape)).astype(np.float32)

  variables = jax.tree_util.tree_map_with_path(randomize, variables)
  output = str(tmp_path_factory.mktemp('verify') / 'converted')
  pretrained.save_teacher_generator(output, {'encoder': dict(variables)},
                                    config, {'source': 'test'})
  return config, variables, output


def _fake_hub_encode(config, variables, placement, padding):
  """The hub's `encode` as the Flax encoder under one layout."""
  hub_config = _gen_config(**VERIFY, encoder_stride_placement=placement,
                           encoder_strided_padding=padding)
  encoder = bigbigan.encoder(hub_config)
  apply = jax.jit(lambda x: encoder.apply(variables, x, train=False)[0])
  return lambda images: np.asarray(apply(images))


@pytest.mark.parametrize('hub_layout', [('last', 'symmetric'),
                                        ('first', 'same')])
def test_verify_names_the_encoder_layout_of_the_hub(converted_encoder,
                                                    hub_layout):
  config, variables, output = converted_encoder
  result = convert_bigbigan.verify_converted(
      output, config,
      hub_encode=_fake_hub_encode(config, variables, *hub_layout))
  assert 'generate_max_abs_diff' not in result  # No generator converted.
  differences = result['encode_z_mean_max_abs_diff']
  assert set(differences) == {
      f'stride_placement={p},strided_padding={s}'
      for p in ('first', 'last') for s in ('same', 'symmetric')}
  name = f'stride_placement={hub_layout[0]},strided_padding={hub_layout[1]}'
  assert differences[name] < 1e-5
  # Every other layout is far off, or the check could not tell them apart.
  assert all(d > 5 * result['tolerance'] for n, d in differences.items()
             if n != name)
  assert result['matching_layout'] == {
      'encoder_stride_placement': hub_layout[0],
      'encoder_strided_padding': hub_layout[1]}
  assert result['configured_layout'] == {
      'encoder_stride_placement': 'first',
      'encoder_strided_padding': 'same'}
  warning = convert_bigbigan.encoder_layout_warning(result)
  if hub_layout == ('first', 'same'):
    assert result['configured_layout_matches'] and warning is None
  else:
    assert not result['configured_layout_matches']
    assert 'does NOT compute the hub' in warning
    assert ('--config.teacher_generator.encoder_stride_placement=last '
            '--config.teacher_generator.encoder_strided_padding=symmetric'
            ) in warning


def test_verify_warns_when_no_encoder_layout_matches(converted_encoder):
  config, variables, output = converted_encoder
  hub_encode = _fake_hub_encode(config, variables, 'last', 'same')
  result = convert_bigbigan.verify_converted(
      output, config, hub_encode=lambda images: hub_encode(images) + 1.0)
  assert result['matching_layout'] is None
  assert not result['configured_layout_matches']
  assert 'NO encoder layout' in convert_bigbigan.encoder_layout_warning(
      result)
