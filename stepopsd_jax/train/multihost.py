"""One global StepBatch from every process's own rollouts (multi-host training).

Each process rolls out its own shard of the tasks, so its StepBatch has its own rows and its own
bucketed widths, and numbers its trajectories and groups from 0. Before the jitted step the
processes agree on the widest shapes (one small all-gather), re-pad to them, and place their rows
as their part of one global array (rows over the mesh's data and fsdp axes). Process i's rows
sit at [i * rows, (i + 1) * rows) of it, and its ids move by the same offset, so they stay
unique and inside [0, B) of the global batch (the step renumbers them densely anyway). On one
process this is the identity.

The rollout metrics that process 0 logs are likewise of every process's episodes: each process's
raw tally (outcomes and counters) is all-gathered and merged before the means are taken.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from stepopsd_jax import sharding
from stepopsd_jax.rollout import loop
from stepopsd_jax.rollout.stepbatch import check_ids, repad

ID_FIELDS = ("traj_id", "group_id")  # anchor groups are keyed by (group_id, anchor_id)


def offset_ids(arrays: dict[str, np.ndarray], process_index: int) -> dict[str, np.ndarray]:
  """Trajectory and group ids moved to where this process's rows sit in the global batch:
  local ids lie in [0, rows), so process i's become [i * rows, (i + 1) * rows)."""
  rows = len(arrays["row_valid"])
  check_ids(arrays["traj_id"], arrays["group_id"], arrays["row_valid"])
  return {k: (v + np.int32(process_index * rows) if k in ID_FIELDS else v)
          for k, v in arrays.items()}


def shape_of(arrays: dict[str, np.ndarray]) -> np.ndarray:
  """(rows, prompt width, teacher prompt width) of a StepBatch."""
  return np.array([*arrays["prompt_tokens"].shape, arrays["teacher_prompt_tokens"].shape[1]],
                  np.int32)


def global_step_batch(arrays: dict[str, np.ndarray], mesh: Mesh, pad_id: int = 0) -> dict:
  """This process's StepBatch as its rows of a global batch; unchanged on a single process."""
  if jax.process_count() == 1:
    return arrays
  widest = np.asarray(multihost_utils.process_allgather(shape_of(arrays))).max(axis=0)
  local = offset_ids(repad(arrays, *map(int, widest), pad_id=pad_id), jax.process_index())
  rows = sharding.batch_sharding(mesh, 1).spec  # rows over (data, fsdp); the rest replicated
  return multihost_utils.host_local_array_to_global_array(local, mesh, rows)


def allgather_json(obj: Any) -> list[Any]:
  """Every process's JSON-serialisable `obj`, in process order (a list of one on one process)."""
  if jax.process_count() == 1:
    return [obj]
  data = np.frombuffer(json.dumps(obj).encode(), np.uint8)
  sizes = np.asarray(multihost_utils.process_allgather(np.int32(data.size))).reshape(-1)
  padded = np.zeros(int(sizes.max()), np.uint8)
  padded[:data.size] = data
  gathered = np.asarray(multihost_utils.process_allgather(padded)).reshape(len(sizes), -1)
  return [json.loads(row[:n].tobytes()) for row, n in zip(gathered, sizes)]


def global_rollout_metrics(tally: loop.RolloutTally) -> dict[str, float]:
  """Rollout metrics over all processes' episodes (this process's own on one process)."""
  if jax.process_count() == 1:
    return tally.metrics()
  tallies = [loop.RolloutTally(**t) for t in allgather_json(dataclasses.asdict(tally))]
  return loop.merge_tallies(tallies).metrics()
