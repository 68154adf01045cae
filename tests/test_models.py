"""Tests of the networks: ResNet family and the BigBiGAN modules (with the
BigBiGAN family's discriminator and TF name tables)."""

import jax

# Tiny models: compile time dominates, and these tests check values, not
# speed.
jax.config.update('jax_disable_most_optimizations', True)

import flax.linen as nn  # pylint: disable=g-import-not-at-top
import jax.flatten_util  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top
import pytest  # pylint: disable=g-import-not-at-top

from tgt_jax.generators import bigbigan as bigbigan_family  # pylint: disable=g-import-not-at-top
from tgt_jax.generators import convert_bigbigan  # pylint: disable=g-import-not-at-top
from tgt_jax.models import bigbigan  # pylint: disable=g-import-not-at-top
from tgt_jax.models import resnet  # pylint: disable=g-import-not-at-top

# A generator small enough to run in well under a second on CPU.
TINY_GENERATOR = dict(base_channels=4, channel_multipliers=(4, 2, 1),
                      latent_dim=12, embedding_dim=8, attention_resolution=8,
                      output_channels=1)


def _shapes(tree):
  return jax.tree_util.tree_map(lambda leaf: tuple(leaf.shape), tree)


def _abstract_apply(model, *inputs, train=False):
  """Shapes of init's variables and apply's outputs, without any FLOPs."""
  variables = jax.eval_shape(
      lambda *x: model.init(jax.random.PRNGKey(0), *x, train=train), *inputs)
  outputs = jax.eval_shape(
      lambda v, *x: model.apply(v, *x, train=train), variables, *inputs)
  return variables, outputs


def _init_tiny_generator(**overrides):
  generator = bigbigan.Generator(**{**TINY_GENERATOR, **overrides})
  z = jax.random.normal(jax.random.PRNGKey(1), (2, generator.latent_dim))
  # Jitted, as every network call here: op-by-op dispatch would compile
  # every layer on its own.
  variables = jax.jit(lambda z: generator.init(jax.random.PRNGKey(0), z,
                                               train=False))(z)
  return generator, variables, z


def _eval_apply(module):
  """`module.apply(variables, x, train=False)`, jitted."""
  return jax.jit(lambda variables, x: module.apply(variables, x, train=False))


def _path_exists(tree, path):
  for key in path:
    if key not in tree:
      return False
    tree = tree[key]
  return True


# ---------------------------------------------------------------------------
# ResNet.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize('depth,small_image_stem,image_size', [
    (18, True, 8), (18, False, 32), (50, True, 8), (50, False, 32)])
def test_resnet_output_shapes(depth, small_image_stem, image_size):
  model = resnet.create_resnet(depth, num_classes=10, width_multiplier=0.0625,
                               small_image_stem=small_image_stem)
  images = jnp.zeros((2, image_size, image_size, 3))
  variables, (logits, embedding) = _abstract_apply(model, images)
  width = 4
  expected_dim = width * 8 * (4 if depth == 50 else 1)
  assert logits.shape == (2, 10) and logits.dtype == jnp.float32
  assert embedding.shape == (2, expected_dim)
  assert embedding.dtype == jnp.float32
  assert variables['params']['classifier']['kernel'].shape == (expected_dim,
                                                                10)
  assert 'batch_stats' in variables


def test_resnet_without_classifier_returns_none_logits():
  model = resnet.create_resnet(18, num_classes=None, width_multiplier=0.0625,
                               small_image_stem=True)
  variables, (logits, embedding) = _abstract_apply(
      model, jnp.zeros((2, 8, 8, 1)))
  assert logits is None
  assert embedding.shape == (2, 32)
  assert 'classifier' not in variables['params']


def test_create_resnet_rejects_unknown_depth():
  with pytest.raises(ValueError, match=r'20.*\[18, 34, 50, 101, 152\]'):
    resnet.create_resnet(20, num_classes=10)


def test_create_resnet_width_multiplier_rounds_and_floors():
  assert resnet.create_resnet(18, 10, width_multiplier=0.25).width == 16
  assert resnet.create_resnet(18, 10, width_multiplier=0.001).width == 1


