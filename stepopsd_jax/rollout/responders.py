"""Who writes the agent's responses in the episode loop: a model (through the sampler) or a
scripted policy (random format policy, oracle). The loop is the same for both.

A responder gets the active trajectories and their user messages for one turn and returns one
`Response` each. A model responder also returns the tokens it conditioned on and generated, and
their behaviour log-probs, from which the loop builds StepBatch rows.
"""

from __future__ import annotations

import dataclasses
import functools
import time
import zlib
from collections.abc import Sequence
from typing import Any, Protocol

import jax
import numpy as np

from stepopsd_jax.envs.base import Policy
from stepopsd_jax.rollout import parse, prompts
from stepopsd_jax.sampling import Buckets, Sampler, SamplingParams


@dataclasses.dataclass
class Response:
  text: str
  prompt: list[int] | None = None  # model: the prompt ids it conditioned on (as the sampler cut)
  tokens: list[int] | None = None  # model: generated ids
  logprobs: list[float] | None = None  # model: behaviour log-probs of `tokens`


class Responder(Protocol):
  tokenizer: Any  # None for a scripted responder without one

  def respond(self, trajs: Sequence, envs: Sequence, results: Sequence,
              user_texts: Sequence[str], rng: jax.Array, counts) -> list[Response]:
    """One response per active trajectory (`counts`: the rollout's counters and timers)."""

  def idle(self, rng: jax.Array) -> None:
    """A turn in which this process has no active trajectory but others may (multi-host)."""

  def lockstep(self) -> bool:
    """Whether every process must run as many turns as the longest episode of any of them."""


@functools.lru_cache(maxsize=4)
def vocab_texts(tokenizer, vocab_size: int) -> tuple[str, ...]:
  """Decoded text of every token id (ids the tokenizer lacks decode to "")."""
  n = min(vocab_size, tokenizer.vocab_size)
  return tuple(tokenizer.decode([i]) for i in range(n)) + ("",) * (vocab_size - n)


def safe_decode(tokenizer, ids: Sequence[int]) -> str:
  """Decodes ids, dropping those past the tokenizer's vocab (the model's vocab is padded)."""
  return tokenizer.decode([i for i in ids if 0 <= i < tokenizer.vocab_size])


def render(tokenizer, text: str, cfg: prompts.PromptConfig) -> list[int]:
  """Chat-template token ids of one user message, ending in the assistant's generation prompt."""
  return list(tokenizer.apply_chat_template(prompts.messages(text, cfg),
                                            add_generation_prompt=True))


def agent_sampler(model_config, tokenizer, *, max_new_tokens: int, temperature: float = 1.0,
                  top_p: float = 1.0, top_k: int = 0, buckets: Buckets = Buckets(),
                  stop_strings: Sequence[str] = (parse.ACTION_CLOSE,), mesh=None,
                  share_prompts: bool = True, pack_prompts: bool = True,
                  streams: int | None = None) -> Sampler:
  """A sampler that stops at the tokenizer's EOS or at a stop string (an env protocol's
  `stop_strings`, `</action>` by default). `mesh`: decode with the prompt rows and the KV cache
  sharded over it (the weights bring their own shardings). `streams`: see `Sampler` (None: by
  the backend)."""
  params = SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                          top_k=top_k, stop_token_ids=(tokenizer.eos_token_id,),
                          stop_strings=tuple(stop_strings))
  return Sampler(model_config, params, pad_id=tokenizer.pad_token_id,
                 token_texts=vocab_texts(tokenizer, model_config.vocab_size), buckets=buckets,
                 mesh=mesh, share_prompts=share_prompts, pack_prompts=pack_prompts,
                 streams=streams)


def account_generate(out, counts) -> None:
  """A sampler call's split into the rollout's timers and counters: `generate/<part>` seconds
  (pad, to_device, prefill, decode, to_host) and its prompt and decode slots (real tokens,
  padding rows of the batch bucket, slots decoded after a row had stopped)."""
  counts.values["truncated_prompts"] += out.truncated_prompts
  for key, value in (out.stats or {}).items():  # None: a sampler that does not time itself
    if key.endswith("_s"):
      counts.seconds[f"generate/{key[:-2]}"] += value
    else:
      counts.values[key] += value


@dataclasses.dataclass
class ModelResponder:
  """Renders each user message with the chat template and samples all of them in one call."""
  sampler: Sampler
  weights: Any
  tokenizer: Any
  prompt_cfg: prompts.PromptConfig

  def respond(self, trajs, envs, results, user_texts, rng, counts) -> list[Response]:
    del trajs, envs, results
    t0 = time.perf_counter()
    limit = self.sampler.buckets.prompt[-1]  # the sampler keeps a prompt's last `limit` tokens
    prompt_ids = [render(self.tokenizer, u, self.prompt_cfg)[-limit:] for u in user_texts]
    counts.seconds["prompt"] += time.perf_counter() - t0
    t0 = time.perf_counter()
    out = self.sampler.generate(self.weights, prompt_ids, rng)
    counts.seconds["generate"] += time.perf_counter() - t0
    account_generate(out, counts)
    t0 = time.perf_counter()
    responses = []
    for k, prompt in enumerate(prompt_ids):
      tokens = [int(x) for x in out.tokens[k, :out.lengths[k]]]
      counts.values["generated_tokens"] += len(tokens)
      responses.append(Response(safe_decode(self.tokenizer, tokens), prompt, tokens,
                                [float(x) for x in out.logprobs[k, :out.lengths[k]]]))
    counts.seconds["detokenize"] += time.perf_counter() - t0
    return responses

  def idle(self, rng) -> None:
    self.sampler.generate(self.weights, [], rng)  # join the other processes' global batch

  def lockstep(self) -> bool:
    return jax.process_count() > 1 and getattr(self.sampler, "mesh", None) is not None

  def token_texts(self) -> tuple[str, ...]:
    texts = getattr(self.sampler, "token_texts", None)  # decoded once, when it was built
    return texts if texts is not None else vocab_texts(self.tokenizer,
                                                       self.sampler.config.vocab_size)


@dataclasses.dataclass
class ScriptedResponder:
  """A text policy `policy(env, result, rng)`; each episode draws from a generator keyed by
  (seed, task id, episode), so data built task by task or chunk by chunk never replays one
  sequence of draws."""
  policy: Policy
  seed: int = 0
  episode: int = 0
  tokenizer: Any = None
  _rngs: dict = dataclasses.field(default_factory=dict, repr=False)  # id(trajectory) -> rng

  def respond(self, trajs, envs, results, user_texts, rng, counts) -> list[Response]:
    del user_texts, rng, counts
    return [Response(self.policy(env, result, self._rng(traj)))
            for traj, env, result in zip(trajs, envs, results)]

  def _rng(self, traj) -> np.random.Generator:
    if id(traj) not in self._rngs:
      self._rngs[id(traj)] = episode_rng(self.seed, traj.task.task_id, self.episode)
    return self._rngs[id(traj)]

  def idle(self, rng) -> None:
    del rng

  def lockstep(self) -> bool:
    return False


def episode_rng(seed: int, task_id: str, episode: int = 0) -> np.random.Generator:
  """The generator of one scripted episode, keyed by (seed, task, episode)."""
  return np.random.default_rng([seed, zlib.crc32(task_id.encode()), episode])
