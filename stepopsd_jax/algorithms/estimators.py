"""`algo.estimator` -> its advantages, on the full batch (trajectories span micro-batches).

    grpo stepopsd opsd     GRPO over each task group's trajectories          (DESIGN 4.1, 4.7-8)
    dr_grpo                GRPO without the std division                     (4.1)
    rloo                   leave-one-out group mean                          (4.2)
    reinforce_pp           batch-whitened returns (optional group baseline)  (4.3)
    gigpo                  GRPO + omega x anchor-group step advantage        (4.4)
    ppo                    token-GAE on critic values per response token     (4.5)
    steppo                 step-GAE on one critic value per step             (4.6)

Trajectory- and step-level advantages come per row and are broadcast to the row's response
tokens; PPO's are per token already. `Targets` holds them with every other gradient-free input
of the losses, computed once per step on the full batch.
"""

from __future__ import annotations

from typing import Any

import flax.struct
import jax.numpy as jnp
from jaxtyping import Array, Float

from stepopsd_jax.algorithms.baselines import (dr_grpo_advantages, reinforce_pp_advantages,
                                               rloo_advantages)
from stepopsd_jax.algorithms.gae import step_gae, token_gae
from stepopsd_jax.algorithms.gigpo import gigpo_advantages
from stepopsd_jax.algorithms.grpo import grpo_advantages
from stepopsd_jax.batch import StepBatch

ESTIMATORS = ("grpo", "stepopsd", "dr_grpo", "rloo", "reinforce_pp", "gigpo", "ppo", "steppo",
              "opsd")
TEACHER_ESTIMATORS = ("stepopsd", "opsd")  # need the hindsight-teacher forward
CRITIC_ESTIMATORS = ("ppo", "steppo")  # need a critic in the train state


@flax.struct.dataclass
class Targets:
  """What the losses are trained towards, gradient-free; None where the estimator has none."""
  adv_tokens: Any  # f32 [B, R]: the advantage of each response token (shaped for StepOPSD)
  adv_rows: Any = None  # f32 [B]: one per step (all but ppo, whose are per token)
  returns: Any = None  # critic target: [B] (steppo) or [B, R] (ppo)
  old_values: Any = None  # critic values at rollout-time parameters, same shape as returns
  teacher_logp: Any = None  # f32 [B, R]: log pi_teacher(response | hindsight prompt)
  ref_logp: Any = None  # f32 [B, R]: log pi_ref(response | prompt) (KL to a reference)
  delta: Any = None  # f32 [B, R]: StepOPSD's gap, 0 on rows without hindsight
  weights: Any = None  # f32 [B, R]: StepOPSD's weights, 1 off the control tokens


def row_advantages(batch: StepBatch, cfg) -> tuple[Float[Array, "B"], dict]:
  """(one advantage per row, scalar metrics) of the critic-free estimators."""
  b = batch
  args = (b.traj_return, b.group_id, b.traj_id, b.row_valid)
  if cfg.estimator == "dr_grpo":
    return dr_grpo_advantages(*args), {}
  if cfg.estimator == "rloo":
    return rloo_advantages(*args), {}
  if cfg.estimator == "reinforce_pp":
    return reinforce_pp_advantages(*args, group_baseline=cfg.reinforce_group_baseline), {}
  if cfg.estimator == "gigpo":
    return gigpo_advantages(b.traj_return, b.step_reward, b.group_id, b.traj_id, b.step_idx,
                            b.anchor_id, b.row_valid, cfg.gamma, cfg.gigpo_step_weight,
                            cfg.norm_by_std)
  return grpo_advantages(*args, cfg.norm_by_std), {}  # grpo, stepopsd, opsd


def estimate(batch: StepBatch, cfg, old_values: Array | None = None) -> tuple[Targets, dict]:
  """(Targets with the advantages, and the critic's old values and returns for ppo/steppo;
  scalar metrics). `old_values`: [B] (steppo) or [B, R] (ppo)."""
  b = batch
  mask_BxR = b.response_mask & b.row_valid[:, None]
  if cfg.estimator == "ppo":
    adv_BxR, returns_BxR = token_gae(old_values, b.step_reward, b.response_mask, b.traj_id,
                                     b.step_idx, b.row_valid, cfg.gae_gamma, cfg.gae_lambda)
    return Targets(adv_tokens=jnp.where(mask_BxR, adv_BxR, 0.0), returns=returns_BxR,
                   old_values=old_values), {}
  returns, metrics = None, {}
  if cfg.estimator == "steppo":
    adv_B, returns = step_gae(old_values, b.step_reward, b.traj_id, b.step_idx, b.row_valid,
                              cfg.gae_gamma, cfg.gae_lambda)
  else:
    adv_B, metrics = row_advantages(batch, cfg)
  return Targets(adv_tokens=jnp.where(mask_BxR, adv_B[:, None], 0.0), adv_rows=adv_B,
                 returns=returns, old_values=old_values), metrics
