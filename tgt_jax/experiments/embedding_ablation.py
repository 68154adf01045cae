"""Embedding distillation on the digits: which embedding, and compressed?

  python -m tgt_jax.experiments.embedding_ablation \
      --workdir=workdirs/embedding_ablation --teacher_dir=workdirs/digits_lt

trains `kd` and `tgt_gradient` students of the base config
(configs/digits_lt.py) over the seeds (`--seeds`; docs/results.md ran 0, 1, 2)
without an embedding term and with each embedding source ×
`embedding_distill.mode`:

- sources: the labeler's pooled pre-logit features (supervised) and the
  BigBiGAN encoder's pooled backbone features (learnt without labels, the
  setting Ding & Lerch proposed compression for);
- modes: `raw` (EAsT), `compressed` (Ding & Lerch: a trained g to d_c) and
  `random_projection` (ours: g fixed at its random initialisation).

Every run restores the same teachers (`--teacher_dir`, or the first run's),
so the spread measures the students. Writes WORKDIR/ablation.{json,md}: mean
± std per model, and paired comparisons with 95% intervals
(seed_stats.RULE): compressed against raw, against no embedding term and
against a random projection of the same size, for each source and method.
"""

import copy
from typing import Any, Mapping, Sequence

from absl import app
from absl import flags
import ml_collections

from tgt_jax import cli
from tgt_jax import embedding_distill
from tgt_jax.experiments import grid
from tgt_jax.experiments import seed_stats

FLAGS = flags.FLAGS
flags.DEFINE_list('methods', ['kd', 'tgt_gradient'], 'Methods to compare.')
flags.DEFINE_list('sources', list(embedding_distill.SOURCES),
                  'embedding_distill.source values.')
flags.DEFINE_list('modes', ['raw', 'compressed', 'random_projection'],
                  'embedding_distill.mode values (besides none).')

METRICS = seed_stats.METRICS
NAME = 'ablation'


def model_name(method: str, source: str, mode: str) -> str:
  """The results.json key: 'kd', 'kd+emb_raw', 'kd+emb_encoder_compressed'."""
  if mode == 'none':
    return method
  return f'{method}+emb_{"" if source == "labeler" else source + "_"}{mode}'


def variants(base: ml_collections.ConfigDict, methods: Sequence[str],
             sources: Sequence[str], modes: Sequence[str]) -> dict[str, Any]:
  """'none' and '<source>/<mode>' configs, each training every method."""
  configs = {}
  for source, mode in [('labeler', 'none')] + [
      (s, m) for s in sources for m in modes]:
    config = copy.deepcopy(base)
    config.methods = tuple(methods)
    config.embedding_distill.mode = mode
    config.embedding_distill.source = source
    configs['none' if mode == 'none' else f'{source}/{mode}'] = config
  return configs


def merge(results: Mapping[str, Mapping[int, dict]]) -> dict[int, dict]:
  """{seed: {model: report}} over all variants (their teachers are the
  same)."""
  merged = {}
  for per_seed in results.values():
    for seed, result in per_seed.items():
      merged.setdefault(seed, {}).update(result)
  return merged


def summarize(per_seed: Mapping[int, Mapping[str, Any]],
              methods: Sequence[str], sources: Sequence[str],
              modes: Sequence[str]) -> dict:
  """{'models': {model: stats}, 'paired': [rows]} (see module doc)."""
  models = ['teacher_labeler'] + [
      model_name(m, s, mode) for m in methods
      for s, mode in [('labeler', 'none')] + [(s, x) for s in sources
                                              for x in modes]]
  comparisons = []
  for method in methods:
    for source in sources:
      compressed = model_name(method, source, 'compressed')
      for against_mode in ('raw', 'none', 'random_projection'):
        if {'compressed', against_mode} <= set(modes) | {'none'}:
          comparisons.append((compressed,
                              model_name(method, source, against_mode)))
      if 'raw' in modes:
        comparisons.append((model_name(method, source, 'raw'), method))
  return {'models': {m: grid.model_stats(per_seed, m) for m in models},
          'paired': [{'model': a, 'against': b, 'metric': metric,
                      'difference': grid.paired(per_seed, a, b, metric)}
                     for a, b in comparisons for metric in ('overall',
                                                            'few')]}


def ablation_table(summary: Mapping[str, Any], seeds: Sequence[int],
                   info: Mapping[str, str]) -> str:
  """Markdown: mean ± std per model, then the paired comparisons."""
  lines = [
      grid.header('Embedding compression ablation', info),
      f'Top-1 accuracy (%) on the balanced test split, mean ± std (ddof 1) '
      f'over seeds {", ".join(str(s) for s in seeds)}. `emb_<mode>`: the '
      'labeler\'s embedding; `emb_encoder_<mode>`: the BigBiGAN encoder\'s '
      '(learnt without labels).', '',
      '| model | ' + ' | '.join(METRICS) + ' |',
      '| --- |' + ' --- |' * len(METRICS)]
  for name, stats in summary['models'].items():
    cells = ' | '.join(seed_stats.mean_std_cell(stats[m]) for m in METRICS)
    lines.append(f'| {name} | {cells} |')
  lines += seed_stats.paired_table(summary['paired'])
  return '\n'.join(lines) + '\n'


def main(argv):
  del argv
  cli.quiet_orbax_logs()
  seeds = [int(s) for s in FLAGS.seeds]
  for mode in FLAGS.modes:
    if mode not in embedding_distill.MODES[1:]:
      raise app.UsageError(f'Unknown mode {mode!r} in --modes; choose from '
                           f'{embedding_distill.MODES[1:]}.')
  info = grid.provenance()
  configs = variants(grid.base_config(), FLAGS.methods, FLAGS.sources,
                     FLAGS.modes)
  per_seed = merge(grid.run_variants(configs, seeds, FLAGS.workdir,
                                     FLAGS.teacher_dir))
  summary = summarize(per_seed, FLAGS.methods, FLAGS.sources, FLAGS.modes)
  table = ablation_table(summary, seeds, info)
  grid.write_outputs(FLAGS.workdir, NAME,
                     {**info, 'seeds': seeds, 'summary': summary,
                      'per_seed': {str(s): r for s, r in per_seed.items()}},
                     table)
  print(table)


if __name__ == '__main__':
  app.run(main)
