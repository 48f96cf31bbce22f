"""The agent protocol of an env with the `<think>/<action>` defaults filled in.

An env registers an `envs.base.AgentProtocol` whose fields say where it differs from the
default (Search-QA: `<search>`/`<answer>` parsing and stop strings, no extra instruction, a
random format policy, batched retrieval); the rollout loop, the warm-up and `evaluate` read the
resolved protocol of `for_env(name)` and never branch on the env's name.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from stepopsd_jax import envs as envs_lib
from stepopsd_jax.envs.base import AgentProtocol
from stepopsd_jax.rollout import parse, prompts

RESPONSE_TEMPLATE = "<think>I pick one of the admissible actions.</think><action>{}</action>"
EXPERT_TEMPLATE = "<think>The expert's action.</think><action>{}</action>"


def random_admissible_policy(env: envs_lib.Env, result: envs_lib.StepResult,
                             rng: np.random.Generator) -> str:
  """A uniform-random admissible action in the default tags (format only, never the expert's)."""
  del env
  admissible = result.info.get("admissible_actions")
  if not admissible:
    raise ValueError("The random warm-up policy picks from info['admissible_actions'], which "
                     "this env does not give: register a protocol with a random_policy.")
  return RESPONSE_TEMPLATE.format(admissible[int(rng.integers(len(admissible)))])


def expert_policy(env: envs_lib.Env, result: envs_lib.StepResult,
                  rng: np.random.Generator) -> str:
  """The env's expert action in the default tags."""
  del result, rng
  return EXPERT_TEMPLATE.format(env.expert_action())


def default_user_text(description: str, history: Sequence[tuple[str, str]],
                      result: envs_lib.StepResult, cfg: prompts.PromptConfig) -> str:
  """Task, the last k (observation, action) pairs, observation, admissible actions, instruction."""
  return prompts.step_text(description, history, result.observation, len(history),
                           result.info.get("admissible_actions"), cfg)


DEFAULT = AgentProtocol(
    parse_response=parse.parse_action, action_tags=((parse.ACTION_OPEN, parse.ACTION_CLOSE),),
    format_instruction=prompts.FORMAT_INSTRUCTION, user_text=default_user_text,
    random_policy=random_admissible_policy, oracle_policy=expert_policy, prefetch=None)


def resolve(protocol: AgentProtocol) -> AgentProtocol:
  """`protocol` with its None fields taken from DEFAULT (`prefetch` may stay None)."""
  given = {f.name: getattr(protocol, f.name) for f in dataclasses.fields(protocol)}
  return dataclasses.replace(DEFAULT, **{k: v for k, v in given.items() if v is not None})


def for_env(env_name: str) -> AgentProtocol:
  """The resolved protocol of a registered env."""
  return resolve(envs_lib.get_spec(env_name).protocol)


def prompt_config(protocol: AgentProtocol, cfg: prompts.PromptConfig) -> prompts.PromptConfig:
  """`cfg` with the env's format instruction where the config leaves it to the env (None)."""
  if cfg.format_instruction is not None:
    return cfg
  return dataclasses.replace(cfg, format_instruction=protocol.format_instruction)


def user_text(protocol: AgentProtocol, description: str, history: Sequence[tuple[str, str]],
              result: envs_lib.StepResult, cfg: prompts.PromptConfig) -> str:
  """The student's user message for the step that starts at `result`."""
  return protocol.user_text(description, history, result, prompt_config(protocol, cfg))


def history_action(parsed, response_text: str) -> str:
  """What the prompt history shows for a step: the action, or the start of a malformed response."""
  return parsed.action or response_text.strip()[:80]
