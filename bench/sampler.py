"""Benchmark: our jitted KV-cache sampler against transformers `generate` on CPU.

Both run the same random Qwen3 weights (ours from `init_params`, written with `save_hf` and
loaded by transformers in float32), greedy, with no stop tokens, so every row generates exactly
`--new-tokens` tokens. Each side gets a warm-up call (ours compiles in it; the compile time is
reported separately), then the median of `--repeats` timed calls, ours and HF alternating so
that noise from a shared machine hits both alike. Prints a markdown table and
writes every raw timing to `--out` as JSON.

Against the machine's limit: our call is timed in its parts (`SampleOutput.stats`: prefill,
decode, transfers), and one decode step (decode seconds / new tokens) is set against the
machine's matmul rate and copy bandwidth (`bench/limits.py`), measured in the same run before
and after the timed calls, the higher of each kept (the limit is what the machine can do; a
shared VM's hiccup once halved a single measurement): the step's FLOPs (hand count,
`tools.aot.decode_cost`, useful = attention over the filled prefix only) over the matmul rate,
and its bytes (every weight once + the KV cache read) over the copy bandwidth. A decode step at
batch 1 is bandwidth-bound (time / bandwidth time near 1 is the limit); at large batch it is
compute-bound (% of the matmul rate). A third reference is the
step's matmuls alone (`limits.matmul_chain_s`: the same shapes chained in a loop, nothing else,
in as many concurrent streams as our call ran): how fast XLA:CPU runs products this small, so
"x matmuls alone" is what the rest of the step (attention, norms, rotary, cache writes,
sampling) adds.

torch keeps its default thread count unless `--torch-threads` is given. On a small shared VM
(2 vCPUs) HF `generate` with 2 OpenMP threads was intermittently 8-15x slower than with 1, even
with JAX absent from the process; `--torch-threads 1` gives a stable HF baseline there.

  python bench/sampler.py --size small --batch-sizes 1,8,32,64 --repeats 3
  python bench/sampler.py --size main --out bench/results/sampler_main.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable

import jax
import numpy as np
import torch
import transformers

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from bench.limits import copy_bytes_per_s, matmul_chain_s, matmul_flops_per_s  # noqa: E402
from stepopsd_jax import models, pretrain, sampling  # noqa: E402
from stepopsd_jax.models import hf_io  # noqa: E402
from stepopsd_jax.tools import aot  # noqa: E402

SIZES = {
    "tiny": {},  # the qwen3_tiny preset as is: vocab 512, hidden 64, 2 layers
    "small": dict(vocab_size=4096, hidden_size=256, intermediate_size=768, num_layers=4,
                  num_heads=8, num_kv_heads=4, head_dim=32),
}
COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration",
                  "/jax/core/compile/jaxpr_to_mlir_module_duration",
                  "/jax/core/compile/backend_compile_duration")
PAD_ID = 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  p.add_argument("--size", choices=sorted(SIZES) + ["main"], default="small",
                 help="bench model: 'tiny' is the qwen3_tiny preset, 'small' 4 layers x 256, "
                      "'main' the shipped base model's shape (4 x 128, 4 heads = 4 KV heads)")
  p.add_argument("--batch-sizes", default="1,8,32,64", help="comma-separated batch sizes")
  p.add_argument("--prompt-len", type=int, default=64, help="prompt tokens per row (no padding)")
  p.add_argument("--new-tokens", type=int, default=64, help="generated tokens per row")
  p.add_argument("--repeats", type=int, default=3, help="timed calls per side (median is used)")
  p.add_argument("--torch-threads", type=int, default=0,
                 help="torch.set_num_threads for HF; 0 leaves torch's default")
  p.add_argument("--streams", type=int, default=0,
                 help="our sampler's concurrent streams (Sampler.streams); 0: its default")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--out", default="bench/results/sampler.json", help="JSON results path")
  args = p.parse_args(argv)
  args.batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b.strip()]
  if min(args.batch_sizes) < 1 or args.prompt_len < 1 or args.new_tokens < 1 or args.repeats < 1:
    p.error("batch sizes, --prompt-len, --new-tokens and --repeats must be >= 1")
  if args.torch_threads < 0 or args.streams < 0:
    p.error("--torch-threads and --streams must be >= 0")
  return args


def bench_config(size: str) -> models.QwenConfig:
  if size == "main":  # the shipped base model's shape (random weights): one query head per KV
    return models.from_hf_config(hf_io.read_hf_config(pretrain.base_model_dir()))
  return models.get_preset("qwen3_tiny", **SIZES[size])


def load_hf_model(config: models.QwenConfig, weights, directory: str):
  """Writes our weights as a HF checkpoint and loads it in transformers (float32, eval)."""
  models.save_hf(config, weights, directory)
  model = transformers.AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32)
  return model.eval()


def timed(fn: Callable[[], np.ndarray]) -> tuple[float, np.ndarray]:
  start = time.perf_counter()
  out = fn()
  return time.perf_counter() - start, out


class CompileTimer:
  """Sums JAX's trace + lower + backend-compile durations reported while it is active."""

  def __init__(self):
    self.seconds, self.active = 0.0, False
    jax.monitoring.register_event_duration_secs_listener(self._listen)

  def _listen(self, event: str, duration: float, **_):
    if self.active and event in COMPILE_EVENTS:
      self.seconds += duration

  def measure(self, fn: Callable[[], np.ndarray]) -> tuple[float, float, np.ndarray]:
    """(compile seconds, wall seconds, result) of one call."""
    self.seconds, self.active = 0.0, True
    try:
      wall, out = timed(fn)
    finally:
      self.active = False
    return self.seconds, wall, out


