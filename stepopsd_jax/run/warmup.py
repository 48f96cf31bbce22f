"""Format warm-up: behaviour cloning on trajectories of the env's random format policy.

A from-scratch policy cannot emit `<action>...</action>` at all, so RL would see only invalid
actions. Cloning a *uniform-random* choice among the admissible actions teaches the format and
nothing about which choice is right: what RL learns afterwards is the decision itself. With
`train.sft_hint_fraction` > 0 it is also a reading warm-up (`reading_examples`): the policy
learns to follow a hindsight block, still without learning any answer. The step itself is
`train.sft` (jitted and sharded like the train step).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from stepopsd_jax import envs as envs_lib
from stepopsd_jax import models, sharding
from stepopsd_jax.models import QwenConfig
from stepopsd_jax.rollout import hindsight, loop, prompts, protocol, render
from stepopsd_jax.rollout.random_policy import CHUNK
from stepopsd_jax.rollout.stepbatch import pad_right
from stepopsd_jax.sampling import Buckets, pad_left
from stepopsd_jax.train import make_optimizer
from stepopsd_jax.train.sft import Demonstrations, jit_sft_step
from stepopsd_jax.train.state import opt_shardings


def random_policy_examples(env_name: str, tasks: Sequence[envs_lib.Task], tokenizer,
                           prompt_cfg: prompts.PromptConfig, seed: int
                           ) -> list[tuple[list[int], list[int]]]:
  """(prompt ids, response ids + EOS) of every step of one random-policy episode per task."""
  return reading_examples(env_name, tasks, tokenizer, prompt_cfg, seed, hint_fraction=0.0)


def reading_examples(env_name: str, tasks: Sequence[envs_lib.Task], tokenizer,
                     prompt_cfg: prompts.PromptConfig, seed: int, hint_fraction: float
                     ) -> list[tuple[list[int], list[int]]]:
  """The random-policy examples, with a hindsight block on `hint_fraction` of the episodes.

  The block is the rollout's own (`hindsight.block`, appended as the teacher prompt appends
  it) and lists the episode's actions, which are uniformly random admissible ones: each step's
  target is the block's action for that step. Its outcome line is drawn at random too, so the
  block carries nothing about which action is right; what the warm-up teaches is to *follow a
  block* when there is one, and the uniform choice when there is none (DESIGN 4.10: the
  hindsight teacher of a model that cannot read is the student).
  """
  result = loop.play(env_name, tasks, protocol.for_env(env_name).random_policy, prompt_cfg,
                     env_seed=seed, policy_seed=seed, chunk=CHUNK)
  rng = np.random.default_rng([seed, 4_10])
  out = []
  for traj in result.trajectories:
    shown = None
    if traj.actions and rng.random() < hint_fraction:
      won = bool(rng.random() < 0.5)
      shown = hindsight.Hindsight(won, float(won), tuple(traj.actions), None)
    for k, (user, response) in enumerate(zip(traj.user_texts, traj.responses)):
      if shown is not None and traj.actions[k]:
        user = user + "\n\n" + hindsight.block(shown, k)
      out.append((render(tokenizer, user, prompt_cfg),
                  tokenizer.encode(response) + [tokenizer.eos_token_id]))
  return out


def batches(examples, batch_size: int, response_len: int, pad_id: int, buckets: Buckets,
            seed: int) -> Iterator[Demonstrations]:
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
      yield Demonstrations(prompt, prompt_mask, response, mask)


def warm_up(config: QwenConfig, params, examples, *, steps: int, lr: float, batch_size: int,
            response_len: int, pad_id: int, buckets: Buckets, seed: int, mesh=None,
            weight_decay: float = 1e-4, prompt_loss: bool = False,
            on_step: Callable[[int, float], None] | None = None):
  """Runs `steps` SFT steps with AdamW (no clipping; weight decay 1e-4 is optax's adamw
  default, kept from the first warm-up); returns the new params and the last loss."""
  mesh = mesh or sharding.make_mesh(data=1, fsdp=1, tensor=1, devices=jax.devices()[:1])
  tx = make_optimizer(lr, 0, steps, weight_decay=weight_decay, grad_clip=None, b2=0.99)
  step = jit_sft_step(config, tx, mesh, prompt_loss)
  # Placed as the step places its outputs: unplaced inputs would make the second call compile
  # again. Copied: the step donates its inputs.
  place = sharding.tree_shardings(models.param_logical_axes(config), models.param_shapes(config),
                                  mesh)
  params = jax.device_put(jax.tree.map(jnp.copy, params), place)
  opt_state = jax.device_put(tx.init(params),
                             opt_shardings(tx, models.param_shapes(config), place, mesh))
  loss = float("nan")
  data = batches(examples, batch_size, response_len, pad_id, buckets, seed)
  for i in range(steps):
    params, opt_state, loss = step(params, opt_state, next(data))
    if on_step is not None:
      on_step(i, loss)
  return params, float(loss)
