"""What a run shows in TensorBoard, beside its one log line per interval.

The training loop writes each stage's training scalars (averaged over the
logging interval), validation accuracy and step rate; the run writes its
resolved config (as hyper-parameters and as text) and the sample grid.
`tensorboard --logdir=WORKDIR` shows them.
"""

import json

from clu import metric_writers
import ml_collections

from tgt_jax import run_guard


def create_writer(workdir: str, enabled: bool = True
                  ) -> metric_writers.MetricWriter:
  """TensorBoard event files in `workdir` (asynchronous); nothing when not
  `enabled` (other processes, read-only runs). Not clu's default writer,
  which also logs every scalar: the loop logs its own single line."""
  if not enabled:
    return metric_writers.MultiWriter([])
  return metric_writers.AsyncWriter(metric_writers.SummaryWriter(workdir))


def write_config(writer: metric_writers.MetricWriter,
                 config: ml_collections.ConfigDict) -> None:
  """The resolved config as hyper-parameters (scalar fields) and text."""
  fields = run_guard.fingerprint_of(json.loads(config.to_json()))
  writer.write_hparams({k: v if isinstance(v, (bool, int, float, str))
                        else str(v) for k, v in fields.items()})
  writer.write_texts(0, {'config': '```\n' + config.to_json(indent=2) +
                                   '\n```'})
