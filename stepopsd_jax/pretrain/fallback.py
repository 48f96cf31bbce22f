"""The checks of the fallback route: a reading warm-up in the env's own format.

The warm-up itself is the main job's (`run.warmup.reading_examples`, `train.sft_hint_fraction`):
random-policy episodes, a share of them with a hindsight block in the rollout's exact wording
listing the episode's own uniformly random admissible actions, each step trained to answer the
block's action. It teaches the format and to follow a block, and nothing about which door is
right. `checks` measures both on held-out credit-lab tasks: without a block the top door at the
deciding step must be at chance, with one it must be the block's door.
"""

from __future__ import annotations

import math

import numpy as np

from stepopsd_jax.models import QwenConfig
from stepopsd_jax.pretrain import transfer


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
  """95% Wilson score interval of a binomial proportion."""
  p = successes / n
  centre = (p + z * z / (2 * n)) / (1 + z * z / n)
  half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
  return centre - half, centre + half


def checks(config: QwenConfig, params, tokenizer, num_tasks: int = 200, seed: int = 21) -> dict:
  """On held-out (eval) tasks: how often the top colour at the deciding step without a block is
  the clue's door (its 95% interval must include 1/N: the warm-up taught no answer), and how
  often the top colour is the block's door with one (must be >= 0.9)."""
  all_cases = transfer.cases(num_tasks, seed)
  critical = [c for c in all_cases if c.step + 1 == transfer.KNOBS["critical_step"]]
  logps = transfer.case_logps(config, params, tokenizer, critical, clue=True, wording=None)
  right = sum(c.admissible[int(np.argmax([lp[1] for lp in lps]))]
              == f"open {transfer.CLUE.search(c.user).group(1)} door"
              for c, lps in zip(critical, logps))
  low, high = wilson_interval(right, len(critical))
  follow = transfer.transfer_check(config, params, tokenizer, num_tasks // 4, seed)
  chance = 1.0 / transfer.KNOBS["num_choices"]
  return {"no_block_clue_door_rate": right / len(critical), "ci95": [low, high],
          "at_chance": bool(low <= chance <= high), "chance": chance, "n": len(critical),
          "follow_exact": follow["clue"]["exact"]["follow"],
          "follow_exact_no_clue": follow["no_clue"]["exact"]["follow"]}
