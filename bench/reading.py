"""Does the hindsight teacher read? The gap Delta on the student's action tokens, before any RL.

    python bench/reading.py [--config=configs/default.py] [--tasks 48] [--out FILE]
        [--config.a.b=v ...]

Builds the run exactly as the trainer does (tokenizer, model, format warm-up), samples one
batch of rollouts (tasks x G, at the rollout temperature), and scores every step's response
twice: by the student (its own prompt) and by the hindsight teacher (the same prompt plus the
block). Two teachers: shown a winning sibling's actions (the run's config), and shown only the
task's reference (no sibling). For each step index and each row with a block, the row's
action either equals the one the block names for that step ("match") or not; the unit of the
statistics is a row (the mean Delta over its control tokens). Reports mean Delta(match),
mean Delta(mismatch), their difference with a 95% bootstrap CI over rows, and the StepOPSD
weights these gaps give (the step's own shaping with the config's alpha_clip, lambda_mix and
budget) on control tokens. Writes a JSON to `--out` and prints a table.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from stepopsd_jax.pretrain import fallback  # noqa: E402
from stepopsd_jax.rollout import collect, hindsight  # noqa: E402
from stepopsd_jax.run import config as config_lib  # noqa: E402
from stepopsd_jax.run import setup as setup_lib  # noqa: E402
from stepopsd_jax.run import trainer  # noqa: E402
from stepopsd_jax.train import step as step_lib  # noqa: E402

TEACHERS = {"sibling": dict(hindsight_sibling=True, hindsight_reference=False),
            "reference": dict(hindsight_sibling=False, hindsight_reference=True)}


def bootstrap_ci(a: np.ndarray, b: np.ndarray, seed: int = 0, n: int = 2000
                 ) -> tuple[float, float]:
  """95% percentile-bootstrap CI of mean(a) - mean(b), resampling each group's rows."""
  if len(a) == 0 or len(b) == 0:
    return float("nan"), float("nan")
  rng = np.random.default_rng(seed)
  diffs = [rng.choice(a, len(a)).mean() - rng.choice(b, len(b)).mean() for _ in range(n)]
  return float(np.percentile(diffs, 2.5)), float(np.percentile(diffs, 97.5))


def named_actions(result, reference_step: int | None) -> list[str | None]:
  """For every row of the batch: the action its teacher's block names for the row's step (the
  demo sibling's, or the reference's at its step), None where the block names none."""
  trajs = [t for t in result.trajectories if t.rows]
  groups: dict[int, list[int]] = {}
  for i, t in enumerate(result.trajectories):
    groups.setdefault(t.group_id, []).append(i)
  out = []
  for traj in trajs:
    me = result.trajectories.index(traj)
    j = hindsight.demo_source([t.won for t in result.trajectories],
                              [len(t.rows) for t in result.trajectories], groups[traj.group_id],
                              me)
    for k in range(len(traj.rows)):
      if reference_step is not None:
        out.append(_reference_action(traj.task.reference) if k == reference_step else None)
      else:
        demo = result.trajectories[j].actions if j is not None else []
        out.append(demo[k] if k < len(demo) and demo[k] else None)
  return out


def _reference_action(reference: str) -> str:
  """"In room 2, open the red door. ..." -> "open red door" (the credit lab's reference)."""
  colour = reference.split(" open the ")[1].split()[0]
  return f"open {colour} door"


def row_table(result, delta: np.ndarray, names: list[str | None]) -> list[dict]:
  """One record per valid row with a block and a named action: step, match, mean Delta over the
  row's control tokens."""
  b = result.batch
  taken = [a for t in result.trajectories if t.rows for a in t.actions]
  rows = []
  for r in np.flatnonzero(np.asarray(b.row_valid) & np.asarray(b.has_hindsight)):
    control = np.asarray(b.control_mask[r])
    if names[r] is None or not control.any():
      continue
    rows.append(dict(step=int(b.step_idx[r]), match=_same(taken[r], names[r]),
                     delta=float(delta[r][control].mean())))
  return rows


def _same(a: str, b: str) -> bool:
  return " ".join(a.lower().split()) == " ".join(b.lower().split())


def summarise(rows: list[dict], steps: int) -> list[dict]:
  out = []
  for k in range(steps):
    at = [r for r in rows if r["step"] == k]
    m = np.array([r["delta"] for r in at if r["match"]])
    x = np.array([r["delta"] for r in at if not r["match"]])
    lo, hi = bootstrap_ci(m, x, seed=k)
    out.append(dict(step=k + 1, n_match=len(m), n_mismatch=len(x),
                    delta_match=float(m.mean()) if len(m) else None,
                    delta_mismatch=float(x.mean()) if len(x) else None,
                    diff=float(m.mean() - x.mean()) if len(m) and len(x) else None,
                    ci95=[lo, hi]))
  return out


