"""The package's layers: no module imports one above its own, no cycles.

From the bottom: building blocks with no project imports; the config
schema, networks, teacher-generator families and data; the frozen
teachers, the method table, loss terms and evaluation; the one train step
and the one student setup; the stages and programs; the experiments. A
module may import modules of its own layer or below.
"""

import ast
import os

import conftest

LAYERS = [
    # 0: building blocks.
    ['errors', 'files', 'cli', 'provenance', 'image_ops', 'losses', 'exploration',
     'sharding', 'visualize',
     'models.resnet', 'models.bigbigan', 'models.vae', 'data.bundled',
     'data.long_tail', 'data.image_folder', 'data.export_dragon_split',
     'data.assets.make_digits_npz', 'data.assets.make_mnist_npz'],
    # 1: config, networks, generator families, data, checkpoints.
    ['config_lib', 'models.classifier', 'models.build',
     'generators.interface', 'generators.bigbigan', 'generators.vae',
     'generators.families', 'checkpointing',
     'data.dataset', 'data.streaming', 'data.tfds_pipelines', 'data.loading',
     'run_guard', 'compute', 'training_loop'],
    # 2: what a step and a stage are made of.
    ['teachers', 'methods', 'embedding_distill', 'evaluation', 'monitoring',
     'pretrained'],
    # 3: the one train step, and the one student setup that uses it.
    ['train_steps', 'student_setup'],
    # 4: stages and programs.
    ['train', 'benchmark', 'generators.convert_bigbigan',
     'convert_keras_resnet'],
    # 5: programs over a workdir.
    ['evaluate', 'sample', 'export', 'predict'],
    # 6: experiments.
    ['experiments.seed_stats', 'experiments.grid', 'experiments.multi_seed',
     'experiments.long_tail_table', 'experiments.sample_size',
     'experiments.exploration_sweep', 'experiments.embedding_ablation',
     'experiments.selection_rule', 'experiments.tuning',
     'experiments.compute', 'experiments.generator_quality',
     'experiments.results_doc'],
]
LAYER = {module: i for i, modules in enumerate(LAYERS) for module in modules}
PACKAGE = os.path.join(conftest.REPO, 'tgt_jax')


def _modules():
  for root, _, names in os.walk(PACKAGE):
    for name in names:
      if name.endswith('.py') and name != '__init__.py':
        path = os.path.join(root, name)
        yield os.path.relpath(path, PACKAGE)[:-3].replace(os.sep, '.'), path


def _imports(path):
  """Every tgt_jax module `path` imports, at the top or inside a function."""
  found = set()
  for node in ast.walk(ast.parse(open(path).read())):
    if isinstance(node, ast.ImportFrom) and node.module and (
        node.module.startswith('tgt_jax')):
      base = node.module[len('tgt_jax'):].lstrip('.')
      for alias in node.names:
        candidate = f'{base}.{alias.name}' if base else alias.name
        found.add(candidate if candidate in LAYER else base)
    elif isinstance(node, ast.Import):
      for alias in node.names:
        if alias.name.startswith('tgt_jax.'):
          found.add(alias.name[len('tgt_jax.'):])
  return found - {''}


def test_every_module_has_a_layer():
  assert sorted(m for m, _ in _modules() if m not in LAYER) == []


def test_no_module_imports_one_above_its_layer():
  violations = [f'{module} (layer {LAYER[module]}) imports {imported} '
                f'(layer {LAYER[imported]})'
                for module, path in _modules()
                for imported in _imports(path)
                if LAYER[imported] > LAYER[module]]
  assert not violations


def test_no_import_cycles():
  graph = {module: _imports(path) for module, path in _modules()}
  visiting, done = set(), set()

  def visit(module, trail):
    assert module not in visiting, ' -> '.join(trail + [module])
    if module in done:
      return
    visiting.add(module)
    for imported in graph.get(module, ()):
      visit(imported, trail + [module])
    visiting.discard(module)
    done.add(module)

  for module in graph:
    visit(module, [])