@pytest.mark.parametrize('preactivation', [False, True])
def test_resnet_trains_and_evaluates(preactivation):
  model = resnet.create_resnet(18, num_classes=3, width_multiplier=0.0625,
                               small_image_stem=True,
                               preactivation=preactivation)
  images = jax.random.normal(jax.random.PRNGKey(0), (4, 8, 8, 1))
  variables = jax.jit(lambda x: model.init(jax.random.PRNGKey(1), x,
                                           train=False))(images)
  (logits, embedding), updates = jax.jit(lambda v, x: model.apply(
      v, x, train=True, mutable=['batch_stats']))(variables, images)
  assert logits.shape == (4, 3) and embedding.shape == (4, 32)
  assert np.all(np.isfinite(logits))
  # Training must move the running statistics; eval must use them.
  old_stats = jax.tree_util.tree_leaves(variables['batch_stats'])
  new_stats = jax.tree_util.tree_leaves(updates['batch_stats'])
  assert any(not np.allclose(a, b) for a, b in zip(old_stats, new_stats))
  eval_logits, _ = _eval_apply(model)({**variables, **updates}, images)
  assert np.all(np.isfinite(eval_logits))
  if preactivation:
    assert 'final_bn' in variables['params']
    assert 'stem_bn' not in variables['params']


def test_resnet_bfloat16_compute_keeps_float32_params_and_outputs():
  model = resnet.create_resnet(18, num_classes=3, width_multiplier=0.0625,
                               small_image_stem=True, dtype=jnp.bfloat16)
  variables, (logits, embedding) = _abstract_apply(
      model, jnp.zeros((2, 8, 8, 1)))
  assert all(leaf.dtype == jnp.float32
             for leaf in jax.tree_util.tree_leaves(variables))
  assert logits.dtype == jnp.float32 and embedding.dtype == jnp.float32


# Layout options (stride placement, strided conv, padding, biases, epsilon).

# Outputs of the code before the layout options existed (fixed seeds,
# perturbed params, eval mode), printed to full float32 precision: the
# defaults must keep computing exactly this (bit for bit on the machine
# that recorded them; the tolerance only absorbs other CPUs' rounding).
_PRE_OPTIONS_OUTPUTS = {
    'resnet18_v1_small_stem': [
        [-0.2897903621196747, -0.0535288006067276, -0.04394214600324631],
        [-0.2618210017681122, 0.009770535863935947, -0.04379633069038391]],
    'resnet50_v1': [
        [1.0275893211364746, -0.31496936082839966, -1.5099952220916748],
        [0.7099578976631165, -0.8059532046318054, -1.6894434690475464]],
    'resnet50_v2_embedding': [
        [0.0, 10.580422401428223, 2.576657295227051, 6.309374809265137, 0.0,
         0.0, 0.0, 13.721803665161133],
        [0.0, 8.509079933166504, 2.3842105865478516, 7.943744659423828, 0.0,
         0.0, 0.0, 13.366605758666992]],
}


def _perturbed(tree, seed):
  # One random draw for the whole tree: one small compilation, where a draw
  # per leaf would compile once per distinct leaf shape.
  flat, unravel = jax.flatten_util.ravel_pytree(tree)
  return unravel(flat + 0.1 * jax.random.normal(jax.random.PRNGKey(seed),
                                                flat.shape))


@pytest.mark.parametrize('case, kwargs, image_size', [
    ('resnet18_v1_small_stem',
     dict(depth=18, num_classes=3, small_image_stem=True), 16),
    pytest.param('resnet50_v1', dict(depth=50, num_classes=3), 32,
                 marks=pytest.mark.integration),
    pytest.param('resnet50_v2_embedding',
                 dict(depth=50, num_classes=None, preactivation=True), 32,
                 marks=pytest.mark.integration)])
def test_resnet_defaults_compute_what_they_did_before_the_options(
    case, kwargs, image_size):
  model = resnet.create_resnet(width_multiplier=0.0625, **kwargs)
  images = jax.random.normal(jax.random.PRNGKey(7),
                             (2, image_size, image_size, 3))
  # Jitted: op-by-op dispatch would compile every layer on its own.
  variables = jax.jit(lambda x: model.init(jax.random.PRNGKey(0), x,
                                           train=False))(images)
  # Perturbed: the zero-initialised last BN scale would otherwise hide every
  # residual branch.
  variables = {'params': _perturbed(variables['params'], 1),
               'batch_stats': variables['batch_stats']}
  logits, embedding = jax.jit(lambda v, x: model.apply(v, x, train=False))(
      variables, images)
  output = logits if logits is not None else embedding[:, ::16]
  np.testing.assert_allclose(output, _PRE_OPTIONS_OUTPUTS[case], rtol=1e-5,
                             atol=1e-6)