def weight_stats(batch, credit) -> dict:
  """The StepOPSD weights (and gaps) on control tokens under the run's shaping settings."""
  control = np.asarray(batch.control_mask & batch.response_mask & batch.row_valid[:, None])
  w, d = np.asarray(credit.weights)[control], np.asarray(credit.delta)[control]
  if not w.size:  # no control tokens at all (every response malformed)
    return dict(weight_mean=None, weight_std=None, weight_min=None, weight_max=None,
                delta_std_control=None)
  return dict(weight_mean=float(w.mean()), weight_std=float(w.std()), weight_min=float(w.min()),
              weight_max=float(w.max()), delta_std_control=float(d.std()))


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--tasks", type=int, default=48)
  p.add_argument("--out", default="bench/results/reading.json")
  p.add_argument("--seed", type=int, default=0)
  args, overrides = p.parse_known_args(argv)
  start = time.perf_counter()
  config = config_lib.parse_flags(overrides, workdir_required=False).config
  rows_needed = args.tasks * config.rollout.group_size * config.env.kwargs.get("horizon", 3)
  with config.unlocked():  # one batch of rollouts, larger than a train step's
    config.rollout.batch_buckets = tuple(sorted({*config.rollout.batch_buckets,
                                                 1 << max(rows_needed - 1, 1).bit_length()}))
  setup, params = setup_lib.build(config, jax.random.key(config.seed))
  params = trainer.warm_up(setup, params)
  tasks = setup.train_tasks[:args.tasks]
  critical = config.env.kwargs.get("critical_step", 2) - 1
  report = dict(command=" ".join(["python bench/reading.py", *(argv or sys.argv[1:])]),
                model_path=config.model.path, sft_steps=config.train.sft_steps, teachers={})
  for name, knobs in TEACHERS.items():
    cfg = dataclasses.replace(setup.rollout_cfg, teacher_prompts=True, **knobs)
    result = collect(setup.sampler, params, setup.tokenizer, config.env.name, tasks,
                     jax.random.key(args.seed), cfg)
    credit = step_lib.credit(params, result.batch, config=setup.model_config,
                             cfg=dataclasses.replace(setup.step_cfg, estimator="stepopsd"))
    names = named_actions(result, critical if name == "reference" else None)
    rows = row_table(result, np.asarray(credit.delta), names)
    report["teachers"][name] = dict(
        success=result.metrics["success"], rows_with_block=int(result.batch.has_hindsight.sum()),
        by_step=summarise(rows, config.env.kwargs.get("horizon", 3)),
        weights=weight_stats(result.batch, credit))
  if config.env.name == fallback.transfer.ENV:
    report["follow"] = fallback.checks(setup.model_config, params, setup.tokenizer)
  report["seconds"] = time.perf_counter() - start
  print(table(report))
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, "w") as f:
    json.dump(report, f, indent=1)
  return 0


def table(report: dict) -> str:
  lines = ["| teacher | step | rows match / mismatch | Delta match | Delta mismatch | "
           "difference [95% CI] |", "|---|---|---|---|---|---|"]
  fmt = lambda v: "-" if v is None else f"{v:+.3f}"
  for name, t in report["teachers"].items():
    for s in t["by_step"]:
      ci = "" if s["diff"] is None else f" [{s['ci95'][0]:+.3f}, {s['ci95'][1]:+.3f}]"
      lines.append(f"| {name} | {s['step']} | {s['n_match']} / {s['n_mismatch']} | "
                   f"{fmt(s['delta_match'])} | {fmt(s['delta_mismatch'])} | "
                   f"{fmt(s['diff'])}{ci} |")
  lines.append("")
  for name, t in report["teachers"].items():
    w = {k: fmt(v) for k, v in t["weights"].items()}
    lines.append(f"{name}: sampled success {t['success']:.2f}, {t['rows_with_block']} rows with "
                 f"a block; weights on control tokens mean {w['weight_mean']} std "
                 f"{w['weight_std']} [{w['weight_min']}, {w['weight_max']}]")
  if "follow" in report:
    f = report["follow"]
    lines.append(f"without a block the top door at the deciding step is the treasure's "
                 f"{f['no_block_clue_door_rate']:.2f} of the time (95% CI {f['ci95'][0]:.2f}-"
                 f"{f['ci95'][1]:.2f}, chance {f['chance']:.2f}, n {f['n']}); with a block it is "
                 f"the block's door {f['follow_exact']:.2f} (clue), "
                 f"{f['follow_exact_no_clue']:.2f} (no clue)")
  return "\n".join(lines)


if __name__ == "__main__":
  sys.exit(main())
