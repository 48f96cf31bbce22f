"""Supervised fine-tuning on demonstrations (the format warm-up), as one jitted, sharded step.

`sft_step(params, opt_state, batch) -> (params, opt_state, loss)`: token-mean NLL of the
response tokens given their left-padded prompts, through the same forward as the train step,
with the parameters and optimizer moments placed by the same sharding rules as the TrainState.
With `prompt_loss` the token-mean NLL of the prompts' own next tokens is added: the language-model
loss on every position. (It is what taught the base model to copy in its pretraining; added to
the env-format warm-up of a random tiny model it did not make that model follow a hindsight
block within 600 steps.)
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from stepopsd_jax import models, sharding
from stepopsd_jax.algorithms import losses, masked
from stepopsd_jax.models import QwenConfig
from stepopsd_jax.train import xla_options
from stepopsd_jax.train.forward import response_logprobs
from stepopsd_jax.train.state import opt_shardings


class Demonstrations(NamedTuple):
  """A batch of (prompt, response) pairs: prompts left-padded [B, P], responses right-padded."""
  prompt: jax.Array  # int32 [B, P]
  prompt_mask: jax.Array  # bool [B, P]
  response: jax.Array  # int32 [B, R]
  response_mask: jax.Array  # bool [B, R]


def sft_step(params, opt_state, batch: Demonstrations, *, config: QwenConfig,
             tx: optax.GradientTransformation, prompt_loss: bool = False):
  """One step of token-mean NLL on the response tokens (+ on the prompt tokens)."""
  def loss_fn(p):
    if not prompt_loss:
      logp, _ = response_logprobs(config, p, batch.prompt, batch.prompt_mask, batch.response,
                                  batch.response_mask, 1.0)
      return -masked.mean(logp, batch.response_mask)
    tokens = jnp.concatenate([batch.prompt, batch.response], axis=1)
    mask = jnp.concatenate([batch.prompt_mask, batch.response_mask], axis=1)
    h = models.hidden_states(config, p, tokens, mask, models.default_positions(mask))
    logp, _ = losses.token_logprobs_and_entropy(models.project(config, p, h[:, :-1]),
                                                tokens[:, 1:])
    pairs = mask[:, :-1] & mask[:, 1:]  # a token and the next one both real
    in_response = (jnp.arange(tokens.shape[1] - 1) >= batch.prompt.shape[1] - 1)[None, :]
    return (-masked.mean(logp, pairs & in_response)
            - masked.mean(logp, pairs & ~in_response))

  loss, grads = jax.value_and_grad(loss_fn)(params)
  updates, opt_state = tx.update(grads, opt_state, params)
  return optax.apply_updates(params, updates), opt_state, loss


@functools.lru_cache(maxsize=8)
def jit_sft_step(config: QwenConfig, tx, mesh, prompt_loss: bool = False):
  """`sft_step` jitted over `mesh`: parameters by the logical rules, moments like them, rows of
  the batch over (data, fsdp); parameters and optimizer state donated."""
  params = sharding.tree_shardings(models.param_logical_axes(config), models.param_shapes(config),
                                   mesh)
  opt = opt_shardings(tx, models.param_shapes(config), params, mesh)
  rows = Demonstrations(*(sharding.batch_sharding(mesh, 2) for _ in range(4)))
  fn = functools.partial(sft_step, config=config, tx=tx, prompt_loss=prompt_loss)
  return jax.jit(fn, in_shardings=(params, opt, rows),
                 out_shardings=(params, opt, sharding.replicated(mesh)), donate_argnums=(0, 1),
                 compiler_options=xla_options.train_step_options(mesh))

