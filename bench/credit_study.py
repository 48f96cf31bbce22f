"""The credit-lab study: does StepOPSD assign credit better than GRPO, where, and by how much.

    python bench/credit_study.py [--quick] [--only VARIANT:EST,EST ...] [--seeds N ...]
        [--match NAME_PATTERN ...] [--report]
        [--out bench/results/credit_study] [--cache DIR]

One JSON per (variant, estimator, seed, knobs) run under `--out`; a run whose JSON exists is
skipped, so a stopped study continues where it stopped and partial results are usable.
`--quick` (seed 0 of GRPO and StepOPSD on `main` and `null`, warm-ups included) writes under
`bench/results/credit_study_quick/` by default, so it runs rather than finding the full study's
JSONs (its own run JSONs are not committed: git ignores them), and records its wall time there
(`quick.json`, committed) when one invocation ran all four runs.
`--report` (also run at the end) reads every JSON and writes the tables (`summary.json`,
`summary.md`) and the plots (`*.png`) next to them.

Settings, fixed before any run (README "Credit-lab study" says why):
- every run is `configs/default.py` (the shipped base model, its main-job task and knobs) with
  the variant's env knobs and the estimator's algo knobs, `RL_STEPS` steps of 4 tasks x 8
  rollouts (32 episodes per step), a final greedy eval on the config's 96 eval tasks;
- the format warm-up is run once per (variant, seed) and shared by that seed's estimators
  (saved as a HF checkpoint under `--cache`, then `model.path` with `train.sft_steps=0`);
- the measure: episodes until the sampled success, averaged over 5 steps, first reaches 0.8
  (censored at the budget, RL_STEPS x 32); the mechanism: the mean StepOPSD weight on the
  critical step's action tokens vs the other steps', per training step, for won and lost
  trajectories.
"""

from __future__ import annotations

import argparse
import dataclasses
import fnmatch
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import jax

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from stepopsd_jax import models  # noqa: E402
from stepopsd_jax.run import config as config_lib  # noqa: E402
from stepopsd_jax.run import setup as setup_lib  # noqa: E402
from stepopsd_jax.run import trainer  # noqa: E402
from stepopsd_jax.run.metrics import read_jsonl  # noqa: E402

RL_STEPS = 20  # the main job's: from the base model sampled success saturates within ~10
EPISODES_PER_STEP = 32
THRESHOLD, WINDOW = 0.8, 5
MAIN = dict(horizon=3, num_choices=3, critical_step=2, num_colours=3, treasure_colours=1,
            clue_mode="none")
VARIANTS = {  # env.name, env.kwargs
    "main": ("credit_lab/critical_step", MAIN),
    "last": ("credit_lab/critical_step", {**MAIN, "horizon": 4, "critical_step": 4}),
    "first": ("credit_lab/critical_step", {**MAIN, "critical_step": 1}),
    "noise": ("credit_lab/critical_step", {**MAIN, "reward_noise": 0.3}),
    "null": ("credit_lab/null_causal", MAIN),
}
ESTIMATORS = {  # algo overrides; rlsd is StepOPSD's shaping with RLSD's weight and no budget
    "grpo": {"estimator": "grpo"}, "stepopsd": {"estimator": "stepopsd"},
    "gigpo": {"estimator": "gigpo"}, "steppo": {"estimator": "steppo"},
    "opsd": {"estimator": "opsd"},
    "rlsd": {"estimator": "stepopsd", "weight_fn": "exp", "credit_budget": "none"},
}
HEATMAP = dict(alpha_clip=(0.05, 0.2, 0.4), lambda_mix=(0.25, 0.5, 1.0), seeds=(0, 1, 2))


@dataclasses.dataclass(frozen=True)
class Run:
  variant: str
  estimator: str
  seed: int
  knobs: tuple = ()  # extra algo overrides, e.g. (("alpha_clip", 0.05), ("lambda_mix", 1.0))

  @property
  def name(self) -> str:
    extra = "".join(f"_{k}{v:g}" for k, v in self.knobs)
    return f"{self.variant}_{self.estimator}{extra}_seed{self.seed}"


