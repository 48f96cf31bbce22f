"""Policy-gradient losses (DESIGN 4.9): PPO clip with clip-higher, KL to a reference, entropy.

Aggregation divides by batch-wide totals passed in (`num_tokens`, `num_rows`), so the sum of
micro-batch losses equals the full-batch loss and accumulated gradients are exact.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float

LOSS_AGGREGATIONS = ("token_mean", "seq_mean")
KL_ESTIMATORS = ("k1", "k3")


def aggregate(x: Float[Array, "B R"], mask: Bool[Array, "B R"], mode: str,
              num_tokens: Array, num_rows: Array) -> Float[Array, ""]:
  """token_mean: sum over tokens / all tokens; seq_mean: mean over rows of per-row means."""
  x = jnp.where(mask, x, 0.0)
  if mode == "token_mean":
    return jnp.sum(x) / jnp.maximum(num_tokens, 1.0)
  if mode == "seq_mean":
    per_row = jnp.sum(x, axis=1) / jnp.maximum(jnp.sum(mask, axis=1), 1)
    return jnp.sum(per_row) / jnp.maximum(num_rows, 1.0)
  raise ValueError(f"loss aggregation {mode!r}: choose one of {LOSS_AGGREGATIONS}.")


def ppo_clip_terms(logp: Float[Array, "B R"], old_logp: Float[Array, "B R"],
                   adv: Float[Array, "B R"], clip_low: float, clip_high: float):
  """Per-token clipped surrogate loss and whether the clip was active."""
  ratio = jnp.exp(logp - old_logp)
  unclipped = ratio * adv
  clipped = jnp.clip(ratio, 1.0 - clip_low, 1.0 + clip_high) * adv
  return -jnp.minimum(unclipped, clipped), clipped < unclipped


def kl_terms(logp: Float[Array, "B R"], ref_logp: Float[Array, "B R"], estimator: str):
  """Per-token KL(pi || ref) estimate on sampled tokens: k1 = log ratio, k3 = Schulman's."""
  log_ratio = ref_logp - logp
  if estimator == "k1":
    return -log_ratio
  if estimator == "k3":
    return jnp.exp(log_ratio) - log_ratio - 1.0
  raise ValueError(f"kl estimator {estimator!r}: choose one of {KL_ESTIMATORS}.")


def token_logprobs_and_entropy(logits: Float[Array, "B R V"], tokens: Array):
  """log p of `tokens` and the full-distribution entropy per position, in f32."""
  logp_all = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  logp = jnp.take_along_axis(logp_all, tokens[..., None], axis=-1)[..., 0]
  entropy = -jnp.sum(jnp.exp(logp_all) * logp_all, axis=-1)
  return logp, entropy
