"""Qwen2 / Qwen2.5 / Qwen3 dense decoder in Flax Linen.

One module API for the whole codebase: Linen modules applied to a plain params pytree, so the
jitted step, optax, orbax and the sharding rules all see ordinary nested dicts. Parameters carry
logical axis names (`nn.with_logical_partitioning`); the sharding rules map them onto the mesh.
The decoder layers are `nn.scan`-ned: parameters have a leading `layers` axis, and compile time
does not grow with depth (a shallow model's scan is unrolled: `QwenConfig.layer_unroll`).

Each parameter's Hugging Face name is noted beside it (`model.layers.{i}.` is abbreviated `L.`).
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from stepopsd_jax.models.config import QwenConfig

_NEG_INF = float(jnp.finfo(jnp.float32).min)
_REMAT_POLICIES = {
    "full": None,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_with_no_batch_dims": jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
}

# KV cache of all layers: {"k": [L, B, K, S, H], "v": [L, B, K, S, H]} (K kv-heads, H head_dim).
# It travels through the layer scan in the carry and each layer updates its slice in place:
# as a scanned input/output XLA copied the whole cache every decode step (2x slower, measured).
KVCache = dict[str, Array]


def _param(module: nn.Module, name: str, init, shape, axes: tuple[str, ...], dtype):
  return module.param(name, nn.with_logical_partitioning(init, axes), shape, dtype)


_kernel_init = nn.initializers.normal(stddev=0.02)  # HF initializer_range


class RMSNorm(nn.Module):
  """x / rms(x) * scale, computed in f32 and cast back as transformers does."""
  eps: float
  axis_name: str = "norm"
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Float[Array, "... D"]) -> Float[Array, "... D"]:
    scale = _param(self, "scale", nn.initializers.ones, (x.shape[-1],), (self.axis_name,),
                   self.param_dtype)
    return rms_norm(x, scale, self.eps)


def dense(x: Array, w: Array, n_in: int = 1, preferred_element_type=None) -> Array:
  """x [..., *in] contracted with w [*in, *out] (`n_in` axes), as one 2-D matmul over the tokens
  flattened into rows. The weight gradient then contracts a single axis; contracting (B, T)
  made XLA:CPU write the activations' gradient transposed first (the base model's GRPO step,
  `bench/step.py --size main`: 1.19 -> 0.92 s)."""
  lead, out = x.shape[:x.ndim - n_in], w.shape[n_in:]
  k = math.prod(w.shape[:n_in])
  y = jnp.dot(x.reshape(-1, k), w.reshape(k, -1), preferred_element_type=preferred_element_type)
  return y.reshape(*lead, *out)


def rms_norm(x: Float[Array, "... D"], scale: Float[Array, "D"], eps: float) -> Array:
  x32 = x.astype(jnp.float32)
  y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
  return scale.astype(x.dtype).reshape((1,) * (x.ndim - 1) + (-1,)) * y.astype(x.dtype)


def apply_rope(x_BxTxNxH: Array, positions_BxT: Array, theta: float) -> Array:
  """Rotary embedding, half-split ("rotate_half") layout as in transformers' Qwen."""
  return rotate(x_BxTxNxH, *rope_cos_sin(positions_BxT, x_BxTxNxH.shape[-1], theta))


def rope_cos_sin(positions: Array, head_dim: int, theta: float) -> tuple[Array, Array]:
  """cos and sin of the rotary angles, [*positions.shape, 1, head_dim / 2] (f32)."""
  half = head_dim // 2
  inv_freq = 1.0 / theta ** (jnp.arange(half, dtype=jnp.float32) / half)
  angles = positions.astype(jnp.float32)[..., None, None] * inv_freq.reshape(
      (1,) * positions.ndim + (1, half))
  return jnp.cos(angles), jnp.sin(angles)


def rotate(x_BxTxNxH: Array, cos: Array, sin: Array) -> Array:
  """`apply_rope` with its cos and sin ([B, T, 1, H / 2], `rope_cos_sin`) given."""
  half = x_BxTxNxH.shape[-1] // 2
  cos, sin = cos.astype(x_BxTxNxH.dtype), sin.astype(x_BxTxNxH.dtype)
  x1, x2 = x_BxTxNxH[..., :half], x_BxTxNxH[..., half:]
  return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)


