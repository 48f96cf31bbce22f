"""Rows of one global batch from every process's own rows (multi-host rollouts and steps).

Each process brings its own rows at its own padded widths. They agree on the widest shape (one
small all-gather), each pads its rows to it, and each process's rows become its part of one
global array, rows over the mesh's (data, fsdp) axes. On one process both are the identity.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from stepopsd_jax.sharding.mesh import batch_sharding


def widest(shape: Sequence[int]) -> tuple[int, ...]:
  """The elementwise maximum of `shape` over all processes."""
  if jax.process_count() == 1:
    return tuple(int(x) for x in shape)
  gathered = multihost_utils.process_allgather(np.asarray(shape, np.int64))
  return tuple(int(x) for x in np.asarray(gathered).reshape(-1, len(shape)).max(axis=0))


def to_global(tree: Any, mesh: Mesh) -> Any:
  """This process's rows (equal shapes on every process) as its part of global arrays."""
  if jax.process_count() == 1:
    return tree
  return multihost_utils.host_local_array_to_global_array(tree, mesh,
                                                          batch_sharding(mesh, 1).spec)


def to_local(tree: Any, mesh: Mesh) -> Any:
  """This process's rows of global arrays, back on the host."""
  if jax.process_count() == 1:
    return tree
  return multihost_utils.global_array_to_host_local_array(tree, mesh,
                                                          batch_sharding(mesh, 1).spec)
