"""Jitted KV-cache sampling: one prefill, then a `lax.while_loop` decode, in one compiled call.

Prompts are left-padded, so every row's next token goes to the same cache slot and each decode
step is a single [B, 1] forward. Batch size and prompt length are rounded up to padding buckets,
so a multi-turn rollout compiles once per (batch bucket, prompt bucket), not once per turn.
Identical prompts in one call (a group's G rollouts start from one prompt) are prefilled once
and their KV cache rows copied (`share_prompts`, one process), and short prompts are packed
several to a prefill row, each attending only to itself (`pack_prompts`, one process), so the
prefill runs on fewer padded slots.
The loop state carries the RNG key; stop tokens and stop strings (via `stop.build_stop_table`)
end rows on the device, and the results come to the host in one transfer.
"""

from __future__ import annotations

import bisect
import concurrent.futures
import dataclasses
import functools
import time
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jaxtyping import Array, Bool, Float, Int

from stepopsd_jax import models, sharding
from stepopsd_jax.models import QwenConfig, qwen
from stepopsd_jax.sampling import packing, stop


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


def pad_left(seqs: Sequence[Sequence[int]], width: int, pad_id: int, rows: int
             ) -> tuple[np.ndarray, np.ndarray]:
  """[rows, width] tokens and mask of left-padded sequences (a longer one keeps its last
  `width` tokens); rows past len(seqs) are all padding."""
  tokens = np.full((rows, width), pad_id, np.int32)
  mask = np.zeros((rows, width), bool)
  for i, seq in enumerate(seqs):
    seq = list(seq)[-width:] if width else []
    if seq:
      tokens[i, width - len(seq):], mask[i, width - len(seq):] = seq, True
  return tokens, mask


@dataclasses.dataclass(frozen=True)
class Buckets:
  """Padding buckets: the sampler's batch (episodes decoding) and prompt length are rounded up
  to the next entry; a rollout's StepBatch rounds its rows (agent steps, many more than the
  episodes) up to `rows` (empty: `batch`) and its prompts to `prompt`."""
  batch: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
  prompt: tuple[int, ...] = (64, 128, 256, 512, 1024, 2048, 4096)
  rows: tuple[int, ...] = ()

  @property
  def step_rows(self) -> tuple[int, ...]:
    return self.rows or self.batch

  @staticmethod
  def pick(sizes: tuple[int, ...], n: int) -> int | None:
    i = bisect.bisect_left(sizes, n)
    return sizes[i] if i < len(sizes) else None


class SampleOutput(NamedTuple):
  """Host (numpy) results for the caller's rows, in order."""
  tokens: np.ndarray  # int32 [B, R]: generated tokens, pad after the end
  logprobs: np.ndarray  # f32 [B, R]: behaviour log-probs of those tokens (0 after the end)
  lengths: np.ndarray  # int32 [B]: generated tokens per row (stop token or string included)
  stopped: np.ndarray  # bool [B]: ended by a stop token/string, not by max_new_tokens
  truncated_prompts: int  # prompts cut from the left to fit the largest prompt bucket
  stats: dict | None = None  # seconds of each phase and where the slots went (`Sampler.generate`)


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


