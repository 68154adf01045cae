"""TGT's gain against the teacher generator's quality.

  python -m tgt_jax.experiments.generator_quality \
      --teacher_dir=workdirs/digits_lt --workdir=workdirs/generator_quality \
      [--seeds=0,1,2,3,4] [--families=bigbigan,vae] \
      [--generator_epochs=0.1,0.3,1] [--tgt_method=tgt_random] [--baseline=kd]

How much of TGT's gain, or its absence, is the generator's? This trains one
teacher generator per (family, multiple of the config's generator epochs),
each by the first seed's run and shared by that variant's other seeds, and
the TGT student (`--tgt_method`) over the seeds with each of them; and the
generator-free baseline (`--baseline`) over the same seeds. Every run
restores one labeler (`--teacher_dir`'s, else the baseline's first run
trains it), so within a seed the TGT students differ only by their
generator, and each gain is paired: TGT with generator g minus the baseline,
seed by seed, with its 95% t interval (seed_stats.RULE).

Each generator's quality, measured on its frozen teacher (no test image is
read):
- `agreement_val`: the labeler's accuracy on G(E(x)) of validation images
  against the labels of x (what the generator stage validates on): how
  faithfully G reproduces a class from its latent, which is what
  exploration around E(x) relies on. None for a family without an encoder.
- `labeler_score` [ours]: the Inception Score (Salimans et al. 2016) with the
  labeler in place of the Inception network, over `--prior_samples` prior
  samples G(z): exp(E_z KL(p(y | G(z)) || p(y))), between 1 (every sample
  labelled alike, or no sample confidently) and the number of classes
  (confident samples spread evenly over the classes). There is no Inception
  network for 8x8 digits, and the labeler is the network whose labels TGT
  trains on, so its confidence and class coverage on G's samples are what
  reach the student. It does not see the data's own distribution (an FID
  would), so it is read beside the agreement, not instead of it.

[ours] The defaults: the generator-free baseline is kd (the tuning
experiment, `tgt_jax.experiments.tuning`, names the best tuned one; pass it
with --baseline and its settings with --config), tgt_random (a third of
tgt_gradient's step cost on CPU) and epoch multiples 0.1, 0.3 and 1 of the
config's generator epochs (the quality range short of training longer than
the demo). Variant <family>_x<m> lives in WORKDIR/<family>_x<m>/seed_<s>
and the baseline in WORKDIR/baseline/seed_<s>; every run resumes what it
finished, so a killed experiment rerun with the same command continues.
Writes WORKDIR/generator_quality.{json,md,png}.
"""

import copy
import math
import os
from typing import Any, Callable, Mapping, Sequence

from absl import app
from absl import flags
import jax
import matplotlib.pyplot as plt
import ml_collections
import numpy as np
import scipy.special
import scipy.stats

from tgt_jax import cli
from tgt_jax import train
from tgt_jax.experiments import grid
from tgt_jax.experiments import seed_stats
from tgt_jax.generators import families

FLAGS = flags.FLAGS
flags.DEFINE_list('families', ['bigbigan', 'vae'],
                  'Teacher-generator families (teacher_generator.family).')
flags.DEFINE_list('generator_epochs', ['0.1', '0.3', '1'],
                  'Multiples of the config\'s teacher_generator.num_epochs: '
                  'one generator of each family per multiple.')
flags.DEFINE_string('baseline', 'kd',
                    'The generator-free baseline every gain is paired with.')
flags.DEFINE_integer('prior_samples', 1000,
                     'Prior samples G(z) the labeler score is computed on.')

NAME = 'generator_quality'
BASELINE = 'baseline'
METRICS = ('overall', 'few')


def variant_name(family: str, multiple: float) -> str:
  return f'{family}_x{multiple:g}'


def labeler_score(probabilities: np.ndarray) -> float:
  """exp(E_i KL(p_i || mean_i p_i)) of the rows of `probabilities` (the
  labeler's softmax on prior samples): the Inception Score's formula."""
  p = np.asarray(probabilities, np.float64)
  # rel_entr: p log(p / q), 0 where p = 0 (a class a sample gives no mass).
  terms = scipy.special.rel_entr(p, p.mean(axis=0, keepdims=True))
  return float(math.exp(np.mean(np.sum(terms, axis=1))))


def measure_quality(run_dir: str, tgt_method: str,
                    prior_samples: int = 1000) -> dict[str, Any]:
  """The quality of a finished run's frozen teacher generator, read-only:
  {'agreement_val', 'labeler_score'} (module docstring)."""
  run, dataset = train.open_workdir(run_dir, methods_to_restore=[tgt_method])
  # The two teacher stages alone: the students are not needed here.
  teachers, _ = train.train_generator(run, dataset,
                                      train.train_labeler(run, dataset))
  agreement = None
  if teachers.generator_model.has_encoder and dataset.has_split('val'):
    agreement = train.reconstruction_agreement(run, dataset, teachers, 'val')

  @jax.jit
  def probabilities(teachers, latents):
    return jax.nn.softmax(teachers.label(teachers.generate(latents))[0])

  # Fixed latents: every generator is scored on the same prior draws.
  rng = jax.random.PRNGKey(0)
  chunks, batch = [], run.config.eval_batch_size
  for start in range(0, prior_samples, batch):
    latents = teachers.sample_prior(jax.random.fold_in(rng, start),
                                    min(batch, prior_samples - start))
    chunks.append(np.asarray(probabilities(teachers, latents)))
  return {'agreement_val': agreement,
          'labeler_score': labeler_score(np.concatenate(chunks))}


