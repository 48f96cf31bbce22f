"""ALFWorld on the real TextWorld PDDL engine (`alfworld==0.4.2`, `textworld==1.7.0`).

Registered name: `alfworld`. `make_tasks(split, num, seed, **kwargs)` reads games from the
official layout under `data_dir` or `$ALFWORLD_DATA` (`data.py`; knobs `data_dir`,
`eval_split`, `task_types`, `max_steps`, `won_reward`, `fast`); `AlfworldEnv` plays them
(`env.py`); `generate.py` builds games offline from the wheel alone; `prompt.py` has verl-agent's ALFWorld template.

The agent protocol (`PROTOCOL`) keeps the rollout's `<think>/<action>` parsing, stop string,
random-admissible warm-up and expert oracle (`env.expert_action()`, for `evaluate
--policy=oracle`), and swaps in verl-agent's user message (`verl_agent_user_text`, the last
`rollout.history_window` steps) with no extra format line: the template has its own.
"""

from stepopsd_jax.envs.alfworld.data import SPLITS, data_root, discover, make_tasks
from stepopsd_jax.envs.alfworld.engine import Engine, GameError
from stepopsd_jax.envs.alfworld.env import DEFAULT_MAX_STEPS, AlfworldEnv, normalise
from stepopsd_jax.envs.alfworld.prompt import (
    format_admissible,
    verl_agent_prompt,
    verl_agent_user_text,
)
from stepopsd_jax.envs.alfworld.tasks import SHORT_NAMES, TASK_TYPES, task_type_of
from stepopsd_jax.envs.base import AgentProtocol, register_env

PROTOCOL = AgentProtocol(user_text=verl_agent_user_text, format_instruction="")
register_env("alfworld", AlfworldEnv, make_tasks, protocol=PROTOCOL)

__all__ = [
    "DEFAULT_MAX_STEPS", "PROTOCOL", "SHORT_NAMES", "SPLITS", "TASK_TYPES", "AlfworldEnv", "Engine",
    "GameError", "data_root", "discover", "format_admissible",
    "make_tasks", "normalise", "task_type_of", "verl_agent_prompt", "verl_agent_user_text",
]
