r"""A trained student as a self-describing artifact, and loading it.

  python -m tgt_jax.export --workdir=W --method=tgt_gradient --out=DIR
      [--checkpoint=best|last]

writes DIR/model.json (the classifier's fields, the class names, how its
inputs were prepared at training, which checkpoint it is and where it came
from) and DIR/variables (an orbax checkpoint of the student's parameters
and BatchNorm statistics; no optimiser state). Nothing else of the workdir
is needed to use it:

  from tgt_jax import export
  model = export.load('DIR')
  image = model.read_image('photo.jpg')  # uint8, prepared as at training
  probabilities = model.probabilities(image[None])[0]
  print(model.class_names[probabilities.argmax()], probabilities.max())

`python -m tgt_jax.predict` classifies a folder of images with it.
"""

import dataclasses
import json
import os
import sys
from typing import Any, Sequence

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from PIL import Image

from tgt_jax import cli
from tgt_jax import errors
from tgt_jax import image_ops
from tgt_jax import pretrained
from tgt_jax import provenance
from tgt_jax import run_guard
from tgt_jax import train
from tgt_jax.data import image_folder
from tgt_jax.data import loading
from tgt_jax.models import build
from tgt_jax.models import classifier as classifier_lib

FORMAT = 'tgt_jax.export.v1'
MODEL_FILE = 'model.json'
# Where pretrained.restore_variables reads the variables back.
VARIABLES_DIR = pretrained.VARIABLES_DIR
# The student-section fields that rebuild the network and its input recipe.
CLASSIFIER_FIELDS = ('depth', 'width_multiplier', 'small_image_stem',
                     'image_size', 'mean', 'std', 'channel_order',
                     'conv_bias', 'strided_conv', 'stride_placement',
                     'strided_padding', 'batch_norm_epsilon')


@dataclasses.dataclass(frozen=True)
class Exported:
  """A loaded export: the classifier, its variables and its classes."""
  classifier: classifier_lib.Classifier
  variables: Any
  class_names: tuple[str, ...]
  input: dict[str, Any]  # image_size, channels, preparation, crop_fraction.

  def probabilities(self, images: np.ndarray) -> np.ndarray:
    """Class probabilities [N, K] of uint8 images [N, S, S, C]."""
    return np.asarray(_probabilities(self.classifier, self.variables,
                                     jnp.asarray(images)))

  def read_image(self, path: str) -> np.ndarray:
    """An image file as uint8 [S, S, C], prepared as at training: a centre
    square crop resized to S (in-memory data), or the evaluation transform
    of the streamed benchmarks (shorter side to S / crop_fraction, centre
    crop)."""
    size, channels = self.input['image_size'], self.input['channels']
    if self.input['preparation'] == 'centre_crop':
      return image_folder.decode_image(path, size, channels)
    with Image.open(path) as image:
      image = image.convert('RGB' if channels == 3 else 'L')
    width, height = image.size
    scale = round(size / self.input['crop_fraction']) / min(width, height)
    width, height = (max(size, round(width * scale)),
                     max(size, round(height * scale)))
    image = image.resize((width, height), Image.Resampling.BILINEAR)
    left, top = (width - size) // 2, (height - size) // 2
    pixels = np.asarray(image.crop((left, top, left + size, top + size)),
                        np.uint8)
    return pixels.reshape(size, size, channels)


def _probabilities(classifier, variables, images):
  """Softmax of the classifier on uint8 images (one jit per classifier)."""
  return _jitted(classifier)(variables, images)


_JITTED = {}


def _jitted(classifier):
  if classifier not in _JITTED:
    _JITTED[classifier] = jax.jit(lambda variables, images: jax.nn.softmax(
        classifier.apply(variables, image_ops.uint8_to_unit(images))[0]))
  return _JITTED[classifier]


