"""The one jitted train step: advantages, student/teacher/critic forwards, shaping, update.

`train_step(state, batch, rng) -> (state, metrics)` is a pure module-level function; the model
config, the step config and the optimizers are bound with `functools.partial`, and
`jit_train_step` compiles it with explicit shardings over the mesh, the state donated. Read top
to bottom:

    V   = critic(prompt [| response])                     stop_gradient (ppo, steppo only)
    A   = advantage.estimate(batch, V)                     the estimator algo.estimator names
    lp  = log pi_student(response | prompt)                with gradient
    lpT = log pi_teacher(response | hindsight prompt)      stop_gradient (stepopsd, opsd only)
    A^  = (1 - lambda) A + lambda w(A, lpT - lp) A         stepopsd only
    loss = PPO-clip(lp, behaviour lp, A^) + beta KL(pi || ref) + beta_opsd KL(pi || teacher)
           - c H(pi)
    critic <- clipped value loss towards the GAE returns   (ppo, steppo only)
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
from stepopsd_jax.train import advantage, critic, micro
from stepopsd_jax.train.advantage import CRITIC_ESTIMATORS, ESTIMATORS, TEACHER_ESTIMATORS
from stepopsd_jax.train.state import TEACHERS, TrainState, state_shardings


@dataclasses.dataclass(frozen=True)
class StepConfig:
  """Everything the step needs besides the model config and the optimizers (hashable)."""
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
  gamma: float = 0.95  # gigpo: discount of the step returns inside anchor groups
  gigpo_step_weight: float = 1.0  # gigpo: omega in A = A^E + omega A^S
  gae_gamma: float = 1.0  # ppo / steppo
  gae_lambda: float = 1.0  # ppo / steppo
  value_clip: float = 0.2  # ppo / steppo critic; 0 disables the clip
  reinforce_group_baseline: bool = False  # reinforce_pp: subtract the group mean first
  opsd_beta: float = 0.1  # opsd: weight of KL(student || hindsight teacher)
  opsd_kl: str = "k2"  # opsd: per-token estimator trained on (k1, k2, k3)

  @property
  def needs_teacher(self) -> bool:
    return self.estimator in TEACHER_ESTIMATORS

  @property
  def needs_critic(self) -> bool:
    return self.estimator in CRITIC_ESTIMATORS

  @property
  def shapes_credit(self) -> bool:
    """StepOPSD's shaping of the advantages by the per-token teacher gap."""
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
                                 ("kl_estimator", self.kl_estimator, losses.KL_ESTIMATORS),
                                 ("opsd_kl", self.opsd_kl, algorithms.OPSD_KL_ESTIMATORS)):
      if value not in choices:
        raise ValueError(f"algo.{name}={value!r}: choose one of {choices}.")
    if self.temperature <= 0:
      raise ValueError(f"temperature={self.temperature} (rollout.temperature) must be > 0: the "
                       "step scores tokens under the sampling distribution.")


def response_logprobs(config: QwenConfig, params, prompt, prompt_mask, response, response_mask,
                      temperature: float):
  """log p and entropy of each response token given its (left-padded) prompt, [B, R] f32."""
  p = prompt.shape[1]
  tokens = jnp.concatenate([prompt, response], axis=1)
  mask = jnp.concatenate([prompt_mask, response_mask], axis=1)
  h = models.hidden_states(config, params, tokens, mask, models.default_positions(mask))
  logits = models.project(config, params, h[:, p - 1:-1]) / temperature  # predicts response
  return losses.token_logprobs_and_entropy(logits, response)


def hindsight_gap(teacher_logp, student_logp, has_hindsight):
  """Delta = log pi_teacher - log pi_student, stop-gradient; 0 on rows without a hindsight block
  (their teacher saw the student's own prompt, so any gap there is not hindsight)."""
  delta = jax.lax.stop_gradient(teacher_logp - student_logp)
  return jnp.where(has_hindsight[:, None], delta, 0.0)


