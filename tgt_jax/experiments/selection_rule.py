"""Which checkpoint to report: the last one, or the best on validation?

  python -m tgt_jax.experiments.selection_rule \
      --workdir=workdirs/selection_rule --seeds=0,1,2,3,4

trains the students of the base config (configs/digits_lt.py, its methods)
over the seeds, saving and keeping a checkpoint at every evaluation
(`--every` steps; `keep_checkpoints=0`), the teachers trained by the first
run as in every experiment. It then evaluates every kept checkpoint of every
student, and of the labeler, on the validation split (each image's
correctness and cross-entropy) and on the test split, and compares the
rules that pick one checkpoint of a run:

  last            the final step (needs no validation);
  best_first      the highest validation accuracy, the earliest of ties
                  (`report_checkpoint='best'` until 2026-12-07);
  best_latest     the highest validation accuracy, the latest of ties
                  (`report_checkpoint='best'` since);
  best_loss       the lowest validation cross-entropy.

Stated before the runs, the primary criterion uses validation alone
(split-half accuracy): each class's validation images are split into two
halves; a rule picks a run's checkpoint on one half and is scored by the
other half's accuracy at that checkpoint, both ways round, averaged. Rules
are compared with `last` on paired student runs (seed_stats.RULE). The
default is `last` unless a `best` rule beats it by an interval that
excludes 0. Reported beside it, never used to choose: the test accuracy of
each rule's pick on the whole validation split, how often and by how much
the pick differs from the last step, and how well validation accuracy
predicts test accuracy across runs (Pearson r).
Writes WORKDIR/selection_rule.{json,md}.
"""

import copy
import os
from typing import Any, Mapping, Sequence

from absl import app
from absl import flags
import jax
import ml_collections
import numpy as np

from tgt_jax import cli
from tgt_jax import losses
from tgt_jax import student_setup
from tgt_jax import train
from tgt_jax import training_loop
from tgt_jax.experiments import grid
from tgt_jax.experiments import seed_stats

FLAGS = flags.FLAGS
flags.DEFINE_integer('every', 100, '[ours] Steps between evaluations (and '
                     'kept checkpoints).')

NAME = 'selection_rule'
RULES = ('last', 'best_first', 'best_latest', 'best_loss')
LABELER = 'teacher_labeler'


def observed_config(base: ml_collections.ConfigDict,
                    every: int) -> ml_collections.ConfigDict:
  """`base`, saving and keeping a checkpoint at every evaluation (fields
  that do not change what a run computes: run_guard.IGNORED_FIELDS)."""
  config = copy.deepcopy(base)
  config.eval_every_steps = every
  config.checkpoint_every_steps = every
  config.keep_checkpoints = 0
  return config


def choose(rule: str, accuracy: np.ndarray, loss: np.ndarray) -> int:
  """The index of the checkpoint `rule` picks from per-checkpoint
  validation accuracy and mean loss (in step order)."""
  if rule == 'last':
    return len(accuracy) - 1
  if rule == 'best_first':
    return int(np.argmax(accuracy))
  if rule == 'best_latest':
    return int(len(accuracy) - 1 - np.argmax(accuracy[::-1]))
  if rule == 'best_loss':
    return int(np.argmin(loss))
  raise ValueError(f'Unknown rule {rule!r}; one of {RULES}.')


def halves(labels: np.ndarray) -> np.ndarray:
  """0/1 per image: each class's images alternate between the two halves
  (in split order), so that both halves are balanced."""
  half = np.zeros(len(labels), np.int32)
  for label in np.unique(labels):
    where = np.flatnonzero(labels == label)
    half[where] = np.arange(len(where)) % 2
  return half


def split_half_score(rule: str, correct: np.ndarray, loss: np.ndarray,
                     half: np.ndarray) -> float:
  """Accuracy on one validation half at the checkpoint `rule` picks on the
  other, averaged over both ways round. `correct`, `loss`: [checkpoints,
  images]."""
  scores = []
  for pick, score in ((0, 1), (1, 0)):
    chosen = choose(rule, correct[:, half == pick].mean(1),
                    loss[:, half == pick].mean(1))
    scores.append(float(correct[chosen, half == score].mean()))
  return float(np.mean(scores))


