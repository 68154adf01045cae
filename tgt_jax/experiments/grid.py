"""What every multi-run experiment shares: runs, shared teachers, outputs.

An experiment is a set of named config variants, each trained over a list of
student seeds. Run (variant v, seed s) lives in WORKDIR/<v>/seed_<s>. The two
teachers are trained once, by the first run, or taken from `teacher_dir` (the
workdir of an earlier run of the same dataset config, such as the demo), and
every other run restores them from their checkpoints: the spread over seeds
then measures the students (initialisation, data order, exploration noise),
not the teachers. Every run resumes what it finished before, so an
interrupted experiment picks up where it stopped when rerun with the same
command.

Runs that choose a setting also evaluate on the validation split (carved
from the train split; the test split is untouched), and choices read it
alone. Each experiment writes WORKDIR/<name>.json (the command, date,
machine, the per-seed results, their statistics and the paired comparisons,
see seed_stats), WORKDIR/<name>.md and, where it has a plot,
WORKDIR/<name>.png; `tgt_jax.experiments.results_doc` gathers them into
docs/results.md.
"""

import copy
import os
from typing import Any, Callable, Mapping, Sequence

from absl import flags
from absl import logging
import ml_collections
from ml_collections import config_flags

from tgt_jax import evaluate
from tgt_jax import evaluation
from tgt_jax import files
from tgt_jax import methods as methods_lib
from tgt_jax import provenance as provenance_lib
from tgt_jax import train
from tgt_jax import visualize
from tgt_jax.experiments import seed_stats

TEACHER_STAGES = ('teacher_labeler', 'teacher_generator')

# The flags every experiment command takes, defined once here so that the
# modules can be imported together.
flags.DEFINE_string('workdir', None, 'Output directory.')
flags.DEFINE_string(
    'teacher_dir', None,
    'Workdir of an earlier run of the same dataset config (e.g. the demo\'s) '
    'whose teachers every run restores; default: the first run trains them.')
flags.DEFINE_list('seeds', ['0', '1', '2', '3', '4'], 'Student seeds.')
flags.DEFINE_string('tgt_method', 'tgt_random',
                    'The TGT method of experiments that train one.')
config_flags.DEFINE_config_file(
    'config', 'configs/digits_lt.py',
    'The experiment\'s base config, e.g. configs/digits_lt.py:quick (a smoke '
    'test, not a result).', lock_config=False)
flags.mark_flags_as_required(['workdir'])


def base_config() -> ml_collections.ConfigDict:
  """A copy of the --config this experiment varies."""
  return copy.deepcopy(flags.FLAGS.config)


def share_teachers(config: ml_collections.ConfigDict,
                   teacher_dir: str) -> ml_collections.ConfigDict:
  """A copy of `config` restoring each teacher found in `teacher_dir`.

  A teacher whose checkpoint the config already names is left as it is.
  """
  config = copy.deepcopy(config)
  for stage in TEACHER_STAGES:
    stage_dir = os.path.join(teacher_dir, stage)
    if not config[stage].get('checkpoint') and os.path.isdir(stage_dir):
      config[stage].checkpoint = stage_dir
  return config


def validation_results(run_dir: str) -> dict[str, Any]:
  """The run's models evaluated on the validation split (cached in
  RUN_DIR/evaluation_val/results.json; computed once, read-only)."""
  out = os.path.join(run_dir, 'evaluation_val')
  cached = files.read_json(os.path.join(out, 'results.json'))
  if cached is None:
    cached = evaluate.evaluate_workdir(run_dir, 'val', out=out)
  return cached


