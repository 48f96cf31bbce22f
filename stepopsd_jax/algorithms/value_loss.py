"""Value losses and diagnostics for the value-based estimators (PPO token-GAE, StepPO step-GAE).

Shapes are free: [B] step values (StepPO) or [B, R] token values (PPO), with a mask of the
same shape.
"""

from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import Array, Bool, Float

from stepopsd_jax.algorithms import masked


def value_loss_terms(values: Float[Array, "*S"], old_values: Float[Array, "*S"],
                     returns: Float[Array, "*S"], clip: float | None
                     ) -> tuple[Float[Array, "*S"], Bool[Array, "*S"]]:
  """Per-element PPO clipped value loss 0.5 * max((V - G)^2, (V_clip - G)^2) and where the
  clipped branch was the larger one (verl's `compute_value_loss`).

  V_clip = old + clip(V - old, -clip, clip) keeps the critic near the values it had at rollout;
  `clip=None` is the plain squared error.
  """
  values = values.astype(jnp.float32)
  err = (values - returns) ** 2
  if clip is None:
    return 0.5 * err, jnp.zeros(err.shape, bool)
  clipped_v = old_values + jnp.clip(values - old_values, -clip, clip)
  err_clipped = (clipped_v - returns) ** 2
  return 0.5 * jnp.maximum(err, err_clipped), err_clipped > err


def value_loss(values: Float[Array, "*S"], old_values: Float[Array, "*S"],
               returns: Float[Array, "*S"], mask: Bool[Array, "*S"], clip: float | None,
               num_elements: Array | None = None) -> tuple[Float[Array, ""], dict[str, Array]]:
  """(masked mean of `value_loss_terms`, metrics). `num_elements`: the batch-wide count to
  divide by when this is one micro-batch of several (default: this mask's count)."""
  terms, clipped = value_loss_terms(values, old_values, returns, clip)
  n = jnp.maximum(jnp.sum(mask) if num_elements is None else num_elements, 1)
  loss = masked.total(terms, mask) / n
  return loss, {"value_loss": loss, "value_clip_frac": jnp.sum(mask & clipped) / n}


def explained_variance(values: Float[Array, "*S"], returns: Float[Array, "*S"],
                       mask: Bool[Array, "*S"]) -> Float[Array, ""]:
  """1 - Var(G - V) / Var(G) over the masked elements; 0 when the returns do not vary.

  1 is a perfect critic, 0 no better than a constant, negative worse than one.
  """
  mean = lambda x: masked.mean(x, mask)
  returns = returns.astype(jnp.float32)
  var_g = jnp.where(masked.varies(returns, mask), mean((returns - mean(returns)) ** 2), 0.0)
  resid = returns - values.astype(jnp.float32)
  var_res = mean((resid - mean(resid)) ** 2)
  return jnp.where(var_g > 0, 1.0 - var_res / jnp.where(var_g > 0, var_g, 1.0), 0.0)
