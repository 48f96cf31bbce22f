"""Micro-batch split and join: interleaved rows, exact inverse, one micro-batch on every device."""

import jax
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from stepopsd_jax.train import micro


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
