"""Benchmark: ALFWorld env steps/s on textworld's plain PDDL engine vs our fast one.

Both engines play the same seeded random walks (admissible commands plus some junk) on the
same games; their transcripts (observations, admissible commands, won) are compared exactly.
Steps/s counts `step` calls only; `load` and the first (cold) and second (warm) `reset` of a
game are timed apart. Then a whole batch: `BatchedEnv`, `--envs` envs in groups of `--group` on
the games, first batch (cold: games load) and second batch (warm). Games are generated unless
`--data-dir` is given. Prints a markdown table and writes everything to `--out` as JSON.

(Envs in worker processes measured 0.91x of this one-process batch on 2 cores, 195 vs 214
steps/s: at ~5 ms per step the fast engine is not what a rollout waits for, so that path was
removed.)

  python bench/alfworld_env.py --steps 40 --envs 16 --group 4
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time

import numpy as np

from stepopsd_jax import envs
from stepopsd_jax.envs import alfworld
from stepopsd_jax.envs.alfworld import fast, generate
from stepopsd_jax.envs.alfworld.engine import Engine

JUNK = ("dance", "take the moon")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  p.add_argument("--data-dir", default="", help="ALFWorld data root; empty: generate games")
  p.add_argument("--split", default="valid_unseen")
  p.add_argument("--per-type", type=int, default=1, help="generated games per task type")
  p.add_argument("--steps", type=int, default=40, help="random-walk steps per game and engine")
  p.add_argument("--envs", type=int, default=16, help="envs per batch in the batch benchmark")
  p.add_argument("--group", type=int, default=4, help="envs per game (G) in a batch")
  p.add_argument("--batch-steps", type=int, default=20, help="steps per batch")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--out", default="bench/results/alfworld_env.json", help="JSON results path")
  args = p.parse_args(argv)
  if min(args.per_type, args.steps, args.envs, args.group, args.batch_steps) < 1:
    p.error("--per-type, --steps, --envs, --group and --batch-steps must be >= 1")
  return args


def random_walk(engine: Engine, game_file: str, steps: int, seed: int) -> dict:
  """Timings and the transcript of one seeded walk on one game."""
  t0 = time.perf_counter()
  engine.load(game_file)
  t1 = time.perf_counter()
  engine.reset()
  t2 = time.perf_counter()
  state = engine.reset()
  t3 = time.perf_counter()
  rng = np.random.default_rng(seed)
  transcript = [(state.feedback, engine.admissible)]
  step_s = 0.0
  for _ in range(steps):
    command = str(rng.choice(engine.admissible + list(JUNK)))
    start = time.perf_counter()
    state = engine.step(command)
    step_s += time.perf_counter() - start
    transcript.append((state.feedback, engine.admissible, engine.won))
  return dict(load_s=t1 - t0, reset_cold_s=t2 - t1, reset_warm_s=t3 - t2, step_s=step_s,
              steps=steps, transcript=transcript)


def bench_engines(game_files: list[str], args) -> tuple[dict, dict, bool]:
  """Plain and fast engine rows, game by game in turn (so machine noise hits both alike), the
  fast engine's memoised translations cleared before each game (its load is cold too; the
  grammar parses it shares across games are kept, as in a long run)."""
  engines = {False: Engine(fast=False), True: Engine(fast=True)}
  runs = {False: [], True: []}
  for k, game_file in enumerate(game_files):
    fast.clear_caches(parses=False)
    for is_fast, engine in engines.items():
      runs[is_fast].append(random_walk(engine, game_file, args.steps, args.seed + k))
  identical = [r["transcript"] for r in runs[False]] == [r["transcript"] for r in runs[True]]
  return _engine_row("textworld PddlEnv (plain)", runs[False]), _engine_row(
      "FastPddlEnv (ours)", runs[True]), identical


def _engine_row(name: str, runs: list[dict]) -> dict:
  steps = sum(r["steps"] for r in runs)
  return dict(engine=name, steps_per_s=steps / sum(r["step_s"] for r in runs),
              load_s=statistics.mean(r["load_s"] for r in runs),
              reset_cold_s=statistics.mean(r["reset_cold_s"] for r in runs),
              reset_warm_s=statistics.mean(r["reset_warm_s"] for r in runs),
              per_game=[{k: v for k, v in r.items() if k != "transcript"} for r in runs])


def batch_walk(benv, tasks, steps: int, seed: int) -> tuple[float, float, int]:
  """(reset seconds, step seconds, env steps) of one batch of seeded random walks."""
  rng = np.random.default_rng(seed)
  t0 = time.perf_counter()
  results = benv.reset(tasks)
  t1 = time.perf_counter()
  n = 0
  for _ in range(steps):
    actions = [None if benv.done[i] else str(rng.choice(r.info["admissible_actions"]))
               for i, r in enumerate(results)]
    n += sum(a is not None for a in actions)
    results = [s or r for s, r in zip(benv.step(actions), results)]
  return t1 - t0, time.perf_counter() - t1, n


def bench_batches(name: str, benv, tasks, args) -> dict:
  cold = batch_walk(benv, tasks, args.batch_steps, args.seed)
  warm = batch_walk(benv, tasks, args.batch_steps, args.seed + 1)
  return dict(engine=name, envs=len(tasks), cold_reset_s=cold[0], warm_reset_s=warm[0],
              cold_steps_per_s=cold[2] / cold[1], steps_per_s=warm[2] / warm[1],
              errors=benv.num_env_errors)


def batch_tasks(data_dir: str, split: str, args) -> list:
  games = alfworld.make_tasks(split, -1, data_dir=data_dir)
  per_batch = [games[k % len(games)] for k in range(-(-args.envs // args.group))]
  return [t for t in per_batch for _ in range(args.group)][:args.envs]


def table(rows: list[dict]) -> str:
  lines = ["| engine | steps/s | load s | reset s cold | reset s warm | speed-up |",
           "|---|---:|---:|---:|---:|---:|"]
  base = rows[0]["steps_per_s"]
  for r in rows:
    lines.append(f"| {r['engine']} | {r['steps_per_s']:,.1f} | {r.get('load_s', float('nan')):.2f}"
                 f" | {r.get('reset_cold_s', r.get('cold_reset_s')):.3f} | "
                 f"{r.get('reset_warm_s', r.get('warm_reset_s')):.3f} | "
                 f"{r['steps_per_s'] / base:.1f}x |")
  return "\n".join(lines)


def environment() -> dict:
  import textworld  # pylint: disable=import-outside-toplevel
  return {"python": platform.python_version(), "platform": platform.platform(),
          "textworld": textworld.__version__, "cpu_count": os.cpu_count(),
          "cpus_usable": len(os.sched_getaffinity(0)),
          "load_average_1_5_15": os.getloadavg()}  # other jobs on a shared machine skew it


def main(argv: list[str] | None = None) -> None:
  args = parse_args(argv)
  if args.data_dir:
    run(args, args.data_dir)
    return
  with tempfile.TemporaryDirectory(prefix="alfworld_bench_") as data_dir:
    generate.generate(data_dir, args.split, args.per_type, seed=args.seed)
    run(args, data_dir)


def run(args, data_dir: str) -> None:
  """Benchmarks the games of `args.split` under `data_dir`; prints and writes the results."""
  tasks = alfworld.make_tasks(args.split, -1, data_dir=data_dir)
  game_files = [t.payload["game_file"] for t in tasks]
  plain, fast_row, identical = bench_engines(game_files, args)
  btasks = batch_tasks(data_dir, args.split, args)
  serial = bench_batches("BatchedEnv, fast, 1 process", envs.BatchedEnv(
      lambda i: envs.make_env("alfworld", seed=i), len(btasks)), btasks, args)
  rows = [plain, fast_row, serial]
  print(table(rows))
  print(f"\n{len(game_files)} games, {args.steps} steps each; transcripts identical: {identical}; "
        f"batches of {len(btasks)} envs x {args.batch_steps} steps", file=sys.stderr)
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, "w") as f:
    games = [os.path.relpath(f, data_dir) for f in game_files]
    json.dump(dict(args=vars(args), environment=environment(), games=games,
                   transcripts_identical=identical, results=rows), f, indent=1)


if __name__ == "__main__":
  main()