def with_dense_ids(batch: dict) -> dict:
  """`batch` with trajectory and group ids renumbered densely into [0, B): the estimators'
  segment sums have B slots, and an id past them would be dropped from the sums (multi-host
  batches join ids from several processes; a rollout may leave gaps)."""
  valid = batch["row_valid"]
  return {**batch,
          "traj_id": algorithms.dense_group_ids((batch["traj_id"],), valid).astype(jnp.int32),
          "group_id": algorithms.dense_group_ids((batch["group_id"],), valid).astype(jnp.int32)}


def _teacher_params(state: TrainState, cfg: StepConfig):
  return {"policy": state.params, "reference": state.ref_params, "ema": state.ema_params}[
      cfg.teacher]


def _forward(config, cfg, params, mb, teacher: bool):
  prompt = "teacher_prompt_tokens" if teacher else "prompt_tokens"
  return response_logprobs(config, params, mb[prompt], mb[prompt.replace("tokens", "mask")],
                           mb["response_tokens"], mb["response_mask"], cfg.temperature)


def _regularisers(logp, mb, extra, cfg: StepConfig, agg) -> tuple[jax.Array, dict]:
  """KL to the reference policy and OPSD's KL to the hindsight teacher: (loss term, metrics)."""
  loss, terms = 0.0, {}
  if cfg.kl_coef > 0:
    terms["kl_ref"] = agg(losses.kl_terms(logp, extra["ref_logp"], cfg.kl_estimator))
    loss = loss + cfg.kl_coef * terms["kl_ref"]
  if cfg.estimator == "opsd":  # no hindsight block: nothing to distil on that row
    hindsight_mask = mb["response_mask"] & mb["has_hindsight"][:, None]
    kl = lambda estimator: agg(algorithms.opsd_kl_terms(logp, extra["teacher_logp"],
                                                        hindsight_mask, estimator))
    terms["opsd_loss"] = kl(cfg.opsd_kl)
    terms["kl_teacher"] = jax.lax.stop_gradient(kl("k3"))  # unbiased, non-negative
    loss = loss + cfg.opsd_beta * terms["opsd_loss"]
  return loss, terms


def _loss(params, mb, extra, config: QwenConfig, cfg: StepConfig, totals):
  """Loss of one micro-batch (normalised by batch-wide totals) and its per-token terms."""
  logp, entropy = _forward(config, cfg, params, mb, teacher=False)
  mask = mb["response_mask"] & mb["row_valid"][:, None]
  adv = extra["adv_tokens"]
  if cfg.shapes_credit and cfg.micro_batches == 1:  # one pass: the gap uses this forward
    delta = hindsight_gap(extra["teacher_logp"], logp, mb["has_hindsight"])
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
  reg_loss, reg_terms = _regularisers(logp, mb, extra, cfg, agg)
  loss = terms["pg_loss"] - cfg.entropy_coef * terms["entropy"] + reg_loss
  return loss, ({**terms, **reg_terms}, _shaping(extra), adv)


def _prepare(state: TrainState, batch: dict, config: QwenConfig, cfg: StepConfig):
  """Gradient-free inputs of the losses on the full batch: (advantages, critic values, teacher
  and reference log-probs; the estimator's metrics)."""
  no_grad = lambda fn, params: micro.map_rows(
      lambda mb: fn(jax.lax.stop_gradient(params), mb), batch, cfg.micro_batches)
  logp = lambda params, teacher: no_grad(
      lambda p, mb: _forward(config, cfg, p, mb, teacher)[0], params)
  old_values = None
  if cfg.needs_critic:  # V at rollout-time parameters: the GAE baseline and the clip anchor
    old_values = no_grad(functools.partial(critic.values, config,
                                           per_token=cfg.estimator == "ppo"), state.critic_params)
  extra, metrics = advantage.estimate(batch, cfg, old_values)
  if cfg.needs_critic:
    extra["old_values"] = old_values
  if cfg.needs_teacher:
    extra["teacher_logp"] = logp(_teacher_params(state, cfg), True)
  if cfg.shapes_credit and cfg.micro_batches > 1:  # the budget needs every step's gap first
    gap = hindsight_gap(extra["teacher_logp"], logp(state.params, False), batch["has_hindsight"])
    extra.update(_shape(extra, gap, batch, cfg))
  if cfg.kl_coef > 0:
    extra["ref_logp"] = logp(state.ref_params, False)
  return extra, metrics


