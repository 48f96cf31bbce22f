"""Pretraining: next-token loss on every position, a copy phase, then the mixed reading corpus.

    loss = sum_t w_t * -log p(x_t | x_<t) / sum_t w_t,   w_t = 1 (x answer_weight on answers)

Phase 1 (`prev_token_steps` + `copy_steps`): copy rows only, so every embedding is trained as
input and as output. Content-matched copying (an induction head: find the earlier occurrence of
the current token, copy its successor) did not form within 2,400 steps from scratch on copy rows
of spans 8-24; rows of span 2 first ("a b a b": the answer is the previous token) grow a
previous-token head in ~200 steps, after which spans 3-24 are learnt (probe log in the manifest).
Phase 2 (`mixed_steps`): reading rows with `copy_rows` copy rows in each batch. One AdamW with
linear warm-up and cosine decay over all phases; one jitted step with static shapes.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import time
from collections.abc import Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
import optax

from stepopsd_jax import models
from stepopsd_jax.algorithms.losses import token_logprobs_and_entropy
from stepopsd_jax.models import QwenConfig
from stepopsd_jax.pretrain import batches
from stepopsd_jax.pretrain.vocab import Vocab


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  prev_token_steps: int = 200  # copy rows of span 2: a previous-token head forms first
  copy_steps: int = 800  # copy rows of spans copy_span: induction (content-matched copying)
  mixed_steps: int = 1500
  batch_size: int = 16
  seq_len: int = 256
  copy_seq_len: int = 64  # phase 1 rows: copying needs no long context, and short rows are cheap
  copy_batch_size: int = 32
  copy_rows: int = 4  # copy rows per batch in the mixed phase
  copy_span_min: int = 3  # spans drawn from [min, max]: too short a range lets fixed-offset
  copy_span_max: int = 16  # (positional) heads solve it, and they do not generalise
  p_span2: float = 0.3  # after phase 1a, a copy segment still has span 2 this often
  pack: bool = True
  lr: float = 3e-3
  warmup_steps: int = 100
  final_lr_fraction: float = 0.1
  weight_decay: float = 0.0
  grad_clip: float = 1.0
  answer_weight: float = 3.0

  @property
  def total_steps(self) -> int:
    return self.prev_token_steps + self.copy_steps + self.mixed_steps

  @property
  def copy_span(self) -> tuple[int, int]:
    return self.copy_span_min, self.copy_span_max


def make_optimizer(cfg: TrainConfig) -> optax.GradientTransformation:
  schedule = optax.warmup_cosine_decay_schedule(
      0.0, cfg.lr, cfg.warmup_steps, max(cfg.total_steps, cfg.warmup_steps + 1),
      cfg.lr * cfg.final_lr_fraction)
  return optax.chain(optax.clip_by_global_norm(cfg.grad_clip),
                     optax.adamw(schedule, b1=0.9, b2=0.99, weight_decay=cfg.weight_decay))


def lm_losses(config: QwenConfig, params, tokens_BxT, weights_BxT, answer_BxT):
  """(weighted loss over every position, mean loss over answer tokens)."""
  valid_BxT = weights_BxT > 0
  logits_BxSxV = models.logits(config, params, tokens_BxT[:, :-1], valid_BxT[:, :-1])
  logp_BxS, _ = token_logprobs_and_entropy(logits_BxSxV, tokens_BxT[:, 1:])
  w_BxS = weights_BxT[:, 1:]
  loss = -jnp.sum(w_BxS * logp_BxS) / jnp.maximum(jnp.sum(w_BxS), 1.0)
  a_BxS = answer_BxT[:, 1:].astype(jnp.float32)
  answer_loss = -jnp.sum(a_BxS * logp_BxS) / jnp.maximum(jnp.sum(a_BxS), 1.0)
  return loss, answer_loss


@functools.partial(jax.jit, static_argnames=("config", "tx"), donate_argnums=(0, 1))
def train_step(params, opt_state, tokens_BxT, weights_BxT, answer_BxT, *, config: QwenConfig,
               tx: optax.GradientTransformation):
  """One AdamW step on the weighted next-token loss; returns params, opt_state, metrics."""
  def loss_fn(p):
    loss, answer_loss = lm_losses(config, p, tokens_BxT, weights_BxT, answer_BxT)
    return loss, answer_loss

  (loss, answer_loss), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
  updates, opt_state = tx.update(grads, opt_state, params)
  return (optax.apply_updates(params, updates), opt_state,
          {"loss": loss, "answer_loss": answer_loss, "grad_norm": optax.global_norm(grads)})


def batch_stream(cfg: TrainConfig, tokenizer, vocab: Vocab, seed: int,
                 mix: dict[str, float] | None = None) -> Iterator[batches.Rows]:
  """The deterministic batches of both phases, in order."""
  rng = np.random.default_rng([seed, 404])
  ids = batches.IdStream(tokenizer.vocab_size, np.random.default_rng([seed, 405]))
  kw = {} if mix is None else {"mix": mix}
  for step in range(cfg.total_steps):
    if step < cfg.prev_token_steps:
      yield batches.copy_rows(ids, rng, cfg.copy_batch_size, cfg.copy_seq_len, (2, 2))
    elif step < cfg.prev_token_steps + cfg.copy_steps:
      yield batches.copy_rows(ids, rng, cfg.copy_batch_size, cfg.copy_seq_len, cfg.copy_span,
                              cfg.p_span2)
    else:
      reading = batches.reading_rows(tokenizer, vocab, rng, cfg.batch_size - cfg.copy_rows,
                                     cfg.seq_len, pack=cfg.pack, **kw)
      yield batches.concat(reading, batches.copy_rows(ids, rng, cfg.copy_rows, cfg.seq_len,
                                                      cfg.copy_span, cfg.p_span2))


def weights_of(rows: batches.Rows, answer_weight: float) -> np.ndarray:
  return rows.weights * np.where(rows.answer, answer_weight, 1.0).astype(np.float32)


def train(config: QwenConfig, params, cfg: TrainConfig, stream: Iterator[batches.Rows],
          on_log: Callable[[int, dict], None] | None = None, log_every: int = 100,
          check_rows: Callable[[int, batches.Rows], None] | None = None):
  """Runs every step of `stream`; returns (params, corpus sha256, seconds)."""
  tx = make_optimizer(cfg)
  opt_state = tx.init(params)
  digest, start = hashlib.sha256(), time.perf_counter()
  for step, rows in enumerate(stream):
    if check_rows is not None:
      check_rows(step, rows)
    digest.update(rows.tokens.tobytes())
    digest.update(rows.weights.tobytes())
    params, opt_state, metrics = train_step(
        params, opt_state, jnp.asarray(rows.tokens), jnp.asarray(weights_of(rows, cfg.answer_weight)),
        jnp.asarray(rows.answer), config=config, tx=tx)
    if on_log is not None and (step % log_every == 0 or step == cfg.total_steps - 1):
      on_log(step, {k: float(v) for k, v in metrics.items()}
             | {"minutes": (time.perf_counter() - start) / 60})
  return params, digest.hexdigest(), time.perf_counter() - start
