"""The jitted half of sampling: one prefill, then a `lax.while_loop` decode, on device arrays.

Prompts are left-padded, so every row's next token goes to the same cache slot and each decode
step is a single [B, 1] forward. The loop state carries the RNG key; stop tokens and stop
strings (via `stop.build_stop_table`) end rows on the device. `prefill_packed` prefills several
short prompts to a row, each attending only to itself; `share_rows` copies the prefill of a
call's distinct prompts to every row that asked for them. The host side (padding buckets, the
prompts' packing and sharing, streams, timing) is `sampler.Sampler`.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding
from jaxtyping import Array, Bool, Float, Int

from stepopsd_jax import models, sharding
from stepopsd_jax.models import QwenConfig, qwen

@dataclasses.dataclass(frozen=True)
class SamplingParams:
  """How to sample. temperature=0 is greedy. Hashable: a static argument of the jitted loop."""
  max_new_tokens: int = 64
  temperature: float = 1.0
  top_p: float = 1.0
  top_k: int = 0  # 0 = no top-k truncation
  stop_token_ids: tuple[int, ...] = ()
  stop_strings: tuple[str, ...] = ()

  def __post_init__(self):
    if self.max_new_tokens < 1:
      raise ValueError(f"max_new_tokens={self.max_new_tokens}: must be >= 1.")
    if self.temperature < 0 or not 0 < self.top_p <= 1 or self.top_k < 0:
      raise ValueError(f"Invalid sampling params {self}: need temperature >= 0, "
                       "0 < top_p <= 1, top_k >= 0.")


class _LoopState(NamedTuple):
  step: Int[Array, ""]
  rng: Array
  cache: tuple  # qwen.DecodeCache: per layer {'k': [B, K, H, S], 'v': [B, K, S, H]}
  key_mask: Bool[Array, "B S"]
  logits: Float[Array, "B V"]
  positions: Int[Array, "B"]
  done: Bool[Array, "B"]
  lengths: Int[Array, "B"]
  stop_state: Int[Array, "B"]
  tokens: Int[Array, "B R"]
  logprobs: Float[Array, "B R"]


def sample_token(logits_BxV: Array, rng: Array, params: SamplingParams):
  """Draws a token per row; returns it and its log-prob under the (temperature-scaled) model.

  The behaviour log-prob is that of the temperature-scaled distribution without the top-p/top-k
  truncation, which is what the train step recomputes; greedy (temperature 0) uses temperature 1.
  """
  scaled = logits_BxV if params.temperature == 0 else logits_BxV / params.temperature
  top_Bx1 = jnp.max(scaled, axis=-1, keepdims=True)
  if params.temperature == 0:
    token = first_argmax(scaled, top_Bx1)
  else:
    token = categorical(rng, _truncate(scaled, params))
  # log_softmax(scaled)[token], in jax.nn.log_softmax's operation order, without writing [B, V].
  shifted = jnp.take_along_axis(scaled, token[:, None], axis=-1) - top_Bx1
  logp = (shifted - jnp.log(jnp.sum(jnp.exp(scaled - top_Bx1), axis=-1, keepdims=True)))[:, 0]
  return token.astype(jnp.int32), logp


def first_argmax(x_BxV: Array, top_Bx1: Array | None = None) -> Int[Array, "B"]:
  """`jnp.argmax` over the last axis (the first index of the maximum), as a max and a min: on
  CPU XLA's (value, index) pair reduction took ~2.5x as long (a profile of the decode loop).
  `top_Bx1`: the row maxima, where the caller has them."""
  v = x_BxV.shape[-1]
  top = jnp.max(x_BxV, axis=-1, keepdims=True) if top_Bx1 is None else top_Bx1
  return jnp.min(jnp.where(x_BxV == top, jnp.arange(v, dtype=jnp.int32), v), axis=-1)


def categorical(rng: Array, logits_BxV: Array, block: int = 64) -> Int[Array, "B"]:
  """One draw per row from softmax(logits) by inverse CDF: one uniform number per row (Gumbel
  max, `jax.random.categorical`, draws V of them: ~20x the time of this at V = 4096 on CPU).

  Two levels so that no cumulative sum runs over the whole vocabulary: the row's mass in blocks
  of `block` tokens picks a block, then the cumulative mass inside it picks the token. A token
  with zero probability (-inf logit: truncated, or padding) is never drawn.
  """
  b, v = logits_BxV.shape
  n = -(-v // block)
  x = jnp.pad(logits_BxV, ((0, 0), (0, n * block - v)), constant_values=-jnp.inf)
  mass_BxNxC = jnp.exp(x - jnp.max(x, axis=-1, keepdims=True)).reshape(b, n, block)
  cum_BxN = jnp.cumsum(jnp.sum(mass_BxNxC, axis=-1), axis=-1)
  u_B = (1.0 - jax.random.uniform(rng, (b,))) * cum_BxN[:, -1]  # in (0, total]
  j_B = jnp.minimum(jnp.sum(cum_BxN < u_B[:, None], axis=-1), n - 1)
  before_B = jnp.where(j_B > 0, jnp.take_along_axis(
      cum_BxN, jnp.maximum(j_B - 1, 0)[:, None], axis=-1)[:, 0], 0.0)
  inner_BxC = jnp.take_along_axis(mass_BxNxC, j_B[:, None, None], axis=1)[:, 0]
  i_B = jnp.sum(jnp.cumsum(inner_BxC, axis=-1) < (u_B - before_B)[:, None], axis=-1)
  last_B = block - 1 - jnp.argmax(jnp.flip(inner_BxC > 0, axis=-1), axis=-1)  # rounding guard
  return j_B * block + jnp.minimum(i_B, last_B)


def _truncate(logits_BxV: Array, params: SamplingParams) -> Array:
  if params.top_k > 0:
    kth = jax.lax.top_k(logits_BxV, params.top_k)[0][:, -1:]
    logits_BxV = jnp.where(logits_BxV < kth, -jnp.inf, logits_BxV)
  if params.top_p < 1.0:
    sorted_desc = -jnp.sort(-logits_BxV, axis=-1)
    probs = jax.nn.softmax(sorted_desc, axis=-1)
    before = jnp.cumsum(probs, axis=-1) - probs  # mass strictly above each sorted token
    cutoff = jnp.min(jnp.where(before < params.top_p, sorted_desc, jnp.inf), axis=-1,
                     keepdims=True)
    logits_BxV = jnp.where(logits_BxV < cutoff, -jnp.inf, logits_BxV)
  return logits_BxV


# Incremented on every trace of `prefill` / `decode` ("generate"): tests count compilations.
TRACE_COUNT = {"prefill": 0, "prefill_packed": 0, "generate": 0}


# Logical axes of the prefill's stacked cache [L, B, K, P, H] and of the decode loop's per-layer
# keys [B, K, H, S] and values [B, K, S, H] (`qwen.decode_cache`).
CACHE_AXES = ("layers", "batch", "kv_heads", None, "head_dim")
DECODE_CACHE_AXES = {"k": ("batch", "kv_heads", "head_dim", None),
                     "v": ("batch", "kv_heads", None, "head_dim")}


def _place_cache(cache, mesh: Mesh | None, axes=None):
  """Pins the KV cache to rows over (data, fsdp) and KV heads over tensor (where they divide),
  so the compiler never chooses to replicate the largest tensor of a rollout."""
  if mesh is None:
    return cache
  pin = lambda x, logical: jax.lax.with_sharding_constraint(x, NamedSharding(
      mesh, sharding.logical_to_spec(logical, x.shape, mesh)))
  if axes is None:  # the stacked prefill cache
    return jax.tree.map(lambda x: pin(x, CACHE_AXES), cache)
  return tuple({name: pin(layer[name], axes[name]) for name in layer} for layer in cache)


class Prefilled(NamedTuple):
  """What the prefill hands to the decode loop (device arrays)."""
  cache: tuple  # qwen.DecodeCache of P + R slots, the prompt's P filled
  key_mask: Bool[Array, "B S"]
  logits: Float[Array, "B V"]  # of each row's next token
  positions: Int[Array, "B"]  # of each row's next token
  empty: Bool[Array, "B"]  # padding rows (all-False prompt mask): finished before they start
  rng: Array


@functools.partial(jax.jit, static_argnames=("config", "params", "mesh"))
def prefill(config: QwenConfig, params: SamplingParams, weights, tokens_BxP: Int[Array, "B P"],
            mask_BxP: Bool[Array, "B P"], rng: Array, mesh: Mesh | None = None) -> Prefilled:
  """The prompts through the model once: the decode cache and each row's first logits."""
  TRACE_COUNT["prefill"] += 1
  b, p = tokens_BxP.shape
  r = params.max_new_tokens
  positions = models.default_positions(mask_BxP)
  # Attends over the prompt's P slots only; the decode loop's cache has P + R.
  stacked = qwen.decode_weights(config, weights, stacked=True)
  logits, cache = qwen.prefill_step(config, stacked, tokens_BxP, positions,
                                    models.causal_mask(mask_BxP, p), jnp.arange(b) * p + p - 1)
  cache = _place_cache(qwen.grow_cache(cache, p + r), mesh, DECODE_CACHE_AXES)
  key_mask = jnp.concatenate([mask_BxP, jnp.zeros((b, r), bool)], axis=1)
  return Prefilled(cache, key_mask, logits, positions[:, -1] + 1, ~jnp.any(mask_BxP, axis=1), rng)