def tgt_config(base: ml_collections.ConfigDict, family: str,
               multiple: float, tgt_method: str) -> ml_collections.ConfigDict:
  """The TGT student's config with a generator of `family` trained for
  `multiple` times the base config's generator epochs."""
  config = copy.deepcopy(base)
  config.methods = (tgt_method,)
  config.teacher_generator.family = family
  config.teacher_generator.num_epochs = (
      base.teacher_generator.num_epochs * multiple)
  # Trained here, never taken from --teacher_dir: the generator is what
  # varies.
  config.teacher_generator.checkpoint = ''
  return config


def _with_labeler(config: ml_collections.ConfigDict, labeler_dir: str | None
                  ) -> ml_collections.ConfigDict:
  config = copy.deepcopy(config)
  if labeler_dir is not None:
    config.teacher_labeler.checkpoint = labeler_dir
  return config


def gains(tgt: Mapping[int, Mapping[str, Any]], tgt_key: str,
          base: Mapping[int, Mapping[str, Any]], base_key: str
          ) -> dict[str, dict]:
  """{metric: paired difference of TGT minus the baseline} over the seeds
  both have."""
  return {m: grid.paired(tgt, tgt_key, base_key, m, other=base)
          for m in METRICS}


def run_experiment(base: ml_collections.ConfigDict, seeds: Sequence[int],
                   workdir: str, teacher_dir: str | None,
                   families_used: Sequence[str], multiples: Sequence[float],
                   tgt_method: str, baseline: str,
                   train_fn: Callable[..., dict] = train.train_and_evaluate,
                   quality_fn: Callable[[str], dict] | None = None
                   ) -> dict[str, Any]:
  """Trains every run (resuming), writes WORKDIR/generator_quality.{json,
  md,png} and returns the JSON payload. `quality_fn(run_dir)`: the quality
  of that run's generator (default: measure_quality)."""
  if quality_fn is None:
    quality_fn = lambda run_dir: measure_quality(run_dir, tgt_method)
  info = grid.provenance()
  baseline_config = copy.deepcopy(base)
  baseline_config.methods = (baseline,)
  labeler_dir = None
  if teacher_dir is not None:
    labeler_dir = os.path.join(teacher_dir, 'teacher_labeler')
    if not os.path.isdir(labeler_dir):
      raise FileNotFoundError(
          f'--teacher_dir={teacher_dir} holds no teacher_labeler stage: '
          'pass the workdir of a finished run of this dataset config, or '
          'leave --teacher_dir out to train the labeler here.')
  results = grid.run_variants(
      {BASELINE: _with_labeler(baseline_config, labeler_dir)}, seeds,
      workdir, train_fn=train_fn)
  if labeler_dir is None:
    labeler_dir = os.path.join(workdir, BASELINE, f'seed_{seeds[0]}',
                               'teacher_labeler')
  base_key = grid.student_key(
      next(iter(results[BASELINE].values())), baseline, baseline_config)
  table_rows = []
  for family in families_used:
    for multiple in multiples:
      name = variant_name(family, multiple)
      config = tgt_config(base, family, multiple, tgt_method)
      # One variant at a time: its first seed trains its generator and the
      # others restore it (run_variants shares from the first run), while
      # the labeler is everyone's.
      results.update(grid.run_variants(
          {name: _with_labeler(config, labeler_dir)}, seeds, workdir,
          train_fn=train_fn))
      per_seed = results[name]
      key = grid.student_key(next(iter(per_seed.values())), tgt_method,
                             config)
      table_rows.append({
          'variant': name, 'family': family, 'multiple': multiple,
          'generator_epochs': config.teacher_generator.num_epochs,
          'method': key,
          **quality_fn(os.path.join(workdir, name, f'seed_{seeds[0]}')),
          'tgt': grid.model_stats(per_seed, key, METRICS),
          'gain': (gains(per_seed, key, results[BASELINE], base_key)
                   if len(seeds) > 1 else None)})
  baseline_stats = grid.model_stats(results[BASELINE], base_key, METRICS)
  markdown = table(table_rows, base_key, baseline_stats, seeds, info)
  payload = {**info, 'seeds': list(seeds), 'families': list(families_used),
             'multiples': list(multiples), 'tgt_method': tgt_method,
             'baseline': base_key, 'baseline_stats': baseline_stats,
             'rows': table_rows, 'correlation': correlations(table_rows),
             'per_seed': results}
  grid.write_outputs(workdir, NAME, payload, markdown)
  plot(table_rows, base_key, os.path.join(workdir, f'{NAME}.png'))
  return payload


