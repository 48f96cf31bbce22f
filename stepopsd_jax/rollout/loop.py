"""The host-side multi-turn rollout loop: B tasks x G rollouts -> StepBatch (DESIGN 1, 2, 4.8).

Each turn renders the prompt of every active env, samples all of them in one batched call,
parses actions, steps the envs, and records one StepRow per agent step. When every episode has
ended, the hindsight teacher prompt of every row is built from its group's outcomes. What is
env-specific (parsing, tags, prompt text, batched retrieval) comes from the env's agent
protocol (`protocol.py`).
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
from stepopsd_jax.envs.base import AgentProtocol
from stepopsd_jax.rollout import hindsight, parse, prompts, protocol
from stepopsd_jax.rollout.stepbatch import StepBatch, StepRow, build_step_batch
from stepopsd_jax.sampling import Buckets, Sampler, SamplingParams

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


@dataclasses.dataclass
class Trajectory:
  task: envs_lib.Task
  group_id: int
  rows: list[StepRow] = dataclasses.field(default_factory=list)
  user_texts: list[str] = dataclasses.field(default_factory=list)
  actions: list[str] = dataclasses.field(default_factory=list)
  responses: list[str] = dataclasses.field(default_factory=list)
  history: list[tuple[str, str]] = dataclasses.field(default_factory=list)
  description: str = ""
  won: bool = False
  ret: float = 0.0


@dataclasses.dataclass
class RolloutTally:
  """The raw counts behind a rollout's metrics. Tallies of several processes merge exactly
  (`merge_tallies`), where their metrics (means, rates, per-subset success) would not."""
  subsets: list[str]
  wins: list[bool]
  returns: list[float]
  steps: list[int]  # agent steps per episode
  values: dict[str, float]  # counters: invalid actions, generated tokens, ...
  seconds: dict[str, float]  # host time per phase
  turns: int

  def metrics(self) -> dict[str, float]:
    out = outcome_metrics(self.subsets, self.wins, self.returns, self.steps)
    out["turns"] = float(self.turns)
    values = {key: 0.0 for key in ("invalid_actions", "env_invalid_actions", "truncated_prompts",
                                   "env_errors", "generated_tokens", "hindsight_rows",
                                   "hindsight_shortened", "hindsight_dropped")}
    values.update({k: float(v) for k, v in self.values.items()})
    out.update(values)
    out["invalid_action_rate"] = values["invalid_actions"] / max(out["num_steps"], 1)
    out["env_invalid_rate"] = values["env_invalid_actions"] / max(out["num_steps"], 1)
    out.update({f"time/{k}_s": float(v) for k, v in self.seconds.items()})
    return out


def merge_tallies(tallies: Sequence[RolloutTally]) -> RolloutTally:
  """One tally of all episodes: counters add up; seconds and turns are the slowest one's (the
  processes of a multi-host rollout run side by side, in lock-step turns)."""
  values, seconds = collections.Counter(), collections.Counter()
  for t in tallies:
    values.update(t.values)
    seconds = seconds | collections.Counter(t.seconds)  # | keeps the maximum
  return RolloutTally([s for t in tallies for s in t.subsets], [w for t in tallies for w in t.wins],
                      [r for t in tallies for r in t.returns], [n for t in tallies for n in t.steps],
                      dict(values), dict(seconds), max((t.turns for t in tallies), default=0))


@dataclasses.dataclass
class RolloutResult:
  batch: StepBatch
  trajectories: list[Trajectory]
  tally: RolloutTally

  @functools.cached_property
  def metrics(self) -> dict[str, float]:
    """This process's episodes; `train.multihost.global_rollout_metrics` for all processes'."""
    return self.tally.metrics()


@functools.lru_cache(maxsize=4)
def vocab_texts(tokenizer, vocab_size: int) -> tuple[str, ...]:
  """Decoded text of every token id (ids the tokenizer lacks decode to "")."""
  n = min(vocab_size, tokenizer.vocab_size)
  return tuple(tokenizer.decode([i]) for i in range(n)) + ("",) * (vocab_size - n)


def agent_sampler(model_config, tokenizer, *, max_new_tokens: int, temperature: float = 1.0,
                  top_p: float = 1.0, top_k: int = 0, buckets: Buckets = Buckets(),
                  stop_strings: Sequence[str] = (parse.ACTION_CLOSE,), mesh=None) -> Sampler:
  """A sampler that stops at the tokenizer's EOS or at a stop string (an env protocol's
  `stop_strings`, `</action>` by default). `mesh`: decode with the prompt rows and the KV cache
  sharded over it (the weights bring their own shardings)."""
  params = SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                          top_k=top_k, stop_token_ids=(tokenizer.eos_token_id,),
                          stop_strings=tuple(stop_strings))
  return Sampler(model_config, params, pad_id=tokenizer.pad_token_id,
                 token_texts=vocab_texts(tokenizer, model_config.vocab_size), buckets=buckets,
                 mesh=mesh)


def safe_decode(tokenizer, ids: Sequence[int]) -> str:
  """Decodes ids, dropping those past the tokenizer's vocab (the model's vocab is padded)."""
  return tokenizer.decode([i for i in ids if 0 <= i < tokenizer.vocab_size])


def anchor_hash(observation: str) -> int:
  return zlib.crc32(observation.encode("utf-8", "replace")) & 0x7FFFFFFF


def render(tokenizer, text: str, cfg: prompts.PromptConfig) -> list[int]:
  """Chat-template token ids of one user message, ending in the assistant's generation prompt."""
  return list(tokenizer.apply_chat_template(prompts.messages(text, cfg),
                                            add_generation_prompt=True))