class Sampler:
  """Host-side front end: buckets and pads prompts, runs `prefill` then `decode`, returns numpy.

  Token ids of the prompts are lists of ints (no padding); rows keep their order. With
  `share_prompts` (and one process) a call's distinct prompts are prefilled once each and
  `share_rows` copies their cache rows to every row that asked for them: the decode is the same
  (each row still draws its own tokens); the prefill is that of the distinct prompts, to rounding
  (a batched matmul may round a row differently at another batch size). With `pack_prompts`
  (and one process) the prompts are packed several to a prefill row when that needs fewer rows
  (`packing.pack`; each attends only to itself, at its own positions) and the decode rows gather
  their prompt's cache slots from it (`prefill_packed`): the same cache and logits, to rounding.

  With `streams` > 1 a call of at least `STREAM_MIN_ROWS` prompts is cut into that many
  contiguous parts that prefill and decode at once, each from its own host thread, with its own
  key (`jax.random.split(rng, streams)`): the same distribution, other draws than one stream's
  (and greedy tokens the same to rounding). On XLA:CPU one call's small matmuls are split over
  the cores with a wait after each, and its elementwise ops run on one core; two independent
  calls keep both busy (decodes at batch 32 and 64 ran 1.1-1.6x faster as two concurrent halves
  on 2 cores, in several runs). The streams run in this sampler's worker threads: JAX settings
  scoped to the calling thread (e.g. `jax.default_device`) do not reach them. `streams=None` picks 2 on a single CPU device in one process, else 1 (an
  accelerator runs one call at a time, and a global batch over processes is one call).
  """

  def __init__(self, config: QwenConfig, params: SamplingParams, *, pad_id: int,
               token_texts: Sequence[str] | None = None, buckets: Buckets = Buckets(),
               mesh: Mesh | None = None, share_prompts: bool = True,
               pack_prompts: bool = True, streams: int | None = None):
    if params.stop_strings and token_texts is None:
      raise ValueError("stop_strings need token_texts (the decoded text of every token id).")
    self.config, self.params, self.pad_id, self.buckets = config, params, pad_id, buckets
    self.mesh = mesh  # places the KV cache (and the prompt rows) by the sharding rules
    self.share_prompts, self.pack_prompts = share_prompts, pack_prompts
    if streams is not None and streams < 1:
      raise ValueError(f"streams={streams}: must be >= 1 (or None: chosen by the backend).")
    self.streams = _default_streams(mesh) if streams is None else streams
    self._pool: concurrent.futures.ThreadPoolExecutor | None = None
    # The decoded text of every id, kept for the rollout's parsers (decoding a 150k vocabulary
    # once per turn took seconds); None when not given.
    self.token_texts = None if token_texts is None else tuple(
        list(token_texts)[:config.vocab_size] + [""] * (config.vocab_size - len(token_texts)))
    texts = self.token_texts if params.stop_strings else [""] * config.vocab_size
    self.stop_table = jnp.asarray(stop.build_stop_table(texts, params.stop_strings))

  def pad(self, prompts: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray, int]:
    """Left-padded [B_bucket, P_bucket] tokens and mask; prompts longer than the largest bucket
    keep their last tokens (the count is returned) so one long episode cannot stop a run."""
    b = self._batch_bucket(len(prompts))
    longest = max((len(x) for x in prompts), default=1)
    width = Buckets.pick(self.buckets.prompt, max(longest, 1)) or self.buckets.prompt[-1]
    tokens, mask = pad_left(prompts, width, self.pad_id, b)
    return tokens, mask, sum(len(p) > width for p in prompts)

  def _batch_bucket(self, rows: int) -> int:
    b = Buckets.pick(self.buckets.batch, rows)
    if b is None:
      raise ValueError(f"{rows} prompts exceed the largest batch bucket "
                       f"{self.buckets.batch[-1]}; add a larger bucket or split the batch.")
    return b

  def generate(self, weights: Any, prompts: Sequence[Sequence[int]], rng: Array) -> SampleOutput:
    parts = self._stream_parts(len(prompts))
    if len(parts) == 1:
      return self._generate(weights, prompts, rng)
    if self._pool is None:
      self._pool = concurrent.futures.ThreadPoolExecutor(self.streams - 1,
                                                         thread_name_prefix="sampler-stream")
    keys = jax.random.split(rng, len(parts))
    futures = [self._pool.submit(self._generate, weights, prompts[a:z], keys[k])
               for k, (a, z) in enumerate(parts[1:], 1)]
    (a, z), outs = parts[0], []
    try:
      outs.append(self._generate(weights, prompts[a:z], keys[0]))
    finally:  # every stream ends before this call returns or raises
      outs += [f.result() for f in futures]
    return _merged(outs)

  def _stream_parts(self, rows: int) -> list[tuple[int, int]]:
    """Contiguous [a, z) parts of a call's rows, one per stream; one part below
    `STREAM_MIN_ROWS` rows, with several processes (they decode one global batch), or when the
    parts' batch buckets would hold more rows than the whole call's (e.g. 640 rows as two
    buckets of 512: `rollout.decode_batch_buckets` holds the halves of a step's first turn)."""
    n = self.streams if rows >= STREAM_MIN_ROWS and jax.process_count() == 1 else 1
    cuts = [rows * k // n for k in range(n + 1)]
    parts = list(zip(cuts[:-1], cuts[1:]))
    if n == 1 or rows > self.buckets.batch[-1]:  # too many rows: `_generate` says so
      return [(0, rows)]
    if sum(self._batch_bucket(z - a) for a, z in parts) > self._batch_bucket(rows):
      return [(0, rows)]
    return parts

  def _generate(self, weights: Any, prompts: Sequence[Sequence[int]], rng: Array
                ) -> SampleOutput:
    clock = _Clock()
    one_process = jax.process_count() == 1
    share = False
    if self.share_prompts and one_process:
      distinct, rows = _distinct(prompts)
      share = len(distinct) < len(prompts)
    seqs = distinct if share else prompts
    tokens, mask, truncated = self.pad(seqs)
    mesh = self.mesh if self.mesh is not None and self.mesh.size > 1 else None
    packed = None
    if self.pack_prompts and one_process:
      width = tokens.shape[1]
      packed = packing.pack([list(p)[-width:] for p in seqs], width,
                            sharding.data_parallel_size(mesh) if mesh is not None else 1)
      if packed.tokens.shape[0] >= tokens.shape[0]:  # no fewer prefill rows: not worth it
        packed = None
    if share or packed is not None:  # the decode's rows: every prompt's
      b = self._batch_bucket(len(prompts))
      truncated = sum(len(p) > tokens.shape[1] for p in prompts)
      rows_b = np.zeros(b, np.int32)
      rows_b[:len(prompts)] = rows if share else np.arange(len(prompts))
      real_b = np.arange(b) < len(prompts)
    if packed is not None:
      index, row_mask = packing.unpack_index(mask.sum(axis=1), packed.starts, rows_b, real_b,
                                             tokens.shape[1])
    clock.lap("pad_s")
    # Parameters still being computed (a train step dispatched before this rollout) are waited
    # for here, so that wait is not counted as prefill.
    clock.lap("wait_params_s", weights)
    if packed is not None:
      arrays = _rows_to_device(mesh, packed.tokens, packed.positions, packed.segments, index,
                               row_mask)
      clock.lap("to_device_s", arrays)
      state = prefill_packed(self.config, self.params, weights, *arrays, rng, mesh)
    else:
      tokens_d, mask_d = _to_device(self, tokens, mask, mesh)
      clock.lap("to_device_s", (tokens_d, mask_d))
      state = prefill(self.config, self.params, weights, tokens_d, mask_d, rng, mesh)
      if share:
        state = share_rows(state, rows_b, real_b, mesh)
    clock.lap("prefill_s", state)
    out = decode(self.config, self.params, self.pad_id, weights, state, self.stop_table, mesh)
    clock.lap("decode_s", out)
    out = sharding.to_local(out, mesh) if mesh is not None else out  # this process's rows
    out_tokens, logprobs, lengths, stopped = (np.asarray(x)[:len(prompts)] for x in
                                              jax.device_get(out))
    clock.lap("to_host_s")
    prefilled = packed.segments > 0 if packed is not None else mask
    stats = {**clock.seconds,
             **slot_counts(prefilled, lengths, b if share or packed is not None else None),
             "prompts": len(prompts),
             "prompt_rows_shared": len(prompts) - len(distinct) if share else 0,
             "prefill_rows": prefilled.shape[0],
             "prefill_rows_unpacked": tokens.shape[0]}
    return SampleOutput(out_tokens, logprobs, lengths, stopped, truncated, stats)


# Fewer rows than this decode as one stream: at batch 8-16 two concurrent halves were no faster.
STREAM_MIN_ROWS = 32


def _default_streams(mesh: Mesh | None) -> int:
  """2 on one CPU device (see `Sampler`), else 1."""
  one_device = mesh is None or mesh.size == 1
  return 2 if one_device and jax.default_backend() == "cpu" else 1


def _merged(outs: list[SampleOutput]) -> SampleOutput:
  """The streams' outputs as one call's: rows in order; counts summed; each part's seconds the
  mean over the streams (they ran at once, so the parts still add up to about the call's time)."""
  stats = {}
  for key in outs[0].stats:
    values = [o.stats[key] for o in outs]
    stats[key] = sum(values) / len(values) if key.endswith("_s") else sum(values)
  cat = lambda field: np.concatenate([getattr(o, field) for o in outs])
  return SampleOutput(cat("tokens"), cat("logprobs"), cat("lengths"), cat("stopped"),
                      sum(o.truncated_prompts for o in outs), stats)


class _Clock:
  """Laps of `generate`: each waits for the device arrays it names, so they time the device."""

  def __init__(self):
    self.seconds, self._t = {}, time.perf_counter()

  def lap(self, name: str, wait=None):
    if wait is not None:
      jax.block_until_ready(wait)
    now = time.perf_counter()
    self.seconds[name], self._t = now - self._t, now


def _distinct(prompts: Sequence[Sequence[int]]) -> tuple[list[list[int]], list[int]]:
  """The distinct prompts in first-seen order, and each prompt's index among them."""
  index: dict[tuple[int, ...], int] = {}
  rows = [index.setdefault(tuple(p), len(index)) for p in prompts]
  return [list(p) for p in index], rows


def slot_counts(mask_BxP: np.ndarray, lengths: np.ndarray,
                decode_rows: int | None = None) -> dict[str, int]:
  """Where a call's prompt and decode slots went: the prefill's real tokens (`mask_BxP`: the
  prompts it ran), padding rows of the decode's batch bucket (`decode_rows`, default the
  prefill's), and (decode) slots of rows that had already stopped while others still decoded."""
  width = mask_BxP.shape[1]
  rows = mask_BxP.shape[0] if decode_rows is None else decode_rows
  steps = int(lengths.max(initial=0))  # the loop runs until its longest row ends
  return {"prompt_slots": mask_BxP.shape[0] * width, "prompt_tokens": int(mask_BxP.sum()),
          "decode_steps": steps, "decode_slots": rows * steps,
          "decode_tokens": int(lengths.sum()),
          "decode_padding_row_slots": (rows - len(lengths)) * steps,
          "decode_after_stop_slots": int((steps - lengths).sum())}


def _rows_to_device(mesh: Mesh | None, *arrays: np.ndarray) -> tuple:
  """Host arrays [rows, ...] on the device(s) of one process: rows over (data, fsdp) where that
  divides them, else copied."""
  if mesh is None:
    return tuple(jax.device_put(x) for x in arrays)
  return tuple(jax.device_put(x, NamedSharding(mesh, sharding.logical_to_spec(
      ("batch",) + (None,) * (x.ndim - 1), x.shape, mesh))) for x in arrays)


def _to_device(sampler: Sampler, tokens: np.ndarray, mask: np.ndarray, mesh: Mesh | None):
  """The padded prompts on the device(s): one device, or rows over (data, fsdp) of the mesh.

  With several processes each brings its own prompts: they agree on the widest padded shape,
  re-pad, and decode as one global batch; each gets its own rows back (`generate`).
  """
  if mesh is None:
    return jax.device_put(tokens), jax.device_put(mask)
  if jax.process_count() == 1:  # rows split where (data, fsdp) divides the bucket, else copied
    placed = NamedSharding(mesh, sharding.logical_to_spec(("batch", None), tokens.shape, mesh))
    return jax.device_put(tokens, placed), jax.device_put(mask, placed)
  b, p = sharding.widest(tokens.shape)
  grow = ((0, b - tokens.shape[0]), (p - tokens.shape[1], 0))
  tokens = np.pad(tokens, grow, constant_values=sampler.pad_id)
  mask = np.pad(mask, grow, constant_values=False)
  return sharding.to_global((tokens, mask), mesh)
