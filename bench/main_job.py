"""The main job, StepOPSD and GRPO side by side: the README's first section comes from here.

    python bench/main_job.py [--workdir-root /tmp/main_job] [--out bench/results/main_job.json]

Runs README command 1 (`configs/default.py`) and the same with `:estimator=grpo`, one after the
other on an otherwise idle machine (a workdir that already holds a finished run is read, not
rerun), and writes per RL step the sampled success and StepOPSD's credit statistics (weight
std, and the mean weight per step index for won and lost trajectories), the greedy evals and
the wall time of each run. Prints a table and draws `main_job.png` next to the JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from stepopsd_jax.run.metrics import read_jsonl  # noqa: E402

RUNS = {"stepopsd": "configs/default.py", "grpo": "configs/default.py:estimator=grpo"}


def run(config: str, workdir: str) -> float:
  """Wall seconds of one trainer command (read back when the workdir holds a finished run)."""
  stamp = os.path.join(workdir, "wall_s.json")
  if os.path.exists(stamp):
    with open(stamp) as f:
      return json.load(f)["wall_s"]
  start = time.perf_counter()
  subprocess.run([sys.executable, "-m", "stepopsd_jax.train", f"--config={config}",
                  f"--workdir={workdir}"], check=True)
  wall = time.perf_counter() - start
  with open(stamp, "w") as f:
    json.dump({"wall_s": wall}, f)
  return wall


def summary(workdir: str, wall: float) -> dict:
  rows = read_jsonl(os.path.join(workdir, "metrics.jsonl"))
  with open(os.path.join(workdir, "eval.json")) as f:
    evals = json.load(f)
  train = [r for r in rows if "train/loss" in r]
  pick = lambda prefix: [{k[len(prefix):]: v for k, v in r.items() if k.startswith(prefix)}
                         for r in train]
  return dict(
      wall_s=wall,
      success=[r["rollout/success"] for r in rows if "rollout/success" in r],
      weight_std=[r.get("train/weight_std", 0.0) for r in train],
      # over the control tokens whose advantage is not 0 (None: a step with none of them)
      weight_acting_std=[r["train/weight_acting_std"] if r.get("train/acting_control_frac")
                         else None for r in train],
      acting_control_frac=[r.get("train/acting_control_frac", 0.0) for r in train],
      delta_std=[r.get("train/delta_std", 0.0) for r in train],
      grad_norm=[r.get("train/grad_norm", 0.0) for r in train],  # the README compares the two
      weight_won=pick("train/weight_won_step"), weight_lost=pick("train/weight_lost_step"),
      rollout_s=float(np.median([r["time/rollout_s"] for r in rows if "time/rollout_s" in r])),
      update_s=float(np.median([r["time/update_s"] for r in rows if "time/update_s" in r])),
      eval={e["step"]: e["success"] for e in evals if "success" in e})


def table(result: dict) -> str:
  lines = ["| run | wall | sampled success, steps 1-5 → last 5 | greedy eval (96 held-out tasks) "
           "at step " + " / ".join(str(k) for k in next(iter(result["runs"].values()))["eval"])
           + " | weight std on control tokens, steps 1-5 / all | the same where A ≠ 0 "
           "(steps with such tokens) | rollout + update per step (medians of `time/rollout_s`, "
           "`time/update_s`) |",
           "|---|---|---|---|---|---|---|"]
  for name, r in result["runs"].items():
    s, w = r["success"], r["weight_std"]
    ev = " / ".join(f"{v:.2f}" for v in r["eval"].values())
    acting = [x for x in r.get("weight_acting_std", []) if x is not None]
    std = f"{np.mean(w[:5]):.3f} / {np.mean(w):.3f}" if any(w) else "—"
    act = f"{np.mean(acting):.3f} ({len(acting)} of {len(w)})" if acting and any(w) else "—"
    label = f"`{name}`" + (" (command 1)" if name == "stepopsd" else "")
    lines.append(f"| {label} | {r['wall_s'] / 60:.1f} min | {np.mean(s[:5]):.2f} → "
                 f"{np.mean(s[-5:]):.2f} | {ev} | {std} | {act} | "
                 f"{r['rollout_s']:.1f} s + {r['update_s']:.1f} s |")
  return "\n".join(lines)


def plot(result: dict, path: str) -> None:
  fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.5))
  for name, r in result["runs"].items():
    a.plot(range(1, len(r["success"]) + 1), r["success"], marker="o", label=name)
  a.set(xlabel="RL step (32 episodes)", ylabel="sampled success", ylim=(0, 1.05),
        title="credit lab, critical room 2 of 3")
  a.axhline(1 / 3, color="grey", ls=":", label="chance")
  a.legend()
  sd = result["runs"]["stepopsd"]
  for outcome, style in (("won", "-"), ("lost", "--")):
    series = sd["weight_" + outcome]
    for i, k in enumerate(sorted({k for r in series for k in r})):
      b.plot(range(1, len(series) + 1), [r.get(k, np.nan) for r in series], style,
             color=f"C{i}", label=f"room {int(k) + 1}, {outcome}")
  b.set(xlabel="RL step", ylabel="mean weight, action tokens",
        title="StepOPSD's weight by room (won / lost)")
  b.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=90)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--workdir-root", default="/tmp/main_job")
  p.add_argument("--out", default="bench/results/main_job.json")
  args = p.parse_args(argv)
  result = {"command": "python bench/main_job.py", "runs": {}}
  for name, config in RUNS.items():
    workdir = os.path.join(args.workdir_root, name)
    result["runs"][name] = summary(workdir, run(config, workdir))
  with open(args.out, "w") as f:
    json.dump(result, f, indent=1)
  plot(result, os.path.splitext(args.out)[0] + ".png")
  print(table(result))
  return 0


if __name__ == "__main__":
  sys.exit(main())
