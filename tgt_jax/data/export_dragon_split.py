"""Writes DRAGON's SUN-LT split (Samuel et al. 2020) as OLTR-style lists.

SUN-LT is not a file list anyone ships: DRAGON draws it with numpy from
Xian et al.'s SUN benchmark files (`res101.mat` image list and labels,
`att_splits.mat` seen/unseen split) in its `DragonSplit` class. So this
script runs DRAGON's own code -- imported from a clone of
https://github.com/dvirsamuel/DRAGON, nothing re-implemented -- and writes
what it drew:

  OUTPUT_DIR/SUN_LT_{train,val,test}.txt   'a/abbey/sun_xxx.jpg LABEL' lines
                                           (paths relative to the SUN
                                           Attribute `images` folder, labels
                                           0..716 = Xian's label - 1)
  OUTPUT_DIR/SUN_LT_classes.txt            class names in label order
  OUTPUT_DIR/SUN_LT_dragon_groups.json     DRAGON's many-/few-shot classes

Run it in DRAGON's environment (its environment.yml: Python 3.6, pandas
0.25 -- DRAGON's loader uses pandas options removed in pandas 2), from
anywhere:

  python export_dragon_split.py --dragon_root=DRAGON_CLONE \
      --output_dir=SPLIT_DIR

with DRAGON's data.tar unpacked in DRAGON_CLONE/data (its README, "Data
Preparation"). The draw is seeded inside DRAGON (val_seed=0, test_seed=0, as
its data loader uses), so the lists are those DRAGON trains on. This file
is plain Python 3.6 and imports nothing from tgt_jax.
"""

import argparse
import json
import os
import sys


def _write_list(path, files, labels):
  with open(path, 'w') as f:
    for file_name, label in zip(files, labels):
      # DRAGON strips the '.jpg' from Xian's paths; the images keep it.
      f.write('{}.jpg {}\n'.format(file_name, int(label) - 1))


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--dragon_root', required=True,
                      help='A clone of github.com/dvirsamuel/DRAGON.')
  parser.add_argument('--data_dir', default=None,
                      help='DRAGON data folder (default DRAGON_ROOT/data).')
  parser.add_argument('--output_dir', required=True)
  args = parser.parse_args()

  sys.path.insert(0, os.path.abspath(args.dragon_root))
  # DRAGON's own modules, importable only once its clone is on the path.
  # pylint: disable=g-import-not-at-top
  from dataset_handler.dataset import SUN_Xian
  from dataset_handler.transfer_task_split import DragonSplit
  # pylint: enable=g-import-not-at-top

  data_dir = args.data_dir or os.path.join(args.dragon_root, 'data')
  dataset = SUN_Xian(data_dir)
  # As DRAGON's DataLoader builds it for --transfer_task=DRAGON
  # --train_dist=dragon (fs_nsamples only matters for 'fewshot').
  task = DragonSplit(val_seed=0, test_seed=0, train_dist_function='dragon',
                     fs_nsamples=1)
  split = task._split(dataset, False)  # pylint: disable=protected-access

  os.makedirs(args.output_dir, exist_ok=True)
  counts = {}
  for part in ('train', 'val', 'test'):
    files, labels = split['F_' + part], split['Y_' + part]
    _write_list(os.path.join(args.output_dir, 'SUN_LT_{}.txt'.format(part)),
                files, labels)
    counts[part] = len(labels)
  class_names = dataset.attributes['allclasses_names']
  with open(os.path.join(args.output_dir, 'SUN_LT_classes.txt'), 'w') as f:
    for name in class_names:
      f.write('{}\n'.format(name))
  groups = {'many': sorted(int(c) - 1 for c in task.ms_classes),
            'few': sorted(int(c) - 1 for c in task.fs_classes)}
  with open(os.path.join(args.output_dir, 'SUN_LT_dragon_groups.json'),
            'w') as f:
    json.dump(groups, f)
  print('SUN-LT: {} classes; {} train, {} val, {} test images; DRAGON groups:'
        ' {} many, {} few. Written to {}.'.format(
            len(class_names), counts['train'], counts['val'], counts['test'],
            len(groups['many']), len(groups['few']), args.output_dir))


if __name__ == '__main__':
  main()