def test_resnet_default_variable_tree_is_unchanged():
  model = resnet.create_resnet(50, num_classes=3, width_multiplier=0.0625)
  variables, _ = _abstract_apply(model, jnp.zeros((1, 32, 32, 3)))
  params = variables['params']
  assert set(params) == {'stem_conv', 'stem_bn', 'classifier'} | {
      f'stage{s}_block{b}' for s, n in enumerate((3, 4, 6, 3), 1)
      for b in range(1, n + 1)}
  assert set(params['stem_conv']) == {'kernel'}  # No conv biases.
  for s in range(1, 5):
    assert set(params[f'stage{s}_block1']) == {
        'conv1', 'bn1', 'conv2', 'bn2', 'conv3', 'bn3', 'shortcut_conv',
        'shortcut_bn'}
    assert set(params[f'stage{s}_block2']) == {
        'conv1', 'bn1', 'conv2', 'bn2', 'conv3', 'bn3'}
  assert _shapes(params['stage2_block1']['conv2']) == {'kernel': (3, 3, 8, 8)}


def _output_sizes(module, x):
  """(abstract variables, {submodule: spatial size of its output})."""
  variables = jax.eval_shape(
      lambda x: module.init(jax.random.PRNGKey(0), x, train=False), x)
  _, state = jax.eval_shape(
      lambda v, x: module.apply(v, x, train=False,
                                capture_intermediates=True,
                                mutable=['intermediates']), variables, x)
  return variables, {name: value['__call__'][0].shape[1]
                     for name, value in state['intermediates'].items()
                     if name != '__call__'}


def _block_output_sizes(model, image_size):
  """Spatial size of every residual block's output, by block name."""
  _, sizes = _output_sizes(model, jnp.zeros((1, image_size, image_size, 3)))
  return {name: size for name, size in sizes.items()
          if name.startswith('stage')}


def test_stride_placement_last_strides_the_last_unit_of_each_stage():
  kwargs = dict(num_classes=3, width_multiplier=0.0625,
                small_image_stem=True)
  first = _block_output_sizes(resnet.create_resnet(18, **kwargs), 16)
  last = _block_output_sizes(
      resnet.create_resnet(18, stride_placement='last', **kwargs), 16)
  # 'first': stages 2..4 open with the stride; 'last': stages 1..3 close
  # with it. Both end at the same resolution.
  assert first == {'stage1_block1': 16, 'stage1_block2': 16,
                   'stage2_block1': 8, 'stage2_block2': 8,
                   'stage3_block1': 4, 'stage3_block2': 4,
                   'stage4_block1': 2, 'stage4_block2': 2}
  assert last == {'stage1_block1': 16, 'stage1_block2': 8,
                  'stage2_block1': 8, 'stage2_block2': 4,
                  'stage3_block1': 4, 'stage3_block2': 2,
                  'stage4_block1': 2, 'stage4_block2': 2}


@pytest.mark.parametrize('preactivation', [False, True])
def test_stride_placement_last_keeps_the_variables_but_subsamples_shortcuts(
    preactivation):
  """TF-slim / Keras V2 subsample a strided same-width unit's shortcut."""
  shapes = {}
  for placement in resnet.STRIDE_PLACEMENTS:
    model = resnet.create_resnet(50, num_classes=3, width_multiplier=0.0625,
                                 preactivation=preactivation,
                                 stride_placement=placement)
    variables, _ = _abstract_apply(model, jnp.zeros((1, 32, 32, 3)))
    shapes[placement] = _shapes(variables)
    params = variables['params']
    # Projections only where the width changes: the first unit of a stage.
    for stage, num_blocks in enumerate((3, 4, 6, 3), 1):
      for block in range(1, num_blocks + 1):
        assert ('shortcut_conv' in params[f'stage{stage}_block{block}']) == (
            block == 1), (placement, stage, block)
  # Every shape is the same either way: a wrong guess loads without error.
  assert shapes['first'] == shapes['last']


