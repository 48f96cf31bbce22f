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

import argparse
import collections
import json
import os
import sys

import jax

from stepopsd_jax.rollout import protocol, scripted
from stepopsd_jax.train import checkpoint as ckpt_lib
from stepopsd_jax.train.__main__ import config_from_cli
from stepopsd_jax.train.metrics import markdown_table
from stepopsd_jax.train.setup import build, make_task_set, prompt_config
from stepopsd_jax.train.state import abstract_state
from stepopsd_jax.train.trainer import _EVAL, _INIT, evaluate, state_options

POLICIES = ("model", "oracle", "random")
EVAL_ENV_SEED = 1 << 20  # the trainer's eval episodes use the same env seeds


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
  episodes = scripted.play(config.env.name, tasks, policy, prompt_config(config),
                           env_seed=EVAL_ENV_SEED, policy_seed=config.seed)
  return scripted.episode_metrics(episodes), tasks


def model_table(config, workdir: str) -> tuple[dict[str, float], list, int] | None:
  """(metrics, tasks, step) of greedy episodes of the latest checkpoint; None without one."""
  directory = os.path.join(workdir, "checkpoints")
  with ckpt_lib.Checkpointer(directory, every=1, keep=10**6) as checkpointer:
    if checkpointer.latest_step() is None:  # before building anything
      return None
    base_rng = jax.random.key(config.seed)
    setup, _ = build(config, jax.random.fold_in(base_rng, _INIT))
    state, _, step = checkpointer.restore_latest(abstract_state(
        setup.model_config, setup.tx, setup.mesh, **state_options(setup)))
  return evaluate(setup, state.params, jax.random.fold_in(base_rng, _EVAL)), setup.eval_tasks, step


def report(table: dict[str, float], tasks: list, title: str) -> str:
  """The header line (how many episodes ran, per subset) and the markdown table."""
  counts = dict(sorted(collections.Counter(t.subset for t in tasks).items()))
  per_subset = ", ".join(f"{k} {v}" for k, v in counts.items())
  return (f"{title}: {len(tasks)} eval tasks, one episode each ({per_subset})\n\n"
          + markdown_table(subset_rows(table, counts)))


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(add_help=False)
  parser.add_argument("--policy", default="model", choices=POLICIES)
  args, rest = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
  cli, config = config_from_cli(rest)
  if config is None:
    return 2
  os.makedirs(cli.workdir, exist_ok=True)
  if args.policy != "model":
    table, tasks = scripted_table(config, args.policy)
    step, title, out = None, f"{args.policy} policy on {config.env.name}", (
        f"eval_{args.policy}.json")
  else:
    found = model_table(config, cli.workdir)
    if found is None:
      print(f"no checkpoint in {cli.workdir}/checkpoints: train first (python -m "
            "stepopsd_jax.train ...) or pass --policy=oracle.", file=sys.stderr)
      return 1
    table, tasks, step = found
    title, out = f"model at step {step} on {config.env.name}", f"eval_step{step}.json"
  print(report(table, tasks, title))
  summary = dict(policy=args.policy, step=step, num_tasks=len(tasks),
                 success_subset_average=subset_average(table))
  with open(os.path.join(cli.workdir, out), "w") as f:
    json.dump({**summary, **table}, f, indent=1)
  return 0


if __name__ == "__main__":
  sys.exit(main())
