"""Host-side batched multi-turn rollouts: prompts, action parsing, hindsight, the StepBatch."""

from stepopsd_jax.rollout.loop import RolloutConfig, RolloutResult, Trajectory, collect, vocab_texts
from stepopsd_jax.rollout.parse import ParsedAction, control_mask, parse_action
from stepopsd_jax.rollout.prompts import PromptConfig, hindsight_block, step_text
from stepopsd_jax.rollout.stepbatch import StepBatch, StepRow, build_step_batch

__all__ = [
    "ParsedAction", "PromptConfig", "RolloutConfig", "RolloutResult", "StepBatch", "StepRow",
    "Trajectory", "build_step_batch", "collect", "control_mask", "hindsight_block",
    "parse_action", "step_text", "vocab_texts",
]
