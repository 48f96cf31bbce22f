"""Prompt text for one agent step (the teacher's hindsight block is in `hindsight.py`).

The student sees: the task, the last k (observation, action) pairs, the current observation and
the admissible actions, as one user message rendered with the tokenizer's chat template. The
teacher sees the same message with a hindsight block appended, so its context differs from the
student's only by that block.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

FORMAT_INSTRUCTION = ("Think briefly inside <think> </think>, then give exactly one admissible "
                      "action inside <action> </action>.")


@dataclasses.dataclass(frozen=True)
class PromptConfig:
  history_window: int = 2  # last k (observation, action) pairs shown
  show_admissible: bool = True
  format_instruction: str | None = None  # None: the env's (AgentProtocol.format_instruction)
  system_prompt: str | None = None


def step_text(task: str, history: Sequence[tuple[str, str]], observation: str, step: int,
              admissible: Sequence[str] | None, cfg: PromptConfig) -> str:
  """The user message of step `step` (0-based); `history` holds all earlier (obs, action) pairs."""
  parts = [task.strip()]
  shown = history[-cfg.history_window:] if cfg.history_window > 0 else []
  if shown:
    first = len(history) - len(shown) + 1
    lines = [f"[Step {first + j}] Observation: {o}\nAction: {a}" for j, (o, a) in enumerate(shown)]
    parts.append(f"You have taken {len(history)} step(s). Your last {len(shown)}:\n" +
                 "\n".join(lines))
  parts.append(f"[Step {step + 1}] Observation: {observation}")
  if cfg.show_admissible and admissible:
    parts.append("Admissible actions: " + ", ".join(admissible))
  if cfg.format_instruction:
    parts.append(cfg.format_instruction)
  return "\n\n".join(parts)


def messages(user_text: str, cfg: PromptConfig) -> list[dict]:
  system = [{"role": "system", "content": cfg.system_prompt}] if cfg.system_prompt else []
  return system + [{"role": "user", "content": user_text}]

