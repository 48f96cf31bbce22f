"""Model internals: causality, remat equivalence, the KV-cache path equals full recompute."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stepopsd_jax import models
from stepopsd_jax.models import qwen
from stepopsd_jax.models.qwen import Qwen


@pytest.fixture(scope="module")
def tiny():
  config = models.get_preset("qwen3_tiny")
  return config, models.init_params(config, jax.random.key(0))


def test_attention_is_causal(tiny):
  """d(hidden at position t) / d(input embedding at s) is zero for every s > t."""
  config, params = tiny
  t_len = 7
  tokens = jnp.arange(t_len, dtype=jnp.int32)[None] + 3
  module = Qwen(config)
  x = module.apply({"params": params}, tokens, method=Qwen.embed)
  positions = jnp.arange(t_len)[None]
  mask = models.causal_mask(jnp.ones((1, t_len), bool), t_len)

  def hidden_sums(x):
    h, _ = module.apply({"params": params}, x, positions, mask, method=Qwen.decode)
    return h[0].sum(-1)  # [T]

  jacobian_TxT = jnp.abs(jax.jit(jax.jacrev(hidden_sums))(x)[:, 0]).sum(-1)
  later = np.triu(np.ones((t_len, t_len), bool), k=1)
  assert np.all(np.asarray(jacobian_TxT)[later] == 0.0)
  assert np.all(np.asarray(jacobian_TxT)[~later] > 0.0)


@pytest.mark.parametrize("policy", ["full", "dots"])
def test_remat_changes_nothing_numerically(tiny, policy):
  config, params = tiny
  tokens = jnp.asarray(np.random.RandomState(0).randint(0, config.vocab_size, (2, 6)))

  def loss(p, c):
    return models.logits(c, p, tokens).mean()

  g_plain = jax.jit(jax.grad(loss), static_argnums=1)(params, config)
  g_remat = jax.jit(jax.grad(loss), static_argnums=1)(params, config.replace(remat_policy=policy))
  for a, b in zip(jax.tree.leaves(g_plain), jax.tree.leaves(g_remat)):
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_cached_forward_equals_full_recompute(tiny):
  """Prefill a left-padded prompt into the cache, then feed 3 tokens one at a time."""
  config, params = tiny
  rng = np.random.RandomState(1)
  tokens = jnp.asarray(rng.randint(0, config.vocab_size, (2, 9)), jnp.int32)
  mask = jnp.asarray(np.arange(9)[None] >= np.array([[0], [3]]))  # row 1 has 3 pad slots
  full = models.logits(config, params, tokens, mask)
  prompt_len, cache_len = 6, 12
  key_mask = jnp.zeros((2, cache_len), bool).at[:, :9].set(mask)
  positions = models.default_positions(mask)
  cache = models.init_cache(config, 2, cache_len)
  out, cache = models.forward_with_cache(config, params, tokens[:, :prompt_len],
                                         positions[:, :prompt_len], key_mask, cache, 0)
  real = np.asarray(mask[:, :prompt_len])  # padded queries see no keys: their output is unused
  np.testing.assert_allclose(out[real], full[:, :prompt_len][real], atol=1e-5)
  for t in range(prompt_len, 9):
    out, cache = models.forward_with_cache(config, params, tokens[:, t:t + 1],
                                           positions[:, t:t + 1], key_mask, cache, t)
    np.testing.assert_allclose(out[:, 0], full[:, t], atol=1e-5)
  last, last_cache = models.forward_with_cache(
      config, params, tokens[:, :prompt_len], positions[:, :prompt_len], key_mask,
      models.init_cache(config, 2, cache_len), 0, last_only=True)
  assert last.shape == (2, 1, config.vocab_size)
  np.testing.assert_allclose(last[:, 0], full[:, prompt_len - 1], atol=1e-5)
  prefix = models.init_cache(config, 2, cache_len)
  _, prefix = models.forward_with_cache(config, params, tokens[:, :prompt_len],
                                        positions[:, :prompt_len], key_mask, prefix, 0)
  for name in ("k", "v"):
    np.testing.assert_array_equal(last_cache[name], prefix[name])


DECODE_CONFIGS = {
    "qwen3_tiny": models.get_preset("qwen3_tiny"),
    "qwen2_tiny": models.get_preset("qwen2_tiny"),  # q/k/v biases, untied lm_head
    "qwen3_bias_gqa3_untied": models.get_preset(  # o_proj bias too, 3 query heads per KV head
        "qwen3_tiny", num_heads=6, num_kv_heads=2, head_dim=16, qkv_bias=True,
        tie_embeddings=False),
}


@pytest.mark.parametrize("name", sorted(DECODE_CONFIGS))
def test_decode_step_equals_full_recompute(name):
  """The sampler's one-token path (`qwen.decode_*`, fused and unrolled) against the scanned
  module recomputing the whole left-padded sequence."""
  from stepopsd_jax.models import qwen  # pylint: disable=g-import-not-at-top
  config = DECODE_CONFIGS[name]
  params = models.init_params(config, jax.random.key(1))
  params = jax.tree.map(lambda x: x + 0.05 * jax.random.normal(jax.random.key(2), x.shape),
                        params)  # non-zero biases, non-unit norms
  rng = np.random.RandomState(3)
  tokens = jnp.asarray(rng.randint(0, config.vocab_size, (2, 9)), jnp.int32)
  mask = jnp.asarray(np.arange(9)[None] >= np.array([[0], [2]]))  # row 1 has 2 pad slots
  full = models.logits(config, params, tokens, mask)
  prompt_len, length = 5, 11
  positions = models.default_positions(mask)
  _, prefill = models.forward_with_cache(config, params, tokens[:, :prompt_len],
                                         positions[:, :prompt_len], mask[:, :prompt_len],
                                         models.init_cache(config, 2, prompt_len), 0)
  cache = qwen.decode_cache(config, prefill, length)
  weights = qwen.decode_weights(config, params)
  step = jax.jit(functools.partial(qwen.decode_step, config))
  key_mask = jnp.zeros((2, length), bool).at[:, :prompt_len].set(mask[:, :prompt_len])
  for t in range(prompt_len, 9):
    key_mask = key_mask.at[:, t].set(True)
    out, cache = step(weights, tokens[:, t], positions[:, t], key_mask, cache, t)
    np.testing.assert_allclose(out, full[:, t], atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("name,layers", [(name, 0) for name in sorted(DECODE_CONFIGS)]
                         + [("qwen3_tiny", 1), ("qwen3_tiny", 2)])
def test_prefill_step_equals_the_module_on_packed_prompts(name, layers):
  """The sampler's prefill (`qwen.prefill_step`: fused weights, the last layer at the read
  tokens only) against the scanned module with a cache (`hidden_with_cache`, the path the
  transformers parity tests check): row 0 packs two prompts (each attends to itself, at its own
  positions), row 1 holds one left-padded prompt; query blocks of 4. Logits of each prompt's
  last token, and every layer's keys and values at the real slots. `layers`: 3 layers, the two
  before the last in a layer scan (1) or in a scan unrolled two at a time (2)."""
  config = DECODE_CONFIGS[name].replace(attention_block=4)
  if layers:
    config = config.replace(num_layers=3, layer_unroll=layers)
  params = models.init_params(config, jax.random.key(1))
  params = jax.tree.map(lambda x: x + 0.05 * jax.random.normal(jax.random.key(2), x.shape),
                        params)  # non-zero biases, non-unit norms
  tokens = jnp.asarray(np.random.RandomState(4).randint(0, config.vocab_size, (2, 10)), jnp.int32)
  segments = jnp.asarray([[1, 1, 1, 1, 2, 2, 2, 2, 2, 2], [0, 0, 0, 3, 3, 3, 3, 3, 3, 3]])
  positions = jnp.asarray([[0, 1, 2, 3, 0, 1, 2, 3, 4, 5], [0, 0, 0, 0, 1, 2, 3, 4, 5, 6]])
  mask = ((segments[:, :, None] == segments[:, None, :]) & (segments[:, None, :] > 0)
          & jnp.tril(jnp.ones((10, 10), bool))[None])
  last = jnp.asarray([3, 9, 19])  # the three prompts' last tokens, in the flattened rows
  logits, cache = jax.jit(functools.partial(qwen.prefill_step, config))(
      qwen.decode_weights(config, params, stacked=True), tokens, positions, mask, last)
  h, ref_cache = models.hidden_with_cache(config, params, tokens, positions, mask,
                                          models.init_cache(config, 2, 10), 0)
  ref = models.project(config, params, h).reshape(20, -1)[last]
  np.testing.assert_allclose(logits, ref, atol=2e-5, rtol=1e-5)
  real = np.asarray(segments > 0)
  for i, layer in enumerate(cache):
    np.testing.assert_allclose(np.asarray(layer["k"]).transpose(0, 3, 1, 2)[real],
                               np.asarray(ref_cache["k"][i]).transpose(0, 2, 1, 3)[real],
                               atol=2e-5, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(layer["v"]).transpose(0, 2, 1, 3)[real],
                               np.asarray(ref_cache["v"][i]).transpose(0, 2, 1, 3)[real],
                               atol=2e-5, rtol=1e-5)


def test_dense_equals_the_einsum_and_its_gradient():
  """`dense` flattens the tokens into rows; values and both gradients equal the einsum's."""
  k = jax.random.split(jax.random.key(0), 4)
  cases = [("btd,dnh->btnh", (2, 3, 8), (8, 4, 5), 1),
           ("btnh,nhd->btd", (2, 3, 4, 5), (4, 5, 8), 2),
           ("btd,df->btf", (3, 5, 8), (8, 6), 1)]
  for spec, x_shape, w_shape, n_in in cases:
    x, w = jax.random.normal(k[0], x_shape), jax.random.normal(k[1], w_shape)
    c = jax.random.normal(k[2], jnp.einsum(spec, x, w).shape)
    ours = jax.grad(lambda a, b: jnp.sum(qwen.dense(a, b, n_in) * c), argnums=(0, 1))(x, w)
    ref = jax.grad(lambda a, b: jnp.sum(jnp.einsum(spec, a, b) * c), argnums=(0, 1))(x, w)
    np.testing.assert_allclose(qwen.dense(x, w, n_in), jnp.einsum(spec, x, w), rtol=1e-5,
                               atol=1e-5)
    for a, b in zip(ours, ref):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("unroll", [0, 2])