def trajectory(run: train.Run, dataset, model: train.Trained,
               directory: str) -> dict[str, Any]:
  """Every kept checkpoint of a stage, evaluated: {'steps', 'val_correct'
  and 'val_loss' ([checkpoints][images]), 'val_labels', 'test' ([{overall,
  many, medium, few}] per checkpoint)}."""
  val_logits = train.split_logits_fn(run, dataset, model.classifier, 'val')
  test_report = train.accuracy_fn(
      run, dataset, model.classifier, 'test')
  out = {'steps': training_loop.checkpoint_steps(directory),
         'val_correct': [], 'val_loss': [], 'test': []}
  for step in out['steps']:
    state, _ = training_loop.restore(directory, model.state, step=step)
    variables = {'params': state.params, 'batch_stats': state.batch_stats}
    logits, labels = val_logits(variables)
    out['val_correct'].append((np.argmax(logits, -1) == labels).tolist())
    out['val_loss'].append(np.asarray(losses.soft_cross_entropy(
        jax.nn.one_hot(labels, logits.shape[-1]), logits)).tolist())
    out['test'].append({k: v for k, v in test_report(variables).items()
                        if k in seed_stats.METRICS})
    out['val_labels'] = labels.tolist()
  return out


def run_trajectories(run_dir: str, with_labeler: bool) -> dict[str, Any]:
  """{model key: trajectory} of a finished run's students (and labeler)."""
  run, dataset = train.open_workdir(run_dir)
  _, students = train.run_stages(run, dataset, evaluate_all=False)
  data = student_setup.StudentData.of(dataset)
  out = {}
  for method, student in students.items():
    key = student_setup.result_key(run.config, method, data)
    out[key] = trajectory(run, dataset, student,
                          os.path.join(run_dir, 'students', key))
  if with_labeler:
    stage = train.teacher_stage(
        run, dataset, LABELER, 0)
    out[LABELER] = trajectory(run, dataset, train.train_labeler(run, dataset),
                              stage.directory)
  return out