class Attention(nn.Module):
  """Grouped-query attention with optional q/k/v biases (Qwen2) and q/k RMSNorm (Qwen3)."""
  config: QwenConfig

  def _proj(self, name, x, heads, axes):
    c = self.config
    w = _param(self, f"{name}_kernel", _kernel_init, (c.hidden_size, heads, c.head_dim),
               ("embed",) + axes, c.jnp_param_dtype)
    y = dense(x, w.astype(x.dtype))
    if c.qkv_bias:
      b = _param(self, f"{name}_bias", nn.initializers.zeros, (heads, c.head_dim), axes,
                 c.jnp_param_dtype)
      y = y + b.astype(x.dtype)[None, None]
    return y

  @nn.compact
  def __call__(self, x_BxTxD, positions_BxT, mask_BxTxS, cache, layer, cache_index):
    c = self.config
    q = self._proj("q", x_BxTxD, c.num_heads, ("q_heads", "head_dim"))  # L.self_attn.q_proj
    k = self._proj("k", x_BxTxD, c.num_kv_heads, ("kv_heads", "head_dim"))  # L.self_attn.k_proj
    v = self._proj("v", x_BxTxD, c.num_kv_heads, ("kv_heads", "head_dim"))  # L.self_attn.v_proj
    if c.qk_norm:
      # L.self_attn.q_norm / k_norm
      q = RMSNorm(c.rms_norm_eps, "head_dim", c.jnp_param_dtype, name="q_norm")(q)
      k = RMSNorm(c.rms_norm_eps, "head_dim", c.jnp_param_dtype, name="k_norm")(k)
    q = apply_rope(q, positions_BxT, c.rope_theta)
    k = apply_rope(k, positions_BxT, c.rope_theta)
    k_BxKxSxH, v_BxKxSxH = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)
    if cache is not None:
      cache = {name: _write_layer(cache[name], new, layer, cache_index)
               for name, new in (("k", k_BxKxSxH), ("v", v_BxKxSxH))}
      k_BxKxSxH, v_BxKxSxH = (jax.lax.dynamic_index_in_dim(cache[n], layer, keepdims=False)
                              for n in ("k", "v"))
    # Self-attention from position 0 (no cache, or a cache filled from slot 0 with exactly these
    # T tokens): query blocks may skip the keys after their last query. A traced cache_index
    # (a cache filled elsewhere) attends over every slot.
    from_zero = cache is None or (isinstance(cache_index, int) and cache_index == 0)
    blocks = attention_blocks(q.shape[1], c.attention_block if from_zero and
                              k_BxKxSxH.shape[2] == q.shape[1] else 0)
    out_BxTxNxH = _blocked_gqa(q, k_BxKxSxH.astype(q.dtype), v_BxKxSxH.astype(q.dtype),
                               mask_BxTxS, c.head_dim, blocks)
    wo = _param(self, "o_kernel", _kernel_init, (c.num_heads, c.head_dim, c.hidden_size),
                ("q_heads", "head_dim", "embed"), c.jnp_param_dtype)  # L.self_attn.o_proj
    out_BxTxD = dense(out_BxTxNxH, wo.astype(x_BxTxD.dtype), n_in=2)
    if c.o_bias:  # Qwen3 with attention_bias=True also biases o_proj; Qwen2 never does
      bo = _param(self, "o_bias", nn.initializers.zeros, (c.hidden_size,), ("embed",),
                  c.jnp_param_dtype)
      out_BxTxD = out_BxTxD + bo.astype(out_BxTxD.dtype)[None, None]
    return out_BxTxD, cache


def _write_layer(cache_LxBxKxSxH, new_BxKxTxH, layer, cache_index):
  """Writes T new key/value slots of one layer into the stacked cache, in place."""
  new = new_BxKxTxH.astype(cache_LxBxKxSxH.dtype)[None]
  zero = jnp.zeros((), jnp.int32)
  start = (layer, zero, zero, jnp.asarray(cache_index, jnp.int32), zero)
  return jax.lax.dynamic_update_slice(cache_LxBxKxSxH, new, start)