def correlations(table_rows: Sequence[Mapping[str, Any]]
                 ) -> dict[str, float | None]:
  """Descriptive: Spearman's rank correlation over the generators between
  each quality measure and the mean few-shot gain (None with fewer than 3
  generators, without gains, or where either is the same for all)."""
  out = {}
  for measure in ('agreement_val', 'labeler_score'):
    points = [(r[measure], r['gain']['few']['mean']) for r in table_rows
              if r[measure] is not None and r['gain'] is not None]
    out[measure] = None
    # A constant column has no ranking to correlate.
    if len(points) >= 3 and all(len(set(c)) > 1 for c in zip(*points)):
      # Ties share their mean rank (agreement often ties on few images).
      ranks = [scipy.stats.rankdata(column) for column in zip(*points)]
      out[measure] = float(np.corrcoef(*ranks)[0, 1])
  return out


def _cell(value: float | None, scale: float = 100.0, digits: int = 1) -> str:
  return '-' if value is None else f'{scale * value:.{digits}f}'


def table(table_rows: Sequence[Mapping[str, Any]], base_key: str,
          baseline_stats: Mapping[str, Any], seeds: Sequence[int],
          info: Mapping[str, str]) -> str:
  """Markdown: each generator's quality, its TGT student and the gain."""
  lines = [grid.header('Gain against generator quality', info),
           f'Test accuracy (%), mean ± std (ddof 1) over seeds '
           f'{", ".join(map(str, seeds))}; every run restores one labeler. '
           f'Baseline {base_key}: overall '
           f'{seed_stats.mean_std_cell(baseline_stats["overall"])}, few '
           f'{seed_stats.mean_std_cell(baseline_stats["few"])}. Agreement: '
           'the labeler on G(E(x)) of validation images (%); labeler score: '
           'the Inception Score with the labeler, on prior samples G(z) '
           '(1 to the number of classes). Gain: the TGT student minus the '
           'baseline, paired by seed, points, mean [95% interval] (the rule '
           f'of every verdict: {seed_stats.RULE}).', '',
           '| family | generator epochs (multiple) | agreement | labeler '
           'score | TGT overall | TGT few | gain overall | gain few |',
           '| --- |' + ' --- |' * 7]
  for row in table_rows:
    gain = row['gain']
    cells = [row['family'],
             f'{row["generator_epochs"]:g} ({row["multiple"]:g}x)',
             _cell(row['agreement_val']),
             _cell(row['labeler_score'], 1.0, 2),
             *(seed_stats.mean_std_cell(row['tgt'][m]) for m in METRICS),
             *(('-', '-') if gain is None else
               (seed_stats.difference_cell(gain[m]) for m in METRICS))]
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines) + '\n'


def plot(table_rows: Sequence[Mapping[str, Any]], base_key: str,
         path: str) -> None:
  """The gain (overall, few-shot) against the validation agreement, one
  marker per family, the 95% interval as a bar. A generator without an
  agreement (no encoder) or without a gain (one seed) is left out."""
  _, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharex=True)
  for ax, metric in zip(axes, METRICS):
    for family in dict.fromkeys(r['family'] for r in table_rows):
      points = sorted((r for r in table_rows if r['family'] == family and
                       r['agreement_val'] is not None and r['gain']),
                      key=lambda r: r['agreement_val'])
      if not points:
        continue
      means = np.array([100 * r['gain'][metric]['mean'] for r in points])
      ax.errorbar([100 * r['agreement_val'] for r in points], means,
                  yerr=[means - [100 * r['gain'][metric]['low']
                                 for r in points],
                        [100 * r['gain'][metric]['high'] for r in points] -
                        means], marker='o', capsize=3, label=family)
    ax.axhline(0, color='gray', lw=0.8)
  grid.metric_panels_done(axes, METRICS,
                          'reconstruction agreement on validation (%)',
                          f'{{metric}} gain over {base_key} (points)',
                          'gain against generator quality', path)


def main(argv):
  del argv
  cli.quiet_orbax_logs()
  multiples = [float(m) for m in FLAGS.generator_epochs]
  if any(m <= 0 for m in multiples):
    raise app.UsageError(
        f'--generator_epochs must be positive, got {multiples}.')
  unknown = sorted(set(FLAGS.families) - set(families.FAMILIES))
  if unknown:
    raise app.UsageError(f'--families: unknown {unknown}; known: '
                         f'{sorted(families.FAMILIES)}.')
  payload = run_experiment(
      grid.base_config(), [int(s) for s in FLAGS.seeds], FLAGS.workdir,
      FLAGS.teacher_dir, FLAGS.families, multiples, FLAGS.tgt_method,
      FLAGS.baseline,
      quality_fn=lambda run_dir: measure_quality(
          run_dir, FLAGS.tgt_method, FLAGS.prior_samples))
  print(table(payload['rows'], payload['baseline'],
              payload['baseline_stats'], payload['seeds'], payload))


if __name__ == '__main__':
  app.run(main)