@functools.partial(jax.jit, static_argnames=("config", "params", "pad_id", "mesh"))
def decode(config: QwenConfig, params: SamplingParams, pad_id: int, weights, state: Prefilled,
           stop_table: Int[Array, "Q V"], mesh: Mesh | None = None):
  """The `lax.while_loop` over new tokens: (tokens, logprobs, lengths, stopped), [B, R] / [B]."""
  TRACE_COUNT["generate"] += 1
  b, r = state.key_mask.shape[0], params.max_new_tokens
  p = state.key_mask.shape[1] - r
  decode_weights = qwen.decode_weights(config, weights)  # once per call, not once per step
  rope_table = qwen.rope_cos_sin(jnp.arange(p + r), config.head_dim, config.rope_theta)
  stop_ids = jnp.asarray(params.stop_token_ids or (-1,), jnp.int32)
  accept = stop_table.shape[0] - 1

  def body(s: _LoopState) -> _LoopState:
    token, logp = sample_token(s.logits, jax.random.fold_in(s.rng, s.step), params)
    token = jnp.where(s.done, pad_id, token)
    stop_state = stop_table[s.stop_state, token]
    ended = jnp.isin(token, stop_ids) | (stop_state == accept)
    key_mask = s.key_mask.at[:, p + s.step].set(True)
    logits, cache = qwen.decode_step(config, decode_weights, token, s.positions, key_mask,
                                     s.cache, p + s.step, rope_table)
    return _LoopState(
        step=s.step + 1, rng=s.rng, cache=_place_cache(cache, mesh, DECODE_CACHE_AXES),
        key_mask=key_mask, logits=logits,
        positions=s.positions + 1, done=s.done | ended, stop_state=stop_state,
        lengths=s.lengths + (~s.done).astype(jnp.int32),
        tokens=s.tokens.at[:, s.step].set(token),
        logprobs=s.logprobs.at[:, s.step].set(jnp.where(s.done, 0.0, logp)))

  def cond(s: _LoopState):
    return (s.step < r) & ~jnp.all(s.done)

  init = _LoopState(
      step=jnp.zeros((), jnp.int32), rng=state.rng, cache=state.cache, key_mask=state.key_mask,
      logits=state.logits, positions=state.positions, done=state.empty,
      stop_state=jnp.zeros((b,), jnp.int32), lengths=jnp.zeros((b,), jnp.int32),
      tokens=jnp.full((b, r), pad_id, jnp.int32), logprobs=jnp.zeros((b, r), jnp.float32))
  final = jax.lax.while_loop(cond, body, init)
  return final.tokens, final.logprobs, final.lengths, final.done & ~state.empty


