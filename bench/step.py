"""Train-step benchmark: GRPO (no teacher) vs StepOPSD (teacher forward) on the same StepBatch.

    python bench/step.py [--size main|small|medium|large] [--rows 32] [--prompt 256]
        [--teacher 288] [--response 64] [--devices 1] [--micro-batches 1]
        [--compare xla|unroll|attention]

`--size main` is the main job's step: the shipped base model (4 x 128, vocab 2048) and the
buckets its batches land in (96 step rows -> 128; student prompts <= 128, teacher prompts
<= 192, 24 new tokens), unless --rows/--prompt/--teacher/--response say otherwise.

Prints a table and writes JSON (default bench/results/step.json): step time of each estimator
(median of --repeats after a compile), their ratio, the step's executed FLOPs counted by hand
(`tools.aot.step_flops`; XLA's `cost_analysis`, also printed, counts a layer scan's body once,
so it is ~num_layers× too low where the scan is not unrolled), the achieved FLOP/s, and the
machine's own matmul FLOP/s (`jnp.dot` of large f32 matrices) measured in the same run.

`--compare xla` also times each estimator compiled with XLA's default options (the shipped step
turns YNNPACK fusions off on CPU: `train.xla_options`), `--compare unroll` with the layer scan
not unrolled (`layer_unroll=1`; the base model and the bench sizes unroll their 4 layers),
`--compare attention` with causal attention in one block of full T x T scores
(`attention_block=0`; shipped: blocks of 128 queries); the two variants are called in turn, so
a shared VM's noise hits both alike.

With `--micro-batches` > 1 StepOPSD is timed twice: on the rows as the trainer passes them
(`micro.arrange`: each trajectory in one micro-batch, so each micro-batch shapes its own
advantages) and on the rows as generated, where a trajectory spans micro-batches and the step
runs the extra gradient-free student pass its trajectory budget then needs (`stepopsd_split`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import jax

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from stepopsd_jax import models, pretrain, sharding, train  # noqa: E402
from stepopsd_jax.batch import StepBatch  # noqa: E402
from stepopsd_jax.models import hf_io  # noqa: E402
from stepopsd_jax.tools import aot, memory  # noqa: E402
from stepopsd_jax.train import micro  # noqa: E402
from bench.limits import matmul_flops_per_s  # noqa: E402
from tests.train.batches import random_step_batch  # noqa: E402

SIZES = {
    "small": dict(vocab_size=4096, hidden_size=256, intermediate_size=768, num_layers=4,
                  num_heads=8, num_kv_heads=4, head_dim=32),
    "medium": dict(vocab_size=8192, hidden_size=512, intermediate_size=1536, num_layers=4,
                   num_heads=8, num_kv_heads=4, head_dim=64),
    "large": dict(vocab_size=8192, hidden_size=1024, intermediate_size=3072, num_layers=4,
                  num_heads=16, num_kv_heads=8, head_dim=64),
}


MAIN_SHAPES = dict(rows=128, prompt=128, teacher=192, response=24)
DEFAULT_SHAPES = dict(rows=32, prompt=256, teacher=None, response=64)  # teacher: prompt + 32


def bench_model(size: str) -> models.QwenConfig:
  if size == "main":
    return models.from_hf_config(hf_io.read_hf_config(pretrain.base_model_dir()))
  return models.get_preset("qwen3_tiny", **SIZES[size])


def compile_step(config, estimator: str, batch, devices: int = 1, micro_batches: int = 1,
                 xla: bool = True):
  """(compiled step, its state, the batch on the mesh, compile seconds, XLA's FLOP count)."""
  mesh = sharding.make_mesh(devices=jax.devices()[:devices])  # rows over `devices` (data)
  tx = train.make_optimizer(1e-5, 0, 100)
  cfg = train.StepConfig(estimator=estimator, micro_batches=micro_batches)
  batch = jax.device_put(batch, StepBatch.shardings(mesh))
  state = train.init_state(config, jax.random.key(0), tx, mesh)
  step = train.jit_train_step(config, cfg, tx, mesh, xla=xla)
  t = time.perf_counter()
  compiled = step.lower(state, batch, jax.random.key(0)).compile()
  compile_s = time.perf_counter() - t
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost
  state, metrics = compiled(state, batch, jax.random.key(0))
  jax.block_until_ready(metrics)
  return dict(compiled=compiled, state=state, batch=batch, config=config, cfg=cfg, xla=xla,
              compile_s=compile_s, metrics=metrics,
              xla_flops=float(cost.get("flops", float("nan"))))


def time_steps(variants: list[dict], repeats: int) -> list[dict]:
  """Median step time of each compiled variant, the variants called in turn (a shared VM's
  noise hits them alike), and the executed FLOPs counted by hand."""
  times = [[] for _ in variants]
  for i in range(repeats):
    for v, ts in zip(variants, times):
      t = time.perf_counter()
      v["state"], metrics = v["compiled"](v["state"], v["batch"], jax.random.key(i))
      jax.block_until_ready(metrics)
      ts.append(time.perf_counter() - t)
  results = []
  for v, ts in zip(variants, times):
    batch, metrics = v["batch"], v["metrics"]
    b = batch.prompt_tokens.shape[0]
    shapes = memory.Shapes(rows=b, prompt_len=batch.prompt_tokens.shape[1],
                           teacher_len=batch.teacher_prompt_tokens.shape[1],
                           response_len=batch.response_tokens.shape[1], sample_rows=b)
    whole = metrics.get("micro_whole_trajectories")
    executed, _ = aot.step_flops(v["config"], v["cfg"], shapes,
                                 split_trajectories=not bool(whole if whole is not None else True))
    results.append({"estimator": v["label"], "compile_s": v["compile_s"],
                    "step_s": statistics.median(ts),
                    "micro_whole_trajectories": None if whole is None else float(whole),
                    "times_s": ts, "flops": executed, "xla_cost_analysis_flops": v["xla_flops"],
                    "xla_options": v["xla"], "layer_unroll": v["config"].scan_unroll})
  return results


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--size", choices=sorted(SIZES) + ["main"], default="small")
  parser.add_argument("--rows", type=int)
  parser.add_argument("--prompt", type=int)
  parser.add_argument("--teacher", type=int, help="teacher prompt length")
  parser.add_argument("--response", type=int)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--devices", type=int, default=1,
                      help="data-parallel over this many devices (fake CPU devices: "
                           "XLA_FLAGS=--xla_force_host_platform_device_count=8)")
  parser.add_argument("--micro-batches", type=int, default=1)
  parser.add_argument("--compare", choices=("xla", "unroll", "attention"),
                      help="also time each estimator, in turn with the step as shipped, "
                           "compiled with XLA's default options ('xla': YNNPACK fusions on), "
                           "with the layer scan not unrolled ('unroll': layer_unroll=1) or with "
                           "attention in one block ('attention': attention_block=0)")
  parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results",
                                                    "step.json"))
  args = parser.parse_args(argv)
  for k, v in (MAIN_SHAPES if args.size == "main" else DEFAULT_SHAPES).items():
    if getattr(args, k) is None:
      setattr(args, k, v)
  args.teacher = args.teacher or args.prompt + 32
  config = bench_model(args.size)
  batch = random_step_batch(config.vocab_size, rows=args.rows, prompt=args.prompt,
                            teacher=args.teacher, response=args.response)
  peak = matmul_flops_per_s()
  n = args.micro_batches
  runs = [("grpo", batch, "grpo"), ("stepopsd", micro.arrange(batch, n), "stepopsd")]
  if n > 1:
    runs.append(("stepopsd", batch, "stepopsd_split"))
  results = []
  for estimator, rows, label in runs:
    variants = [dict(compile_step(config, estimator, rows, args.devices, n), label=label)]
    if args.compare == "xla":
      variants.append(dict(compile_step(config, estimator, rows, args.devices, n, xla=False),
                           label=f"{label} [XLA defaults]"))
    elif args.compare == "unroll":
      variants.append(dict(compile_step(config.replace(layer_unroll=1), estimator, rows,
                                        args.devices, n), label=f"{label} [layer scan]"))
    elif args.compare == "attention":
      variants.append(dict(compile_step(config.replace(attention_block=0), estimator, rows,
                                        args.devices, n), label=f"{label} [one attention block]"))
    results += time_steps(variants, args.repeats)
  by = {r["estimator"]: r for r in results}
  grpo, opsd = by["grpo"], by["stepopsd"]
  print(f"| estimator | step s | compile s | GFLOP (hand) | GFLOP (XLA) | "
        f"GFLOP/s | % of matmul ({peak / 1e9:.1f} GFLOP/s) |\n|---|---:|---:|---:|---:|---:|---:|")
  for r in results:
    r["flops_per_s"] = r["flops"] / r["step_s"]
    print(f"| {r['estimator']} | {r['step_s']:.3f} | {r['compile_s']:.1f} | "
          f"{r['flops'] / 1e9:.1f} | {r['xla_cost_analysis_flops'] / 1e9:.1f} | "
          f"{r['flops_per_s'] / 1e9:.1f} | "
          f"{100 * r['flops_per_s'] / peak:.0f}% |")
  ratio = opsd["step_s"] / grpo["step_s"]
  print(f"\nStepOPSD / GRPO step time: {ratio:.2f}x (goal <= 1.35x)")
  if args.compare:
    for label in ("grpo", "stepopsd"):
      other = next(r for r in results if r["estimator"].startswith(label + " ["))
      print(f"{other['estimator']} / {label}: {other['step_s'] / by[label]['step_s']:.2f}x")
  os.makedirs(os.path.dirname(args.out), exist_ok=True)
  with open(args.out, "w") as f:
    json.dump({"config": SIZES.get(args.size, "base model"), "args": vars(args),
               "matmul_flops_per_s": peak, "stepopsd_over_grpo": ratio, "results": results,
               "versions": {"jax": jax.__version__, "python": platform.python_version()},
               "cpu_count": os.cpu_count(), "device": str(jax.devices()[0])}, f, indent=1)


if __name__ == "__main__":
  main()
