"""The pure training core: the one jitted step, its config and state, the critic, checkpoints.

Host-side wiring (rollouts, envs, the trainer loop, configs and CLIs) lives in `stepopsd_jax.run`;
this package imports only the algorithms, the models and the sharding rules.
"""

from stepopsd_jax.train.config import TEACHERS, ConfigError, StepConfig
from stepopsd_jax.train.state import (TrainState, abstract_state, create_state, init_state,
                                      make_optimizer, state_shardings)
from stepopsd_jax.train.step import jit_train_step, train_step

__all__ = ["ConfigError", "StepConfig", "TEACHERS", "TrainState", "abstract_state",
           "create_state", "init_state", "jit_train_step", "make_optimizer", "state_shardings",
           "train_step"]
