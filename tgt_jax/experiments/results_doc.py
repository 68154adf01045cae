"""docs/results.md from the experiments' own outputs: no number typed by hand.

  python -m tgt_jax.experiments.results_doc --workdir_root=workdirs \
      --out=docs/results.md

reads WORKDIR_ROOT/<experiment>/<experiment>.{json,md,png} of each
experiment that has run (long_tail_table, sample_size, exploration_sweep,
embedding_ablation/ablation, compute and generator_quality), copies the
plots next to the document (docs/results/), and writes each experiment's table (with the command, date
and machine that made it) under a verdict computed from its JSON: whether
the paper's claim holds at this scale, by a rule stated beside it.
"""

import json
import os
import shutil
from typing import Any, Callable, Mapping

from absl import app
from absl import flags

from tgt_jax.experiments import seed_stats

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir_root', 'workdirs',
                    'Directory holding the experiments\' workdirs.')
flags.DEFINE_string('out', 'docs/results.md', 'The document to write.')

_INTRO = """# Results at small scale

Every table below is the Markdown an experiment command wrote into its
workdir, with that command, the date and the machine; the verdicts are
computed from the same runs' JSON by `python -m
tgt_jax.experiments.results_doc`, which wrote this file. Rerunning the
commands (then this one) regenerates every number. The data is the bundled
handwritten digits (1,797 8x8 images; 40 a class held out as a balanced
test split, 8 a class as a validation split carved from train); the paper's
experiments use ImageNet-LT, Places-LT and SUN-LT with a BigBiGAN teacher,
so none of these numbers is a paper figure, and a claim that holds or fails
here says nothing certain about paper scale.

Every run restores the teachers of one demo run, made first with
`python main.py --config=configs/digits_lt.py` (workdir
`workdirs/digits_lt`) on the same machine and passed as
`--teacher_dir=workdirs/digits_lt`: the spread over seeds is the students'.
Settings are chosen on the validation split only; the test split reports.

**The rule of every verdict.** RULE_TEXT
"""


def _verdict(difference: Mapping[str, float]) -> str:
  """'+1.2 [+0.4, +2.0]: holds' (the interval lies above 0), 'does not
  hold' (it contains 0), or 'reversed' (it lies below 0)."""
  cell = seed_stats.difference_cell(difference)
  if difference['low'] > 0:
    return f'{cell}: holds'
  if difference['high'] < 0:
    return f'{cell}: reversed (significantly worse)'
  return f'{cell}: does not hold (the interval contains 0)'


def _paired_rows(rows, wanted) -> list[str]:
  """'- model vs against, metric: verdict' for the (model, against) pairs."""
  lines = []
  for row in rows:
    if (row['model'], row['against']) in wanted:
      lines.append(f'- {row["model"]} vs {row["against"]}, {row["metric"]}: '
                   f'{_verdict(row["difference"])}.')
  return lines


def long_tail_verdict(result: Mapping[str, Any]) -> list[str]:
  """Claim (Section 4.1): TGT beats one-hot training and distillation."""
  lines = ['**Claim (paper, Section 4.1):** on long-tail data, TGT beats '
           'one-hot training and standard distillation (the paper\'s '
           'headline: about 10% over the natural baseline on ImageNet-LT); '
           'and beside it, the long-tail baselines (logit adjustment, '
           'Balanced Softmax).', '',
           'Logit adjustment at tau = 1 and Balanced Softmax are the same '
           'loss (log pi and log n differ by a constant, which the softmax '
           'ignores; train_steps.LongTailAdjustment): their rows differ only '
           'through floating-point rounding, amplified over training: any '
           'gap between them is noise, a yardstick for the other '
           'differences.', '']
  for setting, summary in result['summary'].items():
    lines.append(f'{setting}:')
    wanted = {(m, b) for m in ('tgt_random', 'tgt_gradient')
              for b in ('onehot', 'kd', 'onehot+logit_adjusted',
                        'onehot+balanced_softmax')}
    wanted |= {(f'{m}+{loss}', m) for m in ('onehot', 'tgt_gradient')
               for loss in ('logit_adjusted', 'balanced_softmax')}
    lines += _paired_rows(summary['paired'], wanted)
    lines.append('')
  return lines


def sample_size_verdict(result: Mapping[str, Any]) -> list[str]:
  """Claim (Section 4.2): TGT acts like more real data."""
  lines = ['**Claim (paper, Section 4.2):** TGT effectively increases the '
           'sample size. Here: at each size, TGT against each baseline on '
           'paired runs; the multiplier (the real images the baseline needs '
           'to match TGT\'s mean, read off its mean curve) is descriptive.',
           '']
  for subset, differences in result['paired'].items():
    for baseline, difference in differences.items():
      lines.append(f'- {subset}, vs {baseline}: {_verdict(difference)}.')
  for baseline, rows in result['multipliers'].items():
    values = ', '.join(
        f'{"" if r["relation"] == "=" else r["relation"]}'
        f'{r["multiplier"]:.2f}x at {r["n"]}' for r in rows)
    lines.append(f'- multiplier vs {baseline}: {values}.')
  return lines


