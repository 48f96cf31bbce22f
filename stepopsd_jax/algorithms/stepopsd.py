"""StepOPSD shaping (DESIGN 4.8, steps 4-6): the hindsight log-prob gap reweights the advantage.

    w_k = clip(2 * sigmoid(sign(A) * delta_k), 1 - alpha_clip, 1 + alpha_clip)   on control tokens
    credit budget: redistribute w within a trajectory ("trajectory"), within a step ("step"),
                   or not at all ("none"); tokens outside control_mask keep weight 1
    A_hat = (1 - lambda_mix) * A + lambda_mix * w * A

w > 0, so the sign of A never flips; lambda_mix = 0 returns A broadcast over the response, bit
for bit.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

CREDIT_BUDGETS = ("trajectory", "step", "none")


def token_weights(adv: Float[Array, "B"], delta: Float[Array, "B R"], alpha_clip: float
                  ) -> Float[Array, "B R"]:
  """Sign-preserving weight: the teacher liking a token more helps a winner, spares a loser."""
  w = 2.0 * jax.nn.sigmoid(jnp.sign(adv)[:, None] * delta)
  return jnp.clip(w, 1.0 - alpha_clip, 1.0 + alpha_clip)


def _masked_mean(x, mask, axis):
  return jnp.sum(jnp.where(mask, x, 0.0), axis=axis) / jnp.maximum(jnp.sum(mask, axis=axis), 1)


def apply_credit_budget(w: Float[Array, "B R"], control_mask: Bool[Array, "B R"],
                        traj_id: Int[Array, "B"], row_valid: Bool[Array, "B"],
                        credit_budget: str) -> Float[Array, "B R"]:
  """Normalises weights so credit is redistributed, not created; non-control tokens get 1."""
  if credit_budget not in CREDIT_BUDGETS:
    raise ValueError(f"credit_budget={credit_budget!r}: choose one of {CREDIT_BUDGETS}.")
  if credit_budget == "step":
    w = w / jnp.maximum(_masked_mean(w, control_mask, axis=1), 1e-12)[:, None]
  elif credit_budget == "trajectory":
    has_control = control_mask.any(axis=1) & row_valid
    step_w = _masked_mean(w, control_mask, axis=1)  # W_t
    b = w.shape[0]
    total = jax.ops.segment_sum(jnp.where(has_control, step_w, 0.0), traj_id, num_segments=b)
    count = jax.ops.segment_sum(has_control.astype(jnp.float32), traj_id, num_segments=b)
    traj_mean = (total / jnp.maximum(count, 1.0))[traj_id]
    step_w = step_w / jnp.maximum(traj_mean, 1e-12)
    w = jnp.broadcast_to(step_w[:, None], w.shape)
  return jnp.where(control_mask, w, 1.0)


def shaping_weights(adv: Float[Array, "B"], delta: Float[Array, "B R"],
                    control_mask: Bool[Array, "B R"], response_mask: Bool[Array, "B R"],
                    traj_id: Int[Array, "B"], row_valid: Bool[Array, "B"], alpha_clip: float,
                    credit_budget: str = "trajectory") -> Float[Array, "B R"]:
  """The final per-token weight w (after the credit budget); 1 outside the control tokens."""
  control = control_mask & response_mask & row_valid[:, None]
  return apply_credit_budget(token_weights(adv, delta, alpha_clip), control, traj_id, row_valid,
                             credit_budget)


def mix(adv: Float[Array, "B"], w: Float[Array, "B R"], response_mask: Bool[Array, "B R"],
        row_valid: Bool[Array, "B"], lambda_mix: float) -> Float[Array, "B R"]:
  """(1 - lambda) * A + lambda * w * A on response tokens of valid rows, 0 elsewhere."""
  scale = (1.0 - lambda_mix) + lambda_mix * w
  return jnp.where(response_mask & row_valid[:, None], adv[:, None] * scale, 0.0)


def stepopsd_shape(adv: Float[Array, "B"], delta: Float[Array, "B R"],
                   control_mask: Bool[Array, "B R"], response_mask: Bool[Array, "B R"],
                   traj_id: Int[Array, "B"], row_valid: Bool[Array, "B"], alpha_clip: float,
                   lambda_mix: float, credit_budget: str = "trajectory") -> Float[Array, "B R"]:
  """Per-token shaped advantages [B, R]; zero outside `response_mask` and on padding rows."""
  w = shaping_weights(adv, delta, control_mask, response_mask, traj_id, row_valid, alpha_clip,
                      credit_budget)
  return mix(adv, w, response_mask, row_valid, lambda_mix)