def grid(quick: bool) -> list[Run]:
  """Every run of the study, in the order they run (the core comparison first)."""
  if quick:
    return [Run(v, e, 0) for v in ("main", "null") for e in ("grpo", "stepopsd")]
  runs = [Run(v, e, s) for s in range(5) for v in VARIANTS for e in ("grpo", "stepopsd")]
  runs += [Run("main", e, s) for s in range(3) for e in ("rlsd", "gigpo", "steppo", "opsd")]
  for a in HEATMAP["alpha_clip"]:
    for lam in HEATMAP["lambda_mix"]:
      if (a, lam) != (0.2, 0.5):  # the default: the stepopsd runs above
        runs += [Run("main", "stepopsd", s, (("alpha_clip", a), ("lambda_mix", lam)))
                 for s in HEATMAP["seeds"]]
  return runs


def config_for(run: Run, model_path: str = "", tokenizer_path: str = "", sft: bool = True):
  env_name, kwargs = VARIANTS[run.variant]
  algo = {**ESTIMATORS[run.estimator], **dict(run.knobs)}
  overrides = {"seed": run.seed, "env.name": env_name, "train.num_steps": RL_STEPS,
               "train.eval_every": RL_STEPS, "train.checkpoint_every": RL_STEPS,
               **{f"algo.{k}": v for k, v in algo.items()}}
  if model_path:
    overrides.update({"model.path": model_path, "tokenizer.path": tokenizer_path})
  if not sft:
    overrides["train.sft_steps"] = 0
  config = config_lib.load("configs/default.py", overrides)
  with config.unlocked():
    config.env.kwargs = dict(kwargs)
  config_lib.validate(config, jax.device_count())
  return config


def warm_checkpoint(run: Run, cache: str) -> str:
  """The format-warmed policy of (variant, seed), built once: a HF checkpoint dir."""
  out = os.path.join(cache, f"warm_{run.variant}_seed{run.seed}")
  if os.path.exists(os.path.join(out, "config.json")):
    return out
  config = config_for(Run(run.variant, "grpo", run.seed))
  setup, params = setup_lib.build(config, jax.random.key(run.seed))
  params = trainer.warm_up(setup, params)
  tmp = out + ".tmp"
  shutil.rmtree(tmp, ignore_errors=True)
  models.save_hf(setup.model_config, params, tmp)
  base = config.tokenizer.path or config.model.path
  for name in os.listdir(base):  # the tokenizer files of the base model
    if name.startswith(("tokenizer", "chat_template", "special_tokens", "vocab", "merges")):
      shutil.copy(os.path.join(base, name), tmp)
  os.replace(tmp, out)
  return out


def run_one(run: Run, out_dir: str, cache: str) -> dict:
  path = os.path.join(out_dir, run.name + ".json")
  if os.path.exists(path):
    with open(path) as f:
      return json.load(f)
  start = time.perf_counter()
  warm = warm_checkpoint(run, cache)
  config = config_for(run, warm, warm, sft=False)
  with tempfile.TemporaryDirectory() as workdir:
    final = trainer.run(config, workdir)
    rows = read_jsonl(os.path.join(workdir, "metrics.jsonl"))
    with open(os.path.join(workdir, "eval.json")) as f:
      evals = json.load(f)
  record = dict(run=dataclasses.asdict(run), name=run.name, rl_steps=RL_STEPS,
                episodes_per_step=EPISODES_PER_STEP, env=dict(config.env.kwargs),
                success=[r["rollout/success"] for r in rows if "rollout/success" in r],
                train=[{k: v for k, v in r.items() if k.startswith("train/weight")
                        or k in ("train/loss", "train/grad_norm", "train/delta_std")}
                       for r in rows if "train/loss" in r],
                eval_before=next(e["success"] for e in evals if e["step"] == 0
                                 and "success" in e),
                eval_after=final["success"], seconds=time.perf_counter() - start,
                commit=COMMIT)
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(record, f, indent=1)
  os.replace(tmp, path)
  return record


