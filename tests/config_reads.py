"""Which config fields the code reads: a recorder for the schema test.

`record_reads()` patches ml_collections' ConfigDict for the duration of a
`with` block and collects the dotted path of every field read by code under
tgt_jax/ or main.py, through attribute access, `config[key]` or
`config.get(key)`. Bulk reads (to_json for fingerprints, items, copies,
comparisons) do not count: a field only they touch is read by no code.
Copies made by `copy_and_resolve_references` keep their original's paths.
"""

import contextlib
import os
import sys

from ml_collections.config_dict import config_dict

import conftest

_PACKAGE = os.path.join(conftest.REPO, 'tgt_jax') + os.sep
_MAIN = os.path.join(conftest.REPO, 'main.py')
_ML_COLLECTIONS = os.path.dirname(os.path.dirname(config_dict.__file__))
_BULK = {'to_dict', 'to_json', '_json_dumps_wrapper', 'items', 'values',
         'iteritems', 'itervalues', '__eq__', '__repr__', '__str__', 'update',
         'copy_and_resolve_references', 'eq_as_configdict', 'default'}


def _paths(config, prefix='', out=None):
  """{id(section): dotted path} of a ConfigDict and its sub-sections."""
  out = {} if out is None else out
  out[id(config)] = prefix
  for key, value in config.items(preserve_field_references=True):
    if isinstance(value, config_dict.ConfigDict):
      _paths(value, f'{prefix}{key}.', out)
  return out


def _reader(frame):
  """The file of the first caller outside ml_collections, or None if the
  read is part of a bulk operation."""
  while frame is not None:
    filename = frame.f_code.co_filename
    if filename.startswith(_ML_COLLECTIONS) or 'json' in filename:
      if frame.f_code.co_name in _BULK:
        return None
      frame = frame.f_back
      continue
    return filename
  return None


class Recorder:
  """The paths read so far (`reads`); `register` names a config's sections
  (an unregistered section's reads are recorded under '?.')."""

  def __init__(self):
    self.reads = set()
    self.paths = {}

  def register(self, config) -> None:
    self.paths.update(_paths(config))


@contextlib.contextmanager
def record_reads():
  """Yields a Recorder of the dotted paths read inside the block."""
  recorder = Recorder()
  reads, paths = recorder.reads, recorder.paths
  original_getitem = config_dict.ConfigDict.__getitem__
  original_copy = config_dict.ConfigDict.copy_and_resolve_references

  def getitem(self, key):
    value = original_getitem(self, key)
    reader = _reader(sys._getframe(1))  # pylint: disable=protected-access
    if reader and (reader.startswith(_PACKAGE) or reader == _MAIN):
      reads.add(paths.get(id(self), '?.') + str(key))
    return value

  def copy(self, visit_map=None):
    result = original_copy(self, visit_map)
    if visit_map is None and id(self) in paths:  # Map the copy's sections.
      prefix = paths[id(self)]
      for (_, path), (copy_id, _) in zip(_paths(self, prefix).items(),
                                         _paths(result, prefix).items()):
        paths[copy_id] = path
    return result

  config_dict.ConfigDict.__getitem__ = getitem
  config_dict.ConfigDict.copy_and_resolve_references = copy
  try:
    yield recorder
  finally:
    config_dict.ConfigDict.__getitem__ = original_getitem
    config_dict.ConfigDict.copy_and_resolve_references = original_copy
