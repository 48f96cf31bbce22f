"""The functional model API that notebooks, the sampler and the train step use."""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from stepopsd_jax.models.config import QwenConfig
from stepopsd_jax.models.qwen import KVCache, Qwen

Params = dict


def _module(config: QwenConfig) -> Qwen:
  return Qwen(config)


def _dummy_inputs():
  tokens = jnp.zeros((1, 1), jnp.int32)
  return tokens, tokens, jnp.ones((1, 1, 1), bool)


def _boxed_init(config: QwenConfig, rng: Array):
  return _module(config).init(rng, *_dummy_inputs())["params"]


def _abstract_boxed(config: QwenConfig):
  return jax.eval_shape(functools.partial(_boxed_init, config), jax.random.key(0))


def init_params(config: QwenConfig, rng: Array) -> Params:
  """Random parameters (normal(0.02) kernels, unit norms, zero biases) as a plain pytree."""
  return nn.unbox(jax.jit(_boxed_init, static_argnums=0)(config, rng))


def param_shapes(config: QwenConfig) -> Params:
  """`jax.ShapeDtypeStruct` of every parameter, without allocating any memory."""
  return nn.unbox(_abstract_boxed(config))


def param_logical_axes(config: QwenConfig) -> Params:
  """A `PartitionSpec` of logical axis names (e.g. ('layers', 'embed', 'mlp')) per parameter."""
  return nn.get_partition_spec(_abstract_boxed(config))


def count_params(config: QwenConfig) -> int:
  return sum(x.size for x in jax.tree.leaves(param_shapes(config)))


def default_positions(attention_mask: Bool[Array, "B T"]) -> Int[Array, "B T"]:
  """Positions of a left-padded batch: 0 at each row's first real token, 0 on padding."""
  return jnp.maximum(jnp.cumsum(attention_mask.astype(jnp.int32), axis=-1) - 1, 0)


def causal_mask(key_mask_BxS: Bool[Array, "B S"], num_queries: int,
                query_offset: Int[Array, ""] | int = 0) -> Bool[Array, "B T S"]:
  """Query t (at cache slot query_offset + t) sees valid keys in slots <= its own."""
  q_slot = query_offset + jnp.arange(num_queries)
  k_slot = jnp.arange(key_mask_BxS.shape[-1])
  return (k_slot[None, :] <= q_slot[:, None])[None] & key_mask_BxS[:, None, :]


@functools.partial(jax.jit, static_argnames=("config",))
def logits(config: QwenConfig, params: Params, tokens: Int[Array, "B T"],
           attention_mask: Bool[Array, "B T"] | None = None,
           positions: Int[Array, "B T"] | None = None) -> Float[Array, "B T V"]:
  """f32 logits of a (left-padded) batch; positions default to the mask's cumulative count."""
  if attention_mask is None:
    attention_mask = jnp.ones(tokens.shape, bool)
  attention_mask = attention_mask.astype(bool)
  if positions is None:
    positions = default_positions(attention_mask)
  mask = causal_mask(attention_mask, tokens.shape[1])
  out, _ = _module(config).apply({"params": params}, tokens, positions, mask)
  return out


def hidden_states(config: QwenConfig, params: Params, tokens: Int[Array, "B T"],
                  attention_mask: Bool[Array, "B T"], positions: Int[Array, "B T"]):
  """Final-normed hidden states [B, T, D] (for value heads); not jitted, call inside a jit."""
  mask = causal_mask(attention_mask.astype(bool), tokens.shape[1])
  h, _ = _module(config).apply({"params": params}, tokens, positions, mask,
                               method=Qwen.hidden)
  return h


def hidden_with_cache(config: QwenConfig, params: Params, tokens: Int[Array, "B T"],
                      positions: Int[Array, "B T"], mask: Bool[Array, "B T S"], cache: KVCache,
                      cache_index: Int[Array, ""] | int = 0):
  """Final-normed hidden states [B, T, D] and the cache with T new slots written at
  `cache_index`, under any causal attention mask (no key after its query; e.g. several prompts
  packed into one row, each seeing only itself). Not jitted: call inside a jit."""
  return _module(config).apply({"params": params}, tokens, positions, mask, cache, cache_index,
                               method=Qwen.hidden)


def project(config: QwenConfig, params: Params, h: Float[Array, "B T D"]) -> Float[Array, "B T V"]:
  """Hidden states to f32 logits (tied embedding or lm_head)."""
  return _module(config).apply({"params": params}, h, method=Qwen.project)


def init_cache(config: QwenConfig, batch: int, length: int, dtype=None) -> KVCache:
  """An empty KV cache [L, B, K, S, H] for `length` slots (prompt + generated tokens)."""
  shape = (config.num_layers, batch, config.num_kv_heads, length, config.head_dim)
  dtype = dtype or config.jnp_dtype
  return {"k": jnp.zeros(shape, dtype), "v": jnp.zeros(shape, dtype)}


def forward_with_cache(config: QwenConfig, params: Params, tokens: Int[Array, "B T"],
                       positions: Int[Array, "B T"], key_mask: Bool[Array, "B S"],
                       cache: KVCache, cache_index: Int[Array, ""] | int, last_only: bool = False):
  """Writes T new tokens into cache slots [cache_index, cache_index + T); returns logits, cache.

  `key_mask` marks the valid slots of the whole cache (prompt padding is False), including the
  slots being written now. `last_only`: logits of the last token only, [B, 1, V] (a prefill
  needs no more; [B, T, V] f32 logits of a long prompt would dwarf the cache). Not jitted: the
  sampler jits prefill and decode around it.
  """
  mask = causal_mask(key_mask, tokens.shape[1], cache_index)
  if not last_only:
    return _module(config).apply({"params": params}, tokens, positions, mask, cache, cache_index)
  h, cache = _module(config).apply({"params": params}, tokens, positions, mask, cache, cache_index,
                                   method=Qwen.hidden)
  return project(config, params, h[:, -1:]), cache
