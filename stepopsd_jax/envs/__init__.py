"""Text environments behind one host-side protocol: the credit lab, ALFWorld (the real TextWorld
engine) and Search-QA (the Search-R1 protocol), each registered by name with its agent protocol."""

from stepopsd_jax.envs.base import (
    BatchedEnv, Env, EnvSpec, StepResult, Task, get_spec, known_envs, make_env, make_tasks,
    register_env)


__all__ = [
    "BatchedEnv", "Env", "EnvSpec", "StepResult", "Task", "get_spec", "known_envs", "make_env",
    "make_tasks", "register_env",
]