def ours_fn(config, weights, prompts: np.ndarray, new_tokens: int, seed: int, stats: list,
            temperature: float = 0.0, streams: int | None = None):
  """A closure running our sampler (greedy unless `temperature` > 0, no stops) on
  exactly-bucketed prompts (the batch and, for two streams, its halves); each call's time split
  (`SampleOutput.stats`) is appended to `stats`. `streams`: `Sampler.streams` (None: its
  default). Returns the closure and the number of streams a call of these prompts runs."""
  params = sampling.SamplingParams(max_new_tokens=new_tokens, temperature=temperature)
  b = prompts.shape[0]
  buckets = sampling.Buckets(batch=tuple(sorted({b, -(-b // 2)})), prompt=(prompts.shape[1],))
  sampler = sampling.Sampler(config, params, pad_id=PAD_ID, buckets=buckets, streams=streams)
  rows, rng = prompts.tolist(), jax.random.key(seed)

  def run() -> np.ndarray:
    out = sampler.generate(weights, rows, rng)  # numpy: already on the host
    assert (out.lengths == new_tokens).all(), out.lengths
    stats.append(out.stats)
    return out.tokens
  return run, len(sampler._stream_parts(b))  # pylint: disable=protected-access


def hf_fn(model, prompts: np.ndarray, new_tokens: int):
  """A closure running transformers greedy `generate` with the KV cache and no EOS."""
  gen_config = transformers.GenerationConfig(
      max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, use_cache=True,
      num_beams=1, eos_token_id=None, pad_token_id=PAD_ID, bos_token_id=None)
  input_ids = torch.from_numpy(prompts.astype(np.int64))
  attention_mask = torch.ones_like(input_ids)

  def run() -> np.ndarray:
    with torch.inference_mode():
      out = model.generate(input_ids=input_ids, attention_mask=attention_mask,
                           generation_config=gen_config)
    tokens = out[:, prompts.shape[1]:].numpy().astype(np.int32)
    assert tokens.shape == (prompts.shape[0], new_tokens), tokens.shape
    return tokens
  return run


def interleaved(fns: list[Callable[[], np.ndarray]], n: int) -> list[list[float]]:
  """n wall times of each fn, alternating between them so machine noise hits all alike."""
  times = [[] for _ in fns]
  for _ in range(n):
    for fn, out in zip(fns, times):
      out.append(timed(fn)[0])
  return times


def summary(times: list[float], generated: int) -> dict:
  med = statistics.median(times)
  return {"times_s": times, "median_s": med, "min_s": min(times),
          "spread": max(times) / min(times), "tokens_per_s": generated / med}


def agreement(ours: np.ndarray, hf: np.ndarray) -> dict:
  """Identical-token fraction, rows fully identical, and each row's first mismatch (-1: none)."""
  same = ours == hf
  first = [int(np.argmin(row)) if not row.all() else -1 for row in same]
  return {"token_fraction": float(same.mean()), "rows_identical": int(same.all(axis=1).sum()),
          "rows": int(same.shape[0]), "first_mismatch": first}


def decode_matmuls(config: models.QwenConfig) -> list[tuple[int, int]]:
  """The (in, out) widths of a decode step's dense matmuls, in order (`qwen.decode_step`: fused
  q|k|v, output projection, fused gate|up, down per layer; then the head)."""
  c = config
  layer = [(c.hidden_size, (c.num_heads + 2 * c.num_kv_heads) * c.head_dim),
           (c.num_heads * c.head_dim, c.hidden_size), (c.hidden_size, 2 * c.intermediate_size),
           (c.intermediate_size, c.hidden_size)]
  return layer * c.num_layers + [(c.hidden_size, c.vocab_size)]


def limit_ratios(config, batch: int, args, stats: list[dict], limits: dict,
                 streams: int = 1) -> dict:
  """Our decode step against the machine: % of the matmul rate, x of the bandwidth time, and
  x of the time of its matmuls alone (`limits.matmul_chain_s`, measured here, in as many
  concurrent streams as our call ran)."""
  parts = {k: statistics.median(s[k] for s in stats) for k in stats[0] if k.endswith("_s")}
  step_s = parts["decode_s"] / args.new_tokens
  cost = aot.decode_cost(config, batch, args.prompt_len, args.new_tokens)
  shapes = decode_matmuls(config)
  alone_s = matmul_chain_s(batch, shapes, steps=args.new_tokens, streams=streams)
  alone_flops = 2 * batch * sum(k * n for k, n in shapes)
  return {"parts_s": parts, "decode_step_s": step_s, **cost,
          "matmul_fraction": cost["flops_useful"] / step_s / limits["matmul_flops_per_s"],
          "bandwidth_time_s": cost["bytes_useful"] / limits["copy_bytes_per_s"],
          "over_bandwidth_time": step_s / (cost["bytes_useful"] / limits["copy_bytes_per_s"]),
          "matmuls_alone_s": alone_s,
          "matmuls_alone_fraction": alone_flops / alone_s / limits["matmul_flops_per_s"],
          "over_matmuls_alone": step_s / alone_s}


def machine_limits() -> dict:
  return {"matmul_flops_per_s": matmul_flops_per_s(), "copy_bytes_per_s": copy_bytes_per_s()}


def bench_batch(batch: int, args, config, weights, hf_model, compile_timer) -> dict:
  """Warm-up and timed runs of both sides at one batch size; `_stats` holds our calls' time
  splits for `limit_ratios`, which runs once the machine's limits are known."""
  rs = np.random.RandomState(args.seed + batch)
  prompts = rs.randint(1, config.vocab_size, (batch, args.prompt_len)).astype(np.int32)
  stats = []
  streams = args.streams or None
  ours, ours_streams = ours_fn(config, weights, prompts, args.new_tokens, args.seed, stats,
                               streams=streams)
  hf = hf_fn(hf_model, prompts, args.new_tokens)
  sampled, _ = ours_fn(config, weights, prompts, args.new_tokens, args.seed, [],
                       temperature=1.0, streams=streams)
  compile_s, ours_first_s, ours_tokens = compile_timer.measure(ours)
  hf_first_s, hf_tokens = timed(hf)
  sampled()
  del stats[:]  # the warm-up call's split includes its compile
  ours_s, hf_s, sampled_s = interleaved([ours, hf, sampled], args.repeats)
  generated = batch * args.new_tokens
  ours_sum, hf_sum = summary(ours_s, generated), summary(hf_s, generated)
  return {
      "batch": batch, "generated_tokens": generated, "streams": ours_streams,
      "ours": {"compile_s": compile_s, "first_call_s": ours_first_s, **ours_sum},
      "hf": {"first_call_s": hf_first_s, **hf_sum},
      "ours_sampled": summary(sampled_s, generated),  # temperature 1: what rollouts run
      "ratio_ours_over_hf": hf_sum["median_s"] / ours_sum["median_s"],
      "greedy_agreement": agreement(ours_tokens, hf_tokens),
      "_stats": stats,
  }


def table(rows: list[dict], limits: dict) -> str:
  lines = [f"| batch | ours tok/s | HF tok/s | ratio ours/HF | greedy agreement | "
           f"ours sampled (T=1) tok/s | prefill / decode s | decode step ms | % of matmul "
           f"({limits['matmul_flops_per_s'] / 1e9:.0f} GFLOP/s) | x bandwidth time "
           f"({limits['copy_bytes_per_s'] / 1e9:.1f} GB/s) | its matmuls alone ms (% of matmul) "
           f"| x matmuls alone | our compile s |",
           "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
  for r in rows:
    a, lim = r["greedy_agreement"], r["limits"]
    lines.append(f"| {r['batch']} | {r['ours']['tokens_per_s']:,.0f} | "
                 f"{r['hf']['tokens_per_s']:,.0f} | {r['ratio_ours_over_hf']:.2f}x | "
                 f"{a['token_fraction']:.1%} ({a['rows_identical']}/{a['rows']} rows) | "
                 f"{r['ours_sampled']['tokens_per_s']:,.0f} | "
                 f"{lim['parts_s']['prefill_s']:.3f} / {lim['parts_s']['decode_s']:.3f} | "
                 f"{1e3 * lim['decode_step_s']:.2f} | {100 * lim['matmul_fraction']:.0f}% | "
                 f"{lim['over_bandwidth_time']:.2f}x | {1e3 * lim['matmuls_alone_s']:.2f} "
                 f"({100 * lim['matmuls_alone_fraction']:.0f}%) | "
                 f"{lim['over_matmuls_alone']:.2f}x | {r['ours']['compile_s']:.2f} |")
  return "\n".join(lines)


def environment() -> dict:
  return {
      "python": platform.python_version(), "platform": platform.platform(),
      "jax": jax.__version__, "jax_backend": jax.default_backend(),
      "jax_devices": [str(d) for d in jax.devices()], "torch": torch.__version__,
      "transformers": transformers.__version__, "torch_num_threads": torch.get_num_threads(),
      "cpu_count": os.cpu_count(), "cpus_usable": len(os.sched_getaffinity(0)),
  }


def main(argv: list[str] | None = None) -> dict:
  args = parse_args(argv)
  if args.torch_threads:
    torch.set_num_threads(args.torch_threads)
  config = bench_config(args.size)
  weights = models.init_params(config, jax.random.key(args.seed))
  env = environment()
  print(f"{args.size} Qwen3: {models.count_params(config):,} params; prompt {args.prompt_len}, "
        f"new {args.new_tokens}, repeats {args.repeats}; jax {env['jax']} "
        f"({env['jax_backend']}), torch {env['torch']} ({env['torch_num_threads']} threads), "
        f"transformers {env['transformers']}, {env['cpus_usable']} CPUs", flush=True)
  compile_timer = CompileTimer()
  before = machine_limits()
  rows = []
  with tempfile.TemporaryDirectory() as directory:
    hf_model = load_hf_model(config, weights, directory)
    for batch in args.batch_sizes:
      rows.append(bench_batch(batch, args, config, weights, hf_model, compile_timer))
      ours, hf = rows[-1]["ours"], rows[-1]["hf"]
      print(f"  batch {batch}: ours {ours['median_s']:.3f}s (max/min {ours['spread']:.2f}), "
            f"HF {hf['median_s']:.3f}s (max/min {hf['spread']:.2f})", flush=True)
  limits = {"before": before, "after": machine_limits()}
  limits.update({k: max(limits["before"][k], limits["after"][k]) for k in before})
  for row in rows:
    row["limits"] = limit_ratios(config, row["batch"], args, row.pop("_stats"), limits,
                                 row["streams"])
  print(table(rows, limits))
  result = {"args": {k: v for k, v in vars(args).items()}, "config": dataclasses.asdict(config),
            "num_params": models.count_params(config), "environment": env, "limits": limits,
            "results": rows}
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, "w") as f:
    json.dump(result, f, indent=2)
  print(f"wrote {args.out}")
  return result


if __name__ == "__main__":
  main()
