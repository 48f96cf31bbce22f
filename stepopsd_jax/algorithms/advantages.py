"""Trajectory-level advantages (DESIGN 4.1): GRPO and its Dr.GRPO variant, as pure jnp.

Rows are agent steps; statistics are over trajectories (one value each, however many steps it
has), gathered with segment sums. `traj_id` and `group_id` must lie in [0, B).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

EPS = 1e-6


def per_trajectory(values: Float[Array, "B"], traj_id: Int[Array, "B"],
                   row_valid: Bool[Array, "B"]) -> tuple[Array, Array]:
  """(value of each trajectory slot [B], whether the slot holds a trajectory [B]).

  The value is read from the trajectory's rows, which all carry it (a max, not a mean: averaging
  copies of 0.9 in float32 does not give 0.9 back).
  """
  b = values.shape[0]
  count = jax.ops.segment_sum(row_valid.astype(jnp.float32), traj_id, num_segments=b)
  value = jax.ops.segment_max(jnp.where(row_valid, values, -jnp.inf), traj_id, num_segments=b)
  has = count > 0
  return jnp.where(has, value, 0.0), has


def trajectory_group(group_id: Int[Array, "B"], traj_id: Int[Array, "B"],
                     row_valid: Bool[Array, "B"]) -> Int[Array, "B"]:
  """Group of each trajectory slot (0 for empty slots, which are masked everywhere)."""
  b = group_id.shape[0]
  return jnp.maximum(jax.ops.segment_max(jnp.where(row_valid, group_id, -1), traj_id,
                                         num_segments=b), 0)


def grpo_advantages(traj_return: Float[Array, "B"], group_id: Int[Array, "B"],
                    traj_id: Int[Array, "B"], row_valid: Bool[Array, "B"],
                    norm_by_std: bool = True) -> Float[Array, "B"]:
  """A_i = (R_i - mean_g R) / (std_g R + eps), one value per row, equal on a trajectory's rows.

  std is the unbiased sample std over the group's trajectories (as verl); a group with a single
  trajectory gets 0; `norm_by_std=False` is Dr.GRPO (R_i - mean_g R). Padding rows get 0.
  """
  b = traj_return.shape[0]
  ret_T, has_T = per_trajectory(traj_return.astype(jnp.float32), traj_id, row_valid)
  group_T = trajectory_group(group_id, traj_id, row_valid)
  n_G = jax.ops.segment_sum(has_T.astype(jnp.float32), group_T, num_segments=b)
  mean_G = jax.ops.segment_sum(jnp.where(has_T, ret_T, 0.0), group_T, num_segments=b) / (
      jnp.maximum(n_G, 1.0))
  centred_T = ret_T - mean_G[group_T]
  # All-equal groups get exactly 0: float32 means of equal values can miss them by an ulp,
  # which the std division would blow up.
  max_G = jax.ops.segment_max(jnp.where(has_T, ret_T, -jnp.inf), group_T, num_segments=b)
  min_G = jax.ops.segment_min(jnp.where(has_T, ret_T, jnp.inf), group_T, num_segments=b)
  centred_T = jnp.where(max_G[group_T] > min_G[group_T], centred_T, 0.0)
  if norm_by_std:
    var_G = jax.ops.segment_sum(jnp.where(has_T, centred_T ** 2, 0.0), group_T,
                                num_segments=b) / jnp.maximum(n_G - 1.0, 1.0)
    centred_T = centred_T / (jnp.sqrt(var_G)[group_T] + EPS)
  adv_T = jnp.where(has_T & (n_G[group_T] > 1), centred_T, 0.0)
  return jnp.where(row_valid, adv_T[traj_id], 0.0)