def _commit() -> str:
  """The code's git commit (with "+dirty" when the tree has changes), or "" outside a clone."""
  here = os.path.dirname(os.path.abspath(__file__))
  try:
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True,
                         text=True, check=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                           capture_output=True, text=True, check=True).stdout.strip()
  except (OSError, subprocess.CalledProcessError):
    return ""
  return rev + ("+dirty" if dirty else "")


COMMIT = _commit()  # at import: the code this process runs, whatever the tree says later


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--quick", action="store_true", help="1 seed, main and null, grpo vs stepopsd")
  p.add_argument("--only", nargs="*", default=(), help="VARIANT[:EST,EST] to run (default all)")
  p.add_argument("--match", nargs="*", default=(),
                 help="only runs whose name matches one of these shell patterns, e.g. "
                      "'main_stepopsd_alpha_clip0.4_*' (names: VARIANT_EST[_KNOBS]_seedN)")
  p.add_argument("--seeds", nargs="*", type=int, default=(),
                 help="only these seeds (default all), e.g. to run seed 0 of every arm first")
  p.add_argument("--out", help="default bench/results/credit_study (_quick with --quick)")
  p.add_argument("--cache", default=os.path.join(
      os.environ.get("STEPOPSD_CACHE_DIR", os.path.expanduser("~/.cache/stepopsd")),
      "credit_study"))
  p.add_argument("--report", action="store_true", help="only (re)write the summary and plots")
  args = p.parse_args(argv)
  args.out = args.out or "bench/results/credit_study" + "_quick" * args.quick
  os.makedirs(args.out, exist_ok=True)
  os.makedirs(args.cache, exist_ok=True)
  start, ran, warm_before = time.perf_counter(), [], set(os.listdir(args.cache))
  if not args.report:
    for run in grid(args.quick):
      if (_selected(run, args.only) and (not args.seeds or run.seed in args.seeds)
          and (not args.match or any(fnmatch.fnmatch(run.name, m) for m in args.match))):
        print(f"=== {run.name}", flush=True)
        if not os.path.exists(os.path.join(args.out, run.name + ".json")):
          ran.append(run.name)  # else run_one reads the JSON back
        run_one(run, args.out, args.cache)
  from bench import credit_report  # pylint: disable=g-import-not-at-top
  print(credit_report.write(args.out))
  wall = time.perf_counter() - start
  print(f"wall time: {wall / 60:.1f} min, {len(ran)} runs run (the others read back)")
  runs = grid(args.quick)
  todo = [r.name for r in runs if not os.path.exists(os.path.join(args.out, r.name + ".json"))]
  print(f"{len(runs) - len(todo)} of the {'quick' if args.quick else 'full'} study's "
        f"{len(runs)} runs are done" + (f"; not yet: {' '.join(todo)}" if todo else ""))
  if args.quick and len(ran) < len(runs):
    print(f"quick.json left as it was: this invocation ran {len(ran)} of the {len(runs)} runs "
          f"(delete {args.out}/*_seed0.json to time them all)")
  elif args.quick:
    with open(os.path.join(args.out, "quick.json"), "w") as f:
      json.dump({"wall_s": wall, "runs": ran, "cache": args.cache, "commit": COMMIT,
                 "warm_ups_built": sorted(set(os.listdir(args.cache)) - warm_before),
                 "cpu_count": os.cpu_count()}, f, indent=1)
  return 0


def _selected(run: Run, only) -> bool:
  if not only:
    return True
  for item in only:
    variant, _, estimators = item.partition(":")
    if run.variant == variant and (not estimators or run.estimator in estimators.split(",")):
      return True
  return False


if __name__ == "__main__":
  sys.exit(main())
