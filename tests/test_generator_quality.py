"""The generator-quality experiment: who trains which generator, the paired
gains, the quality measures; faked training here, real tiny runs in the
integration tier."""

import json
import math
import os

import numpy as np
import pytest

from tgt_jax.experiments import generator_quality
from tgt_jax.experiments import results_doc


def _report(overall, few):
  return {'overall': overall, 'many': overall, 'medium': overall, 'few': few,
          'per_class': [overall] * 10}


# The fake TGT student's accuracy grows with its generator's epochs, and the
# VAE's is 0.05 lower: the gains below follow from these.
def _fake_accuracy(config):
  gen = config.teacher_generator
  return (0.6 + 0.001 * gen.num_epochs + 0.01 * config.seed -
          (0.05 if gen.family == 'vae' else 0.0))


def test_labeler_score_is_the_inception_score_of_the_labelers_outputs():
  # Every sample labelled alike, or none confidently: 1.
  assert generator_quality.labeler_score(np.eye(4)[[2, 2, 2]]) == (
      pytest.approx(1.0))
  assert generator_quality.labeler_score(np.full((5, 4), 0.25)) == (
      pytest.approx(1.0))
  # Confident samples spread evenly over k classes: k.
  assert generator_quality.labeler_score(np.eye(4)[[0, 1, 2, 3] * 2]) == (
      pytest.approx(4.0))
  # By hand: p = (0.5, 0.5) and (1, 0); marginal (0.75, 0.25).
  p = np.array([[0.5, 0.5], [1.0, 0.0]])
  kl = [0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25),
        math.log(1 / 0.75)]
  assert generator_quality.labeler_score(p) == pytest.approx(
      math.exp(np.mean(kl)))


def test_each_generator_is_trained_once_and_every_run_shares_one_labeler(
    tmp_path):
  from test_config_lib import load_config  # pylint: disable=g-import-not-at-top
  base = load_config('digits_lt')
  workdir = tmp_path / 'generator_quality'
  calls = []

  out = str(workdir)

  def fake_train(config, workdir):
    calls.append((os.path.relpath(workdir, out), config))
    os.makedirs(os.path.join(workdir, 'teacher_labeler'), exist_ok=True)
    results = {'teacher_labeler': _report(0.99, 0.99)}
    if config.methods == ('kd',):
      results['kd'] = _report(0.55 + 0.01 * config.seed,
                              0.3 + 0.01 * config.seed)
    else:
      os.makedirs(os.path.join(workdir, 'teacher_generator'), exist_ok=True)
      accuracy = _fake_accuracy(config)
      results['tgt_random'] = _report(accuracy, accuracy - 0.2)
    return results

  quality_dirs = []

  def fake_quality(run_dir):
    quality_dirs.append(os.path.relpath(run_dir, out))
    return {'agreement_val': 0.5 if 'vae' in run_dir else 0.8,
            'labeler_score': 3.0}

  payload = generator_quality.run_experiment(
      base, [0, 1], out, None, ['bigbigan', 'vae'], [0.5, 1.0],
      'tgt_random', 'kd', train_fn=fake_train, quality_fn=fake_quality)

  epochs = base.teacher_generator.num_epochs
  variants = ['bigbigan_x0.5', 'bigbigan_x1', 'vae_x0.5', 'vae_x1']
  assert [c[0] for c in calls] == [
      os.path.join(v, f'seed_{s}') for v in ['baseline', *variants]
      for s in (0, 1)]
  labeler = str(workdir / 'baseline' / 'seed_0' / 'teacher_labeler')
  # The baseline's first run trains the labeler; every other run restores
  # it. Each variant's first run trains its generator, its second restores
  # that one, never another variant's.
  assert calls[0][1].teacher_labeler.checkpoint == ''
  assert all(c.teacher_labeler.checkpoint == labeler for _, c in calls[1:])
  for name, config in calls[2:]:
    variant, seed = os.path.split(name)
    gen = config.teacher_generator
    assert config.methods == ('tgt_random',)
    assert gen.family == variant.split('_')[0]
    assert gen.num_epochs == epochs * float(variant.split('_x')[1])
    assert gen.checkpoint == ('' if seed == 'seed_0' else str(
        workdir / variant / 'seed_0' / 'teacher_generator'))
  assert quality_dirs == [os.path.join(v, 'seed_0') for v in variants]

  with open(workdir / 'generator_quality.json') as f:
    saved = json.load(f)
  assert saved['rows'] == payload['rows']
  rows = {r['variant']: r for r in saved['rows']}
  assert list(rows) == variants
  # TGT minus kd, seed by seed: the same seed term cancels.
  for variant, row in rows.items():
    family, multiple = variant.split('_x')
    shift = 0.05 if family == 'vae' else 0.0
    expected = 0.05 + 0.001 * epochs * float(multiple) - shift
    assert row['gain']['overall']['mean'] == pytest.approx(expected)
    assert row['gain']['few']['mean'] == pytest.approx(expected + 0.05)
    assert row['generator_epochs'] == epochs * float(multiple)
    assert row['agreement_val'] == (0.5 if family == 'vae' else 0.8)
  assert saved['baseline'] == 'kd'
  table = (workdir / 'generator_quality.md').read_text()
  assert '| vae | 50 (1x) | 50.0 | 3.00 | 60.5 ± 0.7 | 40.5 ± 0.7 | ' in table
  assert os.path.getsize(workdir / 'generator_quality.png') > 1000
  # Spearman over the four generators, ties (the agreements) at their mean
  # rank: agreements rank 3.5, 3.5, 1.5, 1.5 and few-shot gains (0.125,
  # 0.15, 0.075, 0.1) rank 3, 4, 1, 2.
  assert saved['correlation']['agreement_val'] == pytest.approx(
      np.corrcoef([3.5, 3.5, 1.5, 1.5], [3, 4, 1, 2])[0, 1])
  assert saved['correlation']['labeler_score'] is None  # All 3.0.

  doc = results_doc.build(str(tmp_path), str(tmp_path / 'results.md'))
  assert table.strip().split('\n')[-1] in doc
  assert ('- vae, 50 generator epochs, few: +10.0 [+10.0, +10.0]: holds.'
          in doc)


