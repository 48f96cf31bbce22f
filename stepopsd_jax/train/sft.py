"""Format warm-up: behaviour cloning on trajectories of the uniform-random admissible policy.

A from-scratch policy cannot emit `<action>...</action>` at all, so RL would see only invalid
actions. Cloning a *uniform-random* choice among the admissible actions teaches the format and
nothing about which choice is right: what RL learns afterwards is the decision itself.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from stepopsd_jax import envs as envs_lib
from stepopsd_jax.models import QwenConfig
from stepopsd_jax.rollout import loop, prompts
from stepopsd_jax.rollout.random_policy import random_policy_texts
from stepopsd_jax.rollout.stepbatch import pad_left, pad_right
from stepopsd_jax.sampling import Buckets
from stepopsd_jax.train.step import response_logprobs

def random_policy_examples(env_name: str, tasks: Sequence[envs_lib.Task], tokenizer,
                           prompt_cfg: prompts.PromptConfig, seed: int
                           ) -> list[tuple[list[int], list[int]]]:
  """(prompt ids, response ids + EOS) of every step of one random-policy episode per task."""
  return [(loop.render(tokenizer, user, prompt_cfg),
           tokenizer.encode(response) + [tokenizer.eos_token_id])
          for user, response in random_policy_texts(env_name, tasks, prompt_cfg, seed)]


def batches(examples, batch_size: int, response_len: int, pad_id: int, buckets: Buckets,
            seed: int) -> Iterator[dict]:
  """Endless shuffled batches of padded (prompt, response) arrays."""
  rng = np.random.default_rng(seed)
  while True:
    for start in range(0, len(examples) - batch_size + 1, batch_size):
      if start == 0:
        order = rng.permutation(len(examples))
      chunk = [examples[i] for i in order[start:start + batch_size]]
      width = Buckets.pick(buckets.prompt, max(len(p) for p, _ in chunk)) or buckets.prompt[-1]
      prompt, prompt_mask = pad_left([p for p, _ in chunk], width, pad_id, batch_size)
      response = pad_right([r for _, r in chunk], response_len, pad_id, np.int32, batch_size)
      mask = pad_right([[True] * len(r) for _, r in chunk], response_len, False, bool,
                       batch_size)
      yield {"prompt": prompt, "prompt_mask": prompt_mask, "response": response,
             "response_mask": mask}


@functools.partial(jax.jit, static_argnames=("config", "tx"), donate_argnums=(0, 1))
def sft_step(params, opt_state, batch: dict, *, config: QwenConfig, tx):
  """One step of token-mean NLL on the response tokens."""
  def loss_fn(p):
    logp, _ = response_logprobs(config, p, batch["prompt"], batch["prompt_mask"],
                                batch["response"], batch["response_mask"], 1.0)
    mask = batch["response_mask"]
    return -jnp.sum(jnp.where(mask, logp, 0.0)) / jnp.maximum(jnp.sum(mask), 1)

  loss, grads = jax.value_and_grad(loss_fn)(params)
  updates, opt_state = tx.update(grads, opt_state, params)
  return optax.apply_updates(params, updates), opt_state, loss


@functools.lru_cache(maxsize=4)
def _optimizer(lr: float) -> optax.GradientTransformation:
  return optax.adamw(lr, b2=0.99)


def warm_up(config: QwenConfig, params, examples, *, steps: int, lr: float, batch_size: int,
            response_len: int, pad_id: int, buckets: Buckets, seed: int, on_step=None):
  """Runs `steps` SFT steps with AdamW; returns the new params and the last loss."""
  tx = _optimizer(lr)
  opt_state = tx.init(params)
  params = jax.tree.map(jnp.copy, params)  # sft_step donates its inputs
  loss = float("nan")
  data = batches(examples, batch_size, response_len, pad_id, buckets, seed)
  for i in range(steps):
    params, opt_state, loss = sft_step(params, opt_state, next(data), config=config, tx=tx)
    if on_step is not None:
      on_step(i, loss)
  return params, float(loss)
