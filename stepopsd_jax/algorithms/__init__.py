"""Advantage estimators, StepOPSD shaping and losses: pure jnp functions of StepBatch arrays."""

from stepopsd_jax.algorithms.advantages import grpo_advantages
from stepopsd_jax.algorithms.baselines import (dr_grpo_advantages, reinforce_pp_advantages,
                                               rloo_advantages)
from stepopsd_jax.algorithms.critic import explained_variance, value_loss, value_loss_terms
from stepopsd_jax.algorithms.gae import step_gae, token_gae
from stepopsd_jax.algorithms.gigpo import (anchor_groups, gigpo_advantages,
                                           gigpo_step_advantages, similarity_anchor_ids)
from stepopsd_jax.algorithms.opsd import OPSD_KL_ESTIMATORS, opsd_kl_terms
from stepopsd_jax.algorithms.segments import (dense_group_ids, discounted_return_to_go,
                                              masked_whiten)
from stepopsd_jax.algorithms.stepopsd import (
    CREDIT_BUDGETS, apply_credit_budget, mix, shaping_weights, stepopsd_shape, token_weights)

__all__ = ["CREDIT_BUDGETS", "OPSD_KL_ESTIMATORS", "anchor_groups", "apply_credit_budget",
           "dense_group_ids", "discounted_return_to_go", "dr_grpo_advantages", "explained_variance",
           "gigpo_advantages", "gigpo_step_advantages", "grpo_advantages", "masked_whiten", "mix",
           "opsd_kl_terms", "reinforce_pp_advantages", "rloo_advantages", "shaping_weights",
           "similarity_anchor_ids", "step_gae", "stepopsd_shape", "token_gae", "token_weights",
           "value_loss", "value_loss_terms"]
