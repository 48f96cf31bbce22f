"""Micro-batch split and join: interleaved rows, exact inverse, one micro-batch on every device;
rows arranged so trajectories stay whole, and the device-side check of it."""

import jax
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from stepopsd_jax.train import micro
from tests.train.batches import random_step_batch


def test_split_interleaves_rows_and_join_inverts_it():
  rows = np.arange(12 * 3).reshape(12, 3)
  parts = np.asarray(micro.split(rows, 4))
  assert parts.shape == (4, 3, 3)
  for i in range(4):  # by hand: micro-batch i holds rows i, i + 4, i + 8
    np.testing.assert_array_equal(parts[i], rows[[i, i + 4, i + 8]])
  np.testing.assert_array_equal(np.asarray(micro.join(parts)), rows)


@pytest.mark.skipif(jax.device_count() < 4, reason="needs 4 (fake) devices")
def test_every_micro_batch_spans_every_device():
  mesh = jax.sharding.Mesh(np.asarray(jax.devices()[:4]), ("data",))
  rows = jax.device_put(np.arange(16), NamedSharding(mesh, PartitionSpec("data")))
  parts = jax.jit(lambda x: micro.split(x, 2))(rows)
  # no rows move: each device keeps its 4 rows, 2 in each micro-batch
  assert parts.sharding.shard_shape(parts.shape) == (2, 2)
  for shard in parts.addressable_shards:
    d = mesh.devices.tolist().index(shard.device)
    assert sorted(np.asarray(shard.data).ravel().tolist()) == list(range(4 * d, 4 * d + 4))


def test_arrange_keeps_every_trajectory_in_one_micro_batch():
  batch = random_step_batch(vocab=32, rows=8)  # trajectories of 2, 1, 3, 1 rows, then 1 pad
  np.testing.assert_array_equal(batch.traj_id, [0, 0, 1, 2, 2, 2, 3, 0])
  out = micro.arrange(batch, 2)
  # by hand, first-fit decreasing into 2 micro-batches of 4 rows: trajectory 2 (3 rows) and
  # 1 -> micro-batch 0, trajectory 0 (2 rows), 3 and the padding row -> micro-batch 1; each
  # holds its trajectories in their original order, at rows 0, 2, 4, 6 and 1, 3, 5, 7
  order = [2, 0, 3, 1, 4, 6, 5, 7]
  for name in ("traj_id", "step_idx", "row_valid", "prompt_tokens", "control_mask"):
    np.testing.assert_array_equal(getattr(out, name), np.asarray(getattr(batch, name))[order])
  assert not bool(micro.whole_trajectories(batch.traj_id, batch.row_valid, 2))
  assert bool(micro.whole_trajectories(out.traj_id, out.row_valid, 2))


def test_arrange_leaves_a_batch_that_does_not_pack():
  batch = random_step_batch(vocab=32, rows=8)
  assert micro.arrange(batch, 4) is batch  # 4 micro-batches of 2 rows: trajectory 2 has 3
  assert micro.arrange(batch, 1) is batch


@pytest.mark.parametrize("traj_id,valid,n,whole", [
    ([0, 0, 1, 1], [1, 1, 1, 1], 2, False),  # rows 0 and 1 sit in micro-batches 0 and 1
    ([0, 1, 0, 1], [1, 1, 1, 1], 2, True),
    ([0, 1, 0, 0], [1, 1, 1, 0], 2, True),  # the invalid row 3 does not count
    ([0, 1, 2, 0, 1, 2], [1] * 6, 3, True),
    ([0, 1, 2, 0, 2, 1], [1] * 6, 3, False)])
def test_whole_trajectories_by_hand(traj_id, valid, n, whole):
  got = micro.whole_trajectories(np.asarray(traj_id, np.int32), np.asarray(valid, bool), n)
  assert bool(got) == whole
