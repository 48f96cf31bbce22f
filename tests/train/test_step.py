"""The jitted step: learning on a fixed batch, lambda=0 == GRPO, micro-batches, sharding."""

import functools

import jax
import numpy as np
import pytest

from stepopsd_jax import models, sharding, train
from stepopsd_jax.train.step import response_logprobs
from tests.train.batches import random_step_batch

CONFIG = models.get_preset("qwen3_tiny", vocab_size=128, num_layers=1)  # compiles faster


@pytest.fixture(scope="module")
def batch():
  b = random_step_batch(CONFIG.vocab_size, rows=8)
  params = models.init_params(CONFIG, jax.random.key(0))
  logp, _ = response_logprobs(CONFIG, params, b["prompt_tokens"], b["prompt_mask"],
                              b["response_tokens"], b["response_mask"], 1.0)
  b["behavior_logprobs"] = np.where(b["response_mask"], np.asarray(logp), 0.0).astype(np.float32)
  return b


TX = train.make_optimizer(1e-3, 0, 10)


@functools.lru_cache(maxsize=None)
def _compiled(cfg, mesh_shape):
  mesh = sharding.make_mesh(*mesh_shape, devices=jax.devices()[:int(np.prod(mesh_shape))])
  ndims = train.batch_ndims(random_step_batch(CONFIG.vocab_size, rows=8))
  return mesh, train.jit_train_step(CONFIG, cfg, TX, mesh, ndims)


def _run(batch, cfg, steps=3, mesh_shape=(1, 1, 1)):
  mesh, step = _compiled(cfg, mesh_shape)
  state = train.init_state(CONFIG, jax.random.key(0), TX, mesh, keep_reference=cfg.keep_reference,
                           keep_ema=cfg.keep_ema)
  history = []
  for i in range(steps):
    state, metrics = step(state, batch, jax.random.key(i))
    history.append(jax.device_get(metrics))
  return state, history


@pytest.mark.parametrize("estimator", ["grpo", "stepopsd"])
def test_step_lowers_the_loss_on_a_fixed_batch(batch, estimator):
  _, history = _run(batch, train.StepConfig(estimator=estimator), steps=4)
  losses = [h["loss"] for h in history]
  assert losses[-1] < losses[0] - 1e-3, losses
  assert all(np.isfinite(v).all() for h in history for v in h.values())


def test_lambda_zero_reproduces_grpo_parameters(batch):
  grpo, _ = _run(batch, train.StepConfig(estimator="grpo"))
  opsd, history = _run(batch, train.StepConfig(estimator="stepopsd", lambda_mix=0.0))
  assert "delta_mean" in history[0]
  for a, b in zip(jax.tree.leaves(grpo.params), jax.tree.leaves(opsd.params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("estimator,budget", [("grpo", "trajectory"), ("stepopsd", "trajectory")])
def test_micro_batches_give_the_full_batch_update(batch, estimator, budget):
  cfg = train.StepConfig(estimator=estimator, lambda_mix=0.7, credit_budget=budget)
  one, h1 = _run(batch, cfg, steps=2)
  two, h2 = _run(batch, train.StepConfig(**{**cfg.__dict__, "micro_batches": 2}), steps=2)
  for key in ("loss", "grad_norm", "pg_loss"):
    np.testing.assert_allclose(h1[-1][key], h2[-1][key], rtol=1e-5)
  for a, b in zip(jax.tree.leaves(one.params), jax.tree.leaves(two.params)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)  # Adam amplifies ulps


@pytest.mark.parametrize("mesh_shape", [(8, 1, 1), (2, 2, 2), (1, 4, 2)])  # (data, fsdp, tensor)
def test_eight_devices_match_one(batch, mesh_shape):
  assert len(jax.devices()) == 8
  cfg = train.StepConfig(estimator="stepopsd", lambda_mix=0.5)
  _, single = _run(batch, cfg, steps=2)
  _, sharded = _run(batch, cfg, steps=2, mesh_shape=mesh_shape)
  for key in ("loss", "grad_norm", "delta_mean", "weight_mean"):
    np.testing.assert_allclose(sharded[-1][key], single[-1][key], rtol=1e-5)


@pytest.mark.parametrize("teacher", ["reference", "ema"])
def test_teacher_variants_and_kl_run(batch, teacher):
  cfg = train.StepConfig(estimator="stepopsd", teacher=teacher, kl_coef=0.01, entropy_coef=0.01)
  state, history = _run(batch, cfg, steps=2)
  assert "kl_ref" in history[-1] and np.isfinite(history[-1]["kl_ref"])
  assert (state.ref_params is not None) and ((state.ema_params is not None) == (teacher == "ema"))


def test_bad_step_config_names_the_key():
  with pytest.raises(ValueError, match="algo.credit_budget"):
    train.StepConfig(credit_budget="episode")
