"""GRPO (DESIGN 4.1) and its Dr.GRPO variant: trajectory-level advantages within task groups.

    A_i = (R_i - mean_g R) / (std_g R + eps)        (norm_by_std; Dr.GRPO: R_i - mean_g R)

Rows are agent steps; the statistics are over each group's trajectories (one return each,
however many steps it has). std is the unbiased sample std (as verl), eps = 1e-6; a group with a
single trajectory gets 0. A_i is the same on every row of trajectory i.
"""

from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from stepopsd_jax.algorithms.rows import per_trajectory, segment_centre, trajectory_group


def grpo_advantages(traj_return: Float[Array, "B"], group_id: Int[Array, "B"],
                    traj_id: Int[Array, "B"], row_valid: Bool[Array, "B"],
                    norm_by_std: bool = True) -> Float[Array, "B"]:
  """A_i per row, equal on a trajectory's rows; padding rows get 0, never NaN."""
  ret_T, has_T = per_trajectory(traj_return.astype(jnp.float32), traj_id, row_valid)
  group_T = trajectory_group(group_id, traj_id, row_valid)
  adv_T, n_T = segment_centre(ret_T, group_T, has_T, norm_by_std)
  adv_T = jnp.where(n_T > 1, adv_T, 0.0)
  return jnp.where(row_valid, adv_T[traj_id], 0.0)
