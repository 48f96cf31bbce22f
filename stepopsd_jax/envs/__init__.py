"""Text environments behind one host-side protocol: credit lab (ALFWorld and Search-QA to come)."""

from stepopsd_jax.envs.base import (
    BatchedEnv, Env, EnvSpec, StepResult, Task, get_spec, known_envs, make_env, make_tasks,
    register_env)


__all__ = [
    "BatchedEnv", "Env", "EnvSpec", "StepResult", "Task", "get_spec", "known_envs", "make_env",
    "make_tasks", "register_env",
]
