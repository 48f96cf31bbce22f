"""Generalised advantage estimation (Schulman et al. 2016) at two granularities.

Step level (StepPO, DESIGN 4.6): the step-level MDP's action is a whole response, so the critic
gives one value per step (read at the last context token) and

    delta_t = r_t + gamma V_{t+1} - V_t        (V = 0 after a trajectory's last step)
    A_t     = sum_l (gamma lambda)^l delta_{t+l},   returns_t = A_t + V_t,
    A_t     whitened over the valid steps (one count per step, not per token).

Token level (PPO, DESIGN 4.5): the same recursion over the generated tokens of the whole
trajectory, in order and across steps: a step's last token bootstraps from the next step's
first generated token, tokens the model did not generate (response_mask False) are skipped,
and the step's reward sits on its last generated token (verl's `compute_gae_advantage_return`
for one response, extended across turns; whitened over tokens as verl does).

Rows may be in any order: both sort by (traj_id, step_idx) and scatter back.
"""

from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from stepopsd_jax.algorithms import masked
from stepopsd_jax.algorithms.rows import reverse_linear_scan, trajectory_order, unsort


def step_gae(values: Float[Array, "B"], step_reward: Float[Array, "B"],
             traj_id: Int[Array, "B"], step_idx: Int[Array, "B"], row_valid: Bool[Array, "B"],
             gamma: float = 1.0, lam: float = 1.0, whiten: bool = True
             ) -> tuple[Float[Array, "B"], Float[Array, "B"]]:
  """(advantages [B], returns [B]) of step-level GAE; 0 on padding rows.

  `values[b]` is V(s_t) of row b. Returns are A + V before whitening (the critic's target);
  the caller broadcasts the advantages to the step's response tokens.
  """
  order_B, has_next_B = trajectory_order(traj_id, step_idx, row_valid)
  v_B = jnp.where(row_valid, values.astype(jnp.float32), 0.0)[order_B]
  r_B = jnp.where(row_valid, step_reward.astype(jnp.float32), 0.0)[order_B]
  v_next_B = jnp.where(has_next_B, jnp.concatenate([v_B[1:], jnp.zeros((1,))]), 0.0)
  delta_B = r_B + gamma * v_next_B - v_B
  adv_B = reverse_linear_scan(jnp.where(has_next_B, gamma * lam, 0.0), delta_B)
  adv = jnp.where(row_valid, unsort(adv_B, order_B), 0.0)
  returns = jnp.where(row_valid, adv + values.astype(jnp.float32), 0.0)
  return (masked.whiten(adv, row_valid) if whiten else adv), returns


def last_token_mask(response_mask: Bool[Array, "B R"]) -> Bool[Array, "B R"]:
  """True on the last generated token of each row (nowhere on rows with none)."""
  r = response_mask.shape[1]
  last_B = r - 1 - jnp.argmax(response_mask[:, ::-1], axis=1)
  return response_mask & (jnp.arange(r)[None, :] == last_B[:, None])


def token_gae(values: Float[Array, "B R"], step_reward: Float[Array, "B"],
              response_mask: Bool[Array, "B R"], traj_id: Int[Array, "B"],
              step_idx: Int[Array, "B"], row_valid: Bool[Array, "B"], gamma: float = 1.0,
              lam: float = 1.0, whiten: bool = True
              ) -> tuple[Float[Array, "B R"], Float[Array, "B R"]]:
  """(advantages [B, R], returns [B, R]) of token-level GAE across a trajectory's steps.

  `values[b, k]` is V of the state before response token k of row b (the position whose
  logits predict token k). Output is 0 off the generated tokens of valid rows. A row with no
  generated token drops its reward (it has nothing to train either).
  """
  b, r = response_mask.shape
  order_B, has_next_B = trajectory_order(traj_id, step_idx, row_valid)
  gen_BxR = response_mask & row_valid[:, None]
  m_N = gen_BxR[order_B].reshape(-1)
  v_N = jnp.where(gen_BxR, values.astype(jnp.float32), 0.0)[order_B].reshape(-1)
  reward_BxR = jnp.where(last_token_mask(gen_BxR), step_reward.astype(jnp.float32)[:, None],
                         0.0)
  r_N = reward_BxR[order_B].reshape(-1)
  # Position k+1 continues k's trajectory: inside a valid row always, at a row's end when the
  # next sorted row is the next step.
  inside_BxR = jnp.broadcast_to(jnp.arange(r)[None, :] < r - 1, (b, r))
  cont_N = ((inside_BxR & row_valid[order_B][:, None])
            | (~inside_BxR & has_next_B[:, None])).reshape(-1)
  # Value of the next generated token: carried backwards across skipped positions.
  carried_N = reverse_linear_scan(jnp.where(m_N, 0.0, cont_N.astype(jnp.float32)), v_N)
  v_next_N = jnp.where(cont_N, jnp.concatenate([carried_N[1:], jnp.zeros((1,))]), 0.0)
  delta_N = jnp.where(m_N, r_N + gamma * v_next_N - v_N, 0.0)
  coef_N = jnp.where(cont_N, jnp.where(m_N, gamma * lam, 1.0), 0.0)
  adv_N = jnp.where(m_N, reverse_linear_scan(coef_N, delta_N), 0.0)
  adv = unsort(adv_N.reshape(b, r), order_B)
  returns = jnp.where(gen_BxR, adv + values.astype(jnp.float32), 0.0)
  return (masked.whiten(adv, gen_BxR) if whiten else adv), returns
