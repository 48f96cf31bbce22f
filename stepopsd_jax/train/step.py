"""The one jitted train step: advantages, student/teacher/critic forwards, shaping, update.

`train_step(state, batch, rng) -> (state, metrics)` is a pure module-level function; the model
config, the step config and the optimizers are bound with `functools.partial`, and
`jit_train_step` compiles it with explicit shardings over the mesh, the state donated. Read top
to bottom:

    ids  = dense in [0, B)                                  the estimators' segment sums need it
    V    = critic(prompt [| response])                      stop_gradient (ppo, steppo)
    A    = estimators.estimate(batch, V)                    the estimator algo.estimator names
    lpT  = log pi_teacher(response | hindsight prompt)      stop_gradient (stepopsd, opsd)
    lp   = log pi_student(response | prompt)                with gradient
    A^   = (1 - lambda) A + lambda w(A, lpT - lp) A          stepopsd: the one shaping call
    loss = PPO-clip(lp, behaviour lp, A^) + beta KL(pi || ref) + beta_opsd KL(pi || teacher)
           - c H(pi)
    params <- AdamW(grad loss); the update is skipped when the loss or the gradient is not finite
    critic <- clipped value loss towards the GAE returns   (ppo, steppo)
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import optax

from stepopsd_jax import algorithms, sharding
from stepopsd_jax.algorithms import Targets, losses, masked, opsd
from stepopsd_jax.batch import StepBatch
from stepopsd_jax.models import QwenConfig
from stepopsd_jax.train import micro, value_model, xla_options
from stepopsd_jax.train.config import StepConfig
from stepopsd_jax.train.forward import Student, frozen_logprobs, logprobs, student_forward
from stepopsd_jax.train.micro import value_and_grad
from stepopsd_jax.train.state import TrainState, state_shardings


def train_step(state: TrainState, batch: StepBatch, rng: jax.Array, *, config: QwenConfig,
               cfg: StepConfig, tx: optax.GradientTransformation,
               critic_tx: optax.GradientTransformation | None = None):
  """One policy (and critic) update on a StepBatch; returns the new state and scalar metrics."""
  del rng  # no dropout; kept so every step has the same signature
  batch = with_dense_ids(batch)
  totals = {"num_tokens": jnp.sum(batch.response_mask & batch.row_valid[:, None]),
            "num_rows": jnp.sum(batch.row_valid)}
  old_values = value_model.old_values(state, batch, config, cfg) if cfg.needs_critic else None
  targets, estimator_metrics = algorithms.estimate(batch, cfg, old_values)
  targets = targets.replace(**frozen_logprobs(state, batch, config, cfg))
  student = student_forward(state.params, batch, config, cfg)
  if student.logp is not None:
    targets = shape_credit(targets, student.logp, batch, cfg)
  loss, grads, terms, targets = policy_gradients(student, state.params, batch, targets, config,
                                                 cfg, totals)
  new_state, finite = apply_update(state, grads, loss, tx, cfg)
  critic_metrics = {}
  if cfg.needs_critic:
    new_state, critic_metrics = update_critic(new_state, batch, targets, config, cfg, critic_tx,
                                              totals)
  if not isinstance(student.shape_in_loss, bool):
    terms["micro_whole_trajectories"] = student.shape_in_loss.astype(jnp.float32)
  metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads),
             "skipped_update": (~finite).astype(jnp.float32), **terms,
             **step_metrics(batch, targets, cfg.metric_steps), **estimator_metrics,
             **critic_metrics}
  return new_state, metrics


def with_dense_ids(batch: StepBatch) -> StepBatch:
  """`batch` with trajectory and group ids renumbered densely into [0, B): the estimators'
  segment sums have B slots, and an id past them would be dropped from the sums (multi-host
  batches join ids from several processes; a rollout may leave gaps)."""
  dense = lambda ids: algorithms.dense_group_ids((ids,), batch.row_valid).astype(jnp.int32)
  return batch.replace(traj_id=dense(batch.traj_id), group_id=dense(batch.group_id))


def hindsight_gap(teacher_logp, student_logp, has_hindsight):
  """Delta = log pi_teacher - log pi_student, stop-gradient; 0 on rows without a hindsight block
  (their teacher saw the student's own prompt, so any gap there is not hindsight)."""
  delta = jax.lax.stop_gradient(teacher_logp - student_logp)
  return jnp.where(has_hindsight[:, None], delta, 0.0)


def shape_credit(targets: Targets, student_logp, batch: StepBatch, cfg: StepConfig) -> Targets:
  """StepOPSD's reshaped advantages (DESIGN 4.8, steps 3-6); other estimators' unchanged."""
  if not cfg.shapes_credit:
    return targets
  delta = hindsight_gap(targets.teacher_logp, student_logp, batch.has_hindsight)
  shaped = algorithms.stepopsd_shape(targets.adv_rows, delta, batch.control_mask,
                                     batch.response_mask, batch.traj_id, batch.row_valid,
                                     cfg.alpha_clip, cfg.lambda_mix, cfg.credit_budget,
                                     cfg.weight_fn)
  return targets.replace(adv_tokens=shaped.adv_tokens, weights=shaped.weights, delta=delta)


@functools.partial(jax.jit, static_argnames=("config", "cfg"))
def credit(params, batch: StepBatch, *, config: QwenConfig, cfg: StepConfig) -> Targets:
  """What the step would train `params` towards on `batch`, without an update: the advantage of
  every response token and, for StepOPSD, the gap and the weight behind it (teacher = policy).
  For looking at where the credit goes (bench/reading.py, the notebooks); critic-free only."""
  if cfg.needs_critic:
    raise ValueError(f"credit() covers the critic-free estimators, not {cfg.estimator!r}.")
  batch = with_dense_ids(batch)
  targets, _ = algorithms.estimate(batch, cfg)
  if cfg.needs_teacher:
    targets = targets.replace(teacher_logp=logprobs(config, params, batch, cfg.temperature,
                                                    teacher=True)[0])
  student_logp = logprobs(config, params, batch, cfg.temperature, teacher=False)[0]
  return shape_credit(targets, student_logp, batch, cfg)


def policy_loss(logp, entropy, mb: StepBatch, targets: Targets, cfg: StepConfig, totals):
  """The policy loss of (a micro-batch of) the batch from its log-probs and entropies, normalised
  by batch-wide totals; (loss, its terms)."""
  mask = mb.response_mask & mb.row_valid[:, None]
  agg = functools.partial(losses.aggregate, mask=mask, mode=cfg.loss_agg, **totals)
  pg, clipped = losses.ppo_clip_terms(logp, mb.behavior_logprobs, targets.adv_tokens,
                                      cfg.clip_low, cfg.clip_high)
  terms = {"pg_loss": agg(pg), "entropy": agg(entropy), "clip_frac": agg(clipped),
           "approx_kl_behavior": agg(0.5 * (logp - mb.behavior_logprobs) ** 2)}
  loss = terms["pg_loss"] - cfg.entropy_coef * terms["entropy"]
  if cfg.kl_coef > 0:
    terms["kl_ref"] = agg(losses.kl(logp, targets.ref_logp, mask, cfg.kl_estimator))
    loss = loss + cfg.kl_coef * terms["kl_ref"]
  if cfg.estimator == "opsd":
    distil = lambda estimator: agg(opsd.distillation_terms(
        logp, targets.teacher_logp, mb.response_mask, mb.has_hindsight, estimator))
    terms["opsd_loss"] = distil(cfg.opsd_kl)
    terms["kl_teacher"] = jax.lax.stop_gradient(distil("k3"))  # unbiased, non-negative
    loss = loss + cfg.opsd_beta * terms["opsd_loss"]
  return loss, terms


SHAPED = ("adv_tokens", "weights", "delta")  # the Targets fields StepOPSD's shaping writes


def policy_gradients(student: Student, params, batch: StepBatch, targets: Targets,
                     config: QwenConfig, cfg: StepConfig, totals):
  """(loss, gradients, loss terms, targets). One micro-batch: the loss's gradient w.r.t. the
  student's log-probs pulled back through the forward already run; several: a forward and
  backward per micro-batch, summed (exact: each loss is normalised batch-wide). Where
  `student.shape_in_loss`, each micro-batch shapes its advantages from its own forward (it holds
  whole trajectories), and the returned targets carry the shaped fields re-joined."""
  loss_fn = functools.partial(policy_loss, cfg=cfg, totals=totals)
  if student.pullback is not None:
    (loss, terms), cotangents = jax.value_and_grad(loss_fn, argnums=(0, 1), has_aux=True)(
        student.logp, student.entropy, batch, targets)
    return loss, student.pullback(cotangents)[0], terms, targets

  in_loss = student.shape_in_loss

  def micro_loss(p, mb, t):
    logp, entropy = Student.of(p, mb, config, cfg)
    if in_loss is not False:  # ids renumbered: the budget's segment sums have B / n slots
      own = shape_credit(t, logp, with_dense_ids(mb), cfg)  # the gap is stop-gradient
      t = own if in_loss is True else t.replace(**{
          k: jnp.where(in_loss, getattr(own, k), getattr(t, k)) for k in SHAPED})
    loss, terms = loss_fn(logp, entropy, mb, t)
    return loss, (terms, {k: getattr(t, k) for k in SHAPED} if in_loss is not False else {})

  loss, grads, (terms, shaped) = value_and_grad(micro_loss, params, batch, targets,
                                                cfg.micro_batches)
  return loss, grads, jax.tree.map(jnp.sum, terms), targets.replace(**micro.join(shaped))


def apply_update(state: TrainState, grads, loss, tx, cfg: StepConfig) -> tuple[TrainState, jax.Array]:
  """AdamW on the policy (and the EMA teacher), or nothing at all when the loss or the gradient
  is not finite: a bad batch must not poison the parameters or the optimizer's moments."""
  finite = jnp.isfinite(loss) & jnp.isfinite(optax.tree.norm(grads))
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  ema = state.ema_params
  if ema is not None:
    ema = optax.incremental_update(params, ema, 1.0 - cfg.ema_decay)
  updated = state.replace(params=params, opt_state=opt_state, ema_params=ema)
  kept = jax.tree.map(lambda new, old: jnp.where(finite, new, old), updated, state)
  return kept.replace(step=state.step + 1), finite


def update_critic(state: TrainState, batch, targets, config, cfg, critic_tx, totals):
  params, opt_state, finite, metrics = value_model.update(state, batch, targets, config, cfg,
                                                          critic_tx, totals)
  keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)
  return state.replace(critic_params=keep(params, state.critic_params),
                       critic_opt_state=keep(opt_state, state.critic_opt_state)), metrics


