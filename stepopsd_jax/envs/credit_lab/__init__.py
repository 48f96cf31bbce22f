"""Credit lab: text envs whose causal structure is a config (see `layout.py`).

Registered names: `credit_lab/critical_step`, `credit_lab/critical_step_memory` (the clue is
shown only in the first observation) and `credit_lab/null_causal` (the control).
"""

from __future__ import annotations

from typing import Any, Callable

from stepopsd_jax.envs.base import Task, register_env
from stepopsd_jax.envs.credit_lab.env import SPLITS, CreditLabEnv, make_tasks, task_seed
from stepopsd_jax.envs.credit_lab.layout import CreditLabConfig, Layout


def _variant_tasks(**fixed: Any) -> Callable[..., list[Task]]:
  """`make_tasks` with some knobs fixed by the registered name; a conflicting knob is an error."""

  def make(split: str, num: int, seed: int = 0, **knobs: Any) -> list[Task]:
    for key, value in fixed.items():
      if knobs.get(key, value) != value:
        raise ValueError(f"{key}={knobs[key]!r} conflicts with this env name, which fixes "
                         f"{key}={value!r}.")
    return make_tasks(split, num, seed, **{**knobs, **fixed})

  return make


register_env("credit_lab/critical_step", CreditLabEnv, _variant_tasks(variant="critical_step"))
register_env("credit_lab/critical_step_memory", CreditLabEnv,
             _variant_tasks(variant="critical_step", clue_mode="first_observation"))
register_env("credit_lab/null_causal", CreditLabEnv, _variant_tasks(variant="null_causal"))

__all__ = ["SPLITS", "CreditLabConfig", "CreditLabEnv", "Layout", "make_tasks", "task_seed"]
