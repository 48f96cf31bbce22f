"""AOT compilation for a TPU topology on this CPU: skipped where libtpu is not installed."""

import importlib.util

import pytest

from stepopsd_jax import models
from stepopsd_jax.tools import aot, memory
from stepopsd_jax.train import StepConfig

HAS_LIBTPU = importlib.util.find_spec("libtpu") is not None
TINY = ["--config=configs/default.py", "--config.model.preset=qwen3_tiny", "--rows=8",
        "--prompt_len=32", "--response_len=8"]


def test_flop_count_scales_with_rows_and_credits_less_than_it_executes():
  c = models.get_preset("qwen3_1p7b", remat_policy="full")
  shapes = memory.Shapes(rows=8, prompt_len=2048, teacher_len=2048, response_len=512,
                         sample_rows=8)
  executed, useful = aot.step_flops(c, StepConfig(), shapes)
  twice = aot.step_flops(c, StepConfig(), memory.Shapes(16, 2048, 2048, 512, 16))
  assert twice[0] == pytest.approx(2 * executed)
  body = models.count_params(c) - c.vocab_size * c.hidden_size
  assert useful > 8 * 2560 * (6 + 2) * body  # trained + teacher forward, plus attention
  assert 0.5 < useful / executed < 1


def test_flop_count_follows_the_attention_blocks():
  """Executed attention: each query attends to the keys up to the end of its block (counted by
  brute force over the queries here), against the full T x T of one block."""
  shapes = memory.Shapes(rows=2, prompt_len=300, teacher_len=300, response_len=40, sample_rows=2)
  full = models.get_preset("qwen3_tiny", attention_block=0)
  t, per_pair = 340, 4 * full.num_heads * full.head_dim * full.num_layers
  for block in (64, 128, 500):
    keys = sum(min(t, (q // block + 1) * block) for q in range(t))  # per row and pass
    blocked = aot.step_flops(full.replace(attention_block=block), StepConfig(estimator="grpo"),
                             shapes)[0]
    unblocked = aot.step_flops(full, StepConfig(estimator="grpo"), shapes)[0]
    assert unblocked - blocked == pytest.approx(2 * 3 * per_pair * (t * t - keys))


@pytest.mark.skipif(not HAS_LIBTPU, reason="libtpu not installed (pip install -e '.[tpu]'); "
                                           "AOT compiles with the real TPU compiler")
def test_tiny_step_compiles_for_v5p_and_fits(capsys):
  assert aot.main([*TINY, "--topology=v5p:2x2x1", "--config.mesh.data=2",
                   "--config.mesh.fsdp=2"]) == 0
  out = capsys.readouterr().out
  assert "mesh {'data': 2, 'fsdp': 2, 'tensor': 1}" in out and "verdict: FITS" in out
  assert "train step memory_analysis per device" in out and "predicted step time" in out


def test_unknown_chip_is_a_clear_error(capsys):
  assert aot.main([*TINY, "--topology=v9x:2x2"]) == 2
  assert "--topology=v9x:2x2: known chips" in capsys.readouterr().err


def test_a_compile_time_oom_is_a_verdict_not_a_crash():
  def oom():
    raise __import__("jax").errors.JaxRuntimeError(
        "RESOURCE_EXHAUSTED: E1000: CompileTimeHbmOom: Ran out of memory on HBM\nmore")
  assert aot.compile_or_oom(oom) == (None, "RESOURCE_EXHAUSTED: E1000: CompileTimeHbmOom: Ran "
                                           "out of memory on HBM")


def test_decode_cost_matches_xla_count_of_the_unrolled_decode_step():
  """The decode step's layers are a Python loop (not a scan), so XLA's own FLOP count of the
  compiled step is complete: an independent reference for the hand count."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from stepopsd_jax.models import qwen  # pylint: disable=g-import-not-at-top
  c = models.get_preset("qwen3_tiny", vocab_size=1024, hidden_size=128, intermediate_size=384,
                        num_layers=3, num_heads=4, num_kv_heads=2, head_dim=32)
  b, p, r = 4, 48, 16
  weights = qwen.decode_weights(c, models.init_params(c, jax.random.key(0)))
  cache = qwen.decode_cache(c, models.init_cache(c, b, p), p + r)
  step = jax.jit(lambda *a: qwen.decode_step(c, *a))
  compiled = step.lower(weights, jnp.zeros(b, jnp.int32), jnp.zeros(b, jnp.int32),
                        jnp.ones((b, p + r), bool), cache, jnp.int32(p)).compile()
  xla = aot._cost(compiled)["flops"]  # pylint: disable=protected-access
  cost = aot.decode_cost(c, b, p, r)
  assert cost["flops_executed"] == pytest.approx(xla, rel=0.03)  # XLA adds norms, softmax, rope
  assert cost["flops_useful"] < cost["flops_executed"]
  assert aot.decode_cost(c, 2 * b, p, r)["flops_executed"] == pytest.approx(
      2 * cost["flops_executed"])
  # bytes: the weights once, however many rows; the cache per row
  one, two = aot.decode_cost(c, 1, p, r), aot.decode_cost(c, 2, p, r)
  kv_row = c.num_layers * 2 * c.num_kv_heads * c.head_dim * (p + r) * 4
  assert two["bytes_executed"] - one["bytes_executed"] == pytest.approx(kv_row + c.hidden_size * 4)
  assert one["bytes_executed"] > models.count_params(c) * 4 - c.vocab_size * c.hidden_size * 4
