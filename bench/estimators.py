"""Every estimator, one short credit-lab run each, through the real trainer: step time and success.

    python bench/estimators.py [--arg runlocal] [--steps 4] [--estimators grpo,stepopsd,...]
        [--out bench/results/estimators.json] [--config.a.b=v ...]

Runs `configs/default.py:estimator=NAME,<arg>` for each estimator in one process (fresh workdir
each, same seed), then prints a table and writes JSON: the median rollout and train seconds per
RL step (the first step, which compiles, left out), the greedy eval success before and after RL,
the sampled rollout success of the first and last `--window` RL steps (a finer learning signal
than the greedy eval, which jumps between 0 and 1 on a one-decision task) and the run's wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import jax

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from stepopsd_jax.algorithms import ESTIMATORS  # noqa: E402
from stepopsd_jax.run import config as config_lib  # noqa: E402
from stepopsd_jax.run import trainer  # noqa: E402


def _median(rows: list[dict], key: str) -> float:
  values = [r[key] for r in rows[1:] if key in r] or [r[key] for r in rows if key in r]
  return statistics.median(values) if values else float("nan")


def _rollout_success(rows: list[dict], window: int) -> tuple[float, float]:
  success = [r["rollout/success"] for r in rows if "rollout/success" in r]
  if not success:
    return float("nan"), float("nan")
  return statistics.mean(success[:window]), statistics.mean(success[-window:])


def run_one(estimator: str, arg: str, steps: int, overrides: list[str], window: int = 5) -> dict:
  spec = f"configs/default.py:estimator={estimator}" + (f",{arg}" if arg else "")
  config = config_lib.parse_flags([f"--config={spec}", f"--config.train.num_steps={steps}",
                                   *overrides], workdir_required=False).config
  config_lib.validate(config, jax.device_count())
  with tempfile.TemporaryDirectory() as workdir:
    start = time.perf_counter()
    final = trainer.run(config, workdir)
    wall = time.perf_counter() - start
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
      rows = [json.loads(line) for line in f]
    with open(os.path.join(workdir, "eval.json")) as f:
      evals = json.load(f)
  timing = [r for r in rows if "time/train_s" in r]
  initial = next(e for e in evals if e["step"] == 0 and "success" in e)
  first, last = _rollout_success(rows, window)
  return {"estimator": estimator, "rollout_s": _median(timing, "time/rollout_s"),
          "train_s": _median(timing, "time/train_s"), "initial_success": initial["success"],
          "final_success": final.get("success", float("nan")), "rollout_success_first": first,
          "rollout_success_last": last, "wall_s": wall}


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--arg", default="runlocal", help="config arg besides estimator=")
  parser.add_argument("--steps", type=int, default=4)
  parser.add_argument("--estimators", default=",".join(ESTIMATORS))
  parser.add_argument("--window", type=int, default=5,
                      help="RL steps averaged for the first/last sampled rollout success")
  parser.add_argument("--out", default="bench/results/estimators.json")
  args, overrides = parser.parse_known_args()
  results = [run_one(name, args.arg, args.steps, overrides, args.window)
             for name in args.estimators.split(",")]
  print(f"\nconfigs/default.py:{args.arg}, {args.steps} RL steps each, "
        f"{os.cpu_count()} CPU cores\n")
  print(f"| estimator | rollout s/step | train s/step | greedy eval before RL | after | "
        f"sampled, first {args.window} steps | last {args.window} | wall s |")
  print("|---|---|---|---|---|---|---|---|")
  for r in results:
    print(f"| {r['estimator']} | {r['rollout_s']:.2f} | {r['train_s']:.2f} | "
          f"{r['initial_success']:.3f} | {r['final_success']:.3f} | "
          f"{r['rollout_success_first']:.3f} | {r['rollout_success_last']:.3f} | "
          f"{r['wall_s']:.0f} |")
  os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
  with open(args.out, "w") as f:
    json.dump({"arg": args.arg, "steps": args.steps, "window": args.window,
               "overrides": overrides,
               "results": results}, f, indent=1)
  return 0


if __name__ == "__main__":
  sys.exit(main())