@functools.partial(jax.jit, static_argnames=("config", "params", "pad_id", "mesh"))
def generate_padded(config: QwenConfig, params: SamplingParams, pad_id: int, weights,
                    tokens_BxP: Int[Array, "B P"], mask_BxP: Bool[Array, "B P"],
                    rng: Array, stop_table: Int[Array, "Q V"], mesh: Mesh | None = None):
  """Prefill + decode on a padded batch in one compiled call (AOT compiles, sharded tests); rows
  with an all-False mask are finished at once. The `Sampler` runs the two as separate calls,
  so that a rollout can time each.

  `mesh`: place the KV cache by the sharding rules on it (weights and prompts bring their own
  shardings); None leaves placement to the compiler (one device).
  """
  state = prefill(config, params, weights, tokens_BxP, mask_BxP, rng, mesh)
  return decode(config, params, pad_id, weights, state, stop_table, mesh)


@functools.partial(jax.jit, static_argnames=("mesh",))
def share_rows(state: Prefilled, rows_B: Int[Array, "B"], real_B: Bool[Array, "B"],
               mesh: Mesh | None = None) -> Prefilled:
  """The prefill of B rows from the prefill of their distinct prompts: row b takes prefilled row
  `rows_B[b]`; rows with `real_B` False (the batch bucket's padding) start finished."""
  take = lambda x: jnp.take(x, rows_B, axis=0)
  cache = _place_cache(jax.tree.map(take, state.cache), mesh, DECODE_CACHE_AXES)
  return Prefilled(cache, take(state.key_mask), take(state.logits), take(state.positions),
                   take(state.empty) | ~real_B, state.rng)


