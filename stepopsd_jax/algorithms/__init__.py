"""Advantage estimators, StepOPSD shaping and losses: pure jnp functions of StepBatch arrays."""

from stepopsd_jax.algorithms.advantages import grpo_advantages
from stepopsd_jax.algorithms.stepopsd import (
    CREDIT_BUDGETS, apply_credit_budget, mix, shaping_weights, stepopsd_shape, token_weights)

__all__ = ["CREDIT_BUDGETS", "apply_credit_budget", "grpo_advantages", "mix", "shaping_weights",
           "stepopsd_shape", "token_weights"]