def test_a_teacher_dir_without_a_labeler_is_refused_before_any_run(tmp_path):
  from test_config_lib import load_config  # pylint: disable=g-import-not-at-top
  with pytest.raises(FileNotFoundError, match='holds no teacher_labeler'):
    generator_quality.run_experiment(
        load_config('digits_lt'), [0], str(tmp_path / 'out'),
        str(tmp_path), ['vae'], [1.0], 'tgt_random', 'kd',
        train_fn=lambda *a: pytest.fail('trained'))


@pytest.mark.integration
def test_generator_quality_on_tiny_runs(tmp_path):
  """Real tiny runs, both families, two seeds: each generator's quality is
  measured on its frozen teacher, the gains are paired, and a rerun trains
  nothing again."""
  import conftest  # pylint: disable=g-import-not-at-top
  base = conftest.tiny_config()
  base.num_epochs = base.teacher_labeler.num_epochs = 0.05
  base.teacher_generator.num_epochs = 0.1

  def run():
    return generator_quality.run_experiment(
        base, [0, 1], str(tmp_path), None, ['bigbigan', 'vae'], [1.0],
        'tgt_random', 'kd',
        quality_fn=lambda run_dir: generator_quality.measure_quality(
            run_dir, 'tgt_random', prior_samples=20))

  payload = run()
  rows = {r['family']: r for r in payload['rows']}
  assert set(rows) == {'bigbigan', 'vae'}
  for row in rows.values():
    assert 0.0 <= row['agreement_val'] <= 1.0
    assert 1.0 <= row['labeler_score'] <= 10.0
    assert row['gain']['few']['n'] == 2
  # The two families' generators differ, so their students do.
  per_seed = payload['per_seed']
  assert (per_seed['bigbigan_x1'][0]['tgt_random'] !=
          per_seed['vae_x1'][0]['tgt_random'])
  again = run()
  assert again['rows'] == payload['rows']
