"""Episodes of a scripted text policy (random format warm-up, oracle) through an env's protocol.

The model's path without a model: user message -> `policy(env, result)` response -> the
protocol's parser -> batched prefetch -> `BatchedEnv.step`, with the same prompt history, so
warm-up examples show exactly the prompts the policy will see in rollouts.
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Sequence

import numpy as np

from stepopsd_jax import envs as envs_lib
from stepopsd_jax.envs.base import AgentProtocol, Policy
from stepopsd_jax.rollout import loop, prompts, protocol


@dataclasses.dataclass
class Episode:
  task: envs_lib.Task
  steps: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # (user text, response)
  won: bool = False
  ret: float = 0.0  # sum of env rewards
  invalid: int = 0  # responses the protocol's parser rejected
  error: bool = False  # the env failed (BatchedEnv's counted env error)


def episode_rng(seed: int, task_id: str, episode: int = 0) -> np.random.Generator:
  """The generator of one scripted episode: keyed by (seed, task, episode), so building data
  task by task, or chunk by chunk, never replays one sequence of draws."""
  return np.random.default_rng([seed, zlib.crc32(task_id.encode()), episode])


def play(env_name: str, tasks: Sequence[envs_lib.Task], policy: Policy,
         prompt_cfg: prompts.PromptConfig, *, env_seed: int = 0, policy_seed: int = 0,
         episode: int = 0, batch_size: int | None = None,
         max_steps: int | None = None) -> list[Episode]:
  """One episode per task, `batch_size` envs stepped together (all of them by default).

  The env of task k is built with seed `env_seed + k`; the policy draws from
  `episode_rng(policy_seed, task_id, episode)`.
  """
  proto = protocol.for_env(env_name)
  size = batch_size or max(len(tasks), 1)
  episodes = []
  for start in range(0, len(tasks), size):
    chunk = list(tasks[start:start + size])
    rngs = [episode_rng(policy_seed, t.task_id, episode) for t in chunk]
    episodes += _play_batch(env_name, proto, chunk, policy, rngs, prompt_cfg, env_seed + start,
                            max_steps)
  return episodes


def _play_batch(env_name: str, proto: AgentProtocol, tasks: list[envs_lib.Task], policy: Policy,
                rngs: list[np.random.Generator], prompt_cfg: prompts.PromptConfig, seed: int,
                max_steps: int | None) -> list[Episode]:
  env = envs_lib.BatchedEnv(lambda i: envs_lib.make_env(env_name, seed=seed + i), len(tasks),
                            max_steps=max_steps)
  results = env.reset(tasks)
  episodes = [Episode(task, error="error" in r.info) for task, r in zip(tasks, results)]
  descriptions = ["" if done else e.task_description for e, done in zip(env.envs, env.done)]
  histories: list[list[tuple[str, str]]] = [[] for _ in tasks]
  while not env.all_done:
    actions: list[str | None] = [None] * len(tasks)
    for i in (i for i in range(len(tasks)) if not env.done[i]):
      response = policy(env.envs[i], results[i], rngs[i])
      parsed = proto.parse_response(response)
      episodes[i].steps.append((protocol.user_text(proto, descriptions[i], histories[i],
                                                   results[i], prompt_cfg), response))
      episodes[i].invalid += not parsed.valid
      histories[i].append((results[i].observation, protocol.history_action(parsed, response)))
      actions[i] = parsed.action
    loop.prefetch(proto, env, actions)
    for i, result in enumerate(env.step(actions)):
      if result is not None:
        results[i] = result
        _record(episodes[i], result)
  return episodes


def _record(episode: Episode, result: envs_lib.StepResult) -> None:
  episode.ret += result.reward
  episode.error |= "error" in result.info
  if result.done:
    episode.won = bool(result.info.get("won", False))


def episode_metrics(episodes: Sequence[Episode]) -> dict[str, float]:
  """Success overall and per subset, return, steps, invalid responses and env errors."""
  out = loop.outcome_metrics([e.task.subset for e in episodes], [e.won for e in episodes],
                             [e.ret for e in episodes], [len(e.steps) for e in episodes])
  out["invalid_actions"] = float(sum(e.invalid for e in episodes))
  out["invalid_action_rate"] = out["invalid_actions"] / max(out["num_steps"], 1)
  out["env_errors"] = float(sum(e.error for e in episodes))
  return out