class _Counters:
  def __init__(self):
    self.values = collections.Counter()
    self.seconds = collections.Counter()


def collect(sampler: Sampler, weights: Any, tokenizer, env_name: str,
            tasks: Sequence[envs_lib.Task], rng: jax.Array, cfg: RolloutConfig,
            env_seed: int = 0) -> RolloutResult:
  """Runs len(tasks) x G episodes to the end and returns their StepBatch, texts and metrics."""
  g = cfg.group_size
  n = len(tasks) * g
  proto = protocol.for_env(env_name)
  env = envs_lib.BatchedEnv(lambda i: envs_lib.make_env(env_name, seed=env_seed * n + i), n,
                            max_steps=cfg.max_steps)
  trajs = [Trajectory(task, group_id=k // g) for k, task in
           enumerate(t for t in tasks for _ in range(g))]
  counters = _Counters()
  start = time.perf_counter()
  results = env.reset([t.task for t in trajs])
  for traj, e, done in zip(trajs, env.envs, env.done):
    traj.description = "" if done else e.task_description
  turn = 0
  while _any_process_active(sampler, env.all_done):
    active = [i for i in range(n) if not env.done[i]]
    if not active:  # other processes still decode: join their global batch with no rows
      sampler.generate(weights, [], jax.random.fold_in(rng, turn))
      turn += 1
      continue
    actions = _scatter(_turn(sampler, weights, tokenizer, [trajs[i] for i in active],
                             [results[i] for i in active], jax.random.fold_in(rng, turn), cfg,
                             proto, counters), active, n)
    t0 = time.perf_counter()
    prefetch(proto, env, actions, counters.values)
    stepped = env.step(actions)
    counters.seconds["env"] += time.perf_counter() - t0
    for i in active:
      _record_step(trajs[i], stepped[i], counters)
      results[i] = stepped[i] if stepped[i] is not None else results[i]
    turn += 1
  counters.seconds["env"] += env.env_reset_seconds
  counters.values["env_errors"] += env.num_env_errors
  rows = _finish(trajs, tokenizer, cfg, sampler.buckets.prompt[-1], counters)
  batch = build_step_batch(rows, pad_id=sampler.pad_id,
                           response_len=sampler.params.max_new_tokens, buckets=sampler.buckets)
  counters.seconds["total"] = time.perf_counter() - start
  return RolloutResult(batch, trajs, _tally(trajs, counters, turn))


def _any_process_active(sampler: Sampler, all_done: bool) -> bool:
  """Whether to run another turn. With a sampler that decodes one global batch over several
  processes (`Sampler.mesh`), every process must run as many turns as the longest episode of any
  of them, or the ones still decoding would wait for the others forever."""
  if jax.process_count() == 1 or getattr(sampler, "mesh", None) is None:
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


def _scatter(actions: list[str], active: list[int], n: int) -> list[str | None]:
  out: list[str | None] = [None] * n
  for i, a in zip(active, actions):
    out[i] = a
  return out


def _turn(sampler, weights, tokenizer, trajs, results, rng, cfg: RolloutConfig,
          proto: AgentProtocol, counters) -> list[str]:
  """Prompts, samples and parses one turn of the active trajectories; returns their actions."""
  t0 = time.perf_counter()
  texts = vocab_texts(tokenizer, sampler.config.vocab_size)
  user_texts = [protocol.user_text(proto, t.description, t.history, r, cfg.prompt)
                for t, r in zip(trajs, results)]
  limit = sampler.buckets.prompt[-1]  # the sampler keeps the last `limit` tokens of a prompt
  prompt_ids = [render(tokenizer, u, cfg.prompt)[-limit:] for u in user_texts]
  counters.seconds["prompt"] += time.perf_counter() - t0
  t0 = time.perf_counter()
  out = sampler.generate(weights, prompt_ids, rng)
  counters.seconds["generate"] += time.perf_counter() - t0
  counters.values["truncated_prompts"] += out.truncated_prompts
  actions = []
  for k, (traj, result) in enumerate(zip(trajs, results)):
    response = [int(x) for x in out.tokens[k, :out.lengths[k]]]
    response_text = safe_decode(tokenizer, response)
    parsed = proto.parse_response(response_text)
    counters.values["generated_tokens"] += len(response)
    if not parsed.valid:
      counters.values["invalid_actions"] += 1
      counters.values[f"invalid/{parsed.reason}"] += 1
    traj.rows.append(StepRow(
        prompt=prompt_ids[k], teacher_prompt=[], response=response,
        logprobs=[float(x) for x in out.logprobs[k, :out.lengths[k]]],
        control=list(parse.control_mask([texts[t] for t in response], cfg.control_mode,
                                        proto.action_tags)),
        traj_id=-1, step_idx=len(traj.rows), group_id=traj.group_id,
        step_reward=-cfg.invalid_penalty if not parsed.valid else 0.0,
        anchor_id=anchor_hash(result.observation)))
    traj.user_texts.append(user_texts[k])
    traj.responses.append(response_text)
    traj.actions.append(parsed.action)
    traj.history.append((result.observation, protocol.history_action(parsed, response_text)))
    actions.append(parsed.action)
  return actions


def _record_step(traj: Trajectory, result: envs_lib.StepResult | None, counters) -> None:
  if result is None:
    return
  if traj.actions[-1] and not result.info.get("valid_action", True):
    counters.values["env_invalid_actions"] += 1  # parsed, but the env did not accept it
  traj.rows[-1].step_reward += float(result.reward)
  if result.done:
    traj.won = bool(result.info.get("won", False))


def _finish(trajs: list[Trajectory], tokenizer, cfg: RolloutConfig, limit: int,
            counters: _Counters) -> list[StepRow]:
  """Fills returns, dense trajectory/group ids and hindsight teacher prompts (at most `limit`
  tokens); returns all rows in order."""
  by_group = collections.defaultdict(list)
  for i, traj in enumerate(trajs):
    traj.ret = float(sum(r.step_reward for r in traj.rows))
    by_group[traj.group_id].append(i)
  # Ids in [0, rows): trajectories (and groups) with no rows, e.g. an env that failed at reset,
  # take no id, so the estimators' segment sums over B rows see every trajectory.
  with_rows = [i for i, t in enumerate(trajs) if t.rows]
  traj_ids = {i: k for k, i in enumerate(with_rows)}
  group_ids = {g: k for k, g in enumerate(dict.fromkeys(trajs[i].group_id for i in with_rows))}
  rows = []
  for i in with_rows:
    traj = trajs[i]
    h = _hindsight(trajs, by_group[traj.group_id], i, cfg)
    for row, text in zip(traj.rows, traj.user_texts):
      row.traj_id, row.group_id = traj_ids[i], group_ids[traj.group_id]
      row.traj_return, row.traj_success = traj.ret, traj.won
      if cfg.teacher_prompts:
        fitted = hindsight.teacher_prompt(lambda t: render(tokenizer, t, cfg.prompt), text, h,
                                          row.step_idx, limit, row.prompt)
        row.teacher_prompt, row.has_hindsight = fitted.tokens, fitted.has_hindsight
        counters.values["hindsight_rows"] += fitted.has_hindsight
        counters.values["hindsight_shortened"] += fitted.shortened and fitted.has_hindsight
        counters.values["hindsight_dropped"] += fitted.shortened and not fitted.has_hindsight
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


def outcome_metrics(subsets: Sequence[str], wins: Sequence[bool], returns: Sequence[float],
                    steps: Sequence[int]) -> dict[str, float]:
  """Success overall and per subset, mean return and episode length, of finished episodes."""
  n = max(len(wins), 1)
  out = {"success": sum(wins) / n, "return": sum(returns) / n, "episode_steps": sum(steps) / n,
         "num_trajectories": float(len(wins)), "num_steps": float(sum(steps))}
  for subset in sorted(set(subsets)):
    won = [w for s, w in zip(subsets, wins) if s == subset]
    out[f"success/{subset}"] = sum(won) / len(won)
  return out


def _tally(trajs: list[Trajectory], counters: _Counters, turns: int) -> RolloutTally:
  return RolloutTally([t.task.subset for t in trajs], [bool(t.won) for t in trajs],
                      [float(t.ret) for t in trajs], [len(t.rows) for t in trajs],
                      {k: float(v) for k, v in counters.values.items()},
                      {k: float(v) for k, v in counters.seconds.items()}, turns)