def _shape(extra, delta, batch, cfg: StepConfig) -> dict:
  """StepOPSD's weights and mixed advantages from the full batch's gaps (micro-batched runs)."""
  valid = batch["row_valid"]
  w = algorithms.shaping_weights(extra["adv_rows"], delta, batch["control_mask"],
                                 batch["response_mask"], batch["traj_id"], valid, cfg.alpha_clip,
                                 cfg.credit_budget)
  return {"delta": delta, "weights": w, "adv_tokens": algorithms.mix(
      extra["adv_rows"], w, batch["response_mask"], valid, cfg.lambda_mix)}


def _grads(state, batch, extra, config, cfg, totals):
  """Policy gradients summed over micro-batches (exact: each loss is normalised batch-wide)."""
  loss_fn = functools.partial(_loss, config=config, cfg=cfg, totals=totals)
  loss, grads, (terms, shaping, adv) = micro.value_and_grad(loss_fn, state.params, batch, extra,
                                                            cfg.micro_batches)
  if cfg.micro_batches > 1:
    terms, shaping, adv = jax.tree.map(jnp.sum, terms), micro.join(shaping), micro.join(adv)
  return loss, grads, (terms, shaping, adv)


def _shaping(extra: dict) -> dict:
  return {k: extra[k] for k in ("delta", "weights") if k in extra}


def train_step(state: TrainState, batch: dict, rng: jax.Array, *, config: QwenConfig,
               cfg: StepConfig, tx: optax.GradientTransformation,
               critic_tx: optax.GradientTransformation | None = None):
  """One policy (and critic) update on a StepBatch; returns the new state and scalar metrics."""
  del rng  # no dropout; kept so every step has the same signature
  batch = with_dense_ids(batch)
  totals = {"num_tokens": jnp.sum(batch["response_mask"] & batch["row_valid"][:, None]),
            "num_rows": jnp.sum(batch["row_valid"])}
  extra, estimator_metrics = _prepare(state, batch, config, cfg)
  loss, grads, (terms, shaping, adv) = _grads(state, batch, extra, config, cfg, totals)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  ema = state.ema_params
  if ema is not None:
    ema = optax.incremental_update(params, ema, 1.0 - cfg.ema_decay)
  new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                            ema_params=ema)
  critic_metrics = {}
  if cfg.needs_critic:
    new_state, critic_metrics = critic.update(new_state, batch, extra, config, cfg, critic_tx,
                                              totals)
  metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads), **terms,
             **_adv_metrics(adv, batch), **_shaping_metrics(shaping, batch),
             **estimator_metrics, **critic_metrics}
  return new_state, metrics


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
def jit_train_step(config: QwenConfig, cfg: StepConfig, tx, mesh, batch_ndims: tuple,
                   critic_tx=None):
  """`train_step` compiled with explicit shardings over `mesh`; the state is donated.

  `batch_ndims`: ((field, ndim), ...) of the StepBatch arrays (rows shard over data x fsdp).
  `critic_tx`: the critic's optimizer, required exactly when `cfg.needs_critic`.
  Cached, so every run in a process with the same setup shares one compiled step.
  """
  if cfg.needs_critic != (critic_tx is not None):
    raise ValueError(f"algo.estimator={cfg.estimator!r} "
                     f"{'needs' if cfg.needs_critic else 'has no'} critic: pass critic_tx="
                     f"{'the critic optimizer' if cfg.needs_critic else 'None'}.")
  shardings = state_shardings(config, tx, mesh, cfg.keep_reference, cfg.keep_ema, critic_tx)
  batch_shardings = {k: sharding.batch_sharding(mesh, ndim) for k, ndim in batch_ndims}
  fn = functools.partial(train_step, config=config, cfg=cfg, tx=tx, critic_tx=critic_tx)
  return jax.jit(fn, in_shardings=(shardings, batch_shardings, sharding.replicated(mesh)),
                 out_shardings=(shardings, sharding.replicated(mesh)), donate_argnums=0)


def batch_ndims(arrays: dict) -> tuple:
  return tuple(sorted((k, np.ndim(v)) for k, v in arrays.items()))
