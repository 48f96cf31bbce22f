"""Train state, the one jitted step, and (soon) the trainer loop and checkpoints."""

from stepopsd_jax.train.state import (
    TEACHERS, TrainState, create_state, init_state, make_optimizer, state_shardings)
from stepopsd_jax.train.step import ESTIMATORS, StepConfig, batch_ndims, jit_train_step, train_step

__all__ = ["ESTIMATORS", "TEACHERS", "StepConfig", "TrainState", "create_state", "init_state",
           "batch_ndims", "jit_train_step", "make_optimizer", "state_shardings", "train_step"]
