"""Evaluates a policy on the config's eval tasks and prints per-subset tables.

    python -m stepopsd_jax.evaluate --config=configs/default.py --workdir=DIR [--config.a.b=v]
    python -m stepopsd_jax.evaluate --config=configs/search_stepopsd.py:runlocal --workdir=DIR \
        --policy=oracle

`--policy=model` (default): greedy episodes of the latest checkpoint in DIR, written to
DIR/eval_step<N>.json. `--policy=oracle`: the env protocol's oracle (Search-QA: one search, then
the golden answer; elsewhere the env's expert action), no model needed, written to
DIR/eval_oracle.json. `--policy=random`: the protocol's random well-formed policy (uniform over
the admissible actions where the env lists them), seeded by `seed`, to DIR/eval_random.json.
The table has one row per subset (Search-QA: per data source) with its number of episodes, the
average over subsets (each counts once: the papers' "average" column) and the overall row.
"""

from __future__ import annotations

import collections
import json
import os
import sys

import jax

from absl import flags

from stepopsd_jax.rollout import play, protocol
from stepopsd_jax.run.cli import config_from_cli, setup_process
from stepopsd_jax.run.config import prompt_config
from stepopsd_jax.run.metrics import markdown_table
from stepopsd_jax.run.setup import build, make_task_set
from stepopsd_jax.run.trainer import EVAL, EVAL_ENV_SEED, INIT, evaluate
from stepopsd_jax.train import checkpoint as ckpt_lib

POLICIES = ("model", "oracle", "random")


def subset_average(table: dict[str, float]) -> float | None:
  """Mean of the `success/<subset>` entries, each subset once; None without subsets."""
  values = [v for k, v in table.items() if k.startswith("success/")]
  return sum(values) / len(values) if values else None


def subset_rows(table: dict[str, float],
                counts: dict[str, int] | None = None) -> dict[str, dict[str, float]]:
  """{"success/nq": .8, "success": .7} -> {"nq": {"n": 5, "success": .8}, ..., "average": ...,
  "overall": {"n": 9, "success": .7, ...}}; "average" only with two or more subsets."""
  counts = counts or {}
  rows = {}
  for key, value in table.items():
    if key.startswith("success/"):
      name = key.split("/", 1)[1]
      rows[name] = {"n": counts.get(name), "success": value}
  if len(rows) > 1:
    rows["average"] = {"n": None, "success": subset_average(table)}
  rows["overall"] = {"n": sum(counts.values()) if counts else None,
                     **{k: v for k, v in table.items() if "/" not in k}}
  return rows


def scripted_table(config, name: str) -> tuple[dict[str, float], list]:
  """(metrics, tasks) of the env protocol's `oracle` or `random` policy on the eval tasks."""
  tasks = make_task_set(config, "eval")
  agent = protocol.for_env(config.env.name)
  policy = agent.oracle_policy if name == "oracle" else agent.random_policy
  result = play(config.env.name, tasks, policy, prompt_config(config), env_seed=EVAL_ENV_SEED,
                policy_seed=config.seed)
  return result.metrics, tasks


def model_table(config, workdir: str) -> tuple[dict[str, float], list, int] | None:
  """(metrics, tasks, step) of greedy episodes of the latest checkpoint; None without one."""
  directory = os.path.join(workdir, "checkpoints")
  with ckpt_lib.Checkpointer(directory, every=1, keep=10**6) as checkpointer:
    if checkpointer.latest_step() is None:  # before building anything
      return None
    base_rng = jax.random.key(config.seed)
    setup, _ = build(config, jax.random.fold_in(base_rng, INIT))
    state, _, step = checkpointer.restore_latest(setup.abstract_state())
  return evaluate(setup, state.params, jax.random.fold_in(base_rng, EVAL)), setup.eval_tasks, step


def report(table: dict[str, float], tasks: list, title: str) -> str:
  """The header line (how many episodes ran, per subset) and the markdown table."""
  counts = dict(sorted(collections.Counter(t.subset for t in tasks).items()))
  per_subset = ", ".join(f"{k} {v}" for k, v in counts.items())
  return (f"{title}: {len(tasks)} eval tasks, one episode each ({per_subset})\n\n"
          + markdown_table(subset_rows(table, counts)))


def _define_policy(fv: flags.FlagValues) -> None:
  flags.DEFINE_enum("policy", "model", POLICIES, "model: greedy episodes of the latest "
                    "checkpoint; oracle / random: the env protocol's scripted policy",
                    flag_values=fv)


def main(argv=None) -> int:
  setup_process()
  fv = config_from_cli(sys.argv[1:] if argv is None else argv, _define_policy)
  if fv is None:
    return 2
  config, policy, workdir = fv.config, fv.policy, fv.workdir
  os.makedirs(workdir, exist_ok=True)
  if policy != "model":
    table, tasks = scripted_table(config, policy)
    step, title, out = None, f"{policy} policy on {config.env.name}", f"eval_{policy}.json"
  else:
    found = model_table(config, workdir)
    if found is None:
      print(f"no checkpoint in {workdir}/checkpoints: train first (python -m "
            "stepopsd_jax.train ...) or pass --policy=oracle.", file=sys.stderr)
      return 1
    table, tasks, step = found
    title, out = f"model at step {step} on {config.env.name}", f"eval_step{step}.json"
  print(report(table, tasks, title))
  summary = dict(policy=policy, step=step, num_tasks=len(tasks),
                 success_subset_average=subset_average(table))
  with open(os.path.join(workdir, out), "w") as f:
    json.dump({**summary, **table}, f, indent=1)
  return 0


if __name__ == "__main__":
  sys.exit(main())
