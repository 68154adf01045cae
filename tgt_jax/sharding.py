"""Data parallelism: one device mesh, parameters replicated, batch split.

Everything is `jax.jit` over a `Mesh` with a single 'data' axis. Parameters,
optimiser state and frozen teachers are replicated; every batch is split along
its leading axis. BatchNorm statistics then cover the global batch with no
explicit collective. Each process (host) supplies only its own slice of the
global batch, so the same code runs on one CPU, one GPU or a TPU pod slice.
"""

from typing import Any

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec
import numpy as np

DATA_AXIS = 'data'


def create_mesh(devices=None) -> Mesh:
  """A 1-D mesh over all devices of all processes."""
  devices = jax.devices() if devices is None else devices
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def check_batch_size(batch_size: int, mesh: Mesh, what: str = 'batch_size'):
  """Raises a ValueError naming the fix when the batch cannot be split."""
  num_devices = mesh.devices.size
  if batch_size % num_devices:
    raise ValueError(
        f'{what}={batch_size} is not divisible by the number of devices '
        f'({num_devices}). Set --config.{what} to a multiple of '
        f'{num_devices}, e.g. '
        f'{max(1, batch_size // num_devices) * num_devices}.')
  if batch_size % jax.process_count():
    raise ValueError(
        f'{what}={batch_size} is not divisible by the number of processes '
        f'({jax.process_count()}).')


def local_slice(global_batch_size: int) -> slice:
  """The rows of a global batch that this process feeds."""
  per_process = global_batch_size // jax.process_count()
  start = jax.process_index() * per_process
  return slice(start, start + per_process)


def put_batch(local_batch: Any, mesh: Mesh) -> Any:
  """Assembles global arrays from each process's rows of the batch."""
  sharding = batch_sharded(mesh)
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(sharding, x),
      local_batch)


def put_replicated(tree: Any, mesh: Mesh) -> Any:
  """Places a pytree (same values on every process) on all devices."""
  return jax.device_put(tree, replicated(mesh))