def step_metrics(batch: StepBatch, targets: Targets, num_steps: int) -> dict:
  """Advantages over the response tokens; StepOPSD's gap and weights over the control tokens,
  overall and at each of the first `num_steps` step indices, also split by the trajectory's
  outcome (`weight_by_step`, `weight_won_by_step`, ..., each with the count of control tokens
  behind it in `control_tokens[_won|_lost]_by_step`): where the credit goes."""
  live = batch.response_mask & batch.row_valid[:, None]
  out = masked.stats(targets.adv_tokens, live, "adv")
  if targets.delta is None:
    return out
  control = batch.control_mask & live
  out.update(masked.stats(targets.delta, control, "delta"))
  out["delta_frac_pos"] = masked.mean(targets.delta > 0, control)
  out.update(masked.stats(targets.weights, control, "weight"))
  # where the weight acts: a token whose advantage is 0 (e.g. a group that all won) gets w = 1
  # and is multiplied by 0 anyway, so these stats leave such tokens out
  acting = control & (jnp.abs(targets.adv_tokens) > masked.EPS)
  out.update(masked.stats(targets.weights, acting, "weight_acting"))
  out["acting_control_frac"] = masked.mean(acting, control)
  at_k = control[None] & (batch.step_idx[None, :] == jnp.arange(num_steps)[:, None])[..., None]
  won = batch.traj_success[None, :, None]
  for suffix, mask in (("", at_k), ("_won", at_k & won), ("_lost", at_k & ~won)):
    out[f"weight{suffix}_by_step"] = masked.mean(targets.weights[None], mask, axis=(1, 2))
    out[f"control_tokens{suffix}_by_step"] = jnp.sum(mask, axis=(1, 2))
  out["delta_by_step"] = masked.mean(targets.delta[None], at_k, axis=(1, 2))
  return out


