"""Learning-curve statistics on hand-made curves: threshold crossing with censoring, bootstrap."""

import numpy as np
import pytest

from stepopsd_jax.run import analysis


def test_trailing_mean_by_hand():
  np.testing.assert_allclose(analysis.trailing_mean([0, 1, 1, 0, 1], 3),
                             [0, 0.5, 2 / 3, 2 / 3, 2 / 3])


def test_episodes_to_threshold_needs_a_full_window():
  # 5-step means: steps 0-4 -> 3/5, steps 1-5 -> 3/5, steps 2-6 -> 4/5: the hit is at step 6,
  # after 7 steps x 32 episodes.
  curve = [1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0]
  got = analysis.episodes_to_threshold(curve, episodes_per_step=32, threshold=0.8, window=5)
  assert got == analysis.ToThreshold(7 * 32, False)
  # One lucky early step is not a crossing: window 3, [1] alone would be 1.0 >= 0.8.
  assert analysis.episodes_to_threshold([1, 0, 0, 0], 10, 0.8, 3).censored


def test_a_run_that_never_crosses_is_censored_at_its_budget():
  got = analysis.episodes_to_threshold([0.5] * 40, episodes_per_step=32)
  assert got == analysis.ToThreshold(40 * 32, True)
  summary = analysis.describe([analysis.ToThreshold(100, False), got])
  assert summary["censored"] == 1 and summary["runs"] == 2 and summary["mean"] == (100 + 1280) / 2


def test_bootstrap_mean_and_ratio():
  mean, lo, hi = analysis.bootstrap_mean([2.0, 2.0, 2.0])
  assert mean == lo == hi == 2.0  # no spread, no interval
  mean, lo, hi = analysis.bootstrap_mean([0.0, 10.0], n=4000)
  assert mean == 5.0 and lo == 0.0 and hi == 10.0  # resamples: 0, 5 or 10 (means of 2 draws)
  ratio, lo, hi = analysis.bootstrap_ratio([4.0, 4.0], [2.0, 2.0])
  assert ratio == lo == hi == 2.0
  ratio, lo, hi = analysis.bootstrap_ratio([1.0, 3.0], [1.0, 1.0], n=4000)
  assert ratio == 2.0 and lo == 1.0 and hi == 3.0
  assert np.isnan(analysis.bootstrap_mean([])[0])


@pytest.mark.parametrize("threshold,expected", [(0.5, 3), (0.9, None)])
def test_threshold_parameter(threshold, expected):
  got = analysis.episodes_to_threshold([0.4, 0.5, 0.6, 0.7], 1, threshold, window=2)
  # 2-step means: -, 0.45, 0.55, 0.65 -> first >= 0.5 at step 2 (3 episodes)
  assert got.censored == (expected is None)
  if expected is not None:
    assert got.episodes == expected