def rule_outcomes(path: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
  """{rule: {'split_half', 'step', 'test': {metric}}} of one trajectory: the
  split-half score, and the whole validation split's pick with its test
  accuracy."""
  correct = np.asarray(path['val_correct'], np.float64)
  loss = np.asarray(path['val_loss'], np.float64)
  half = halves(np.asarray(path['val_labels']))
  out = {}
  for rule in RULES:
    chosen = choose(rule, correct.mean(1), loss.mean(1))
    out[rule] = {'split_half': split_half_score(rule, correct, loss, half),
                 'step': path['steps'][chosen], 'test': path['test'][chosen],
                 'val': float(correct[chosen].mean())}
  return out


def summarize(outcomes: Mapping[str, Mapping[int, Mapping[str, Any]]]
              ) -> dict[str, Any]:
  """Statistics over every student run ((model, seed) pairs) of `outcomes`
  ({model: {seed: rule_outcomes}}): per rule the mean split-half score,
  its paired difference with `last`, the test accuracy of the pick and how
  often it is not the last step; and the validation-test correlation."""
  runs = [o for model, by_seed in outcomes.items() if model != LABELER
          for o in by_seed.values()]
  summary = {'runs': len(runs), 'rules': {}}
  for rule in RULES:
    split_half = [r[rule]['split_half'] for r in runs]
    last = [r['last']['split_half'] for r in runs]
    entry = {
        'split_half': seed_stats.metric_stats(split_half),
        'test': {m: seed_stats.metric_stats([r[rule]['test'][m]
                                             for r in runs])
                 for m in ('overall', 'few')},
        'not_last': sum(r[rule]['step'] != r['last']['step'] for r in runs),
        'mean_step': float(np.mean([r[rule]['step'] for r in runs])),
    }
    if rule != 'last' and len(runs) > 1:
      entry['split_half_vs_last'] = seed_stats.paired_difference(
          split_half, last)
      entry['test_vs_last'] = {m: seed_stats.paired_difference(
          [r[rule]['test'][m] for r in runs],
          [r['last']['test'][m] for r in runs]) for m in ('overall', 'few')}
    summary['rules'][rule] = entry
  val = [r['last']['val'] for r in runs]
  test = [r['last']['test']['overall'] for r in runs]
  summary['val_test_r'] = (float(np.corrcoef(val, test)[0, 1])
                           if len(runs) > 2 and np.std(val) > 0 else None)
  return summary


def table(summary: Mapping[str, Any], outcomes, num_val: int, seeds,
          info) -> str:
  """The Markdown of the experiment."""
  lines = [grid.header('Checkpoint selection rule', info), '',
           f'{summary["runs"]} student runs (methods x seeds {seeds}); '
           f'validation split of {num_val} images, halves of '
           f'{num_val // 2}. Split-half: accuracy (%) of the other half at '
           'the checkpoint a rule picks on one half (the primary '
           'criterion, validation only). Test: the test accuracy of the '
           'pick on the whole validation split (reported, never used to '
           'choose). Differences with `last` are paired over runs, '
           'mean [95% interval].', '',
           '| rule | split-half | vs last | test overall | vs last | '
           'test few | vs last | picks not last | mean step |',
           '| --- | --- | --- | --- | --- | --- | --- | --- | --- |']
  for rule, entry in summary['rules'].items():
    def versus(key, metric=None):
      difference = entry.get(key)
      if difference is None:
        return '-'
      return seed_stats.difference_cell(
          difference if metric is None else difference[metric])
    lines.append(
        f'| {rule} | {seed_stats.mean_std_cell(entry["split_half"])} | '
        f'{versus("split_half_vs_last")} | '
        f'{seed_stats.mean_std_cell(entry["test"]["overall"])} | '
        f'{versus("test_vs_last", "overall")} | '
        f'{seed_stats.mean_std_cell(entry["test"]["few"])} | '
        f'{versus("test_vs_last", "few")} | '
        f'{entry["not_last"]} of {summary["runs"]} | '
        f'{entry["mean_step"]:.0f} |')
  r = summary['val_test_r']
  lines += ['', 'Validation vs test accuracy across the runs at their last '
            f'step: Pearson r = {"-" if r is None else f"{r:.2f}"}.']
  labeler = outcomes.get(LABELER)
  if labeler:
    (picks,) = labeler.values()
    cells = ', '.join(
        f'{rule}: step {o["step"]}, test {100 * o["test"]["overall"]:.1f}%'
        for rule, o in picks.items())
    lines += ['', f'Teacher labeler (one run): {cells}.']
  return '\n'.join(lines) + '\n'


def main(argv):
  del argv
  cli.quiet_orbax_logs()
  seeds = [int(s) for s in FLAGS.seeds]
  info = grid.provenance()
  config = observed_config(grid.base_config(), FLAGS.every)
  grid.run_variants({'': config}, seeds, FLAGS.workdir, FLAGS.teacher_dir)
  outcomes, num_val = {}, 0
  for i, seed in enumerate(seeds):
    paths = run_trajectories(
        os.path.join(FLAGS.workdir, f'seed_{seed}'),
        with_labeler=i == 0 and FLAGS.teacher_dir is None)
    for key, path in paths.items():
      outcomes.setdefault(key, {})[seed] = rule_outcomes(path)
      num_val = len(path['val_labels'])
  summary = summarize(outcomes)
  markdown = table(summary, outcomes, num_val, seeds, info)
  grid.write_outputs(FLAGS.workdir, NAME,
                     {**info, 'seeds': seeds, 'every': FLAGS.every,
                      'summary': summary, 'per_run': outcomes}, markdown)
  print(markdown)


if __name__ == '__main__':
  app.run(main)
