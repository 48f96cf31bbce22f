"""Benchmark: one decode step against the length of the KV cache it attends over.

    python bench/decode_sweep.py [--size small] [--batch-sizes 1,32,64]
        [--prompt-lens 8,32,96,224,480] [--new-tokens 32] [--out bench/results/decode_sweep.json]

`bench/sampler.py` times the decode step at one cache length (64 + 64 slots). Here each batch
size runs at several prompt lengths, so the step's cost splits into a part that does not grow
with the cache (the layers' matmuls, the vocabulary projection, the loop's per-op costs: the
time at the shortest cache) and the cache's share (the growth). Each point is our greedy sampler
(no stops, `--new-tokens` per row), one warm-up call then the median of `--repeats` calls; the
step's FLOPs and bytes are the hand count (`tools.aot.decode_cost`, attention over the filled
prefix) over the matmul rate and copy bandwidth measured in the same run (`bench/limits.py`).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

import jax
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from bench import sampler as sampler_bench  # noqa: E402
from bench.limits import copy_bytes_per_s, matmul_flops_per_s  # noqa: E402
from stepopsd_jax import models  # noqa: E402
from stepopsd_jax.tools import aot  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--size", choices=sorted(sampler_bench.SIZES) + ["main"], default="small")
  p.add_argument("--batch-sizes", default="1,32,64")
  p.add_argument("--prompt-lens", default="8,32,96,224,480")
  p.add_argument("--new-tokens", type=int, default=32)
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--out", default="bench/results/decode_sweep.json")
  args = p.parse_args(argv)
  args.batch_sizes = [int(x) for x in args.batch_sizes.split(",")]
  args.prompt_lens = [int(x) for x in args.prompt_lens.split(",")]
  if min(args.batch_sizes + args.prompt_lens) < 1 or args.new_tokens < 1 or args.repeats < 1:
    p.error("batch sizes, prompt lengths, --new-tokens and --repeats must be >= 1")
  return args


def point(config, weights, batch: int, prompt_len: int, args, limits: dict) -> dict:
  prompts = np.random.RandomState(args.seed + batch).randint(
      1, config.vocab_size, (batch, prompt_len)).astype(np.int32)
  stats = []
  run, _ = sampler_bench.ours_fn(config, weights, prompts, args.new_tokens, args.seed, stats)
  run()  # compiles
  del stats[:]
  for _ in range(args.repeats):
    run()
  step_s = statistics.median(s["decode_s"] for s in stats) / args.new_tokens
  cost = aot.decode_cost(config, batch, prompt_len, args.new_tokens)
  return {"batch": batch, "prompt_len": prompt_len, "cache_len": prompt_len + args.new_tokens,
          "decode_step_s": step_s, **cost,
          "matmul_fraction": cost["flops_useful"] / step_s / limits["matmul_flops_per_s"],
          "over_bandwidth_time": step_s * limits["copy_bytes_per_s"] / cost["bytes_useful"]}


def table(points: list[dict], limits: dict) -> str:
  lines = ["| batch | cache slots | decode step | % of matmul rate | × bandwidth time | "
           "growth over the shortest cache |", "|---:|---:|---:|---:|---:|---:|"]
  first = {}
  for p in points:
    base = first.setdefault(p["batch"], p["decode_step_s"])
    lines.append(f"| {p['batch']} | {p['cache_len']} | {1e3 * p['decode_step_s']:.2f} ms | "
                 f"{100 * p['matmul_fraction']:.0f}% | {p['over_bandwidth_time']:.2f}× | "
                 f"{1e3 * (p['decode_step_s'] - base):+.2f} ms |")
  return "\n".join(lines)


def main(argv=None) -> dict:
  args = parse_args(argv)
  config = sampler_bench.bench_config(args.size)
  weights = models.init_params(config, jax.random.key(args.seed))
  limits = {"matmul_flops_per_s": matmul_flops_per_s(), "copy_bytes_per_s": copy_bytes_per_s()}
  points = []
  for batch in args.batch_sizes:
    for prompt_len in args.prompt_lens:
      points.append(point(config, weights, batch, prompt_len, args, limits))
      print(f"  batch {batch}, cache {points[-1]['cache_len']}: "
            f"{1e3 * points[-1]['decode_step_s']:.2f} ms", flush=True)
  print(table(points, limits))
  result = {"args": vars(args), "num_params": models.count_params(config), "limits": limits,
            "environment": sampler_bench.environment(), "points": points}
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, "w") as f:
    json.dump(result, f, indent=1)
  print(f"wrote {args.out}")
  return result


if __name__ == "__main__":
  main()
