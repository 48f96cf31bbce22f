"""The policy's forwards inside the step: the student's with gradient, the frozen teacher's and
reference's without.

Every forward scores a row's response tokens given its left-padded prompt, so the log-probs of
all rows line up as [B, R]. The student's forward is run once: with one micro-batch its
gradient is pulled back through it (`jax.vjp`), so the StepOPSD gap can use its log-probs
before the loss is formed; with several, the loss runs it per micro-batch and shapes that
micro-batch's advantages from it. The trajectory credit budget needs every row of a trajectory:
when some trajectory spans micro-batches (`micro.whole_trajectories`, checked on the device), a
gradient-free pass over the whole batch gives the gap's log-probs first (`lax.cond`: the pass
runs only then). `micro.arrange` orders the rows on the host so that it is rarely needed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from stepopsd_jax import models
from stepopsd_jax.algorithms import losses
from stepopsd_jax.batch import StepBatch
from stepopsd_jax.models import QwenConfig
from stepopsd_jax.train import micro


def response_logprobs(config: QwenConfig, params, prompt, prompt_mask, response, response_mask,
                      temperature: float):
  """log p and entropy of each response token given its (left-padded) prompt, [B, R] f32."""
  p = prompt.shape[1]
  tokens = jnp.concatenate([prompt, response], axis=1)
  mask = jnp.concatenate([prompt_mask, response_mask], axis=1)
  h = models.hidden_states(config, params, tokens, mask, models.default_positions(mask))
  logits = models.project(config, params, h[:, p - 1:-1]) / temperature  # predicts response
  return losses.token_logprobs_and_entropy(logits, response)


def logprobs(config: QwenConfig, params, mb: StepBatch, temperature: float, teacher: bool):
  """(log-probs, entropies) [B, R] of the responses given the student (or teacher) prompts."""
  if teacher:
    return response_logprobs(config, params, mb.teacher_prompt_tokens, mb.teacher_prompt_mask,
                             mb.response_tokens, mb.response_mask, temperature)
  return response_logprobs(config, params, mb.prompt_tokens, mb.prompt_mask, mb.response_tokens,
                           mb.response_mask, temperature)


class Student(NamedTuple):
  """The student's log-probs and entropies [B, R]; `pullback` maps their cotangents to the
  parameters' gradient (None when the loss re-runs the forward per micro-batch). `shape_in_loss`
  says whether each micro-batch shapes its own advantages (several micro-batches, StepOPSD): a
  bool, or a device bool when it depends on where the batch's trajectories sit; where it is
  false, `logp` is the gradient-free pass's and the advantages are shaped before the loss."""
  logp: jax.Array | None
  entropy: jax.Array | None
  pullback: Callable | None
  shape_in_loss: jax.Array | bool = False

  @staticmethod
  def of(params, mb: StepBatch, config: QwenConfig, cfg):
    """(log-probs, entropies) of the student's forward on (a micro-batch of) the batch."""
    return logprobs(config, params, mb, cfg.temperature, teacher=False)


def student_forward(params, batch: StepBatch, config: QwenConfig, cfg) -> Student:
  if cfg.micro_batches == 1:
    (logp, entropy), pullback = jax.vjp(lambda p: Student.of(p, batch, config, cfg), params)
    return Student(logp, entropy, pullback)
  if not cfg.shapes_credit:
    return Student(None, None, None)
  if cfg.credit_budget != "trajectory":  # a row's weight needs only its own row's gap
    return Student(None, None, None, shape_in_loss=True)
  whole = micro.whole_trajectories(batch.traj_id, batch.row_valid, cfg.micro_batches)
  gradient_free_pass = lambda: micro.map_rows(
      lambda mb: Student.of(jax.lax.stop_gradient(params), mb, config, cfg)[0], batch,
      cfg.micro_batches)
  logp = jax.lax.cond(whole, lambda: jnp.zeros(batch.response_tokens.shape, jnp.float32),
                      gradient_free_pass)  # the budget needs every step's gap first
  return Student(logp, None, None, shape_in_loss=whole)


def frozen_logprobs(state, batch: StepBatch, config: QwenConfig, cfg) -> dict:
  """Gradient-free log-probs: the hindsight teacher's (stepopsd, opsd) and the reference's (KL)."""
  def no_grad(params, teacher):
    return micro.map_rows(lambda mb: logprobs(config, jax.lax.stop_gradient(params), mb,
                                               cfg.temperature, teacher)[0],
                          batch, cfg.micro_batches)

  out = {}
  if cfg.needs_teacher:
    if batch.teacher_prompt_tokens.shape[1] == 0:
      raise ValueError(f"algo.estimator={cfg.estimator!r} reads hindsight teacher prompts, but "
                       "this batch has none: roll out with RolloutConfig(teacher_prompts=True).")
    teacher = {"policy": state.params, "reference": state.ref_params,
               "ema": state.ema_params}[cfg.teacher]
    out["teacher_logp"] = no_grad(teacher, True)
  if cfg.kl_coef > 0:
    out["ref_logp"] = no_grad(state.ref_params, False)
  return out
