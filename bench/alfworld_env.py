"""Benchmark: ALFWorld env steps/s on textworld's plain PDDL engine vs our fast one.

Both engines play the same seeded random walks (admissible commands plus some junk) on the
same games; their transcripts (observations, admissible commands, won) are compared exactly.
Steps/s counts `step` calls only; `load`, the `reset` after it (cold) and the `reset` after the
walk (warm: the game's texts are parsed and its translation memoised by then) are timed apart.
Then a whole batch: `BatchedEnv`, `--envs` envs in groups of `--group` on the games, first batch
(cold: games load) and second batch (warm). Games are generated unless
`--data-dir` is given. Prints a markdown table and writes everything to `--out` as JSON.

Then rollouts as the trainer makes them: `--rollouts` times a fresh `BatchedEnv` of `--envs` envs
is built, reset and walked `--batch-steps` steps, two ways taking turns: textworld's (each env's
textworld env loads its own copy of fast-downward's library and never unloads it; a reset
rebuilds the state its load just built) and ours (`engine.LIBRARIES` lends copies; a reset after
a load takes its state). Per way and batch: seconds to build and reset the envs, and the library
copies newly mapped into the process and the resident memory added (`/proc/self`, Linux).

(Envs in worker processes measured 0.91x of this one-process batch on 2 cores, 195 vs 214
steps/s: at ~5 ms per step the fast engine is not what a rollout waits for, so that path was
removed.)

  python bench/alfworld_env.py --steps 40 --envs 16 --group 4
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import statistics
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from bench import readme_table  # noqa: E402
from stepopsd_jax import envs  # noqa: E402
from stepopsd_jax.envs import alfworld  # noqa: E402
from stepopsd_jax.envs.alfworld import engine as engine_lib  # noqa: E402
from stepopsd_jax.envs.alfworld import fast, generate  # noqa: E402
from stepopsd_jax.envs.alfworld.engine import Engine  # noqa: E402

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
  p.add_argument("--rollouts", type=int, default=6, help="fresh batches per way (0: none)")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--out", default="bench/results/alfworld_env.json", help="JSON results path")
  args = p.parse_args(argv)
  if min(args.per_type, args.steps, args.envs, args.group, args.batch_steps) < 1:
    p.error("--per-type, --steps, --envs, --group and --batch-steps must be >= 1")
  if args.rollouts < 0:
    p.error("--rollouts must be >= 0")
  return args


def random_walk(engine: Engine, game_file: str, steps: int, seed: int) -> dict:
  """Timings and the transcript of one seeded walk on one game."""
  t0 = time.perf_counter()
  engine.load(game_file)
  t1 = time.perf_counter()
  state = engine.reset()
  t2 = time.perf_counter()
  rng = np.random.default_rng(seed)
  transcript = [(state.feedback, engine.admissible)]
  step_s = 0.0
  for _ in range(steps):
    command = str(rng.choice(engine.admissible + list(JUNK)))
    start = time.perf_counter()
    state = engine.step(command)
    step_s += time.perf_counter() - start
    transcript.append((state.feedback, engine.admissible, engine.won))
  t3 = time.perf_counter()
  engine.reset()
  return dict(load_s=t1 - t0, reset_cold_s=t2 - t1, reset_warm_s=time.perf_counter() - t3,
              step_s=step_s, steps=steps, transcript=transcript)


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


class _OwnCopies:
  """textworld's way: every env loads its own library copy, and none is given back."""

  def take(self):
    import fast_downward  # pylint: disable=import-outside-toplevel
    return fast_downward.load_lib()

  def give(self, lib) -> None:
    del lib


@contextlib.contextmanager
def textworld_way():
  """Engines built in the block load their own library copies, and their resets rebuild the
  state that `load` built (as textworld's `PddlEnv` does)."""
  pool, reset = engine_lib.LIBRARIES, fast.FastPddlEnv.reset

  def rebuilding_reset(self):
    self._initial = False  # pylint: disable=protected-access
    return reset(self)

  engine_lib.LIBRARIES, fast.FastPddlEnv.reset = _OwnCopies(), rebuilding_reset
  try:
    yield
  finally:
    engine_lib.LIBRARIES, fast.FastPddlEnv.reset = pool, reset


def mapped_library_copies() -> int:
  """libdownward copies mapped into this process (by inode: the copies' files are deleted)."""
  with open("/proc/self/maps") as f:
    return len({line.split()[4] for line in f if "libdownward" in line})


def resident_mib() -> float:
  with open("/proc/self/statm") as f:
    return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def bench_rollouts(tasks, args) -> list[dict]:
  """Fresh batches, the two ways taking turns; per way the seconds to build and reset the envs,
  the seconds of the walk's steps, and the copies mapped / memory added by each batch."""
  ways = {"textworld: a library copy per env": textworld_way, "ours: pooled copies":
          contextlib.nullcontext}
  rows = {name: dict(engine=name, build_reset_s=[], step_s=[], steps=0, new_library_copies=[],
                     resident_mib_added=[]) for name in ways}
  for k in range(args.rollouts):
    for name, way in ways.items():
      row = rows[name]
      copies, resident = mapped_library_copies(), resident_mib()
      with way():
        t0 = time.perf_counter()
        benv = envs.BatchedEnv(lambda i: envs.make_env("alfworld", seed=i), len(tasks))
        reset_s, step_s, n = batch_walk(benv, tasks, args.batch_steps, args.seed + k)
        row["build_reset_s"].append(time.perf_counter() - t0 - step_s)
        row["step_s"].append(step_s)
        row["steps"] += n
        del benv
        gc.collect()
      row["new_library_copies"].append(mapped_library_copies() - copies)
      row["resident_mib_added"].append(resident_mib() - resident)
  return list(rows.values())


def batch_tasks(data_dir: str, split: str, args) -> list:
  games = alfworld.make_tasks(split, -1, data_dir=data_dir)
  per_batch = [games[k % len(games)] for k in range(-(-args.envs // args.group))]
  return [t for t in per_batch for _ in range(args.group)][:args.envs]


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
  rollouts = bench_rollouts(btasks, args) if args.rollouts else []
  print(f"\n{len(game_files)} games, {args.steps} steps each; transcripts identical: {identical}; "
        f"batches of {len(btasks)} envs x {args.batch_steps} steps", file=sys.stderr)
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  games = [os.path.relpath(f, data_dir) for f in game_files]
  result = dict(args=vars(args), environment=environment(), games=games,
                transcripts_identical=identical, results=rows, rollouts=rollouts)
  with open(args.out, "w") as f:
    json.dump(result, f, indent=1)
  print(readme_table.alfworld_tables(result, " ".join(["python"] + sys.argv)))


if __name__ == "__main__":
  main()