@functools.partial(jax.jit, static_argnames=("config", "params", "mesh"))
def prefill_packed(config: QwenConfig, params: SamplingParams, weights, tokens_NxW, positions_NxW,
                   segments_NxW, index_BxW: Int[Array, "B W"], mask_BxW: Bool[Array, "B W"],
                   rng: Array, mesh: Mesh | None = None) -> Prefilled:
  """`prefill` of B left-padded rows, computed on the packed prompts: each packed prompt attends
  causally to itself only (its own positions from 0), then every row gathers its prompt's cache
  slots (`packing.unpack_index`) into the usual decode cache and takes its last token's logits."""
  TRACE_COUNT["prefill_packed"] += 1
  n, w = tokens_NxW.shape
  b, r = index_BxW.shape[0], params.max_new_tokens
  seg = segments_NxW
  causal = jnp.tril(jnp.ones((w, w), bool))[None]
  mask_NxWxW = (seg[:, :, None] == seg[:, None, :]) & (seg[:, None, :] > 0) & causal
  last_B = index_BxW[:, -1]  # left-padded: a row's last slot holds its prompt's last token
  stacked = qwen.decode_weights(config, weights, stacked=True)
  logits, cache = qwen.prefill_step(config, stacked, tokens_NxW, positions_NxW, mask_NxWxW, last_B)

  def unpack(x_NxKxWxH):  # -> [B, K, W, H], the rows' left-padded prompt slots
    _, k, _, h = x_NxKxWxH.shape
    flat = x_NxKxWxH.transpose(0, 2, 1, 3).reshape(n * w, k, h)
    return jnp.take(flat, index_BxW, axis=0).transpose(0, 2, 1, 3)

  swap = lambda x: x.transpose(0, 1, 3, 2)  # keys are kept as [., K, H, W]
  cache = tuple({"k": swap(unpack(swap(layer["k"]))), "v": unpack(layer["v"])} for layer in cache)
  cache = _place_cache(qwen.grow_cache(cache, w + r), mesh, DECODE_CACHE_AXES)
  key_mask = jnp.concatenate([mask_BxW, jnp.zeros((b, r), bool)], axis=1)
  count = jnp.sum(mask_BxW, axis=1, dtype=jnp.int32)
  return Prefilled(cache, key_mask, logits, jnp.maximum(count, 1), count == 0, rng)
