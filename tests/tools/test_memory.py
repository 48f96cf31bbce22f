"""The memory plan on full-size presets: eval_shape only, hand-checked rows."""

import pytest

from stepopsd_jax import models
from stepopsd_jax.tools import memory
from stepopsd_jax.train import make_optimizer
from stepopsd_jax.train import StepConfig

C = models.get_preset("qwen3_1p7b", param_dtype="float32", dtype="bfloat16", remat_policy="full")
SHAPES = memory.Shapes(rows=128, prompt_len=2048, teacher_len=2048, response_len=512,
                       sample_rows=128)
TX = make_optimizer(1e-6, 0, 1)


def _plan(cfg=StepConfig(), mesh=(1, 8, 1), c=C):
  critic_tx = TX if cfg.needs_critic else None
  return memory.plan(c, cfg, TX, critic_tx, SHAPES, memory.abstract_mesh(mesh))


def test_fsdp_divides_params_and_adam_keeps_two_f32_moments():
  rows = _plan()
  n = models.count_params(C)
  assert 1.7e9 < n < 2.1e9
  assert rows["policy params"] == pytest.approx(4 * n / 8, rel=1e-3)  # f32 over fsdp=8
  assert rows["optimizer state"] == 2 * rows["policy params"]
  assert rows["teacher/reference/ema"] == 0 and rows["critic + its optimizer"] == 0


def test_separate_teacher_and_critic_are_counted():
  params = _plan()["policy params"]
  assert _plan(StepConfig(teacher="reference"))["teacher/reference/ema"] == params
  assert _plan(StepConfig(teacher="ema", kl_coef=0.1))["teacher/reference/ema"] == 2 * params
  critic = _plan(StepConfig(estimator="ppo"))["critic + its optimizer"]
  assert critic == pytest.approx(4 * params, rel=0.01)  # weights, grads, 2 moments; tied head


def test_kv_cache_matches_hand_count_and_tensor_splits_kv_heads():
  rows = _plan(mesh=(2, 2, 2))
  per_device = 2 * 28 * (128 / 4) * (8 / 2) * (2048 + 512) * 128 * 2  # k,v L B K S H bf16
  assert rows["kv cache (rollout)"] == per_device


def test_remat_policies_order_the_activation_estimate():
  acts = {p: _plan(c=C.replace(remat_policy=p))["activations (estimate)"]
          for p in ("none", "dots", "dots_with_no_batch_dims", "full")}
  assert acts["full"] < acts["dots_with_no_batch_dims"] < acts["dots"] < acts["none"]
  smaller = _plan(StepConfig(micro_batches=4))["activations (estimate)"]
  assert smaller < _plan()["activations (estimate)"] / 3


def test_cli_prints_the_table(capsys):
  assert memory.main(["--config=configs/default.py", "--devices=8",
                      "--config.model.preset=qwen2p5_3b", "--config.mesh.data=1",
                      "--config.mesh.fsdp=-1", "--prompt_len=1024"]) == 0
  out = capsys.readouterr().out
  assert "fsdp': 8" in out and "optimizer state" in out and out.strip().endswith("GiB")


def test_prefill_transient_matches_hand_count_and_counts_in_the_rollout():
  """qwen3_1p7b: 16 query heads, 8 KV heads, 28 layers, head dim 128, bf16; 128 prompts of 2048
  tokens over data x fsdp = 4, heads over tensor = 2."""
  rows = _plan(mesh=(2, 2, 2))
  b, n, k, p = 128 / 4, 16 / 2, 8 / 2, 2048
  scores_probs_mask = b * n * p * p * (4 + 2) + b * p * p
  prompt_cache = 2 * 28 * b * k * p * 128 * 2
  assert rows["prefill transient (rollout, estimate)"] == scores_probs_mask + prompt_cache
  assert scores_probs_mask > prompt_cache  # dense attention over a long prompt: the larger part
  assert rows["rollout total"] == (rows["policy params"] + rows["kv cache (rollout)"] +
                                   rows["prefill transient (rollout, estimate)"])
  assert rows["train step total"] == sum(rows[k] for k in (
      "policy params", "gradients", "optimizer state", "teacher/reference/ema",
      "critic + its optimizer", "activations (estimate)"))
