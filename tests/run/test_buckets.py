"""The sampler's batch buckets (episodes) apart from the step's row buckets (agent steps)."""

import pytest

from stepopsd_jax import models
from stepopsd_jax.run import config as config_lib
from stepopsd_jax.run import setup as setup_lib
from stepopsd_jax.sampling import Buckets
from stepopsd_jax.train.config import ConfigError

ALFWORLD_LIKE = {"rollout.batch_buckets": "(1024, 2048, 4096, 8192)", "rollout.batch_size": 128,
                 "rollout.group_size": 8}


def test_episodes_are_not_padded_to_the_step_rows_buckets():
  """ALFWorld's shape: 128 episodes and row buckets from 1024; worked by hand."""
  config = config_lib.load("configs/default.py", ALFWORLD_LIKE)
  got = config_lib.decode_batch_buckets(config, dp=8)
  assert got == (8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)
  assert Buckets.pick(got, 128) == 128 and Buckets.pick(got, 37) == 64
  # 16 devices: every bucket splits over them
  assert config_lib.decode_batch_buckets(config, dp=16)[:3] == (16, 32, 64)


def test_the_first_turn_of_a_step_pads_nothing():
  """Search-QA's shape: 640 episodes a step, not a power of two."""
  config = config_lib.load("configs/default.py", {
      "rollout.batch_buckets": "(64, 128, 256, 512, 1024, 2048, 4096)",
      "rollout.batch_size": 640, "rollout.group_size": 5})
  one = config_lib.decode_batch_buckets(config, dp=8)
  assert 640 in one and Buckets.pick(one, 640) == 640
  four = config_lib.decode_batch_buckets(config, dp=8, processes=4)  # 160 a process
  assert Buckets.pick(four, 160) == 160 and 640 not in four
  three = config_lib.decode_batch_buckets(config, dp=8, processes=3)  # 213.3 -> 216 = 27 x 8
  assert 216 in three
  # and its halves, for a sampler that decodes a call as two streams: 320 = 640 / 2; 108 -> 112
  assert 320 in one and 112 in three and 80 in four


def test_given_buckets_are_used_and_checked():
  config = config_lib.load("configs/default.py", {"rollout.decode_batch_buckets": "(48, 16)"})
  assert config_lib.decode_batch_buckets(config, dp=8) == (16, 48)
  config_lib.validate(config, 8)
  bad = config_lib.load("configs/default.py", {"rollout.decode_batch_buckets": "(12, 16)"})
  with pytest.raises(ConfigError, match=r"rollout.decode_batch_buckets \[12\].*multiples of 8"):
    config_lib.validate(bad, 8)


class _Tok:
  vocab_size, eos_token_id, pad_token_id = 8, 1, 0

  def decode(self, ids):
    return "".join(map(str, ids))


def test_the_sampler_gets_both():
  config = config_lib.load("configs/default.py", ALFWORLD_LIKE)
  sampler = setup_lib.make_sampler(config, models.get_preset("qwen3_tiny"), _Tok(), greedy=True)
  assert sampler.buckets.batch[:5] == (8, 16, 32, 64, 128)
  assert sampler.buckets.step_rows == (1024, 2048, 4096, 8192)
