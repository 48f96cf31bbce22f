"""Host-side sampling: `Sampler` pads prompts to buckets, runs the jitted prefill and decode
(`generation.py`) and returns numpy.

Batch size and prompt length are rounded up to padding buckets, so a multi-turn rollout
compiles once per (batch bucket, prompt bucket), not once per turn. Identical prompts in one
call (a group's G rollouts start from one prompt) are prefilled once and their KV cache rows
copied (`share_prompts`, one process), and short prompts are packed several to a prefill row,
each attending only to itself (`pack_prompts`, one process), so the prefill runs on fewer
padded slots. On one CPU device a large call runs as concurrent streams (`Sampler.streams`).
The results come to the host in one transfer.
"""

from __future__ import annotations

import bisect
import concurrent.futures
import dataclasses
import time
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jaxtyping import Array

from stepopsd_jax import sharding
from stepopsd_jax.models import QwenConfig
from stepopsd_jax.sampling import packing, stop
from stepopsd_jax.sampling.generation import (SamplingParams, decode, prefill, prefill_packed,
                                              share_rows)


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