def run_variants(variants: Mapping[str, ml_collections.ConfigDict],
                 seeds: Sequence[int], workdir: str,
                 teacher_dir: str | None = None,
                 train_fn: Callable[..., dict] = train.train_and_evaluate,
                 with_validation: bool = False
                 ) -> dict[str, dict[int, dict]]:
  """Trains every (variant, seed); returns {variant: {seed: results}}.

  `teacher_dir`: where the teachers come from; None trains them in the
  first run and shares them from there. A variant whose config equals an
  earlier one's (a point two sweeps share) reuses that variant's runs.
  `with_validation`: each run's results also hold 'val', its models'
  reports on the validation split.
  """
  results = {}
  trained = {}  # Config JSON -> variant: identical variants train once.
  for name, config in variants.items():
    same_as = trained.setdefault(config.to_json(sort_keys=True), name)
    if same_as != name:
      logging.info('Experiment variant %s is %s; reusing its runs.', name,
                   same_as)
      results[name] = results[same_as]
      continue
    results[name] = {}
    for seed in seeds:
      run_dir = os.path.join(workdir, name, f'seed_{seed}')
      run_config = copy.deepcopy(config)
      run_config.seed = seed
      if teacher_dir is not None:
        run_config = share_teachers(run_config, teacher_dir)
      logging.info('Experiment run %sseed %d, in %s.',
                   f'{name}, ' if name else '', seed, run_dir)
      results[name][seed] = dict(train_fn(run_config, run_dir))
      if with_validation:
        results[name][seed]['val'] = validation_results(run_dir)
      if teacher_dir is None:
        teacher_dir = run_dir
  return results


def student_key(results: Mapping[str, Any], method: str,
                config: ml_collections.ConfigDict) -> str:
  """The results.json key of `method`'s student: its trained name, with the
  config's long-tail loss and loss terms after a '+' (train_steps.
  result_key)."""
  name = methods_lib.trained_name(method, config)
  keys = [k for k in results if evaluation.is_report(results[k]) and (
      k == name or k.startswith(name + '+'))]
  if len(keys) != 1:
    raise ValueError(f'No single result of {method!r} among {list(results)}.')
  return keys[0]


def paired(per_seed: Mapping[int, Mapping[str, Any]], a: str, b: str,
           metric: str = 'overall', other=None) -> dict:
  """seed_stats.paired_difference of model `a` against model `b` (of the
  same runs, or of `other`'s runs with the same seeds)."""
  other = per_seed if other is None else other
  seeds = sorted(set(per_seed) & set(other))
  return seed_stats.paired_difference([per_seed[s][a][metric] for s in seeds],
                                      [other[s][b][metric] for s in seeds])


def model_stats(per_seed: Mapping[int, Mapping[str, Any]], model: str,
                metrics: Sequence[str] = seed_stats.METRICS) -> dict:
  """{metric: {'mean', 'std', 'values'}} of one model over the seeds
  (metrics it does not report are left out)."""
  return {m: seed_stats.metric_stats([r[model][m] for r in per_seed.values()])
          for m in metrics if m in next(iter(per_seed.values()))[model]}


provenance = provenance_lib.provenance


def header(title: str, info: Mapping[str, str]) -> str:
  """The Markdown lines that open every experiment's table."""
  return (f'## {title}\n\n'
          f'Command: `{info["command"]}`  \n'
          f'Ran: {info["date"]} on {info["machine"]}.\n')


def metric_panels_done(axes, metrics: Sequence[str], xlabel: str,
                       ylabel: str, subject: str, path: str) -> None:
  """Labels the overall and few-shot panels of an experiment's plot alike
  (`ylabel` and `subject` take the metric's name) and saves it."""
  for ax, metric in zip(axes, metrics):
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel.format(metric=metric))
    ax.set_title(f'{"Few-shot" if metric == "few" else "Overall"} {subject}')
    ax.grid(alpha=0.3)
  axes[0].legend()
  visualize.save_figure(axes[0].figure, path)


def write_outputs(workdir: str, name: str, payload: Mapping[str, Any],
                  markdown: str) -> None:
  """WORKDIR/<name>.json and WORKDIR/<name>.md, each replaced atomically."""
  os.makedirs(workdir, exist_ok=True)
  files.write_json(os.path.join(workdir, f'{name}.json'), payload)
  files.atomic_write(os.path.join(workdir, f'{name}.md'), markdown)
