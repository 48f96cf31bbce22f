"""Re-evaluates the latest checkpoint of a run and prints per-subset tables.

    python -m stepopsd_jax.evaluate --config=configs/default.py --workdir=DIR [--config.a.b=v]

Greedy episodes on the config's eval tasks; prints a markdown table and writes
DIR/eval_step<N>.json.
"""

from __future__ import annotations

import json
import os
import sys

import jax

from stepopsd_jax.train import checkpoint as ckpt_lib
from stepopsd_jax.train.__main__ import config_from_cli
from stepopsd_jax.train.metrics import markdown_table
from stepopsd_jax.train.setup import build
from stepopsd_jax.train.state import abstract_state
from stepopsd_jax.train.trainer import _EVAL, _INIT, evaluate


def subset_rows(table: dict[str, float]) -> dict[str, dict[str, float]]:
  """{"success/heat": .8, "success": .7} -> {"heat": {"success": .8}, "overall": {...}}."""
  rows = {"overall": {k: v for k, v in table.items() if "/" not in k}}
  for key, value in table.items():
    if key.startswith("success/"):
      rows.setdefault(key.split("/", 1)[1], {})["success"] = value
  return rows


def main(argv=None) -> int:
  args, config = config_from_cli(sys.argv[1:] if argv is None else argv)
  if config is None:
    return 2
  base_rng = jax.random.key(config.seed)
  setup, _ = build(config, jax.random.fold_in(base_rng, _INIT))
  cfg = setup.step_cfg
  directory = os.path.join(args.workdir, "checkpoints")
  restored = ckpt_lib.Checkpointer(directory, every=1, keep=10**6).restore_latest(abstract_state(
      setup.model_config, setup.tx, setup.mesh, keep_reference=cfg.keep_reference,
      keep_ema=cfg.keep_ema))
  if restored is None:
    print(f"no checkpoint in {directory}: train first (python -m stepopsd_jax.train ...).",
          file=sys.stderr)
    return 1
  state, _, step = restored
  table = evaluate(setup, state.params, jax.random.fold_in(base_rng, _EVAL))
  table["num_tasks"] = float(len(setup.eval_tasks))
  print(f"step {step}, {len(setup.eval_tasks)} eval tasks of {config.env.name}\n")
  print(markdown_table(subset_rows(table)))
  with open(os.path.join(args.workdir, f"eval_step{step}.json"), "w") as f:
    json.dump({"step": step, **table}, f, indent=1)
  return 0


if __name__ == "__main__":
  sys.exit(main())