def test_unrolled_layers_equal_the_layer_scan(unroll):
  """The 3-layer model unrolled (0: all layers; 2: an uneven split) gives the scan's logits and
  gradients; the parameters keep their stacked layout."""
  scanned = models.get_preset("qwen3_tiny", num_layers=3, layer_unroll=1)
  params = models.init_params(scanned, jax.random.key(0))
  tokens = jnp.asarray(np.random.RandomState(0).randint(0, scanned.vocab_size, (2, 6)))
  loss = jax.jit(lambda p, c: models.logits(c, p, tokens).std(), static_argnums=1)
  grad = jax.jit(jax.grad(lambda p, c: models.logits(c, p, tokens).std()), static_argnums=1)
  unrolled = scanned.replace(layer_unroll=unroll)
  assert unrolled.scan_unroll == (unroll or 3)
  np.testing.assert_allclose(loss(params, unrolled), loss(params, scanned), rtol=1e-6)
  for a, b in zip(jax.tree.leaves(grad(params, unrolled)), jax.tree.leaves(grad(params, scanned))):
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_attention_blocks_cover_the_queries_once():
  assert qwen.attention_blocks(10, 4) == [(0, 4), (4, 8), (8, 10)]
  assert qwen.attention_blocks(10, 0) == [(0, 10)] == qwen.attention_blocks(10, 16)
  with pytest.raises(ValueError, match="attention_block=-1"):
    models.get_preset("qwen3_tiny", attention_block=-1)


