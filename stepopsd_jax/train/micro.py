"""Micro-batching inside the jitted step: split rows, map a forward, accumulate gradients.

Losses are normalised by batch-wide totals, so summing micro-batch losses and gradients gives the
full-batch ones exactly; per-row outputs are re-joined in the original row order.

StepOPSD's trajectory credit budget normalises a row's weight by the mean over its trajectory's
steps, so a micro-batch can shape its own advantages only when it holds every row of its
trajectories. `arrange` (host) orders a batch's rows so that it does, when the trajectories pack
into the micro-batches; `whole_trajectories` (device) checks it, and the step falls back to a
gradient-free forward over the whole batch when it does not hold.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np


def split(tree, n: int):
  """[B, ...] leaves -> [n, B/n, ...], interleaved: micro-batch i holds rows i, i + n, i + 2n...

  Rows are sharded over the devices in contiguous blocks, so a contiguous cut would put each
  micro-batch on a fraction of the devices (and leave the others idle, or make the compiler
  move rows); interleaved, every micro-batch keeps rows of every device's block.
  """
  return jax.tree.map(
      lambda x: jnp.swapaxes(x.reshape((x.shape[0] // n, n) + x.shape[1:]), 0, 1), tree)


def join(tree):
  """The inverse of `split`: [n, B/n, ...] leaves -> [B, ...] in the original row order."""
  return jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1).reshape((-1,) + x.shape[2:]), tree)


def map_rows(fn: Callable, batch: dict, n: int):
  """fn over n micro-batches with lax.map (bounded memory), results re-joined along rows."""
  if n == 1:
    return fn(batch)
  return join(jax.lax.map(fn, split(batch, n)))


def value_and_grad(loss_fn: Callable, params, batch: dict, extra: dict, n: int):
  """(loss, grads, aux) of `loss_fn(params, mb, extra_mb) -> (loss, aux)` summed over n
  micro-batches; with n > 1 every aux leaf comes back stacked [n, ...]."""
  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
  if n == 1:
    (loss, aux), grads = grad_fn(params, batch, extra)
    return loss, grads, aux

  def body(carry, xs):
    (loss, aux), g = grad_fn(params, *xs)
    return jax.tree.map(jnp.add, carry, (loss, g)), aux

  zeros = (jnp.zeros(()), jax.tree.map(jnp.zeros_like, params))
  (loss, grads), aux = jax.lax.scan(body, zeros, (split(batch, n), split(extra, n)))
  return loss, grads, aux


def whole_trajectories(traj_id, row_valid, n: int):
  """True (a device scalar) when every trajectory's valid rows sit in one micro-batch of
  `split(., n)`, i.e. share their row index mod n. `traj_id` must be dense in [0, B)."""
  b = traj_id.shape[0]
  part = jnp.arange(b, dtype=jnp.int32) % n
  lo = jax.ops.segment_min(jnp.where(row_valid, part, n), traj_id, num_segments=b)
  hi = jax.ops.segment_max(jnp.where(row_valid, part, -1), traj_id, num_segments=b)
  return jnp.all(lo >= hi)  # lo > hi: an id with no valid row (or none at all)


def arrange(batch, n: int):
  """`batch` (host, numpy leaves with rows first) with its rows reordered so every trajectory's
  rows fall in one micro-batch of `split(., n)`, or `batch` unchanged when n == 1 or when the
  trajectories do not pack into n micro-batches of B/n rows (first-fit decreasing).

  A trajectory's rows keep their order, micro-batches hold trajectories in their original
  order, and padding rows fill the free slots. Only the order changes: estimators group rows
  by id, so results are the same up to the order of floating-point sums.
  """
  traj_id, valid = np.asarray(batch.traj_id), np.asarray(batch.row_valid)
  b = traj_id.shape[0]
  if n == 1 or b % n:
    return batch
  rows_of: dict[int, list[int]] = {}
  for r in np.flatnonzero(valid):
    rows_of.setdefault(int(traj_id[r]), []).append(int(r))
  free, parts = [b // n] * n, [[] for _ in range(n)]
  for rows in sorted(rows_of.values(), key=len, reverse=True):  # stable: ties keep their order
    fits = [i for i in range(n) if free[i] >= len(rows)]
    if not fits:
      return batch
    free[fits[0]] -= len(rows)
    parts[fits[0]].append(rows)
  padding = iter(np.flatnonzero(~valid).tolist())
  order = np.empty(b, np.int64)
  for i, trajs in enumerate(parts):
    rows = [r for t in sorted(trajs) for r in t]  # trajectories by their first row
    rows += [next(padding) for _ in range(b // n - len(rows))]
    order[i::n] = rows  # micro-batch i holds rows i, i + n, ... of the arranged batch
  return jax.tree.map(lambda x: np.asarray(x)[order], batch)
