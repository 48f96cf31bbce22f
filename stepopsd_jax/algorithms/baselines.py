"""Critic-free trajectory-level baselines (DESIGN 4.1-4.3): Dr.GRPO, RLOO, REINFORCE++.

Like `grpo_advantages`: one value per row, equal on all rows of a trajectory, statistics over
trajectories (one return each, however many steps it has), padding rows 0, never NaN.
"""

from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from stepopsd_jax.algorithms.grpo import grpo_advantages
from stepopsd_jax.algorithms.rows import per_trajectory, segment_centre, trajectory_group


def dr_grpo_advantages(traj_return: Float[Array, "B"], group_id: Int[Array, "B"],
                       traj_id: Int[Array, "B"], row_valid: Bool[Array, "B"]
                       ) -> Float[Array, "B"]:
  """Dr.GRPO (Liu et al. 2025): A_i = R_i - mean_g R, GRPO without the std division."""
  return grpo_advantages(traj_return, group_id, traj_id, row_valid, norm_by_std=False)


def rloo_advantages(traj_return: Float[Array, "B"], group_id: Int[Array, "B"],
                    traj_id: Int[Array, "B"], row_valid: Bool[Array, "B"]
                    ) -> Float[Array, "B"]:
  """RLOO (Ahmadian et al. 2024): A_i = R_i - mean_{j in g, j != i} R_j.

  Computed as n / (n - 1) * (R_i - mean_g R), which is the same number; a group with one
  trajectory (no other to compare with) gets 0.
  """
  ret_T, has_T = per_trajectory(traj_return.astype(jnp.float32), traj_id, row_valid)
  group_T = trajectory_group(group_id, traj_id, row_valid)
  centred_T, n_T = segment_centre(ret_T, group_T, has_T, norm_by_std=False)
  adv_T = jnp.where(n_T > 1, centred_T * n_T / jnp.maximum(n_T - 1.0, 1.0), 0.0)
  return jnp.where(row_valid, adv_T[traj_id], 0.0)


def reinforce_pp_advantages(traj_return: Float[Array, "B"], group_id: Int[Array, "B"],
                            traj_id: Int[Array, "B"], row_valid: Bool[Array, "B"],
                            group_baseline: bool = False) -> Float[Array, "B"]:
  """REINFORCE++ (Hu 2025): returns whitened over the whole batch's trajectories.

  x_i = R_i, or R_i - mean_g R with `group_baseline` ("REINFORCE++-baseline"); then
  A_i = (x_i - mean x) / (std x + eps) over all trajectories of the batch (unbiased std,
  eps 1e-6). verl whitens over tokens instead, which weights long responses more; DESIGN 4.3
  asks for trajectories.
  """
  ret_T, has_T = per_trajectory(traj_return.astype(jnp.float32), traj_id, row_valid)
  if group_baseline:
    group_T = trajectory_group(group_id, traj_id, row_valid)
    ret_T, _ = segment_centre(ret_T, group_T, has_T, norm_by_std=False)
  adv_T, _ = segment_centre(ret_T, jnp.zeros_like(traj_id), has_T, norm_by_std=True)
  return jnp.where(row_valid, adv_T[traj_id], 0.0)