def test_subsampling_shortcut_is_strided_identity():
  block = resnet.ResidualBlock(filters=4, strides=2, bottleneck=False,
                               preactivation=True, subsample_shortcut=True)
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 4))
  variables = block.init(jax.random.PRNGKey(1), x, train=False)
  assert 'shortcut_conv' not in variables['params']
  # With the residual branch's last conv zeroed, only the shortcut is left.
  params = jax.tree_util.tree_map(lambda v: v, variables['params'])
  params['conv2']['kernel'] = jnp.zeros_like(params['conv2']['kernel'])
  out = block.apply({**variables, 'params': params}, x, train=False)
  np.testing.assert_array_equal(out, x[:, ::2, ::2])


def test_strided_conv_1x1_moves_the_stride_to_the_first_conv():
  def conv_sizes(strided_conv):
    block = resnet.ResidualBlock(filters=4, strides=2, bottleneck=True,
                                 preactivation=False,
                                 strided_conv=strided_conv)
    variables, sizes = _output_sizes(block, jnp.zeros((1, 8, 8, 8)))
    return _shapes(variables), {
        name: sizes[name]
        for name in ('conv1', 'conv2', 'conv3', 'shortcut_conv')}

  shapes_3x3, sizes_3x3 = conv_sizes('3x3')
  shapes_1x1, sizes_1x1 = conv_sizes('1x1')
  assert sizes_3x3 == {'conv1': 8, 'conv2': 4, 'conv3': 4, 'shortcut_conv': 4}
  assert sizes_1x1 == {'conv1': 4, 'conv2': 4, 'conv3': 4, 'shortcut_conv': 4}
  assert shapes_3x3 == shapes_1x1


def test_strided_conv_1x1_needs_bottleneck_blocks():
  with pytest.raises(ValueError, match="strided_conv='1x1'.*bottleneck"):
    resnet.create_resnet(18, 10, strided_conv='1x1')
  with pytest.raises(ValueError, match=r"stride_placement='middle'.*"
                                       r"\('first', 'last'\)"):
    resnet.create_resnet(50, 10, stride_placement='middle')


@pytest.mark.parametrize('strided_padding, pad_before, pad_after', [
    ('same', 0, 1), ('symmetric', 1, 1)])
