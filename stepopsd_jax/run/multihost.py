"""One global StepBatch from every process's own rollouts, and rollout metrics over all of them.

Each process rolls out its own shard of the tasks, so its StepBatch has its own rows and its own
bucketed widths, and numbers its trajectories and groups from 0. Before the jitted step the
processes agree on the widest shapes, re-pad to them, and place their rows as their part of
one global array (`sharding.rows`). Process i's rows sit at [i * rows, (i + 1) * rows) of it,
and its ids move by the same offset, so they stay unique and inside [0, B) of the global batch
(the step renumbers them densely anyway). On one process this is the identity.

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
from stepopsd_jax.batch import StepBatch
from stepopsd_jax.rollout import RolloutTally, merge_tallies
from stepopsd_jax.rollout.stepbatch import check_ids
from stepopsd_jax.train import micro


def offset_ids(batch: StepBatch, process_index: int) -> StepBatch:
  """Trajectory and group ids moved to where this process's rows sit in the global batch:
  local ids lie in [0, rows), so process i's become [i * rows, (i + 1) * rows)."""
  check_ids(np.asarray(batch.traj_id), np.asarray(batch.group_id), np.asarray(batch.row_valid))
  offset = np.int32(process_index * batch.sizes()["B"])
  return batch.replace(traj_id=batch.traj_id + offset, group_id=batch.group_id + offset)


def global_step_batch(batch: StepBatch, mesh: Mesh, pad_id: int = 0,
                      micro_batches: int = 1) -> StepBatch:
  """This process's StepBatch as its rows of a global batch; unchanged on a single process
  except that, with `micro_batches` > 1, rows are ordered so each trajectory's rows fall in one
  micro-batch where they pack (`micro.arrange`: StepOPSD's budget then needs no extra pass)."""
  if jax.process_count() == 1:
    return micro.arrange(batch, micro_batches)
  size = batch.sizes()
  rows, prompt, teacher = sharding.widest((size["B"], size["P"], size["T"]))
  local = offset_ids(batch.repad(rows, prompt, teacher, pad_id=pad_id), jax.process_index())
  # process i's rows start at i * rows: residues mod micro_batches line up when rows divides
  return sharding.to_global(micro.arrange(local, micro_batches), mesh)


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


def global_rollout_metrics(tally: RolloutTally) -> dict[str, float]:
  """Rollout metrics over all processes' episodes (this process's own on one process)."""
  if jax.process_count() == 1:
    return tally.metrics()
  tallies = [RolloutTally(**t) for t in allgather_json(dataclasses.asdict(tally))]
  return merge_tallies(tallies).metrics()
