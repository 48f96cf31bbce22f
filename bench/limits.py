"""The machine's own limits, measured in the run that uses them: matmul FLOP/s and copy bandwidth.

A benchmark divides what it achieved by these numbers, so a result reads as "x% of what this
machine can do right now" (a shared VM's rate moves between runs; measuring in the same run
keeps the ratio honest).
"""

from __future__ import annotations

import concurrent.futures
import statistics
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp


def _median_time(fn, arg, repeats: int) -> float:
  jax.block_until_ready(fn(arg))  # compile + warm
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    jax.block_until_ready(fn(arg))
    times.append(time.perf_counter() - t)
  return statistics.median(times)


def matmul_flops_per_s(n: int = 2048, repeats: int = 5) -> float:
  """FLOP/s of one large f32 `jnp.dot` (2 n^3 FLOPs): the rate dense layers can reach."""
  a = jnp.ones((n, n), jnp.float32)
  return 2 * n ** 3 / _median_time(jax.jit(lambda x: x @ x), a, repeats)


def copy_bytes_per_s(mib: int = 256, repeats: int = 5) -> float:
  """Bytes/s of streaming an f32 array far larger than the caches through an elementwise op, in
  place (each element read once and written once: 2 x size bytes moved).

  The output reuses the input's buffer (donated). A fresh output buffer per call measures the
  kernel mapping and zeroing new pages instead: on the 2-vCPU VM that read ~4.5 GB/s against
  ~45 GB/s in place, and made decode steps look faster than DRAM.
  """
  x = jnp.ones((mib * 2 ** 20 // 4,), jnp.float32)
  scale = jax.jit(lambda v: v * 1.0001, donate_argnums=0)
  x = jax.block_until_ready(scale(x))  # compile + warm
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    x = jax.block_until_ready(scale(x))
    times.append(time.perf_counter() - t)
  return 2 * x.nbytes / statistics.median(times)


def matmul_chain_s(batch: int, shapes: Sequence[tuple[int, int]], steps: int = 64,
                   repeats: int = 5, streams: int = 1) -> float:
  """Seconds per pass of `batch` rows through a chain of f32 matmuls [batch, k] x [k, n], one
  weight per (k, n) in `shapes`, each input the first k columns of the previous output; `steps`
  passes in one `lax.fori_loop`, the last output feeding the next pass. With `streams` > 1 the
  rows are cut into that many contiguous parts (as `Sampler` cuts a call's rows) whose chains
  run at once, each from its own thread: the seconds are those of the whole.

  With a decode step's shapes (`bench/sampler.py`) this is that step's matmuls alone, without
  attention, norms or sampling, the weights cycling through the caches as the step's do: what
  XLA:CPU reaches on exactly those products, a floor for the decode step under XLA.
  """
  if any(k > n for (k, _), (_, n) in zip(shapes[1:], shapes[:-1])) or shapes[0][0] > shapes[-1][1]:
    raise ValueError(f"matmul chain {shapes}: each input width must fit in the previous output.")
  if not 1 <= streams <= batch:
    raise ValueError(f"streams={streams}: must be in [1, batch={batch}].")
  keys = jax.random.split(jax.random.key(0), len(shapes))
  weights = [jax.random.normal(key, (k, n), jnp.float32) / k ** 0.5
             for key, (k, n) in zip(keys, shapes)]

  @jax.jit
  def run(x):
    def one_pass(_, x):
      for w in weights:
        x = x[:, :w.shape[0]] @ w
      return x[:, :shapes[0][0]]
    return jax.lax.fori_loop(0, steps, one_pass, x)

  cuts = [batch * k // streams for k in range(streams + 1)]
  parts = [jax.random.normal(jax.random.key(1 + k), (z - a, shapes[0][0]), jnp.float32)
           for k, (a, z) in enumerate(zip(cuts[:-1], cuts[1:]))]

  def all_parts(xs):
    if len(xs) == 1:
      return jax.block_until_ready(run(xs[0]))
    with concurrent.futures.ThreadPoolExecutor(len(xs) - 1) as pool:
      futures = [pool.submit(lambda x: jax.block_until_ready(run(x)), x) for x in xs[1:]]
      out = jax.block_until_ready(run(xs[0]))
      return [out] + [f.result() for f in futures]

  return _median_time(all_parts, parts, repeats) / steps
