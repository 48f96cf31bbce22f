"""The host-side multi-turn episode loop: B tasks x G rollouts -> trajectories (and a StepBatch).

Each turn renders the user message of every active env, asks the responder for all of them at
once (a model through the sampler, or a scripted policy), parses the actions with the env's
agent protocol, steps the envs, and records the step. With a model, every step becomes a
StepRow, and when every episode has ended the hindsight teacher prompts are added
(`hindsight.py`) and the rows are padded into a StepBatch (DESIGN 1, 2, 4.8). Nothing here
branches on the env's name: what is env-specific comes from its protocol (`protocol.py`).
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import logging
import time
import zlib
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils

from stepopsd_jax import envs as envs_lib
from stepopsd_jax.batch import StepBatch
from stepopsd_jax.envs.base import AgentProtocol, Policy
from stepopsd_jax.rollout import hindsight, parse, prompts, protocol
from stepopsd_jax.rollout.metrics import RolloutTally, merge_tallies
from stepopsd_jax.rollout.responders import (ModelResponder, Responder, Response,
                                             ScriptedResponder, render)
from stepopsd_jax.rollout.stepbatch import StepRow, build_step_batch
from stepopsd_jax.sampling import Sampler

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class RolloutConfig:
  group_size: int = 4  # G rollouts per task
  control_mode: str = "action_only"  # action_only | no_observation | all
  invalid_penalty: float = 0.1  # subtracted from the step reward of a malformed response
  max_steps: int | None = None  # None: the env's own limit
  hindsight_sibling: bool = True  # show a successful sibling's actions to the teacher
  hindsight_reference: bool = False  # show the task's reference (expert plan / answer)
  teacher_prompts: bool = True  # build hindsight teacher prompts (only stepopsd/opsd read them)
  prompt: prompts.PromptConfig = prompts.PromptConfig()

  def __post_init__(self):
    if self.group_size < 1:
      raise ValueError(f"rollout.group_size={self.group_size} must be >= 1.")
    if self.control_mode not in parse.CONTROL_MODES:
      raise ValueError(f"rollout.control_mode={self.control_mode!r}: choose one of "
                       f"{parse.CONTROL_MODES}.")
    if self.invalid_penalty < 0:
      raise ValueError(f"rollout.invalid_penalty={self.invalid_penalty} must be >= 0 (it is "
                       "subtracted from the step reward).")


@dataclasses.dataclass
class Trajectory:
  task: envs_lib.Task
  group_id: int
  user_texts: list[str] = dataclasses.field(default_factory=list)
  responses: list[str] = dataclasses.field(default_factory=list)
  actions: list[str] = dataclasses.field(default_factory=list)  # "" where the parse failed
  rewards: list[float] = dataclasses.field(default_factory=list)  # per step, penalty included
  history: list[tuple[str, str]] = dataclasses.field(default_factory=list)
  rows: list[StepRow] = dataclasses.field(default_factory=list)  # model responders only
  description: str = ""
  won: bool = False
  invalid: int = 0  # responses the protocol's parser rejected
  error: bool = False  # the env failed (counted in env_errors)

  @property
  def ret(self) -> float:
    return float(sum(self.rewards))

  @property
  def steps(self) -> list[tuple[str, str]]:
    """(user message, response text) of every step."""
    return list(zip(self.user_texts, self.responses))


@dataclasses.dataclass
class RolloutResult:
  batch: StepBatch | None  # None for scripted responders (no tokens)
  trajectories: list[Trajectory]
  tally: RolloutTally

  @functools.cached_property
  def metrics(self) -> dict[str, float]:
    """This process's episodes; `run.multihost.global_rollout_metrics` for all processes'."""
    return self.tally.metrics()


class _Counts:
  def __init__(self):
    self.values = collections.Counter()
    self.seconds = collections.Counter()


def collect(sampler: Sampler, weights: Any, tokenizer, env_name: str,
            tasks: Sequence[envs_lib.Task], rng: jax.Array, cfg: RolloutConfig,
            env_seed: int = 0) -> RolloutResult:
  """The model's episodes: len(tasks) x G to the end, with their StepBatch, texts and metrics.
  Env i of the n = len(tasks) x G is built with seed `env_seed * n + i`."""
  n = len(tasks) * cfg.group_size
  responder = ModelResponder(sampler, weights, tokenizer,
                             protocol.prompt_config(protocol.for_env(env_name), cfg.prompt))
  return run_episodes(responder, env_name, tasks, rng, cfg, first_env_seed=env_seed * n)


def play(env_name: str, tasks: Sequence[envs_lib.Task], policy: Policy,
         prompt_cfg: prompts.PromptConfig, *, env_seed: int = 0, policy_seed: int = 0,
         episode: int = 0, max_steps: int | None = None, chunk: int | None = None
         ) -> RolloutResult:
  """One episode per task of a scripted text policy (no StepBatch); env k is built with seed
  `env_seed + k`. `chunk`: at most this many envs alive at once (ALFWorld envs are heavy)."""
  cfg = RolloutConfig(group_size=1, invalid_penalty=0.0, max_steps=max_steps,
                      teacher_prompts=False, prompt=prompt_cfg)
  responder = ScriptedResponder(policy, policy_seed, episode)
  size = chunk or max(len(tasks), 1)
  parts = [run_episodes(responder, env_name, tasks[s:s + size], jax.random.key(0), cfg,
                        first_env_seed=env_seed + s) for s in range(0, len(tasks), size)]
  return RolloutResult(None, [t for p in parts for t in p.trajectories],
                       merge_tallies([p.tally for p in parts]))


def run_episodes(responder: Responder, env_name: str, tasks: Sequence[envs_lib.Task],
                 rng: jax.Array, cfg: RolloutConfig, first_env_seed: int = 0) -> RolloutResult:
  """The episode loop: every task G times, env i built with seed `first_env_seed + i`."""
  g, proto = cfg.group_size, protocol.for_env(env_name)
  n = len(tasks) * g
  env = envs_lib.BatchedEnv(lambda i: envs_lib.make_env(env_name, seed=first_env_seed + i), n,
                            max_steps=cfg.max_steps)
  trajs = [Trajectory(task, group_id=k // g) for k, task in
           enumerate(t for t in tasks for _ in range(g))]
  counts = _Counts()
  start = time.perf_counter()
  results = env.reset([t.task for t in trajs])
  for traj, e, done, r in zip(trajs, env.envs, env.done, results):
    traj.description, traj.error = ("" if done else e.task_description), "error" in r.info
  turn = 0
  while _any_active(responder, env.all_done):
    active = [i for i in range(n) if not env.done[i]]
    turn_rng = jax.random.fold_in(rng, turn)
    turn += 1
    if not active:  # other processes still decode: join their turn with no rows
      responder.idle(turn_rng)
      continue
    actions: list[str | None] = [None] * n
    for i, action in zip(active, _turn(responder, [trajs[i] for i in active],
                                       [env.envs[i] for i in active],
                                       [results[i] for i in active], turn_rng, cfg, proto,
                                       counts)):
      actions[i] = action
    t0 = time.perf_counter()
    prefetch(proto, env, actions, counts.values)
    stepped = env.step(actions)
    counts.seconds["env"] += time.perf_counter() - t0
    for i in active:
      _record_step(trajs[i], stepped[i], counts)
      results[i] = stepped[i] if stepped[i] is not None else results[i]
  counts.seconds["env"] += env.env_reset_seconds
  counts.values["env_errors"] += env.num_env_errors
  batch = None
  if isinstance(responder, ModelResponder):
    t0 = time.perf_counter()
    rows = _finish(trajs, responder, cfg, counts)
    counts.seconds["teacher_prompts"] += time.perf_counter() - t0
    t0 = time.perf_counter()
    batch = build_step_batch(rows, pad_id=responder.sampler.pad_id,
                             response_len=responder.sampler.params.max_new_tokens,
                             buckets=responder.sampler.buckets)
    counts.seconds["step_batch"] += time.perf_counter() - t0
  counts.seconds["total"] = time.perf_counter() - start
  return RolloutResult(batch, trajs, _tally(trajs, counts, turn))


def _any_active(responder: Responder, all_done: bool) -> bool:
  """Whether to run another turn. A responder that decodes one global batch over several
  processes needs every process to run as many turns as the longest episode of any of them,
  or the ones still decoding would wait for the others forever."""
  if not responder.lockstep():
    return not all_done
  return bool(np.min(multihost_utils.process_allgather(np.int32(all_done))) == 0)


def prefetch(proto: AgentProtocol, env: envs_lib.BatchedEnv, actions: list[str | None],
             counts: collections.Counter | None = None) -> None:
  """The protocol's batched pre-step work (e.g. retrieval); a failure is logged and counted, and
  left for the env steps themselves to meet, one episode at a time."""
  if proto.prefetch is None:
    return
  try:
    proto.prefetch(env.envs, actions)
  except Exception as e:  # pylint: disable=broad-except
    log.warning("prefetch failed: %r", e)
    if counts is not None:
      counts["prefetch_errors"] += 1


def _turn(responder: Responder, trajs: list[Trajectory], envs: list, results: list, rng,
          cfg: RolloutConfig, proto: AgentProtocol, counts: _Counts) -> list[str]:
  """Asks the responder for one turn of the active trajectories, parses and records each
  response; returns their actions ("" where the parse failed)."""
  t0 = time.perf_counter()
  user_texts = [protocol.user_text(proto, t.description, t.history, r, cfg.prompt)
                for t, r in zip(trajs, results)]
  counts.seconds["prompt"] += time.perf_counter() - t0
  responses = responder.respond(trajs, envs, results, user_texts, rng, counts)
  t0 = time.perf_counter()
  texts = responder.token_texts() if isinstance(responder, ModelResponder) else None
  actions = []
  for traj, result, user, response in zip(trajs, results, user_texts, responses):
    parsed = proto.parse_response(response.text)
    if not parsed.valid:
      counts.values["invalid_actions"] += 1
      counts.values[f"invalid/{parsed.reason}"] += 1
      traj.invalid += 1
    penalty = 0.0 if parsed.valid else -cfg.invalid_penalty
    if response.tokens is not None:
      traj.rows.append(_row(response, texts, traj, result, penalty, cfg, proto))
    traj.user_texts.append(user)
    traj.responses.append(response.text)
    traj.actions.append(parsed.action)
    traj.rewards.append(penalty)
    traj.history.append((result.observation, protocol.history_action(parsed, response.text)))
    actions.append(parsed.action)
  counts.seconds["parse"] += time.perf_counter() - t0
  return actions


def _row(response: Response, texts, traj: Trajectory, result, penalty: float,
         cfg: RolloutConfig, proto: AgentProtocol) -> StepRow:
  return StepRow(
      prompt=response.prompt, teacher_prompt=[], response=response.tokens,
      logprobs=response.logprobs,
      control=list(parse.control_mask([texts[t] for t in response.tokens], cfg.control_mode,
                                      proto.action_tags)),
      traj_id=-1, step_idx=len(traj.rows), group_id=traj.group_id, step_reward=penalty,
      anchor_id=anchor_hash(result.observation))


def anchor_hash(observation: str) -> int:
  return zlib.crc32(observation.encode("utf-8", "replace")) & 0x7FFFFFFF


def _record_step(traj: Trajectory, result: envs_lib.StepResult | None, counts: _Counts) -> None:
  if result is None:
    return
  if traj.actions[-1] and not result.info.get("valid_action", True):
    counts.values["env_invalid_actions"] += 1  # parsed, but the env did not accept it
  traj.rewards[-1] += float(result.reward)
  if traj.rows:
    traj.rows[-1].step_reward += float(result.reward)
  traj.error |= "error" in result.info
  if result.done:
    traj.won = bool(result.info.get("won", False))


def _finish(trajs: list[Trajectory], responder: ModelResponder, cfg: RolloutConfig,
            counts: _Counts) -> list[StepRow]:
  """Fills returns, dense trajectory/group ids and hindsight teacher prompts (within the
  largest prompt bucket); returns all rows in order."""
  by_group = collections.defaultdict(list)
  for i, traj in enumerate(trajs):
    by_group[traj.group_id].append(i)
  # Ids in [0, rows): trajectories (and groups) with no rows, e.g. an env that failed at reset,
  # take no id, so the estimators' segment sums over B rows see every trajectory.
  with_rows = [i for i, t in enumerate(trajs) if t.rows]
  traj_ids = {i: k for k, i in enumerate(with_rows)}
  group_ids = {g: k for k, g in enumerate(dict.fromkeys(trajs[i].group_id for i in with_rows))}
  limit = responder.sampler.buckets.prompt[-1]
  rows = []
  for i in with_rows:
    traj = trajs[i]
    h = _hindsight(trajs, by_group[traj.group_id], i, cfg)
    for row, text in zip(traj.rows, traj.user_texts):
      row.traj_id, row.group_id = traj_ids[i], group_ids[traj.group_id]
      row.traj_return, row.traj_success = traj.ret, traj.won
      if cfg.teacher_prompts:
        fitted = hindsight.teacher_prompt(
            lambda t: render(responder.tokenizer, t, responder.prompt_cfg), text, h,
            row.step_idx, limit, row.prompt)
        row.teacher_prompt, row.has_hindsight = fitted.tokens, fitted.has_hindsight
        counts.values["hindsight_rows"] += fitted.has_hindsight
        counts.values["hindsight_shortened"] += fitted.shortened and fitted.has_hindsight
        counts.values["hindsight_dropped"] += fitted.shortened and not fitted.has_hindsight
      rows.append(row)
  return rows


def _hindsight(trajs: list[Trajectory], group: list[int], me: int,
               cfg: RolloutConfig) -> hindsight.Hindsight:
  traj = trajs[me]
  demo = None
  if cfg.hindsight_sibling:
    j = hindsight.demo_source([t.won for t in trajs], [len(t.rows) for t in trajs], group, me)
    demo = tuple(trajs[j].actions) if j is not None else None
  return hindsight.Hindsight(traj.won, traj.ret, demo,
                             traj.task.reference if cfg.hindsight_reference else None)


def _tally(trajs: list[Trajectory], counts: _Counts, turns: int) -> RolloutTally:
  return RolloutTally([t.task.subset for t in trajs], [bool(t.won) for t in trajs],
                      [t.ret for t in trajs], [len(t.responses) for t in trajs],
                      {k: float(v) for k, v in counts.values.items()},
                      {k: float(v) for k, v in counts.seconds.items()}, turns)