def export_student(workdir: str, method: str, out: str,
                   checkpoint: str | None = None) -> dict[str, Any]:
  """Writes OUT/model.json and OUT/variables; returns model.json's content.

  `method` is the student's key in results.json (e.g. 'kd+emb_raw').
  """
  base = method.split('+')[0]
  # Checked before the teachers are loaded and the student rebuilt: first
  # that `workdir` is a run's (it names what is missing, as evaluate does).
  run_guard.read_run_config(workdir)
  trained = run_guard.trained_students(workdir)
  if method not in trained:
    raise errors.WorkdirError(
        f'--method={method}: {workdir} holds no trained student of that '
        f'name; pass one of {trained} (the names results.json uses).')
  path = os.path.join(os.path.abspath(out), VARIABLES_DIR)
  if os.path.exists(path):
    raise errors.WorkdirError(f'{path}: exists already; choose a new --out.')
  run, dataset = train.open_workdir(workdir, [base], checkpoint=checkpoint)
  _, students = train.run_stages(run, dataset, evaluate_all=False)
  student = students[base]
  config = run.config
  streamed = config.dataset.name in loading.STREAMING_NAMES
  record = {
      'format': FORMAT, 'method': method, 'checkpoint': student.chosen,
      'classifier': {field: config.student[field]
                     for field in CLASSIFIER_FIELDS},
      'num_classes': dataset.num_classes,
      'class_names': list(dataset.class_names),
      'input': {'image_size': config.dataset.image_size,
                'channels': config.dataset.channels,
                'preparation': ('resize_and_centre_crop' if streamed
                                else 'centre_crop'),
                'crop_fraction': config.dataset.eval_crop_fraction},
      'source': {'workdir': os.path.abspath(workdir),
                 **provenance.provenance()},
  }
  os.makedirs(out, exist_ok=True)
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(path, jax.device_get(student.variables))
  checkpointer.wait_until_finished()
  checkpointer.close()
  with open(os.path.join(out, MODEL_FILE), 'w') as f:
    json.dump(record, f, indent=2)
  return record


def load(directory: str) -> Exported:
  """The export in `directory` (see the module docstring)."""
  path = os.path.join(directory, MODEL_FILE)
  if not os.path.isfile(path):
    raise FileNotFoundError(f'{path} not found: --export must be a directory '
                            'written by `python -m tgt_jax.export`.')
  with open(path) as f:
    record = json.load(f)
  if record.get('format') != FORMAT:
    raise ValueError(f'{path} has format {record.get("format")!r}; this code '
                     f'reads {FORMAT!r}.')
  classifier = build.classifier(
      ml_collections.ConfigDict(record['classifier']), record['num_classes'])
  variables = pretrained.restore_variables(directory)
  return Exported(classifier=classifier,
                  variables=jax.tree.map(jnp.asarray, variables),
                  class_names=tuple(record['class_names']),
                  input=record['input'])


def define_flags():
  """The command line (only when run as a program: tests import this
  module beside others)."""
  flags.DEFINE_string('workdir', None, 'A workdir written by main.py.')
  flags.DEFINE_string('method', None, 'The student to export, as results.json '
                                      'names it (e.g. tgt_gradient).')
  flags.DEFINE_string('out', None, 'Output directory.')
  flags.DEFINE_enum('checkpoint', None, ('best', 'last'),
                    'Which checkpoint (default: the run\'s report_checkpoint).')


def main(argv: Sequence[str]):
  del argv
  cli.quiet_orbax_logs()
  values = flags.FLAGS
  for name in ('workdir', 'method', 'out'):
    if not values[name].value:
      sys.exit(f'FATAL: --{name} is required.')
  with cli.exit_on(FileNotFoundError, FileExistsError, ValueError):
    record = export_student(values.workdir, values.method, values.out,
                            values.checkpoint)
  print(f'Wrote {values.out}: {record["method"]} ({record["checkpoint"]}), '
        f'{record["num_classes"]} classes.')


if __name__ == '__main__':
  define_flags()
  app.run(main)
