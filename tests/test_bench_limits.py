"""The sampler benchmark's third limit: the decode step's matmuls alone (`bench/limits.py`)."""

import os
import sys

import jax
import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from bench import limits, sampler  # noqa: E402  pylint: disable=g-import-not-at-top
from stepopsd_jax import models  # noqa: E402  pylint: disable=g-import-not-at-top
from stepopsd_jax.models import qwen  # noqa: E402  pylint: disable=g-import-not-at-top


@pytest.mark.parametrize("preset,overrides", [("qwen3_tiny", {}), ("qwen2_tiny", {}),
                                              ("qwen3_tiny", dict(num_heads=6, num_kv_heads=2))])
def test_decode_matmuls_are_the_decode_steps_weights(preset, overrides):
  """The hand list of (in, out) widths against the 2-D shapes of the weights the decode step
  multiplies by (`qwen.decode_weights`), layer by layer, then the head."""
  config = models.get_preset(preset, **overrides)
  weights = qwen.decode_weights(config, models.init_params(config, jax.random.key(0)))
  two_d = lambda w: (w.shape[0], int(np.prod(w.shape[1:])))  # [in, *out] as one matmul
  expected = []
  for layer in weights["layers"]:
    expected += [two_d(layer[name]) for name in ("qkv", "o", "gate_up", "down")]
  expected.append(two_d(weights["head"]))
  assert sampler.decode_matmuls(config) == expected


def test_matmul_chain_times_a_valid_chain_and_rejects_a_broken_one():
  assert limits.matmul_chain_s(2, [(8, 16), (16, 8)], steps=2, repeats=1) > 0
  assert limits.matmul_chain_s(3, [(8, 16), (16, 8)], steps=2, repeats=1, streams=2) > 0
  with pytest.raises(ValueError, match="input width"):
    limits.matmul_chain_s(2, [(8, 4), (16, 8)], steps=2, repeats=1)
  with pytest.raises(ValueError, match="streams=3"):
    limits.matmul_chain_s(2, [(8, 16), (16, 8)], steps=2, repeats=1, streams=3)
