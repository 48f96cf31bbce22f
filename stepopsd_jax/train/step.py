"""The one jitted train step: student and teacher forwards, per-step gaps, shaping, update.

`train_step(state, batch, rng) -> (state, metrics)` is a pure module-level function; the model
config, the step config and the optimizer are bound with `functools.partial`, and `jit_train_step`
compiles it with explicit shardings over the mesh, the state donated. Read top to bottom:

    A   = grpo_advantages(returns)                              one value per trajectory
    lp  = log pi_student(response | prompt)                      with gradient
    lpT = log pi_teacher(response | hindsight prompt)            stop_gradient (StepOPSD only)
    w   = shaping_weights(A, lpT - lp, control_mask, budget)     StepOPSD only
    A^  = (1 - lambda) A + lambda w A
    loss = PPO-clip(lp, behaviour lp, A^) + beta KL(pi || ref) - c H(pi)
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from stepopsd_jax import algorithms, models, sharding
from stepopsd_jax.algorithms import losses
from stepopsd_jax.models import QwenConfig
from stepopsd_jax.train.state import TEACHERS, TrainState, state_shardings

ESTIMATORS = ("grpo", "stepopsd")


@dataclasses.dataclass(frozen=True)
class StepConfig:
  """Everything the step needs besides the model config and the optimizer (hashable)."""
  estimator: str = "stepopsd"
  alpha_clip: float = 0.2
  lambda_mix: float = 0.5
  credit_budget: str = "trajectory"
  norm_by_std: bool = True
  clip_low: float = 0.2
  clip_high: float = 0.28
  loss_agg: str = "token_mean"
  kl_coef: float = 0.0
  kl_estimator: str = "k3"
  entropy_coef: float = 0.0
  teacher: str = "policy"  # policy | reference | ema
  ema_decay: float = 0.99
  temperature: float = 1.0
  micro_batches: int = 1

  @property
  def needs_teacher(self) -> bool:
    return self.estimator == "stepopsd"

  @property
  def keep_reference(self) -> bool:
    return self.kl_coef > 0 or (self.needs_teacher and self.teacher == "reference")

  @property
  def keep_ema(self) -> bool:
    return self.needs_teacher and self.teacher == "ema"

  def __post_init__(self):
    for name, value, choices in (("estimator", self.estimator, ESTIMATORS),
                                 ("teacher", self.teacher, TEACHERS),
                                 ("credit_budget", self.credit_budget, algorithms.CREDIT_BUDGETS),
                                 ("loss_agg", self.loss_agg, losses.LOSS_AGGREGATIONS),
                                 ("kl_estimator", self.kl_estimator, losses.KL_ESTIMATORS)):
      if value not in choices:
        raise ValueError(f"algo.{name}={value!r}: choose one of {choices}.")


def response_logprobs(config: QwenConfig, params, prompt, prompt_mask, response, response_mask,
                      temperature: float):
  """log p and entropy of each response token given its (left-padded) prompt, [B, R] f32."""
  p = prompt.shape[1]
  tokens = jnp.concatenate([prompt, response], axis=1)
  mask = jnp.concatenate([prompt_mask, response_mask], axis=1)
  h = models.hidden_states(config, params, tokens, mask, models.default_positions(mask))
  logits = models.project(config, params, h[:, p - 1:-1]) / temperature  # predicts response
  return losses.token_logprobs_and_entropy(logits, response)


def _teacher_params(state: TrainState, cfg: StepConfig):
  return {"policy": state.params, "reference": state.ref_params, "ema": state.ema_params}[
      cfg.teacher]


def _split(batch: dict, n: int) -> dict:
  return jax.tree.map(lambda x: x.reshape((n, x.shape[0] // n) + x.shape[1:]), batch)


def _map_micro(fn, batch: dict, n: int):
  """fn over micro-batches with lax.map (bounded memory), results re-joined along rows."""
  out = jax.lax.map(fn, _split(batch, n))
  return jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), out)


def _forward(config, cfg, params, mb, teacher: bool):
  prompt = "teacher_prompt_tokens" if teacher else "prompt_tokens"
  return response_logprobs(config, params, mb[prompt], mb[prompt.replace("tokens", "mask")],
                           mb["response_tokens"], mb["response_mask"], cfg.temperature)


def _loss(params, mb, extra, config: QwenConfig, cfg: StepConfig, totals):
  """Loss of one micro-batch (normalised by batch-wide totals) and its per-token terms."""
  logp, entropy = _forward(config, cfg, params, mb, teacher=False)
  mask = mb["response_mask"] & mb["row_valid"][:, None]
  adv = extra["adv_tokens"]
  if cfg.needs_teacher and cfg.micro_batches == 1:  # one pass: the gap uses this forward
    delta = jax.lax.stop_gradient(extra["teacher_logp"] - logp)
    w = algorithms.shaping_weights(extra["adv_rows"], delta, mb["control_mask"],
                                   mb["response_mask"], mb["traj_id"], mb["row_valid"],
                                   cfg.alpha_clip, cfg.credit_budget)
    adv = algorithms.mix(extra["adv_rows"], w, mb["response_mask"], mb["row_valid"],
                         cfg.lambda_mix)
    extra = {**extra, "delta": delta, "weights": w}
  pg, clipped = losses.ppo_clip_terms(logp, mb["behavior_logprobs"], adv, cfg.clip_low,
                                      cfg.clip_high)
  agg = functools.partial(losses.aggregate, mask=mask, mode=cfg.loss_agg, **totals)
  terms = {"pg_loss": agg(pg), "entropy": agg(entropy), "clip_frac": agg(clipped),
           "approx_kl_behavior": agg(0.5 * (logp - mb["behavior_logprobs"]) ** 2)}
  loss = terms["pg_loss"] - cfg.entropy_coef * terms["entropy"]
  if cfg.kl_coef > 0:
    terms["kl_ref"] = agg(losses.kl_terms(logp, extra["ref_logp"], cfg.kl_estimator))
    loss = loss + cfg.kl_coef * terms["kl_ref"]
  return loss, (terms, _shaping(extra), adv)


def _prepare(state: TrainState, batch: dict, config: QwenConfig, cfg: StepConfig) -> dict:
  """Gradient-free inputs of the loss: advantages, teacher and reference log-probs."""
  valid = batch["row_valid"]
  adv_rows = algorithms.grpo_advantages(batch["traj_return"], batch["group_id"], batch["traj_id"],
                                        valid, cfg.norm_by_std)
  mask = batch["response_mask"] & valid[:, None]
  extra = {"adv_rows": adv_rows, "adv_tokens": jnp.where(mask, adv_rows[:, None], 0.0)}
  n = cfg.micro_batches
  no_grad = lambda params, teacher: _map_micro(
      lambda mb: _forward(config, cfg, jax.lax.stop_gradient(params), mb, teacher)[0], batch, n)
  if cfg.needs_teacher:
    extra["teacher_logp"] = no_grad(_teacher_params(state, cfg), True)
    if n > 1:  # the trajectory budget needs every step's gap before any micro-batch's loss
      delta = extra["teacher_logp"] - no_grad(state.params, False)
      w = algorithms.shaping_weights(adv_rows, delta, batch["control_mask"],
                                     batch["response_mask"], batch["traj_id"], valid,
                                     cfg.alpha_clip, cfg.credit_budget)
      extra.update(delta=delta, weights=w, adv_tokens=algorithms.mix(
          adv_rows, w, batch["response_mask"], valid, cfg.lambda_mix))
  if cfg.kl_coef > 0:
    extra["ref_logp"] = no_grad(state.ref_params, False)
  return extra


def _grads(state, batch, extra, config, cfg, totals):
  """Gradients summed over micro-batches (exact: each loss is normalised batch-wide)."""
  grad_fn = jax.value_and_grad(_loss, has_aux=True)
  n = cfg.micro_batches
  if n == 1:
    (loss, aux), grads = grad_fn(state.params, batch, extra, config, cfg, totals)
    return loss, grads, aux

  def body(carry, xs):
    (loss, aux), g = grad_fn(state.params, *xs, config, cfg, totals)
    return jax.tree.map(jnp.add, carry, (loss, g)), aux

  zeros = (jnp.zeros(()), jax.tree.map(jnp.zeros_like, state.params))
  (loss, grads), (terms, shaping, adv) = jax.lax.scan(body, zeros,
                                                      (_split(batch, n), _split(extra, n)))
  join = lambda tree: jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), tree)
  return loss, grads, (jax.tree.map(jnp.sum, terms), join(shaping), join(adv))


def _shaping(extra: dict) -> dict:
  return {k: extra[k] for k in ("delta", "weights") if k in extra}


def train_step(state: TrainState, batch: dict, rng: jax.Array, *, config: QwenConfig,
               cfg: StepConfig, tx: optax.GradientTransformation):
  """One policy update on a StepBatch; returns the new state and scalar metrics."""
  del rng  # no dropout; kept so every step has the same signature
  totals = {"num_tokens": jnp.sum(batch["response_mask"] & batch["row_valid"][:, None]),
            "num_rows": jnp.sum(batch["row_valid"])}
  extra = _prepare(state, batch, config, cfg)
  loss, grads, (terms, shaping, adv) = _grads(state, batch, extra, config, cfg, totals)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  ema = state.ema_params
  if ema is not None:
    ema = optax.incremental_update(params, ema, 1.0 - cfg.ema_decay)
  metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads), **terms,
             **_adv_metrics(adv, batch), **_shaping_metrics(shaping, batch)}
  return state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                       ema_params=ema), metrics


def _masked_stats(x, mask, prefix):
  n = jnp.maximum(jnp.sum(mask), 1)
  mean = jnp.sum(jnp.where(mask, x, 0.0)) / n
  std = jnp.sqrt(jnp.sum(jnp.where(mask, (x - mean) ** 2, 0.0)) / n)
  big = jnp.finfo(jnp.float32).max
  return {f"{prefix}_mean": mean, f"{prefix}_std": std,
          f"{prefix}_min": jnp.min(jnp.where(mask, x, big)),
          f"{prefix}_max": jnp.max(jnp.where(mask, x, -big))}


def _adv_metrics(adv, batch):
  return _masked_stats(adv, batch["response_mask"] & batch["row_valid"][:, None], "adv")


def _shaping_metrics(shaping, batch):
  if not shaping:
    return {}
  control = batch["control_mask"] & batch["response_mask"] & batch["row_valid"][:, None]
  out = _masked_stats(shaping["delta"], control, "delta")
  out["delta_frac_pos"] = jnp.sum(control & (shaping["delta"] > 0)) / jnp.maximum(
      jnp.sum(control), 1)
  out.update(_masked_stats(shaping["weights"], control, "weight"))
  return out


@functools.lru_cache(maxsize=16)
def jit_train_step(config: QwenConfig, cfg: StepConfig, tx, mesh, batch_ndims: tuple):
  """`train_step` compiled with explicit shardings over `mesh`; the state is donated.

  `batch_ndims`: ((field, ndim), ...) of the StepBatch arrays (rows shard over data x fsdp).
  Cached, so every run in a process with the same setup shares one compiled step.
  """
  shardings = state_shardings(config, tx, mesh, cfg.keep_reference, cfg.keep_ema)
  batch_shardings = {k: sharding.batch_sharding(mesh, ndim) for k, ndim in batch_ndims}
  fn = functools.partial(train_step, config=config, cfg=cfg, tx=tx)
  return jax.jit(fn, in_shardings=(shardings, batch_shardings, sharding.replicated(mesh)),
                 out_shardings=(shardings, sharding.replicated(mesh)), donate_argnums=0)


def batch_ndims(arrays: dict) -> tuple:
  return tuple(sorted((k, np.ndim(v)) for k, v in arrays.items()))