def sweep_verdict(result: Mapping[str, Any]) -> list[str]:
  """No claim of the paper: what validation chose, and the directions at
  equal step length."""
  summary = result['summary']
  lines = ['The paper states no sweep result that we know of. Chosen on the '
           'validation split (best mean overall accuracy), reported on '
           'test:', '']
  for method in ('tgt_random', 'tgt_gradient'):
    spec = summary[method]
    point = spec['points'][spec['chosen']]
    lines.append(
        f'- {method}: {spec["chosen"]} (measured displacement '
        f'{point["displacement"]["mean"]:.2f}): validation '
        f'{100 * point["val"]["overall"]["mean"]:.1f}%, test '
        f'{seed_stats.mean_std_cell(point["test"]["overall"])} overall, '
        f'{seed_stats.mean_std_cell(point["test"]["few"])} few-shot.')
  lines.append('- Gradient against random directions at the same '
               'displacement (test overall):')
  for name, difference in summary['paired'].items():
    lines.append(f'  - D = {name[1:]}: {_verdict(difference)}.')
  return lines


def embedding_verdict(result: Mapping[str, Any]) -> list[str]:
  """Claim (Ding & Lerch 2024): the compressed embedding guides better,
  above all an unsupervised one."""
  lines = ['**Claim (Ding & Lerch 2024):** distilling the teacher\'s '
           'compressed embedding beats distilling its raw embedding (EAsT) '
           'and no embedding term, most of all for an embedding learnt '
           'without labels (here: the BigBiGAN encoder\'s).', '']
  wanted = {(row['model'], row['against']) for row in
            result['summary']['paired'] if 'compressed' in row['model']}
  return lines + _paired_rows(result['summary']['paired'], wanted)


def compute_verdict(result: Mapping[str, Any]) -> list[str]:
  """No claim of the paper: whether a baseline given TGT's compute (more
  epochs) reaches it."""
  lines = ['The paper compares at equal epochs. Here each TGT row is '
           'compared with each generator-free method at its cheapest '
           'multiple of the epochs that spends at least the TGT row\'s total '
           'training FLOPs (teachers included), on paired runs:', '']
  if not result['paired']:
    return lines + ['- One seed: no interval, no verdict.']
  return lines + _paired_rows(result['paired'], {
      (row['model'], row['against']) for row in result['paired']})


def generator_quality_verdict(result: Mapping[str, Any]) -> list[str]:
  """No claim of the paper: how TGT's gain moves with the generator's
  quality."""
  lines = ['The paper uses one generator (BigBiGAN). Here each generator\'s '
           f'{result["tgt_method"]} student against {result["baseline"]} on '
           'paired runs (the same seeds and labeler):', '']
  for row in result['rows']:
    name = f'{row["family"]}, {row["generator_epochs"]:g} generator epochs'
    if row['gain'] is None:
      lines.append(f'- {name}: one seed, no interval.')
      continue
    for metric in ('overall', 'few'):
      lines.append(f'- {name}, {metric}: {_verdict(row["gain"][metric])}.')
  for measure, value in result['correlation'].items():
    if value is not None:
      lines.append(f'- Spearman correlation of {measure} with the few-shot '
                   f'gain, over the {len(result["rows"])} generators '
                   f'(descriptive): {value:+.2f}.')
  return lines


# (title, workdir, file stem, verdict).
EXPERIMENTS: tuple[tuple[str, str, str, Callable[..., list[str]]], ...] = (
    ('Long-tail table', 'long_tail_table', 'long_tail_table',
     long_tail_verdict),
    ('Effective sample size', 'sample_size', 'sample_size',
     sample_size_verdict),
    ('Exploration at equal step length', 'exploration_sweep',
     'exploration_sweep', sweep_verdict),
    ('Embedding compression', 'embedding_ablation', 'ablation',
     embedding_verdict),
    ('Accuracy against compute', 'compute', 'compute', compute_verdict),
    ('Gain against generator quality', 'generator_quality',
     'generator_quality', generator_quality_verdict),
)


def build(workdir_root: str, out: str) -> str:
  """Writes `out` (and its plots beside it); returns the text."""
  figure_dir = os.path.join(os.path.dirname(out) or '.', 'results')
  sections = [_INTRO.replace('RULE_TEXT', seed_stats.RULE)]
  for title, workdir, stem, verdict in EXPERIMENTS:
    base = os.path.join(workdir_root, workdir, stem)
    if not os.path.exists(base + '.json'):
      sections.append(
          f'## {title}\n\nNot in this document: {base}.json does not '
          f'exist. Run `python -m tgt_jax.experiments.{workdir} '
          f'--workdir={workdir_root}/{workdir} --teacher_dir=...`, then this '
          'command.\n')
      continue
    with open(base + '.json') as f:
      result = json.load(f)
    with open(base + '.md') as f:
      # The rule is stated once, above; the tables refer to it.
      table = f.read().strip().replace(
          f'({seed_stats.RULE})', '(the rule of every verdict, above)')
    section = [table, '', *verdict(result)]
    if os.path.exists(base + '.png'):
      os.makedirs(figure_dir, exist_ok=True)
      shutil.copyfile(base + '.png', os.path.join(figure_dir, stem + '.png'))
      section += ['', f'![{title}](results/{stem}.png)']
    sections.append('\n'.join(section) + '\n')
  text = '\n'.join(sections)
  with open(out, 'w') as f:
    f.write(text)
  return text


def main(argv):
  del argv
  build(FLAGS.workdir_root, FLAGS.out)


if __name__ == '__main__':
  app.run(main)
