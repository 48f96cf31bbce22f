"""Advantage estimators, StepOPSD shaping and losses: pure jnp functions of StepBatch arrays."""

from stepopsd_jax.algorithms.baselines import (dr_grpo_advantages, reinforce_pp_advantages,
                                               rloo_advantages)
from stepopsd_jax.algorithms.estimators import (CRITIC_ESTIMATORS, ESTIMATORS,
                                                TEACHER_ESTIMATORS, Targets, estimate)
from stepopsd_jax.algorithms.gae import step_gae, token_gae
from stepopsd_jax.algorithms.gigpo import anchor_groups, gigpo_advantages, gigpo_step_advantages
from stepopsd_jax.algorithms.grpo import grpo_advantages
from stepopsd_jax.algorithms.losses import KL_ESTIMATORS, LOSS_AGGREGATIONS, kl
from stepopsd_jax.algorithms.rows import dense_group_ids, discounted_return_to_go
from stepopsd_jax.algorithms.stepopsd import (CREDIT_BUDGETS, WEIGHT_FNS, Shaped,
                                              apply_credit_budget, mix, stepopsd_shape,
                                              token_weights)
from stepopsd_jax.algorithms.value_loss import explained_variance, value_loss, value_loss_terms

__all__ = ["CREDIT_BUDGETS", "CRITIC_ESTIMATORS", "ESTIMATORS", "KL_ESTIMATORS",
           "LOSS_AGGREGATIONS", "Shaped", "TEACHER_ESTIMATORS", "Targets", "WEIGHT_FNS",
           "anchor_groups", "apply_credit_budget", "dense_group_ids", "discounted_return_to_go",
           "dr_grpo_advantages", "estimate", "explained_variance", "gigpo_advantages",
           "gigpo_step_advantages", "grpo_advantages", "kl", "mix", "reinforce_pp_advantages",
           "rloo_advantages", "step_gae", "stepopsd_shape", "token_gae", "token_weights",
           "value_loss", "value_loss_terms"]
