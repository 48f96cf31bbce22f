"""Host-side env protocol: tasks, step results, one-episode envs, a batched runner, a registry.

Envs deal in strings (observations, action text); the rollout loop turns them into tokens. A
`Task` fixes an episode: two envs reset with the same task behave identically given the same
actions, so the G rollouts of a group all see the same task.
"""

from __future__ import annotations

import dataclasses
import importlib
import time
from typing import Any, Callable, Protocol

import numpy as np


@dataclasses.dataclass(frozen=True)
class Task:
  """One task of a data set; the G rollouts of a group share it."""

  task_id: str  # stable and unique within one task set, e.g. "critical_step-train-00017"
  subset: str  # variant/type name, the key of per-subset metrics
  payload: dict  # env-specific data (seed, knobs, game file, question, ...)
  reference: str | None = None  # expert plan or reference answer, for hindsight contexts


@dataclasses.dataclass
class StepResult:
  """What an env returns from `reset` and `step`.

  `info` always has `won: bool`, `admissible_actions: list[str] | None` (None where the env has
  no such list), `subset: str` and `valid_action: bool`; envs may add more keys.
  """

  observation: str
  reward: float
  done: bool
  info: dict


class Env(Protocol):
  """A text environment that runs one episode at a time."""

  def reset(self, task: Task) -> StepResult:
    """Starts the episode of `task`: reward 0, done False, the first observation."""

  def step(self, action: str) -> StepResult:
    """Applies the agent's action text; malformed actions are invalid, not errors."""

  @property
  def task_description(self) -> str:
    """The instruction text shown to the agent every turn."""

  @property
  def max_steps(self) -> int:
    """The step limit of the current episode."""

  def expert_action(self) -> str:
    """The expert policy's next action; raises NotImplementedError for envs without one."""


def error_result(task: Task | None, exc: BaseException, reward: float) -> StepResult:
  """The terminal result that replaces a step or reset that raised."""
  info = dict(won=False, admissible_actions=None, subset=task.subset if task else "",
              valid_action=False, error=repr(exc))
  return StepResult("The environment failed; the episode is over.", reward, True, info)


class BatchedEnv:
  """N envs stepped together (sequentially: the envs are fast) that never raise because of one.

  An env whose reset or step raises ends its episode (done, `error_reward`, `info["error"]`)
  and increments `num_env_errors`; the others go on. The step limit is `max_steps` if given,
  else each env's own; an episode that hits it ends with done=True, won=False and
  `info["truncated"] = True`. Counters and timers cover the episodes since the last `reset`.
  """

  def __init__(self, env_fn: Callable[[int], Env], num_envs: int, *,
               max_steps: int | None = None, error_reward: float = 0.0):
    """`env_fn(i)` builds env i; the index lets envs get distinct seeds (e.g. `seed=i`)."""
    if num_envs < 1:
      raise ValueError(f"num_envs={num_envs} must be at least 1.")
    self.envs = [env_fn(i) for i in range(num_envs)]
    self.max_steps_override = max_steps
    self.error_reward = float(error_reward)
    self.tasks: list[Task] = []
    self.done = [True] * num_envs
    self.num_steps = [0] * num_envs
    self.step_limits = [0] * num_envs
    self._zero_counters()

  @property
  def num_envs(self) -> int:
    return len(self.envs)

  @property
  def all_done(self) -> bool:
    return all(self.done)

  def reset(self, tasks: list[Task]) -> list[StepResult]:
    """Starts one episode per env; `tasks[i]` goes to env i."""
    if len(tasks) != self.num_envs:
      raise ValueError(f"Got {len(tasks)} tasks for {self.num_envs} envs.")
    self.tasks = list(tasks)
    self.num_steps = [0] * self.num_envs
    self._zero_counters()
    return [self._reset_one(i, task) for i, task in enumerate(tasks)]

  def step(self, actions: list[str | None]) -> list[StepResult | None]:
    """Steps every env that is not done and got an action; the others give None."""
    if len(actions) != self.num_envs:
      raise ValueError(f"Got {len(actions)} actions for {self.num_envs} envs.")
    return [None if action is None or self.done[i] else self._step_one(i, action)
            for i, action in enumerate(actions)]

  def stats(self) -> dict[str, float]:
    """Counters and timers of the episodes since the last reset, for metrics."""
    return dict(num_env_errors=self.num_env_errors, env_step_seconds=self.env_step_seconds,
                env_reset_seconds=self.env_reset_seconds)

  def _zero_counters(self):
    self.num_env_errors = 0
    self.env_step_seconds = 0.0
    self.env_reset_seconds = 0.0

  def _reset_one(self, i: int, task: Task) -> StepResult:
    start = time.perf_counter()
    outcome = _attempt(self._start_episode, i, task)
    self.env_reset_seconds += time.perf_counter() - start
    if isinstance(outcome, Exception):
      return self._fail(i, outcome)
    self.done[i] = outcome.done
    return outcome

  def _start_episode(self, i: int, task: Task) -> StepResult:
    result = _checked(self.envs[i].reset(task))
    limit = self.max_steps_override  # an env's own limit may depend on the task: read it now
    self.step_limits[i] = self.envs[i].max_steps if limit is None else limit
    return result

  def _step_one(self, i: int, action: str) -> StepResult:
    start = time.perf_counter()
    result = _attempt(lambda: _checked(self.envs[i].step(action)))
    self.env_step_seconds += time.perf_counter() - start
    self.num_steps[i] += 1
    if isinstance(result, Exception):
      return self._fail(i, result)
    if not result.done and self.num_steps[i] >= self.step_limits[i]:
      result.done = True
      result.info.update(won=False, truncated=True)
    self.done[i] = result.done
    return result

  def _fail(self, i: int, exc: Exception) -> StepResult:
    self.num_env_errors += 1
    self.done[i] = True
    task = self.tasks[i] if i < len(self.tasks) else None
    return error_result(task, exc, self.error_reward)


