"""The tests' tiny pipeline as a config file, for tests that run main.py.

  PYTHONPATH=.:tests python main.py --config=tests/tiny_pipeline_config.py

Every stage is a few steps long (15 for each teacher, 21 for the student),
saves a checkpoint every 4 steps and validates every 5 (keeping the best),
so that a run can be killed between checkpoints of any stage.
"""

import conftest


def get_config():
  config = conftest.tiny_config()
  config.methods = ('tgt_gradient',)
  config.teacher_labeler.num_epochs = 0.1  # 1,197 images / 8: 15 steps.
  config.teacher_generator.num_epochs = 0.1
  config.num_epochs = 0.5  # 330 long-tail images / 8: 21 steps.
  config.checkpoint_every_steps = 4
  config.eval_every_steps = 5
  config.log_every_steps = 1
  return config
