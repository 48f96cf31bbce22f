"""Rollout metrics: the raw tally of a rollout's episodes, and the metrics taken from it.

A tally keeps counts (outcomes, counters, seconds), not means, so the tallies of several
processes merge exactly (`merge_tallies`) before the means are taken.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Sequence

COUNTERS = ("invalid_actions", "env_invalid_actions", "truncated_prompts", "env_errors",
            "generated_tokens", "hindsight_rows", "hindsight_shortened", "hindsight_dropped")


@dataclasses.dataclass
class RolloutTally:
  """The raw counts behind a rollout's metrics."""
  subsets: list[str]
  wins: list[bool]
  returns: list[float]
  steps: list[int]  # agent steps per episode
  values: dict[str, float]  # counters: invalid actions, generated tokens, ...
  seconds: dict[str, float]  # host time per phase
  turns: int

  def metrics(self) -> dict[str, float]:
    out = outcome_metrics(self.subsets, self.wins, self.returns, self.steps)
    out["turns"] = float(self.turns)
    values = dict.fromkeys(COUNTERS, 0.0)
    values.update({k: float(v) for k, v in self.values.items()})
    out.update(values)
    out["invalid_action_rate"] = values["invalid_actions"] / max(out["num_steps"], 1)
    out["env_invalid_rate"] = values["env_invalid_actions"] / max(out["num_steps"], 1)
    out.update({f"time/{k}_s": float(v) for k, v in self.seconds.items()})
    return out


def merge_tallies(tallies: Sequence[RolloutTally]) -> RolloutTally:
  """One tally of all episodes: counters add up; seconds and turns are the slowest one's (the
  processes of a multi-host rollout run side by side, in lock-step turns)."""
  values, seconds = collections.Counter(), collections.Counter()
  for t in tallies:
    values.update(t.values)
    seconds = seconds | collections.Counter(t.seconds)  # | keeps the maximum
  return RolloutTally([s for t in tallies for s in t.subsets], [w for t in tallies for w in t.wins],
                      [r for t in tallies for r in t.returns], [n for t in tallies for n in t.steps],
                      dict(values), dict(seconds), max((t.turns for t in tallies), default=0))


def outcome_metrics(subsets: Sequence[str], wins: Sequence[bool], returns: Sequence[float],
                    steps: Sequence[int]) -> dict[str, float]:
  """Success overall and per subset, mean return and episode length, of finished episodes."""
  n = max(len(wins), 1)
  out = {"success": sum(wins) / n, "return": sum(returns) / n, "episode_steps": sum(steps) / n,
         "num_trajectories": float(len(wins)), "num_steps": float(sum(steps))}
  for subset in sorted(set(subsets)):
    won = [w for s, w in zip(subsets, wins) if s == subset]
    out[f"success/{subset}"] = sum(won) / len(won)
  return out
