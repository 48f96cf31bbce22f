"""Host-side batched multi-turn rollouts: the episode loop, its responders (model or scripted),
prompts, action parsing, the hindsight teacher prompt, rows -> StepBatch, rollout metrics."""

from stepopsd_jax.rollout.loop import (RolloutConfig, RolloutResult, Trajectory, collect, play,
                                       run_episodes)
from stepopsd_jax.rollout.metrics import RolloutTally, merge_tallies
from stepopsd_jax.rollout.parse import ParsedAction, control_mask, parse_action
from stepopsd_jax.rollout.prompts import PromptConfig, step_text
from stepopsd_jax.rollout.protocol import for_env as agent_protocol
from stepopsd_jax.rollout.responders import (ModelResponder, ScriptedResponder, agent_sampler,
                                             render, safe_decode, vocab_texts)
from stepopsd_jax.rollout.stepbatch import StepRow, build_step_batch

__all__ = [
    "ModelResponder", "ParsedAction", "PromptConfig", "RolloutConfig", "RolloutResult",
    "RolloutTally", "ScriptedResponder", "StepRow", "Trajectory", "agent_protocol",
    "agent_sampler", "build_step_batch", "collect", "control_mask", "merge_tallies",
    "parse_action", "play", "render", "run_episodes", "safe_decode", "step_text", "vocab_texts",
]
