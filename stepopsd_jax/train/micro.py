"""Micro-batching inside the jitted step: split rows, map a forward, accumulate gradients.

Losses are normalised by batch-wide totals, so summing micro-batch losses and gradients gives the
full-batch ones exactly; per-row outputs are re-joined in the original row order.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp


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
