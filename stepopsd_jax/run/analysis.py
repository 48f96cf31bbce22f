"""Learning-curve statistics for comparing estimators over seeds (bench/credit_study.py).

    episodes_to_threshold   sampled episodes until the success, averaged over the last
                            `window` steps, first reaches `threshold`; censored at the budget
    bootstrap_mean          mean over seeds with a 95% percentile-bootstrap CI
    bootstrap_ratio         mean(a) / mean(b) with a 95% CI, each group resampled on its own

A censored run (never reached the threshold) counts at its budget, a lower bound of its true
value: a mean with censored runs in it is a lower bound too, and says so (`censored`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class ToThreshold:
  episodes: float  # episodes sampled until the threshold was reached (the budget if never)
  censored: bool  # never reached within the budget


def trailing_mean(values: Sequence[float], window: int) -> np.ndarray:
  """Mean of the last `window` values at each point (fewer at the start)."""
  x = np.asarray(values, float)
  c = np.concatenate([[0.0], np.cumsum(x)])
  lo = np.maximum(np.arange(1, len(x) + 1) - window, 0)
  return (c[1:] - c[lo]) / (np.arange(1, len(x) + 1) - lo)


def episodes_to_threshold(success: Sequence[float], episodes_per_step: int,
                          threshold: float = 0.8, window: int = 5) -> ToThreshold:
  """The first step whose trailing `window`-step mean success is >= `threshold` (only once a
  full window exists), in episodes: (step + 1) x episodes_per_step."""
  smooth = trailing_mean(success, window)
  hit = [i for i in range(window - 1, len(smooth)) if smooth[i] >= threshold]
  if hit:
    return ToThreshold(float((hit[0] + 1) * episodes_per_step), False)
  return ToThreshold(float(len(smooth) * episodes_per_step), True)


def bootstrap_mean(values: Sequence[float], seed: int = 0, n: int = 10_000
                   ) -> tuple[float, float, float]:
  """(mean, 2.5th, 97.5th percentile of the bootstrap means)."""
  x = np.asarray(values, float)
  if x.size == 0:
    return float("nan"), float("nan"), float("nan")
  means = np.random.default_rng(seed).choice(x, (n, x.size)).mean(axis=1)
  return float(x.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def bootstrap_ratio(a: Sequence[float], b: Sequence[float], seed: int = 0, n: int = 10_000
                    ) -> tuple[float, float, float]:
  """(mean(a) / mean(b), 95% CI), resampling a and b independently (different seeds' runs)."""
  a, b = np.asarray(a, float), np.asarray(b, float)
  if a.size == 0 or b.size == 0:
    return float("nan"), float("nan"), float("nan")
  rng = np.random.default_rng(seed)
  ratios = rng.choice(a, (n, a.size)).mean(axis=1) / rng.choice(b, (n, b.size)).mean(axis=1)
  return (float(a.mean() / b.mean()), float(np.percentile(ratios, 2.5)),
          float(np.percentile(ratios, 97.5)))


def describe(results: Sequence[ToThreshold], seed: int = 0) -> dict:
  """Mean episodes-to-threshold over runs with its CI, and how many runs were censored."""
  mean, lo, hi = bootstrap_mean([r.episodes for r in results], seed)
  return dict(mean=mean, ci95=[lo, hi], censored=sum(r.censored for r in results),
              runs=len(results))