def _attempt(fn: Callable[..., Any], *args: Any) -> Any:
  """`fn(*args)`, or the exception it raised."""
  try:
    return fn(*args)
  except Exception as exc:  # pylint: disable=broad-except
    return exc


def _checked(result: Any) -> StepResult:
  """Raises on a malformed env return, so that it takes the env-error path."""
  if not isinstance(result, StepResult) or not isinstance(result.info, dict):
    raise TypeError(f"Env returned {result!r:.200}, expected a StepResult with a dict info.")
  result.reward = float(result.reward)
  return result


# (env, current result, the episode's generator) -> the whole response text. A random policy
# draws only from the generator it is given: `rollout.scripted.play` makes one per episode,
# keyed by (seed, task id, episode), so episodes never replay each other's draws.
Policy = Callable[[Env, StepResult, np.random.Generator], str]


@dataclasses.dataclass(frozen=True)
class AgentProtocol:
  """How a policy talks to an env, where it differs from the rollout's `<think>/<action>` default.

  Every field is optional: None takes the default of `stepopsd_jax/rollout/protocol.py` (tags
  `<action>`/`</action>`, uniform-random admissible actions for the warm-up, the expert action).
  """

  # response text -> an object with `.action` (text for env.step, "" if invalid), `.valid`,
  # `.reason` (the key of the `invalid/<reason>` metric); must never raise.
  parse_response: Callable[[str], Any] | None = None
  # (open, close) tags around an action: the close tags are the sampler's stop strings and the
  # spans are what `control_mode="action_only"` keeps.
  action_tags: tuple[tuple[str, str], ...] | None = None
  # Appended to every user message ("" when the task text already says how to answer).
  format_instruction: str | None = None
  # (description, history, result, prompt_cfg) -> the user message of a step.
  user_text: Callable[..., str] | None = None
  # Random well-formed responses (format warm-up, tokenizer texts).
  random_policy: Policy | None = None
  oracle_policy: Policy | None = None  # `evaluate --policy=oracle`
  # (envs, actions) -> anything: batched work (e.g. retrieval) just before `BatchedEnv.step`.
  prefetch: Callable[[list[Env], list[str | None]], Any] | None = None

  @property
  def stop_strings(self) -> tuple[str, ...]:
    return tuple(close for _, close in self.action_tags or ())


@dataclasses.dataclass(frozen=True)
class EnvSpec:
  """How to build an env and its tasks: `make_env(**kw)`, `make_tasks(split, num, seed, **kw)`,
  and how an agent talks to it (`protocol`)."""

  make_env: Callable[..., Env]
  make_tasks: Callable[..., list[Task]]
  protocol: AgentProtocol = AgentProtocol()


_REGISTRY: dict[str, EnvSpec] = {}

# Built-in envs are imported on first use, so optional dependencies load only when asked for.
_BUILTIN_MODULES = {
    "alfworld": "stepopsd_jax.envs.alfworld",
    "credit_lab/critical_step": "stepopsd_jax.envs.credit_lab",
    "credit_lab/critical_step_memory": "stepopsd_jax.envs.credit_lab",
    "credit_lab/null_causal": "stepopsd_jax.envs.credit_lab",
    "search_qa": "stepopsd_jax.envs.search_qa",
}


def register_env(name: str, make_env: Callable[..., Env], make_tasks: Callable[..., list[Task]],
                 protocol: AgentProtocol | None = None) -> None:
  """Makes `name` available to `make_env` and `make_tasks`; `protocol` None is the default."""
  if name in _REGISTRY:
    raise ValueError(f"Env {name!r} is already registered.")
  _REGISTRY[name] = EnvSpec(make_env, make_tasks, protocol or AgentProtocol())


def known_envs() -> list[str]:
  return sorted(set(_REGISTRY) | set(_BUILTIN_MODULES))


def get_spec(name: str) -> EnvSpec:
  if name not in _REGISTRY and name in _BUILTIN_MODULES:
    importlib.import_module(_BUILTIN_MODULES[name])
  if name not in _REGISTRY:
    raise KeyError(f"Unknown env {name!r}. Known envs: {', '.join(known_envs())}.")
  return _REGISTRY[name]


def make_env(name: str, **kwargs: Any) -> Env:
  """A fresh env instance, e.g. `make_env("credit_lab/critical_step", seed=3)`."""
  return get_spec(name).make_env(**kwargs)


def make_tasks(name: str, split: str, num: int, seed: int = 0, **kwargs: Any) -> list[Task]:
  """`num` tasks of `split` ("train"/"eval"/...), deterministic in (name, split, seed, kwargs)."""
  return get_spec(name).make_tasks(split=split, num=num, seed=seed, **kwargs)
