"""Policy-gradient losses (DESIGN 4.9): PPO clip with clip-higher, KL estimators, entropy.

Aggregation divides by batch-wide totals passed in (`num_tokens`, `num_rows`), so the sum of
micro-batch losses equals the full-batch loss and accumulated gradients are exact.

KL(pi || q) per sampled token, with l = log pi(y_k) - log q(y_k) (Schulman 2020, "Approximating
KL divergence"; the gradient facts: Tang & Munos 2025):

    k1 = l                   unbiased value; as a loss its gradient grad log pi has mean zero
    k2 = l^2 / 2             its gradient l grad log pi is, in expectation over pi, exactly
                             grad KL(pi || q): the term to train on
    k3 = exp(-l) - 1 + l     unbiased and non-negative value; its gradient is the forward KL's

The same estimators serve the KL to a frozen reference (`algo.kl_estimator`) and OPSD's KL to
the hindsight teacher (`algo.opsd_kl`); q is always under stop_gradient.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float

from stepopsd_jax.algorithms import masked

LOSS_AGGREGATIONS = ("token_mean", "seq_mean")
KL_ESTIMATORS = ("k1", "k2", "k3")


def aggregate(x: Float[Array, "B R"], mask: Bool[Array, "B R"], mode: str,
              num_tokens: Array, num_rows: Array) -> Float[Array, ""]:
  """token_mean: sum over tokens / all tokens; seq_mean: mean over rows of per-row means."""
  if mode == "token_mean":
    return masked.total(x, mask) / jnp.maximum(num_tokens, 1.0)
  if mode == "seq_mean":
    return jnp.sum(masked.mean(x, mask, axis=1)) / jnp.maximum(num_rows, 1.0)
  raise ValueError(f"loss aggregation {mode!r}: choose one of {LOSS_AGGREGATIONS}.")


def ppo_clip_terms(logp: Float[Array, "B R"], old_logp: Float[Array, "B R"],
                   adv: Float[Array, "B R"], clip_low: float, clip_high: float):
  """Per-token clipped surrogate loss and whether the clip was active."""
  ratio = jnp.exp(logp - old_logp)
  unclipped = ratio * adv
  clipped = jnp.clip(ratio, 1.0 - clip_low, 1.0 + clip_high) * adv
  return -jnp.minimum(unclipped, clipped), clipped < unclipped


def kl(logp: Float[Array, "B R"], other_logp: Float[Array, "B R"], mask: Bool[Array, "B R"],
       estimator: str) -> Float[Array, "B R"]:
  """Per-token estimate of KL(pi || q) on the sampled tokens (module docstring); 0 off `mask`.

  `other_logp` (log q) is stop-gradient: a teacher or reference never receives gradient.
  """
  log_ratio = logp.astype(jnp.float32) - jax.lax.stop_gradient(other_logp.astype(jnp.float32))
  log_ratio = jnp.where(mask, log_ratio, 0.0)  # no inf - inf off the response
  if estimator == "k1":
    terms = log_ratio
  elif estimator == "k2":
    terms = 0.5 * log_ratio ** 2
  elif estimator == "k3":
    terms = jnp.expm1(-log_ratio) + log_ratio
  else:
    raise ValueError(f"kl estimator {estimator!r}: choose one of {KL_ESTIMATORS}.")
  return jnp.where(mask, terms, 0.0)


def token_logprobs_and_entropy(logits: Float[Array, "B R V"], tokens: Array):
  """log p of `tokens` and the full-distribution entropy per position, in f32."""
  logp_all = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  logp = jnp.take_along_axis(logp_all, tokens[..., None], axis=-1)[..., 0]
  entropy = -jnp.sum(jnp.exp(logp_all) * logp_all, axis=-1)
  return logp, entropy
