"""StepConfig: every setting of the train step, with its default and its check (one place).

The run's `algo` config block is made from these fields (`run/config.py`), so a default lives
here and nowhere else; an invalid value fails on construction with a message that names the
config key and the fix. Frozen and hashable: a static argument of the jitted step.
"""

from __future__ import annotations

import dataclasses

from stepopsd_jax.algorithms import (CREDIT_BUDGETS, CRITIC_ESTIMATORS, ESTIMATORS,
                                     KL_ESTIMATORS, LOSS_AGGREGATIONS, TEACHER_ESTIMATORS,
                                     WEIGHT_FNS)

TEACHERS = ("policy", "reference", "ema")


@dataclasses.dataclass(frozen=True)
class StepConfig:
  """Everything the step needs besides the model config and the optimizers."""
  estimator: str = "stepopsd"  # see algorithms/estimators.py
  alpha_clip: float = 0.2  # stepopsd: weights clipped to [1 - alpha, 1 + alpha]
  lambda_mix: float = 0.5  # stepopsd: A^ = (1 - lambda) A + lambda w A
  credit_budget: str = "trajectory"  # stepopsd: trajectory | step | none
  weight_fn: str = "sigmoid"  # stepopsd: 2 sigmoid(sign(A) delta); "exp" is RLSD's exp(...)
  norm_by_std: bool = True  # grpo family: divide by the group's std
  clip_low: float = 0.2  # PPO ratio clip below 1
  clip_high: float = 0.28  # PPO ratio clip above 1 (clip-higher)
  loss_agg: str = "token_mean"  # token_mean | seq_mean
  kl_coef: float = 0.0  # KL to the frozen reference policy
  kl_estimator: str = "k3"
  entropy_coef: float = 0.0
  teacher: str = "policy"  # stepopsd/opsd teacher weights: policy | reference | ema
  ema_decay: float = 0.99
  micro_batches: int = 1  # exact gradient accumulation over row chunks
  gamma: float = 0.95  # gigpo: discount of the step returns inside anchor groups
  gigpo_step_weight: float = 1.0  # gigpo: omega in A = A^E + omega A^S
  gae_gamma: float = 1.0  # ppo / steppo
  gae_lambda: float = 1.0  # ppo / steppo
  value_clip: float = 0.2  # ppo / steppo critic; 0 disables the clip
  reinforce_group_baseline: bool = False  # reinforce_pp: subtract the group mean first
  opsd_beta: float = 0.1  # opsd: weight of KL(student || hindsight teacher)
  opsd_kl: str = "k2"  # opsd: per-token estimator trained on (k1, k2, k3)
  metric_steps: int = 8  # stepopsd: log delta/weight means at step indices 0..n-1
  temperature: float = 1.0  # set from rollout.temperature (the sampling temperature)

  @property
  def needs_teacher(self) -> bool:
    return self.estimator in TEACHER_ESTIMATORS

  @property
  def needs_critic(self) -> bool:
    return self.estimator in CRITIC_ESTIMATORS

  @property
  def shapes_credit(self) -> bool:
    """StepOPSD's shaping of the advantages by the per-token teacher gap."""
    return self.estimator == "stepopsd"

  @property
  def keep_reference(self) -> bool:
    return self.kl_coef > 0 or (self.needs_teacher and self.teacher == "reference")

  @property
  def keep_ema(self) -> bool:
    return self.needs_teacher and self.teacher == "ema"

  def __post_init__(self):
    for key, choices in (("estimator", ESTIMATORS), ("teacher", TEACHERS),
                         ("credit_budget", CREDIT_BUDGETS), ("weight_fn", WEIGHT_FNS),
                         ("loss_agg", LOSS_AGGREGATIONS), ("kl_estimator", KL_ESTIMATORS),
                         ("opsd_kl", KL_ESTIMATORS)):
      _require(getattr(self, key) in choices,
               f"algo.{key}={getattr(self, key)!r}: choose one of {choices}.")
    self._in_range("alpha_clip", 0.0, 1.0, low_open=True, high_open=True, example=0.2)
    self._in_range("lambda_mix", 0.0, 1.0, example=0.5)
    self._in_range("clip_low", 0.0, 1.0, low_open=True, high_open=True, example=0.2)
    self._in_range("ema_decay", 0.0, 1.0, high_open=True, example=0.99)
    for key in ("gamma", "gae_gamma"):
      self._in_range(key, 0.0, 1.0, low_open=True, example=0.95)
    self._in_range("gae_lambda", 0.0, 1.0, example=1.0)
    for key in ("clip_high", "kl_coef", "entropy_coef", "gigpo_step_weight", "opsd_beta",
                "value_clip"):
      _require(getattr(self, key) >= 0.0,
               f"algo.{key}={getattr(self, key)} must be >= 0; e.g. --config.algo.{key}=0.1")
    _require(self.micro_batches >= 1 and self.metric_steps >= 0,
             "algo.micro_batches must be >= 1 and algo.metric_steps >= 0.")
    _require(self.temperature > 0,
             f"rollout.temperature={self.temperature} must be > 0 (training samples; greedy "
             "decoding is for evaluation only); e.g. --config.rollout.temperature=1.0")

  def _in_range(self, key: str, low: float, high: float, *, low_open: bool = False,
                high_open: bool = False, example: float) -> None:
    value = getattr(self, key)
    ok = (low < value if low_open else low <= value) and (
        value < high if high_open else value <= high)
    interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    _require(ok, f"algo.{key}={value} must be in {interval}; e.g. --config.algo.{key}={example}")


class ConfigError(ValueError):
  """A bad config value; the message names the key and the fix."""


def _require(ok: bool, message: str) -> None:
  if not ok:
    raise ConfigError(message)
