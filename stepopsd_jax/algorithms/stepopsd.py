"""StepOPSD shaping (DESIGN 4.8, steps 4-6): the hindsight log-prob gap reweights the advantage.

    w_k   = clip(f(sign(A) * delta_k), 1 - alpha_clip, 1 + alpha_clip)   on control tokens
            f(x) = 2 sigmoid(x) (StepOPSD)  or  exp(x) (RLSD, ZJU-REAL/SDAR)
    credit budget: redistribute w within a trajectory ("trajectory"), within a step ("step"),
                   or not at all ("none"); tokens outside control_mask keep weight 1
    A_hat = (1 - lambda_mix) * A + lambda_mix * w * A

f(0) = 1 and w > 0, so the sign of A never flips; lambda_mix = 0 returns A broadcast over the
response, bit for bit. RLSD is this function with `weight_fn="exp"` and `credit_budget="none"`
(SDAR reweights every response token: `control_mode="all"` matches it exactly).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from stepopsd_jax.algorithms import masked

CREDIT_BUDGETS = ("trajectory", "step", "none")
WEIGHT_FNS = ("sigmoid", "exp")


class Shaped(NamedTuple):
  adv_tokens: Float[Array, "B R"]  # A_hat: 0 outside the response and on padding rows
  weights: Float[Array, "B R"]  # w after the credit budget; 1 outside the control tokens


def token_weights(adv: Float[Array, "B"], delta: Float[Array, "B R"], alpha_clip: float,
                  weight_fn: str = "sigmoid") -> Float[Array, "B R"]:
  """Sign-preserving weight: the teacher liking a token more helps a winner, spares a loser."""
  x = jnp.sign(adv)[:, None] * delta
  if weight_fn == "sigmoid":
    w = 2.0 * jax.nn.sigmoid(x)
  elif weight_fn == "exp":
    w = jnp.exp(x)
  else:
    raise ValueError(f"weight_fn={weight_fn!r}: choose one of {WEIGHT_FNS}.")
  return jnp.clip(w, 1.0 - alpha_clip, 1.0 + alpha_clip)


def apply_credit_budget(w: Float[Array, "B R"], control_mask: Bool[Array, "B R"],
                        traj_id: Int[Array, "B"], row_valid: Bool[Array, "B"],
                        credit_budget: str) -> Float[Array, "B R"]:
  """Normalises weights so credit is redistributed, not created; non-control tokens get 1."""
  if credit_budget not in CREDIT_BUDGETS:
    raise ValueError(f"credit_budget={credit_budget!r}: choose one of {CREDIT_BUDGETS}.")
  if credit_budget == "step":
    w = w / jnp.maximum(masked.mean(w, control_mask, axis=1), 1e-12)[:, None]
  elif credit_budget == "trajectory":
    has_control = control_mask.any(axis=1) & row_valid
    step_w = masked.mean(w, control_mask, axis=1)  # W_t
    b = w.shape[0]
    total = jax.ops.segment_sum(jnp.where(has_control, step_w, 0.0), traj_id, num_segments=b)
    count = jax.ops.segment_sum(has_control.astype(jnp.float32), traj_id, num_segments=b)
    traj_mean = (total / jnp.maximum(count, 1.0))[traj_id]
    step_w = step_w / jnp.maximum(traj_mean, 1e-12)
    w = jnp.broadcast_to(step_w[:, None], w.shape)
  return jnp.where(control_mask, w, 1.0)


def mix(adv: Float[Array, "B"], w: Float[Array, "B R"], response_mask: Bool[Array, "B R"],
        row_valid: Bool[Array, "B"], lambda_mix: float) -> Float[Array, "B R"]:
  """(1 - lambda) * A + lambda * w * A on response tokens of valid rows, 0 elsewhere."""
  scale = (1.0 - lambda_mix) + lambda_mix * w
  return jnp.where(response_mask & row_valid[:, None], adv[:, None] * scale, 0.0)


def stepopsd_shape(adv: Float[Array, "B"], delta: Float[Array, "B R"],
                   control_mask: Bool[Array, "B R"], response_mask: Bool[Array, "B R"],
                   traj_id: Int[Array, "B"], row_valid: Bool[Array, "B"], alpha_clip: float,
                   lambda_mix: float, credit_budget: str = "trajectory",
                   weight_fn: str = "sigmoid") -> Shaped:
  """The shaped per-token advantages and the weights behind them (steps 4-6 in one place)."""
  control = control_mask & response_mask & row_valid[:, None]
  w = apply_credit_budget(token_weights(adv, delta, alpha_clip, weight_fn), control, traj_id,
                          row_valid, credit_budget)
  return Shaped(mix(adv, w, response_mask, row_valid, lambda_mix), w)
