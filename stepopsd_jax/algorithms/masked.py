"""Statistics over the masked elements of an array: the one place a masked mean is written.

Every estimator, loss and metric of the step reduces over real tokens or rows only; padding
never counts, and an empty mask gives 0 rather than NaN.
"""

from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import Array, Bool, Float

EPS = 1e-6  # the epsilon of every std division (DESIGN 4.1)


def total(x: Float[Array, "..."], mask: Bool[Array, "..."], axis=None) -> Array:
  """Sum of the masked elements (0 elsewhere), along `axis` (all axes by default)."""
  return jnp.sum(jnp.where(mask, x, 0.0), axis=axis)


def mean(x: Float[Array, "..."], mask: Bool[Array, "..."], axis=None) -> Array:
  """Mean of the masked elements along `axis`; 0 where nothing is masked in."""
  return total(x, mask, axis) / jnp.maximum(jnp.sum(mask, axis=axis), 1)


def stats(x: Float[Array, "..."], mask: Bool[Array, "..."], prefix: str) -> dict[str, Array]:
  """Mean, (population) std, min and max of the masked elements, as `{prefix}_mean` etc."""
  m = mean(x, mask)
  big = jnp.finfo(jnp.float32).max
  return {f"{prefix}_mean": m, f"{prefix}_std": jnp.sqrt(mean((x - m) ** 2, mask)),
          f"{prefix}_min": jnp.min(jnp.where(mask, x, big)),
          f"{prefix}_max": jnp.max(jnp.where(mask, x, -big))}


def varies(x: Float[Array, "..."], mask: Bool[Array, "..."]) -> Array:
  """Whether the masked elements are not all equal (a float mean of equal values can miss them
  by an ulp, which a std division would blow up: callers then return exact zeros)."""
  return jnp.max(jnp.where(mask, x, -jnp.inf)) > jnp.min(jnp.where(mask, x, jnp.inf))


def whiten(x: Float[Array, "..."], mask: Bool[Array, "..."]) -> Float[Array, "..."]:
  """(x - mean) / (std + eps) over the masked elements (unbiased std); 0 off mask.

  All-equal or single elements give exactly 0. verl's `masked_whiten` uses rsqrt(var + 1e-8)
  instead; the two agree to ~1e-6 relative wherever the spread is not tiny.
  """
  x = jnp.where(mask, x.astype(jnp.float32), 0.0)
  n = jnp.sum(mask)
  centred = jnp.where(mask, x - jnp.sum(x) / jnp.maximum(n, 1), 0.0)
  centred = jnp.where(varies(x, mask), centred, 0.0)
  std = jnp.sqrt(jnp.sum(centred ** 2) / jnp.maximum(n - 1, 1))
  return centred / (std + EPS)
