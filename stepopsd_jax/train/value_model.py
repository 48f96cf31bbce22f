"""The critic (value model) of the value-based estimators (PPO token-GAE, StepPO step-GAE;
DESIGN 4.5, 4.6).

Same architecture as the policy, with a scalar value head in place of the LM head:

    critic_params = {"backbone": the policy's params tree without `lm_head`,
                     "head": {"w": f32 [D], "b": f32 []}}
    V(s) = h(s) . w + b,   h = models.hidden_states of the backbone (final-normed)

The backbone is initialised from the policy's parameters at `create_state` time (after the
format warm-up: the critic starts from the same features the policy has, as verl initialises its
critic from the actor's checkpoint) and the head at zero, so V = 0 at the start and the first
GAE advantages are Monte-Carlo returns. It is sharded by the policy's logical axes (the head
replicated) and has its own optimizer (`optim.critic_lr`).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import optax
from jax.sharding import PartitionSpec as P
from jaxtyping import Array, Float

from stepopsd_jax import algorithms, models, sharding
from stepopsd_jax.algorithms import masked
from stepopsd_jax.batch import StepBatch
from stepopsd_jax.models import QwenConfig
from stepopsd_jax.train import micro


def critic_config(model_config: QwenConfig) -> QwenConfig:
  """The backbone's config: the policy's, with no untied LM head (the value head replaces it)."""
  return model_config.replace(tie_embeddings=True)


def init_critic(model_config: QwenConfig, params) -> dict:
  """Critic parameters from the policy's: a copy of its backbone and a zero value head."""
  backbone = {k: v for k, v in params.items() if k != "lm_head"}
  d = model_config.hidden_size
  return {"backbone": backbone,
          "head": {"w": jnp.zeros((d,), jnp.float32), "b": jnp.zeros((), jnp.float32)}}


def critic_shapes(model_config: QwenConfig) -> dict:
  d = model_config.hidden_size
  return {"backbone": models.param_shapes(critic_config(model_config)),
          "head": {"w": jax.ShapeDtypeStruct((d,), jnp.float32),
                   "b": jax.ShapeDtypeStruct((), jnp.float32)}}


@functools.lru_cache(maxsize=32)
def critic_shardings(model_config: QwenConfig, mesh) -> dict:
  """The backbone by the policy's logical rules; the head replicated."""
  axes = {"backbone": models.param_logical_axes(critic_config(model_config)),
          "head": {"w": P(None), "b": P()}}
  return sharding.tree_shardings(axes, critic_shapes(model_config), mesh)


def values(model_config: QwenConfig, critic_params: dict, mb: StepBatch, per_token: bool
           ) -> Float[Array, "B"] | Float[Array, "B R"]:
  """V per step [B], read at the last (left-padded) prompt token, i.e. the state before the
  action (`per_token=False`); or V before each response token [B, R] (`per_token=True`)."""
  p = mb.prompt_tokens.shape[1]
  tokens, mask = mb.prompt_tokens, mb.prompt_mask
  if per_token:
    tokens = jnp.concatenate([tokens, mb.response_tokens], axis=1)
    mask = jnp.concatenate([mask, mb.response_mask], axis=1)
  h = models.hidden_states(critic_config(model_config), critic_params["backbone"], tokens, mask,
                           models.default_positions(mask))
  h = h[:, p - 1:-1] if per_token else h[:, p - 1]  # [B, R, D] or [B, D]
  head = critic_params["head"]
  return h.astype(jnp.float32) @ head["w"] + head["b"]


def _mask(batch: StepBatch, per_token: bool):
  return batch.response_mask & batch.row_valid[:, None] if per_token else batch.row_valid


def _loss(critic_params, mb: StepBatch, targets, model_config, cfg, totals):
  per_token = cfg.estimator == "ppo"
  v = values(model_config, critic_params, mb, per_token)
  n = totals["num_tokens" if per_token else "num_rows"]
  return algorithms.value_loss(v, targets.old_values, targets.returns, _mask(mb, per_token),
                               cfg.value_clip or None, num_elements=n)


def update(state, batch: StepBatch, targets, model_config: QwenConfig, cfg,
           critic_tx: optax.GradientTransformation, totals: dict):
  """One step of the clipped value loss towards the GAE returns: (new critic params, new
  critic optimizer state, metrics); the caller decides whether to keep them."""
  loss_fn = functools.partial(_loss, model_config=model_config, cfg=cfg, totals=totals)
  loss, grads, metrics = micro.value_and_grad(loss_fn, state.critic_params, batch, targets,
                                              cfg.micro_batches)
  metrics = jax.tree.map(jnp.sum, metrics)  # micro-batch terms are batch-normalised: add up
  updates, opt_state = critic_tx.update(grads, state.critic_opt_state, state.critic_params)
  params = optax.apply_updates(state.critic_params, updates)
  mask = _mask(batch, cfg.estimator == "ppo")
  grad_norm = optax.tree.norm(grads)
  metrics.update(
      value_grad_norm=grad_norm,
      value_mean=masked.mean(targets.old_values, mask),
      return_mean=masked.mean(targets.returns, mask),
      explained_variance=algorithms.explained_variance(targets.old_values, targets.returns,
                                                       mask))
  finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
  return params, opt_state, finite, metrics


def old_values(state, batch: StepBatch, model_config: QwenConfig, cfg):
  """V at rollout-time parameters (gradient-free): the GAE baseline and the value clip's anchor."""
  return micro.map_rows(lambda mb: values(model_config, jax.lax.stop_gradient(
      state.critic_params), mb, per_token=cfg.estimator == "ppo"), batch, cfg.micro_batches)