def test_strided_padding_of_the_strided_3x3_conv(strided_padding, pad_before,
                                                  pad_after):
  block = resnet.ResidualBlock(filters=4, strides=2, bottleneck=False,
                               preactivation=True,
                               strided_padding=strided_padding)
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 4))
  variables = block.init(jax.random.PRNGKey(1), x, train=False)
  _, state = block.apply(variables, x, train=False,
                         capture_intermediates=True,
                         mutable=['intermediates'])
  conv1_out = state['intermediates']['conv1']['__call__'][0]
  # Fresh BatchNorm statistics (mean 0, var 1, scale 1, offset 0).
  preactivated = nn.relu(x / np.sqrt(1 + resnet.BATCH_NORM_EPSILON))
  pad = ((pad_before, pad_after), (pad_before, pad_after))
  expected = jax.lax.conv_general_dilated(
      preactivated, variables['params']['conv1']['kernel'], (2, 2), pad,
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  np.testing.assert_allclose(conv1_out, expected, rtol=1e-5, atol=1e-5)
  # Stride-1 convs are unaffected.
  assert conv1_out.shape == (2, 4, 4, 4)


def test_conv_bias_on_every_conv():
  model = resnet.create_resnet(50, num_classes=3, width_multiplier=0.0625,
                               conv_bias=True, strided_conv='1x1')
  variables, _ = _abstract_apply(model, jnp.zeros((1, 32, 32, 3)))
  flat = jax.tree_util.tree_flatten_with_path(variables['params'])[0]
  conv_paths = [tuple(key.key for key in path[:-1]) for path, _ in flat
                if 'conv' in path[-2].key and path[-1].key == 'kernel']
  assert len(conv_paths) == 53  # stem + 16 blocks x 3 + 4 projections.
  for conv_path in conv_paths:
    assert _path_exists(variables['params'], conv_path + ('bias',)), conv_path


def test_batch_norm_epsilon():
  model = resnet.create_resnet(18, num_classes=3, width_multiplier=0.0625,
                               small_image_stem=True, batch_norm_epsilon=1e-2)
  images = jax.random.normal(jax.random.PRNGKey(0), (1, 8, 8, 3))
  variables = jax.jit(lambda x: model.init(jax.random.PRNGKey(1), x,
                                           train=False))(images)
  # BN output = (x - 0) / sqrt(0 + eps) with zero running statistics.
  stats = jax.tree_util.tree_map(jnp.zeros_like, variables['batch_stats'])
  _, state = jax.jit(lambda v, x: model.apply(
      v, x, train=False, capture_intermediates=True,
      mutable=['intermediates']))({**variables, 'batch_stats': stats}, images)
  conv_out = state['intermediates']['stem_conv']['__call__'][0]
  bn_out = state['intermediates']['stem_bn']['__call__'][0]
  np.testing.assert_allclose(bn_out, conv_out / np.sqrt(1e-2), rtol=1e-5,
                             atol=1e-5)


@pytest.mark.parametrize('depth, stages', [(101, (3, 4, 23, 3)),
                                           (152, (3, 8, 36, 3))])
def test_deep_resnets(depth, stages):
  model = resnet.create_resnet(depth, num_classes=5, width_multiplier=0.0625)
  assert tuple(model.stage_sizes) == stages and model.bottleneck
  variables, (logits, embedding) = _abstract_apply(
      model, jnp.zeros((1, 32, 32, 3)))
  assert logits.shape == (1, 5) and embedding.shape == (1, 128)
  assert f'stage3_block{stages[2]}' in variables['params']


@pytest.mark.parametrize('options', [
    dict(stride_placement='last'),
    dict(strided_conv='1x1'),
    dict(strided_padding='symmetric'),
    dict(conv_bias=True, batch_norm_epsilon=1.001e-5),
    dict(stride_placement='last', strided_padding='symmetric',
         preactivation=True),
])
@pytest.mark.parametrize('image_size', [32, 33])
def test_resnet_option_output_shapes(options, image_size):
  model = resnet.create_resnet(50, num_classes=7, width_multiplier=0.0625,
                               **options)
  _, (logits, embedding) = _abstract_apply(
      model, jnp.zeros((2, image_size, image_size, 3)))
  assert logits.shape == (2, 7) and embedding.shape == (2, 128)


# ---------------------------------------------------------------------------
# Spectral normalisation.
# ---------------------------------------------------------------------------


def test_spectral_normalize_kernel_converges_to_unit_norm():
  rng_kernel, rng_u = jax.random.split(jax.random.PRNGKey(0))
  kernel = jax.random.normal(rng_kernel, (3, 3, 4, 8)) * 5.0
  u = jax.random.normal(rng_u, (8,))
  for _ in range(30):
    normalized, u = bigbigan.spectral_normalize_kernel(kernel, u)
  assert normalized.shape == kernel.shape
  matrix = np.asarray(normalized).reshape(-1, 8)
  np.testing.assert_allclose(np.linalg.svd(matrix, compute_uv=False)[0], 1.0,
                             rtol=1e-3)


def test_spectral_layers_keep_plain_param_names_and_u_elsewhere():
  x = jnp.ones((2, 4, 4, 3))
  conv = bigbigan.SpectralConv(5, kernel_size=3)
  variables = conv.init(jax.random.PRNGKey(0), x, train=False)
  reference = jax.eval_shape(
      lambda: nn.Conv(5, (3, 3)).init(jax.random.PRNGKey(0), x))
  assert _shapes(variables['params']) == _shapes(reference['params'])
  assert variables['spectral']['u'].shape == (5,)
  dense = bigbigan.SpectralDense(6, use_bias=False, spectral_norm=False)
  plain_variables = dense.init(jax.random.PRNGKey(0), jnp.ones((2, 3)),
                               train=True)
  assert set(plain_variables) == {'params'}
  assert set(plain_variables['params']) == {'kernel'}


def test_spectral_u_updates_only_in_train_mode_when_mutable():
  dense = bigbigan.SpectralDense(6)
  x = jnp.ones((2, 3))
  variables = dense.init(jax.random.PRNGKey(0), x, train=False)
  u = variables['spectral']['u']
  _, eval_updates = dense.apply(variables, x, train=False,
                                mutable=['spectral'])
  np.testing.assert_array_equal(eval_updates['spectral']['u'], u)
  _, train_updates = dense.apply(variables, x, train=True,
                                 mutable=['spectral'])
  assert not np.allclose(train_updates['spectral']['u'], u)
  # Read-only training calls (e.g. inside a loss) must still work.
  dense.apply(variables, x, train=True)


# ---------------------------------------------------------------------------
# Generator.
# ---------------------------------------------------------------------------


@pytest.mark.integration
def test_tiny_generator_output_shape_and_range():
  generator, variables, z = _init_tiny_generator()
  assert generator.resolution == 16
  images = generator.apply(variables, z * 10.0, train=False)
  assert images.shape == (2, 16, 16, 1) and images.dtype == jnp.float32
  assert np.all(np.abs(images) <= 1.0)
  images, updates = generator.apply(variables, z, train=True,
                                    mutable=['batch_stats', 'spectral'])
  assert images.shape == (2, 16, 16, 1)
  assert set(updates) == {'batch_stats', 'spectral'}


def test_generator_uses_every_latent_chunk():
  generator, variables, z = _init_tiny_generator()
  apply = _eval_apply(generator)
  baseline = apply(variables, z)
  for chunk in range(3):
    changed_z = z.at[:, 4 * chunk:4 * (chunk + 1)].add(1.0)
    changed = apply(variables, changed_z)
    assert not np.allclose(baseline, changed), f'chunk {chunk} is unused'


def test_generator_rejects_indivisible_latent():
  generator = bigbigan.Generator(**{**TINY_GENERATOR, 'latent_dim': 13})
  with pytest.raises(ValueError, match='divisible'):
    generator.init(jax.random.PRNGKey(0), jnp.zeros((1, 13)), train=False)


def test_generator_rejects_unreachable_attention_resolution():
  generator = bigbigan.Generator(**{**TINY_GENERATOR,
                                    'attention_resolution': 4})
  with pytest.raises(ValueError, match='attention_resolution'):
    generator.init(jax.random.PRNGKey(0), jnp.zeros((1, 12)), train=False)


def test_generator_variables_cover_the_tf_names():
  _, variables, _ = _init_tiny_generator()
  name_map = convert_bigbigan.tf_generator_name_map(num_gblocks=2, attention=True)
  for tf_name, path in name_map.items():
    assert _path_exists(variables, path), (tf_name, path)
  # And nothing in the Flax tree is left without a TF name.
  mapped = {path for path in name_map.values()}
  flat = jax.tree_util.tree_flatten_with_path(variables)[0]
  for key_path, _ in flat:
    path = tuple(key.key for key in key_path)
    assert path in mapped, path
  for block in ('GBlock_0', 'GBlock_1'):
    assert set(variables['params'][block]) == {
        'BatchNorm_0', 'BatchNorm_1', 'conv0', 'conv1', 'conv_sc'}
    for norm in ('BatchNorm_0', 'BatchNorm_1'):
      assert set(variables['params'][block][norm]) == {'scale', 'offset'}
  assert set(variables['params']['attention']) == {
      'theta', 'phi', 'g', 'o_conv', 'gamma'}
  assert set(variables['batch_stats']) == {'GBlock_0', 'GBlock_1',
                                           'BatchNorm'}


def test_tf_name_map_numbers_blocks_like_tf():
  name_map = convert_bigbigan.TF_GENERATOR_NAME_MAP
  assert name_map['GBlock/conv0/w'] == ('params', 'GBlock_0', 'conv0',
                                        'kernel')
  assert name_map['GBlock_4/BatchNorm_1/offset/w'] == (
      'params', 'GBlock_4', 'BatchNorm_1', 'offset', 'kernel')
  assert name_map['GBlock_1/BatchNorm/accumulated_var'] == (
      'batch_stats', 'GBlock_1', 'BatchNorm_0', 'var')
  assert name_map['GenZ/G_linear/u0'] == ('spectral', 'GenZ_G_linear', 'u')
  assert 'GBlock_5/conv0/w' not in name_map


def test_biggan128_shapes_match_the_tf_module():
  generator = bigbigan.Generator()
  assert generator.resolution == 128
  variables, images = _abstract_apply(
      generator, jax.ShapeDtypeStruct((2, 120), jnp.float32))
  assert images.shape == (2, 128, 128, 3)
  params = _shapes(variables['params'])
  assert params['linear']['kernel'] == (1, 128)
  assert params['GenZ_G_linear']['kernel'] == (20, 4 * 4 * 1536)
  assert params['GenZ_G_linear']['bias'] == (4 * 4 * 1536,)
  channels = [1536, 1536, 768, 384, 192, 96]
  for index in range(5):
    block = params[f'GBlock_{index}']
    c_in, c_out = channels[index], channels[index + 1]
    assert block['conv0']['kernel'] == (3, 3, c_in, c_out)
    assert block['conv1']['kernel'] == (3, 3, c_out, c_out)
    assert block['conv_sc']['kernel'] == (1, 1, c_in, c_out)
    assert block['BatchNorm_0']['scale']['kernel'] == (148, c_in)
    assert block['BatchNorm_1']['offset']['kernel'] == (148, c_out)
  attention = params['attention']
  assert attention['theta']['kernel'] == (1, 1, 192, 24)
  assert attention['phi']['kernel'] == (1, 1, 192, 24)
  assert attention['g']['kernel'] == (1, 1, 192, 96)
  assert attention['o_conv']['kernel'] == (1, 1, 96, 192)
  assert attention['gamma'] == ()
  assert params['BatchNorm']['scale'] == (96,)
  assert params['conv_2d']['kernel'] == (3, 3, 96, 3)
  assert _shapes(variables['spectral'])['GenZ_G_linear']['u'] == (24576,)
  for tf_name, path in convert_bigbigan.TF_GENERATOR_NAME_MAP.items():
    assert _path_exists(variables, path), tf_name


@pytest.mark.integration  # 19 s: the fast tier keeps its 3 minutes.
def test_baked_generator_matches_spectral_norm_generator_in_eval():
  generator, variables, z = _init_tiny_generator()
  # One training step moves u and the running statistics off their init.
  _, updates = generator.apply(variables, z, train=True,
                               mutable=['batch_stats', 'spectral'])
  variables = {**variables, **updates}
  # Orthogonal init has sigma = 1, which would make spectral norm a no-op;
  # perturbed weights (and a non-zero attention gamma) make the test bite.
  leaves, treedef = jax.tree_util.tree_flatten(variables['params'])
  rngs = jax.random.split(jax.random.PRNGKey(5), len(leaves))
  params = jax.tree_util.tree_unflatten(treedef, [
      1.5 * leaf + 0.2 * jax.random.normal(rng, leaf.shape)
      for leaf, rng in zip(leaves, rngs)])
  params['attention']['gamma'] = jnp.asarray(0.5)
  expected = generator.apply({**variables, 'params': params}, z, train=False)

  baked = bigbigan.bake_spectral_norm(params, variables['spectral'])
  assert _shapes(baked) == _shapes(params)
  plain = bigbigan.Generator(**TINY_GENERATOR, spectral_norm=False)
  actual = plain.apply({'params': baked,
                        'batch_stats': variables['batch_stats']},
                       z, train=False)
  np.testing.assert_allclose(actual, expected, atol=1e-5)
  # Guards against a vacuous pass: unbaked kernels give other images.
  unbaked = plain.apply({'params': params,
                         'batch_stats': variables['batch_stats']},
                        z, train=False)
  assert not np.allclose(unbaked, expected, atol=1e-3)
  # The frozen teacher has no spectral state at all.
  assert 'spectral' not in plain.init(jax.random.PRNGKey(0), z, train=False)


# ---------------------------------------------------------------------------
# Encoder, discriminator, losses.
# ---------------------------------------------------------------------------


def test_encoder_shapes_and_positive_scale():
  encoder = bigbigan.Encoder(depth=18, width_multiplier=0.0625,
                             small_image_stem=True, latent_dim=12,
                             head_hidden=(16,))
  images = jax.random.normal(jax.random.PRNGKey(0), (3, 16, 16, 1))
  variables = jax.jit(lambda x: encoder.init(jax.random.PRNGKey(1), x,
                                             train=False))(images)
  z_mean, z_scale = _eval_apply(encoder)(variables, images)
  assert z_mean.shape == (3, 12) and z_scale.shape == (3, 12)
  assert z_mean.dtype == jnp.float32 and z_scale.dtype == jnp.float32
  assert np.all(z_scale > 0)
  # The backbone is the shared ResNet, in its pre-activation form.
  assert 'final_bn' in variables['params']['backbone']
  z = bigbigan.sample_latent(z_mean, z_scale, jax.random.PRNGKey(2))
  assert z.shape == (3, 12)
  assert not np.allclose(z, z_mean)


def test_encoder_passes_the_backbone_layout_through():
  kwargs = dict(depth=18, width_multiplier=0.0625, small_image_stem=True,
                latent_dim=12, head_hidden=(16,))
  images = jax.random.normal(jax.random.PRNGKey(0), (2, 16, 16, 3))
  first = bigbigan.Encoder(**kwargs)
  variables = jax.jit(lambda x: first.init(jax.random.PRNGKey(1), x,
                                           train=False))(images)
  variables = {'params': _perturbed(variables['params'], 2),
               'batch_stats': variables['batch_stats']}
  outputs = {}
  for placement in resnet.STRIDE_PLACEMENTS:
    for padding in resnet.STRIDED_PADDINGS:
      encoder = bigbigan.Encoder(stride_placement=placement,
                                 strided_padding=padding, **kwargs)
      # The same variables fit every layout ...
      outputs[placement, padding] = np.asarray(jax.jit(
          lambda v, x, e=encoder: e.apply(v, x, train=False)[0])(
              variables, images))
  # ... and each layout computes another function.
  layouts = list(outputs)
  for i, a in enumerate(layouts):
    for b in layouts[i + 1:]:
      assert np.max(np.abs(outputs[a] - outputs[b])) > 1e-3, (a, b)


def test_encoder_paper_shapes():
  encoder = bigbigan.Encoder()
  _, (z_mean, z_scale) = _abstract_apply(
      encoder, jax.ShapeDtypeStruct((2, 256, 256, 3), jnp.float32))
  assert z_mean.shape == (2, 120) and z_scale.shape == (2, 120)


def test_sample_latent_is_mean_plus_scaled_noise():
  z_mean = jnp.array([[1.0, -2.0]])
  z_scale = jnp.array([[0.5, 2.0]])
  rng = jax.random.PRNGKey(3)
  noise = jax.random.normal(rng, (1, 2))
  np.testing.assert_allclose(bigbigan.sample_latent(z_mean, z_scale, rng),
                             z_mean + z_scale * noise, rtol=1e-6)


@pytest.mark.parametrize('attention_resolution', [
    0, pytest.param(8, marks=pytest.mark.integration)])
def test_discriminator_scores(attention_resolution):
  discriminator = bigbigan_family.Discriminator(
      base_channels=4, channel_multipliers=(1, 2, 4), latent_hidden=(8, 8),
      joint_hidden=(16,), attention_resolution=attention_resolution)
  images = jax.random.normal(jax.random.PRNGKey(0), (3, 16, 16, 1))
  z = jax.random.normal(jax.random.PRNGKey(1), (3, 12))
  variables = jax.jit(lambda x, z: discriminator.init(
      jax.random.PRNGKey(2), x, z, train=False))(images, z)
  scores, updates = jax.jit(lambda v, x, z: discriminator.apply(
      v, x, z, train=True, mutable=['spectral']))(variables, images, z)
  assert set(scores) == {'score_x', 'score_z', 'score_xz'}
  for score in scores.values():
    assert score.shape == (3,) and score.dtype == jnp.float32
  assert set(variables) == {'params', 'spectral'}
  assert ('attention' in variables['params']) == bool(attention_resolution)
  assert set(updates) == {'spectral'}


def test_hinge_losses_on_hand_computed_values():
  scores_real = {'score_x': jnp.array([2.0, 0.0]),
                 'score_z': jnp.array([0.5, 0.5]),
                 'score_xz': jnp.array([-1.0, 3.0])}
  scores_fake = {'score_x': jnp.array([-2.0, 0.0]),
                 'score_z': jnp.array([1.0, -0.5]),
                 'score_xz': jnp.array([0.0, 0.0])}
  d_loss, eg_loss = bigbigan_family.bigbigan_hinge_losses(scores_real, scores_fake)
  # D: real relu(1 - s): x (0 + 1) / 2, z (.5 + .5) / 2, xz (2 + 0) / 2
  #    fake relu(1 + s): x (0 + 1) / 2, z (2 + .5) / 2,  xz (1 + 1) / 2
  expected_d = 0.5 + 0.5 + 1.0 + 0.5 + 1.25 + 1.0
  # EG: mean real - mean fake: x 1 - (-1), z 0.5 - 0.25, xz 1 - 0
  expected_eg = 2.0 + 0.25 + 1.0
  np.testing.assert_allclose(d_loss, expected_d, rtol=1e-6)
  np.testing.assert_allclose(eg_loss, expected_eg, rtol=1e-6)
