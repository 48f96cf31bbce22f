"""Row bookkeeping shared by the estimators (pure jnp, static shapes): rows are agent steps.

Trajectory-level statistics take one value per trajectory, however many steps (rows) it has:
`per_trajectory` reads it into a slot per trajectory id, `segment_centre` centres slots within
their segments (task groups, anchor groups), and the result is gathered back to the rows. Ids
must lie in [0, B) (the step makes them dense): segment sums have B slots.

The estimators never trust row order: rows of a trajectory may sit anywhere in the batch (the
rollout writes them contiguously and in step order, but sharding or shuffling need not keep
that). They sort by (padding last, traj_id, step_idx), work on the sorted rows, and scatter
back. Within a trajectory the next row in that order is the next step, even if step_idx skips
a number.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from stepopsd_jax.algorithms.masked import EPS


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


def trajectory_order(traj_id: Int[Array, "B"], step_idx: Int[Array, "B"],
                     row_valid: Bool[Array, "B"]) -> tuple[Int[Array, "B"], Bool[Array, "B"]]:
  """(order, has_next): rows sorted by trajectory then step, padding last.

  `order[k]` is the row at sorted position k; `has_next[k]` says sorted position k + 1 is the
  next step of the same trajectory (False at a trajectory's last step and on padding).
  """
  order_B = jnp.lexsort((step_idx, traj_id, (~row_valid).astype(jnp.int32)))
  traj_B, valid_B = traj_id[order_B], row_valid[order_B]
  same_B = valid_B[:-1] & valid_B[1:] & (traj_B[:-1] == traj_B[1:])
  return order_B, jnp.concatenate([same_B, jnp.zeros((1,), bool)])


def unsort(x_sorted: Array, order: Int[Array, "B"]) -> Array:
  """Inverse of `x[order]` along the leading axis."""
  return jnp.zeros_like(x_sorted).at[order].set(x_sorted)


@jax.jit  # also keeps eager callers from dispatching the scan's many small ops one by one
def reverse_linear_scan(coef: Float[Array, "N"], bias: Float[Array, "N"]) -> Float[Array, "N"]:
  """x_k = bias_k + coef_k * x_{k+1} with x_N = 0, in O(log N) depth (associative scan).

  Discounted returns (coef = gamma) and GAE (coef = gamma * lambda) are both this recurrence;
  coef = 0 cuts it at a trajectory boundary.
  """
  # Element k is the affine map x -> bias_k + coef_k x; `later` is the composition of the maps
  # after k (the reversed scan visits them first), so k's map is applied on the outside.
  def compose(later, current):
    return later[0] * current[0], current[1] + current[0] * later[1]

  return jax.lax.associative_scan(compose, (coef, bias), reverse=True)[1]


def discounted_return_to_go(reward: Float[Array, "B"], gamma: float, traj_id: Int[Array, "B"],
                            step_idx: Int[Array, "B"], row_valid: Bool[Array, "B"]
                            ) -> Float[Array, "B"]:
  """G_t = sum_{l >= 0} gamma^l r_{t+l} along each trajectory (by step_idx); padding gets 0."""
  order_B, has_next_B = trajectory_order(traj_id, step_idx, row_valid)
  r_B = jnp.where(row_valid, reward.astype(jnp.float32), 0.0)[order_B]
  g_B = reverse_linear_scan(jnp.where(has_next_B, gamma, 0.0).astype(jnp.float32), r_B)
  return jnp.where(row_valid, unsort(g_B, order_B), 0.0)


def dense_group_ids(keys: tuple[Int[Array, "B"], ...], row_valid: Bool[Array, "B"]
                    ) -> Int[Array, "B"]:
  """Ids in [0, B) that are equal exactly when all `keys` are (valid rows; padding rows get ids
  of their own, never shared with a valid row)."""
  order_B = jnp.lexsort(tuple(reversed(keys)) + ((~row_valid).astype(jnp.int32),))
  sorted_keys = [k[order_B] for k in keys] + [row_valid[order_B]]
  changed_B = jnp.zeros(order_B.shape[0] - 1, bool)
  for k in sorted_keys:
    changed_B = changed_B | (k[1:] != k[:-1])
  new_B = jnp.concatenate([jnp.zeros((1,), jnp.int32), changed_B.astype(jnp.int32)])
  return unsort(jnp.cumsum(new_B), order_B)


def segment_centre(x: Float[Array, "B"], seg: Int[Array, "B"], mask: Bool[Array, "B"],
                   norm_by_std: bool) -> tuple[Float[Array, "B"], Float[Array, "B"]]:
  """((x - mean_s x) / (std_s x + eps) or x - mean_s x, segment size) per element.

  Statistics over the masked elements of each segment, std unbiased (as verl). Segments with
  a single element or with all-equal values give exactly 0; masked elements give 0.
  """
  b = x.shape[0]
  x = jnp.where(mask, x.astype(jnp.float32), 0.0)
  n_S = jax.ops.segment_sum(mask.astype(jnp.float32), seg, num_segments=b)
  mean_S = jax.ops.segment_sum(x, seg, num_segments=b) / jnp.maximum(n_S, 1.0)
  centred_B = x - mean_S[seg]
  # A float32 mean of equal values can miss them by an ulp, which the std would blow up.
  max_S = jax.ops.segment_max(jnp.where(mask, x, -jnp.inf), seg, num_segments=b)
  min_S = jax.ops.segment_min(jnp.where(mask, x, jnp.inf), seg, num_segments=b)
  centred_B = jnp.where(mask & (max_S[seg] > min_S[seg]), centred_B, 0.0)
  if norm_by_std:
    var_S = jax.ops.segment_sum(centred_B ** 2, seg, num_segments=b) / jnp.maximum(n_S - 1.0,
                                                                                  1.0)
    centred_B = centred_B / (jnp.sqrt(var_S)[seg] + EPS)
  return centred_B, jnp.where(mask, n_S[seg], 0.0)
