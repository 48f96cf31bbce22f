"""The credit-study report on hand-made run records: crossings, censoring, ratios, markdown."""

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from bench import credit_report  # noqa: E402  pylint: disable=g-import-not-at-top


def _record(variant, estimator, seed, success):
  return {"run": {"variant": variant, "estimator": estimator, "seed": seed, "knobs": []},
          "rl_steps": len(success), "episodes_per_step": 10, "success": success,
          "train": [{} for _ in success], "eval_after": 1.0, "seconds": 60.0,
          "env": {"critical_step": 2}}


def test_summary_counts_episodes_to_threshold_and_refuses_a_ratio_of_two_censored_arms():
  # by hand: the 5-step mean first reaches 0.8 at step 8 (0.5 + 4 x 0.9) / 5 = 0.82 -> 80
  # episodes; the fast curve at step 6 -> 60 episodes
  slow = [0.5] * 4 + [0.9] * 8
  fast = [0.5] * 2 + [0.9] * 10
  never = [0.5] * 12
  runs = [_record("main", "grpo", s, slow) for s in range(2)] + \
      [_record("main", "stepopsd", s, fast) for s in range(2)] + \
      [_record("null", e, 0, never) for e in ("grpo", "stepopsd")]
  summary = credit_report.summarise(runs)
  assert summary["table"]["main/grpo"]["episodes_to_80"]["mean"] == pytest.approx(80)
  assert summary["table"]["main/stepopsd"]["episodes_to_80"]["mean"] == pytest.approx(60)
  assert summary["ratios"]["main"]["grpo_over_stepopsd"] == pytest.approx(80 / 60)
  assert summary["ratios"]["null"]["grpo_over_stepopsd"] is None
  assert summary["table"]["null/grpo"]["episodes_to_80"]["censored"] == 1
  text = credit_report.markdown(summary)
  assert "| null | — (neither reached 80%) |" in text and "| main | 1.33 [1.33, 1.33] |" in text
  # paired by seed: the curves differ at steps 3 and 4 (0.5 vs 0.9); GRPO needed 20 more
  assert summary["paired"]["main/stepopsd"]["steps_differing"] == [2, 2]
  assert summary["paired"]["main/stepopsd"]["episodes_saved"] == [20, 20]