def test_blocked_attention_equals_one_block():
  """Blocks of 4 or 5 queries (the last one short) give one block's logits at every real
  position and its gradients, with left padding, and the cached prefill path (cache filled from
  slot 0) gives the same logits. (A padding query attends to nothing; what it returns differs
  by block and is never read.)"""
  one = models.get_preset("qwen3_tiny", attention_block=0)
  params = models.init_params(one, jax.random.key(0))
  rng = np.random.RandomState(2)
  tokens = jnp.asarray(rng.randint(0, one.vocab_size, (2, 11)), jnp.int32)
  mask = jnp.asarray(np.arange(11)[None] >= np.array([[0], [3]]))
  loss = lambda p, c: jnp.sum(models.logits(c, p, tokens, mask) * mask[..., None]) / 100
  for block in (4, 5):
    blocked = one.replace(attention_block=block)
    real = np.asarray(mask)[..., None]
    np.testing.assert_allclose(np.where(real, models.logits(blocked, params, tokens, mask), 0),
                               np.where(real, models.logits(one, params, tokens, mask), 0),
                               atol=2e-5, rtol=1e-5)
    g1, gb = (jax.grad(loss)(params, c) for c in (one, blocked))
    for a, b in zip(jax.tree.leaves(gb), jax.tree.leaves(g1)):
      np.testing.assert_allclose(a, b, atol=2e-6)
    positions = models.default_positions(mask)
    cached = [models.forward_with_cache(c, params, tokens, positions, mask,
                                        models.init_cache(c, 2, 11), 0, last_only=True)[0]
              for c in (one, blocked)]
    np.testing.assert_allclose(cached[1], cached[0], atol=2e-5, rtol=1e-5)


def test_layer_unroll_resolves_by_depth_and_rejects_negatives():
  assert models.get_preset("qwen3_tiny", num_layers=8).scan_unroll == 8
  assert models.get_preset("qwen3_1p7b").scan_unroll == 1  # 28 layers: compile time stays flat
  assert models.get_preset("qwen3_1p7b", layer_unroll=4).scan_unroll == 4
  with pytest.raises(ValueError, match="layer_unroll=-1"):
    models.get_preset("qwen3_tiny", layer_unroll=-1)
