"""GiGPO (Feng et al. 2025, arXiv 2505.10978; DESIGN 4.4): group-in-group advantages.

    A^E_i  = GRPO over the trajectories of task group g                     (paper Eq. 3)
    G_t    = sum_{l >= 0} gamma^l r_{t+l}, discounted return from step t     (Eq. 5)
    anchor group = the steps of one task group that start from the same
                   observation (same `anchor_id`), across and within trajectories   (Eq. 6)
    A^S_t  = (G_t - mean_anchor G) / (std_anchor G + eps); singleton groups 0   (Eq. 7)
    A_t    = A^E_i + omega * A^S_t                                           (Eq. 8)

`norm_by_std=False` drops both std divisions (verl-agent's `mode=mean_norm`). Anchors are exact:
the rollout hashes each step's first observation into `anchor_id`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from stepopsd_jax.algorithms.grpo import grpo_advantages
from stepopsd_jax.algorithms.rows import (dense_group_ids, discounted_return_to_go,
                                          segment_centre)


def anchor_groups(group_id: Int[Array, "B"], anchor_id: Int[Array, "B"],
                  row_valid: Bool[Array, "B"]) -> tuple[Int[Array, "B"], Float[Array, "B"]]:
  """(anchor group of each row in [0, B), that group's size in valid rows; 0 on padding)."""
  seg_B = dense_group_ids((group_id, anchor_id), row_valid)
  size_S = jax.ops.segment_sum(row_valid.astype(jnp.float32), seg_B,
                               num_segments=seg_B.shape[0])
  return seg_B, jnp.where(row_valid, size_S[seg_B], 0.0)


def gigpo_step_advantages(step_reward: Float[Array, "B"], group_id: Int[Array, "B"],
                          traj_id: Int[Array, "B"], step_idx: Int[Array, "B"],
                          anchor_id: Int[Array, "B"], row_valid: Bool[Array, "B"],
                          gamma: float = 0.95, norm_by_std: bool = True
                          ) -> tuple[Float[Array, "B"], Float[Array, "B"]]:
  """(A^S per row, anchor-group size per row): discounted returns normalised in anchor groups."""
  g_B = discounted_return_to_go(step_reward, gamma, traj_id, step_idx, row_valid)
  seg_B, size_B = anchor_groups(group_id, anchor_id, row_valid)
  adv_B, _ = segment_centre(g_B, seg_B, row_valid, norm_by_std)
  return jnp.where(size_B > 1, adv_B, 0.0), size_B


def gigpo_advantages(traj_return: Float[Array, "B"], step_reward: Float[Array, "B"],
                     group_id: Int[Array, "B"], traj_id: Int[Array, "B"],
                     step_idx: Int[Array, "B"], anchor_id: Int[Array, "B"],
                     row_valid: Bool[Array, "B"], gamma: float = 0.95, step_weight: float = 1.0,
                     norm_by_std: bool = True) -> tuple[Float[Array, "B"], dict[str, Array]]:
  """(A = A^E + step_weight * A^S per row, scalar metrics incl. anchor-group sizes).

  Unlike the trajectory-level estimators, A differs between the steps of a trajectory. With
  every anchor group a singleton, A^S = 0 and A is GRPO's.
  """
  adv_e = grpo_advantages(traj_return, group_id, traj_id, row_valid, norm_by_std)
  adv_s, size_B = gigpo_step_advantages(step_reward, group_id, traj_id, step_idx, anchor_id,
                                        row_valid, gamma, norm_by_std)
  adv = jnp.where(row_valid, adv_e + step_weight * adv_s, 0.0)
  return adv, anchor_metrics(size_B, adv_s, row_valid)


def anchor_metrics(size_B: Float[Array, "B"], adv_s: Float[Array, "B"],
                   row_valid: Bool[Array, "B"]) -> dict[str, Array]:
  """Anchor-group statistics: sizes averaged over groups (as verl-agent logs them) and rows."""
  n_rows = jnp.maximum(jnp.sum(row_valid), 1)
  # A group of size s has s rows, each contributing 1/s: the sum counts groups.
  n_groups = jnp.sum(jnp.where(row_valid, 1.0 / jnp.maximum(size_B, 1.0), 0.0))
  return {
      "gigpo/anchor_groups": n_groups,
      "gigpo/anchor_group_size_mean": jnp.sum(row_valid) / jnp.maximum(n_groups, 1.0),
      "gigpo/anchor_group_size_row_mean": jnp.sum(size_B) / n_rows,
      "gigpo/anchor_group_size_max": jnp.max(size_B),
      "gigpo/anchor_singleton_row_frac": jnp.sum(row_valid & (size_B == 1)) / n_rows,
      "gigpo/step_adv_abs_mean": jnp.sum(jnp.abs(adv_s)) / n_rows,
  }