def attention_blocks(t: int, block: int) -> list[tuple[int, int]]:
  """Query blocks [a, z) of causal self-attention over t tokens; block a:z attends to keys
  [0, z) only, skipping the scores above the diagonal block (`QwenConfig.attention_block`; 0 or
  t <= block: one block over all keys). Every mask this decoder is given is causal (a key
  never after its query), so the skipped scores are masked ones."""
  if block <= 0 or t <= block:
    return [(0, t)]
  return [(a, min(a + block, t)) for a in range(0, t, block)]


def attended_keys(t: int, block: int) -> int:
  """Query-key pairs the blocked causal attention over t tokens scores (per row, head, layer)."""
  return sum((z - a) * z for a, z in attention_blocks(t, block))


def _blocked_gqa(q_BxTxNxH, k_BxKxSxH, v_BxKxSxH, mask_BxTxS, head_dim, blocks):
  """`_gqa` of each query block [a, z) against the keys [0, z), concatenated over the blocks."""
  if len(blocks) == 1:
    return _gqa(q_BxTxNxH, k_BxKxSxH, v_BxKxSxH, mask_BxTxS, head_dim)
  return jnp.concatenate(
      [_gqa(q_BxTxNxH[:, a:z], k_BxKxSxH[:, :, :z], v_BxKxSxH[:, :, :z], mask_BxTxS[:, a:z, :z],
            head_dim) for a, z in blocks], axis=1)