@functools.lru_cache(maxsize=16)
def jit_train_step(config: QwenConfig, cfg: StepConfig, tx, mesh, critic_tx=None,
                   xla: bool = True):
  """`train_step` compiled with explicit shardings over `mesh`; the state is donated.

  `critic_tx`: the critic's optimizer, required exactly when `cfg.needs_critic`. `xla=False`
  compiles with XLA's default options instead of `xla_options.train_step_options` (for A/B
  benchmarks). Cached, so every run in a process with the same setup shares one compiled step.
  """
  if cfg.needs_critic != (critic_tx is not None):
    raise ValueError(f"algo.estimator={cfg.estimator!r} "
                     f"{'needs' if cfg.needs_critic else 'has no'} critic: pass critic_tx="
                     f"{'the critic optimizer' if cfg.needs_critic else 'None'}.")
  shardings = state_shardings(config, tx, mesh, cfg.keep_reference, cfg.keep_ema, critic_tx)
  fn = functools.partial(train_step, config=config, cfg=cfg, tx=tx, critic_tx=critic_tx)
  return jax.jit(fn, in_shardings=(shardings, StepBatch.shardings(mesh),
                                   sharding.replicated(mesh)),
                 out_shardings=(shardings, sharding.replicated(mesh)), donate_argnums=0,
                 compiler_options=xla_options.train_step_options(mesh) if xla else None)

