"""Greedy sampling with weights placed by the logical-axis rules equals single-device sampling."""

import jax
import numpy as np
import pytest

from stepopsd_jax import models, sampling, sharding

BUCKETS = sampling.Buckets(batch=(4,), prompt=(16,))  # 4 rows: divisible by data x fsdp below
PARAMS = sampling.SamplingParams(max_new_tokens=6, temperature=0.0)
PROMPTS = [[5, 6, 7], [9, 10, 11, 12, 13, 14, 15, 16, 17, 18], [3], [40, 41]]


@pytest.fixture(scope="module")
def tiny():
  config = models.get_preset("qwen3_tiny")
  return config, models.init_params(config, jax.random.key(0))


@pytest.fixture(scope="module")
def unsharded(tiny):
  config, weights = tiny
  sampler = sampling.Sampler(config, PARAMS, pad_id=0, buckets=BUCKETS)
  return sampler.generate(weights, PROMPTS, jax.random.key(1))


def _sharded_generate(config, weights, mesh):
  """The sampler's jitted loop on rule-sharded weights and a batch split over (data, fsdp)."""
  sampler = sampling.Sampler(config, PARAMS, pad_id=0, buckets=BUCKETS)
  shardings = sharding.tree_shardings(models.param_logical_axes(config),
                                      models.param_shapes(config), mesh)
  weights = jax.device_put(weights, shardings)
  tokens, mask, _ = sampler.pad(PROMPTS)
  rows = sharding.batch_sharding(mesh, 2)
  out = sampling.generate_padded(
      config, PARAMS, 0, weights, jax.device_put(tokens, rows), jax.device_put(mask, rows),
      jax.device_put(jax.random.key(1), sharding.replicated(mesh)),
      jax.device_put(sampler.stop_table, sharding.replicated(mesh)))
  return weights, out


@pytest.mark.parametrize("mesh_shape", [(2, 2, 2), (1, 4, 2)])  # (data, fsdp, tensor)
def test_sharded_greedy_tokens_equal_unsharded(tiny, unsharded, mesh_shape):
  config, weights = tiny
  mesh = sharding.make_mesh(*mesh_shape)
  placed, out = _sharded_generate(config, weights, mesh)
  split = [x for x in jax.tree.leaves(placed) if not x.sharding.is_fully_replicated]
  assert len(split) >= 5, "the rules should split the tiny model's kernels over fsdp/tensor"
  assert len(out[0].sharding.device_set) == 8
  tokens, logprobs, lengths, stopped = (np.asarray(x) for x in jax.device_get(out))
  np.testing.assert_array_equal(tokens, unsharded.tokens)
  np.testing.assert_array_equal(lengths, unsharded.lengths)
  np.testing.assert_array_equal(stopped, unsharded.stopped)
  np.testing.assert_allclose(logprobs, unsharded.logprobs, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mesh_shape", [(2, 2, 2), (8, 1, 1)])
def test_sampler_with_a_mesh_equals_unsharded(tiny, unsharded, mesh_shape):
  """The Sampler front end on a mesh: prompt rows and KV cache placed by the rules (4 rows on
  data x fsdp = 8 do not divide, so there the rows are copied and only the cache's heads split)."""
  config, weights = tiny
  mesh = sharding.make_mesh(*mesh_shape)
  weights = jax.device_put(weights, sharding.tree_shardings(
      models.param_logical_axes(config), models.param_shapes(config), mesh))
  sampler = sampling.Sampler(config, PARAMS, pad_id=0, buckets=BUCKETS, mesh=mesh)
  out = sampler.generate(weights, PROMPTS, jax.random.key(1))
  np.testing.assert_array_equal(out.tokens, unsharded.tokens)
  np.testing.assert_array_equal(out.lengths, unsharded.lengths)
  np.testing.assert_allclose(out.logprobs, unsharded.logprobs, rtol=1e-5, atol=1e-5)


def _plain_and_on_mesh(tiny, mesh_shape, buckets, batch):
  """(the one-device sampler without sharing or packing, the default sampler on a mesh with
  rule-placed weights) on `batch`, greedy, the same key; and the mesh."""
  config, weights = tiny
  want = sampling.Sampler(config, PARAMS, pad_id=0, buckets=buckets, share_prompts=False,
                          pack_prompts=False).generate(weights, batch, jax.random.key(1))
  mesh = sharding.make_mesh(*mesh_shape)
  placed = jax.device_put(weights, sharding.tree_shardings(
      models.param_logical_axes(config), models.param_shapes(config), mesh))
  got = sampling.Sampler(config, PARAMS, pad_id=0, buckets=buckets, mesh=mesh).generate(
      placed, batch, jax.random.key(1))
  return want, got, mesh


@pytest.mark.parametrize("mesh_shape", [(2, 2, 2), (8, 1, 1)])
def test_shared_prompts_on_a_mesh_equal_unsharded_unshared(tiny, mesh_shape):
  """8 rows of 3 distinct prompts on a mesh: the distinct prompts' prefill (3 rows, bucket 4) is
  copied to the 8 rows over data x fsdp; tokens as the one-device sampler without sharing."""
  batch = [PROMPTS[i] for i in (0, 1, 0, 2, 0, 1, 2, 0)]
  want, got, _ = _plain_and_on_mesh(tiny, mesh_shape, sampling.Buckets(batch=(4, 8), prompt=(16,)),
                                    batch)
  assert got.stats["prompt_rows_shared"] == 5
  np.testing.assert_array_equal(got.tokens, want.tokens)
  np.testing.assert_array_equal(got.lengths, want.lengths)
  np.testing.assert_allclose(got.logprobs, want.logprobs, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mesh_shape", [(2, 2, 2), (8, 1, 1)])
def test_packed_prompts_on_a_mesh_equal_unsharded_unpacked(tiny, mesh_shape):
  """16 short prompts pack into 2 prefill rows, rounded up to data x fsdp (4 or 8) rows instead
  of 16; each decode row gathers its prompt's cache slots across devices. Tokens as the
  one-device sampler without packing."""
  batch = [[3 + i] * (1 + i % 4) for i in range(16)]
  want, got, mesh = _plain_and_on_mesh(tiny, mesh_shape,
                                       sampling.Buckets(batch=(16,), prompt=(16,)), batch)
  assert got.stats["prefill_rows"] == sharding.data_parallel_size(mesh) < 16
  np.testing.assert_array_equal(got.tokens, want.tokens)
  np.testing.assert_array_equal(got.lengths, want.lengths)
  np.testing.assert_allclose(got.logprobs, want.logprobs, rtol=1e-5, atol=1e-5)