def _gqa(q_BxTxNxH, k_BxKxSxH, v_BxKxSxH, mask_BxTxS, head_dim):
  b, t, n, h = q_BxTxNxH.shape
  kv = k_BxKxSxH.shape[1]
  q_BxTxKxGxH = q_BxTxNxH.reshape(b, t, kv, n // kv, h)
  scores = jnp.einsum("btkgh,bksh->bkgts", q_BxTxKxGxH, k_BxKxSxH,
                      preferred_element_type=jnp.float32) * (head_dim ** -0.5)
  scores = jnp.where(mask_BxTxS[:, None, None, :, :], scores, _NEG_INF)
  probs = jax.nn.softmax(scores, axis=-1).astype(v_BxKxSxH.dtype)
  out = jnp.einsum("bkgts,bksh->btkgh", probs, v_BxKxSxH)
  return out.reshape(b, t, n, h)


class MLP(nn.Module):
  """SwiGLU: down(silu(gate(x)) * up(x))."""
  config: QwenConfig

  @nn.compact
  def __call__(self, x_BxTxD):
    c = self.config
    shape_in, shape_out = (c.hidden_size, c.intermediate_size), (c.intermediate_size, c.hidden_size)
    gate = _param(self, "gate_kernel", _kernel_init, shape_in, ("embed", "mlp"), c.jnp_param_dtype)
    up = _param(self, "up_kernel", _kernel_init, shape_in, ("embed", "mlp"), c.jnp_param_dtype)
    down = _param(self, "down_kernel", _kernel_init, shape_out, ("mlp", "embed"), c.jnp_param_dtype)
    dt = x_BxTxD.dtype
    h_BxTxF = nn.silu(dense(x_BxTxD, gate.astype(dt))) * dense(x_BxTxD, up.astype(dt))  # gate/up
    return dense(h_BxTxF, down.astype(dt))  # L.mlp.down_proj


class DecoderLayer(nn.Module):
  """Pre-norm block; the scan body: carry = (hidden states, cache), scanned input = layer index."""
  config: QwenConfig

  @nn.compact
  def __call__(self, carry, layer, positions_BxT, mask_BxTxS, cache_index):
    x_BxTxD, cache = carry
    c = self.config
    norm = lambda name: RMSNorm(c.rms_norm_eps, "norm", c.jnp_param_dtype, name=name)
    attn_out, cache = Attention(c, name="self_attn")(
        norm("input_layernorm")(x_BxTxD), positions_BxT, mask_BxTxS, cache, layer, cache_index)
    x_BxTxD = x_BxTxD + attn_out
    x_BxTxD = x_BxTxD + MLP(c, name="mlp")(norm("post_attention_layernorm")(x_BxTxD))
    return (x_BxTxD, cache), None


class Qwen(nn.Module):
  """The decoder. `__call__` returns f32 logits; `hidden` the final-normed hidden states."""
  config: QwenConfig

  def setup(self):
    c = self.config
    self.embedding = _param(self, "embed_tokens", _kernel_init, (c.vocab_size, c.hidden_size),
                            ("vocab", "embed"), c.jnp_param_dtype)  # model.embed_tokens
    layer_cls = DecoderLayer
    if c.remat_policy != "none":
      layer_cls = nn.remat(DecoderLayer, policy=_REMAT_POLICIES[c.remat_policy], prevent_cse=False)
    self.layers = nn.scan(
        layer_cls, variable_axes={"params": 0}, split_rngs={"params": True},
        in_axes=(0, nn.broadcast, nn.broadcast, nn.broadcast), length=c.num_layers,
        unroll=c.scan_unroll, metadata_params={nn.PARTITION_NAME: "layers"})(c, name="layers")
    self.norm = RMSNorm(c.rms_norm_eps, "norm", c.jnp_param_dtype)  # model.norm
    if not c.tie_embeddings:
      self.lm_head = _param(self, "lm_head", _kernel_init, (c.hidden_size, c.vocab_size),
                            ("embed", "vocab"), c.jnp_param_dtype)  # lm_head (transposed)

  def hidden(self, tokens_BxT: Int[Array, "B T"], positions_BxT: Int[Array, "B T"],
             mask_BxTxS: Bool[Array, "B T S"], cache: KVCache | None = None,
             cache_index: Int[Array, ""] | int = 0):
    """Final-normed hidden states [B, T, D] and the updated cache (None without a cache)."""
    return self.decode(self.embed(tokens_BxT), positions_BxT, mask_BxTxS, cache, cache_index)

  def embed(self, tokens_BxT: Int[Array, "B T"]) -> Float[Array, "B T D"]:
    return jnp.take(self.embedding, tokens_BxT, axis=0).astype(self.config.jnp_dtype)

  def decode(self, x_BxTxD: Float[Array, "B T D"], positions_BxT, mask_BxTxS, cache=None,
             cache_index=0):
    """The decoder stack on input embeddings: final-normed hidden states and the cache."""
    layers = jnp.arange(self.config.num_layers, dtype=jnp.int32)
    (x_BxTxD, cache), _ = self.layers((x_BxTxD, cache), layers, positions_BxT, mask_BxTxS,
                                      cache_index)
    return self.norm(x_BxTxD), cache

  def project(self, h_BxTxD: Float[Array, "B T D"]) -> Float[Array, "B T V"]:
    """Hidden states to f32 logits (the tied embedding or lm_head), accumulated in f32."""
    head = self.embedding.T if self.config.tie_embeddings else self.lm_head
    return dense(h_BxTxD, head.astype(h_BxTxD.dtype), preferred_element_type=jnp.float32)

  def __call__(self, tokens_BxT, positions_BxT, mask_BxTxS, cache=None, cache_index=0):
    h_BxTxD, cache = self.hidden(tokens_BxT, positions_BxT, mask_BxTxS, cache, cache_index)
    return self.project(h_BxTxD), cache


# One token per row: the sampler's decode loop. The same parameters and, for T = 1, the same
# math as the modules above (tests/models/test_qwen.py checks it against `Qwen`), laid out for a
# loop body that runs once per generated token. In a CPU profile of the decode body,
# the scanned module spent ~25% of a batch-32 step copying: the layer scan sliced every layer's
# weights and the stacked cache out of their [L, ...] arrays each step, and attention's
# one-query einsums became hundreds of tiny batched matmuls. Here each layer's weights are cut
# out once per sampler call (`decode_weights`), q|k|v and gate|up are one matmul each, the layer
# loop is unrolled over per-layer caches, and attention is two batched matmuls over (B, K) with
# the keys stored transposed ([B, K, H, S]), so the scores come out along the contiguous S axis.
# The sampler's prefill (`prefill_step`) runs on the same fused weights and writes this cache
# layout directly; its last layer works only at the tokens whose logits are read.

DecodeCache = tuple[dict[str, Array], ...]  # per layer {"k": [B, K, H, S], "v": [B, K, S, H]}


def decode_weights(config: QwenConfig, params, stacked: bool = False) -> dict:
  """The parameters rearranged for `decode_step` (call it outside the decode loop: one copy).

  q|k|v are grouped by KV head, [D, K, (G + 2) H] (G = query heads per KV head), and gate|up
  stacked as [D, 2, F], so the heads and F axes keep the sharding the rules give them.
  "layers" is a tuple of per-layer dicts, or with `stacked` one dict of [L, ...] arrays (for
  `prefill_step`, whose layers may be a scan).
  """
  c = config
  dt, k, g, h = c.jnp_dtype, c.num_kv_heads, c.num_heads // c.num_kv_heads, c.head_dim
  stack = params["layers"]
  attn, mlp = stack["self_attn"], stack["mlp"]
  grouped = lambda x: x.reshape(x.shape[:-2] + (k, -1))  # [..., N, H] -> [..., K, G H]
  fused = {
      "ln1": stack["input_layernorm"]["scale"], "ln2": stack["post_attention_layernorm"]["scale"],
      "qkv": jnp.concatenate([grouped(attn[n]) for n in ("q_kernel", "k_kernel", "v_kernel")],
                             axis=-1).astype(dt),
      "o": attn["o_kernel"].reshape((c.num_layers, k * g * h, c.hidden_size)).astype(dt),
      "gate_up": jnp.stack([mlp["gate_kernel"], mlp["up_kernel"]], axis=2).astype(dt),
      "down": mlp["down_kernel"].astype(dt)}
  if c.qkv_bias:
    fused["qkv_bias"] = jnp.concatenate(
        [grouped(attn[n]) for n in ("q_bias", "k_bias", "v_bias")], axis=-1).astype(dt)
  if c.o_bias:
    fused["o_bias"] = attn["o_bias"].astype(dt)
  if c.qk_norm:
    fused["q_norm"], fused["k_norm"] = attn["q_norm"]["scale"], attn["k_norm"]["scale"]
  layers = fused if stacked else tuple(_layer(fused, i) for i in range(c.num_layers))
  head = params["embed_tokens"].T if c.tie_embeddings else params["lm_head"]
  return {"embed": params["embed_tokens"].astype(dt), "norm": params["norm"]["scale"],
          "head": head.astype(dt), "layers": layers}


def decode_cache(config: QwenConfig, cache: KVCache, length: int) -> DecodeCache:
  """A stacked cache ([L, B, K, P, H], `Qwen`'s) as `decode_step`'s per-layer cache of `length`
  slots, the P filled ones first."""
  return grow_cache(tuple({"k": cache["k"][i].transpose(0, 1, 3, 2), "v": cache["v"][i]}
                          for i in range(config.num_layers)), length)


def grow_cache(cache: DecodeCache, length: int) -> DecodeCache:
  """A per-layer cache of P slots (`prefill_step`'s) grown to `length` empty-ended slots."""
  grow = lambda x, axis: jnp.pad(x, [(0, length - x.shape[axis]) if a == axis else (0, 0)
                                     for a in range(x.ndim)])
  return tuple({"k": grow(layer["k"], 3), "v": grow(layer["v"], 2)} for layer in cache)


def _layer(stacked: dict, i):
  return jax.tree.map(lambda x: x[i], stacked)


def prefill_step(config: QwenConfig, weights: dict, tokens_NxW: Int[Array, "N W"],
                 positions_NxW: Int[Array, "N W"], mask_NxWxW: Bool[Array, "N W W"],
                 last_B: Int[Array, "B"]):
  """The sampler's prefill on `decode_weights(..., stacked=True)`: N rows of W tokens from cache
  slot 0 under a causal mask (one prompt per row, or several packed, each seeing itself).
  Returns the f32 logits [B, V] of the B tokens `last_B` (indices into the N * W tokens,
  row-major) and the per-layer cache of W slots, keys [N, K, H, W] and values [N, K, W, H]
  (`grow_cache` makes room for the decode).

  The same math as `Qwen` with `hidden_with_cache` (tests/models/test_qwen.py checks it), except
  that the last layer computes keys and values at every token but its queries, attention and
  MLP only at the B tokens whose logits are read: the rest fed nothing but unread logits. The
  other layers are unrolled for a shallow model and a `lax.scan` for a deep one, as in `Qwen`
  (`QwenConfig.scan_unroll`): unrolled, 28 layers took minutes to compile.
  """
  c = config
  n, w = tokens_NxW.shape
  blocks = attention_blocks(w, c.attention_block)
  stack = weights["layers"]

  rope = rope_cos_sin(positions_NxW, c.head_dim, c.rope_theta)

  def heads_first(k_NxWxKxH, v_NxWxKxH):  # -> keys, values [N, K, W, H] and the cache entry
    k_NxKxWxH, v_NxKxWxH = k_NxWxKxH.transpose(0, 2, 1, 3), v_NxWxKxH.transpose(0, 2, 1, 3)
    return k_NxKxWxH, v_NxKxWxH, {"k": k_NxKxWxH.transpose(0, 1, 3, 2), "v": v_NxKxWxH}

  def layer(x_NxWxD, lw):
    q_NxWxKxGxH, *kv = _qkv(c, lw, x_NxWxD, rope)
    k_NxKxWxH, v_NxKxWxH, entry = heads_first(*kv)
    out_NxWxNxH = _blocked_gqa(q_NxWxKxGxH.reshape(n, w, c.num_heads, c.head_dim), k_NxKxWxH,
                               v_NxKxWxH, mask_NxWxW, c.head_dim, blocks)
    return _mlp_block(c, lw, _attention_out(c, lw, x_NxWxD, out_NxWxNxH)), entry

  x_NxWxD = jnp.take(weights["embed"], tokens_NxW, axis=0)
  front = c.num_layers - 1
  if c.scan_unroll >= c.num_layers:
    cache = []
    for i in range(front):
      x_NxWxD, layer_cache = layer(x_NxWxD, _layer(stack, i))
      cache.append(layer_cache)
  else:
    x_NxWxD, stacked_cache = jax.lax.scan(lambda x, i: layer(x, _layer(stack, i)), x_NxWxD,
                                          jnp.arange(front), unroll=c.scan_unroll)
    cache = [_layer(stacked_cache, i) for i in range(front)]
  # The last layer: keys and values of every token, the rest at the B read tokens only.
  lw = _layer(stack, front)
  k_NxKxWxH, v_NxKxWxH, entry = heads_first(*_qkv(c, lw, x_NxWxD, rope, queries=False)[1:])
  cache.append(entry)
  x_BxD = x_NxWxD.reshape(n * w, -1)[last_B]
  rope_B = tuple(x.reshape(n * w, 1, 1, -1)[last_B] for x in rope)
  q_BxKxGxH, _, _ = _qkv(c, lw, x_BxD[:, None], rope_B, keys=False)
  rows_B = last_B // w
  out_Bx1xNxH = _gqa(q_BxKxGxH.reshape(-1, 1, c.num_heads, c.head_dim), k_NxKxWxH[rows_B],
                     v_NxKxWxH[rows_B], mask_NxWxW.reshape(n * w, w)[last_B, None], c.head_dim)
  x_BxD = _mlp_block(c, lw, _attention_out(c, lw, x_BxD, out_Bx1xNxH[:, 0]))
  h_BxD = rms_norm(x_BxD, weights["norm"], c.rms_norm_eps)
  return jnp.dot(h_BxD, weights["head"], preferred_element_type=jnp.float32), tuple(cache)


def _qkv(c: QwenConfig, w: dict, x_BxTxD, rope, queries=True, keys=True):
  """One layer's queries [B, T, K, G, H], keys and values [B, T, K, H] (None where not asked
  for): the fused projection of the normed input, q/k norms, rotary (`rope`: `rope_cos_sin` of
  the tokens' positions, computed once for every layer)."""
  b, t = x_BxTxD.shape[:2]
  k, g, h = c.num_kv_heads, c.num_heads // c.num_kv_heads, c.head_dim
  cols = slice(0 if queries else g * h, None if keys else g * h)
  qkv_BxTxKxJ = dense(rms_norm(x_BxTxD, w["ln1"], c.rms_norm_eps), w["qkv"][..., cols])
  if c.qkv_bias:
    qkv_BxTxKxJ = qkv_BxTxKxJ + w["qkv_bias"][None, None, :, cols]
  q = kv = None
  if queries:
    q = qkv_BxTxKxJ[..., :g * h].reshape(b, t, k * g, h)
    if c.qk_norm:
      q = rms_norm(q, w["q_norm"], c.rms_norm_eps)
    q = rotate(q, *rope).reshape(b, t, k, g, h)
  if keys:
    kv = qkv_BxTxKxJ[..., g * h:] if queries else qkv_BxTxKxJ
    key = kv[..., :h]
    if c.qk_norm:
      key = rms_norm(key, w["k_norm"], c.rms_norm_eps)
    return q, rotate(key, *rope), kv[..., h:]
  return q, None, None


def _attention_out(c: QwenConfig, w: dict, x, out_heads):
  """The residual stream after attention: x [..., D] plus the output projection of the heads
  [..., N, H] (or [..., K, G, H])."""
  lead = out_heads.shape[:x.ndim - 1]
  attn = dense(out_heads.reshape(*lead, -1), w["o"])
  if c.o_bias:
    attn = attn + w["o_bias"].reshape((1,) * (attn.ndim - 1) + (-1,))
  return x + attn


def _mlp_block(c: QwenConfig, w: dict, x):
  """The residual stream after the SwiGLU MLP of the normed x [..., D] (gate|up fused)."""
  gate_up = dense(rms_norm(x, w["ln2"], c.rms_norm_eps), w["gate_up"])  # [..., 2, F]
  return x + dense(nn.silu(gate_up[..., 0, :]) * gate_up[..., 1, :], w["down"])


def decode_step(config: QwenConfig, weights: dict, tokens_B: Int[Array, "B"],
                positions_B: Int[Array, "B"], key_mask_BxS: Bool[Array, "B S"],
                cache: DecodeCache, index: Int[Array, ""], rope_table=None):
  """Writes one token per row into cache slot `index` and returns its f32 logits [B, V] and the
  cache. `key_mask` marks the valid slots, slot `index` included (later slots are unwritten).
  `rope_table`: `rope_cos_sin` of every position the loop reaches (`arange(S)`), computed once
  outside the loop and looked up here; without it the angles are computed in the step."""
  c = config
  x_BxD = jnp.take(weights["embed"], tokens_B, axis=0)
  if rope_table is None:
    rope = rope_cos_sin(positions_B[:, None], c.head_dim, c.rope_theta)
  else:  # [S, 1, H / 2] -> [B, 1, 1, H / 2]
    rope = tuple(jnp.take(x, positions_B, axis=0)[:, None] for x in rope_table)
  new_cache = []
  for w, layer_cache in zip(weights["layers"], cache):
    x_BxD, layer_cache = _decode_layer(c, w, x_BxD, rope, key_mask_BxS, layer_cache, index)
    new_cache.append(layer_cache)
  h_BxD = rms_norm(x_BxD, weights["norm"], c.rms_norm_eps)
  return jnp.dot(h_BxD, weights["head"], preferred_element_type=jnp.float32), tuple(new_cache)


def _decode_layer(c: QwenConfig, w: dict, x_BxD, rope, key_mask_BxS, cache, index):
  h = c.head_dim
  q_BxKxGxH, k_BxKxH, v_BxKxH = (y[:, 0] for y in _qkv(c, w, x_BxD[:, None], rope))
  zero, index = jnp.zeros((), jnp.int32), jnp.asarray(index, jnp.int32)
  cache = {"k": jax.lax.dynamic_update_slice(cache["k"], k_BxKxH[..., None].astype(
               cache["k"].dtype), (zero, zero, zero, index)),
           "v": jax.lax.dynamic_update_slice(cache["v"], v_BxKxH[:, :, None].astype(
               cache["v"].dtype), (zero, zero, index, zero))}
  # Batched matmuls over (B, K), accumulated in f32. A broadcast multiply + sum here (XLA CPU
  # fuses it into one reduction) took 126x as long with one query head per KV head (G = 1, the
  # shipped base model) and 2x with G = 2 (profiled; `bench/sampler.py --size main` times it).
  f32 = jnp.float32
  scores_BxKxGxS = jnp.einsum("bkgh,bkhs->bkgs", q_BxKxGxH.astype(cache["k"].dtype), cache["k"],
                              preferred_element_type=f32) * (h ** -0.5)
  scores_BxKxGxS = jnp.where(key_mask_BxS[:, None, None, :], scores_BxKxGxS, _NEG_INF)
  probs_BxKxGxS = jax.nn.softmax(scores_BxKxGxS, axis=-1)
  out_BxKxGxH = jnp.einsum("bkgs,bksh->bkgh", probs_BxKxGxS.astype(cache["v"].dtype), cache["v"],
                           preferred_element_type=f32).astype(x_BxD.dtype)
  return _mlp_block(c, w, _attention_out(c, w, x_BxD, out_BxKxGxH)), cache
