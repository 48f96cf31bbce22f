"""A tokenizer trained on credit-lab texts and a sampler stand-in that plays scripted text."""

import re

import numpy as np
import pytest

from stepopsd_jax import envs, sampling
from stepopsd_jax.rollout import prompts
from stepopsd_jax.rollout.random_policy import train_env_tokenizer

ENV = "credit_lab/critical_step"


@pytest.fixture(scope="session")
def tokenizer():
  tasks = envs.make_tasks(ENV, "train", 32, seed=0)
  return train_env_tokenizer(ENV, tasks, prompts.PromptConfig(), vocab_size=600)


def tiny_policy(tokenizer, seed: int = 0):
  """A random tiny Qwen3 whose vocabulary covers `tokenizer`."""
  import jax  # pylint: disable=g-import-not-at-top
  from stepopsd_jax import models  # pylint: disable=g-import-not-at-top
  config = models.get_preset("qwen3_tiny", vocab_size=models.padded_vocab(tokenizer.vocab_size))
  return config, models.init_params(config, jax.random.key(seed))


class ScriptedSampler:
  """Has the Sampler's interface; `respond(prompt_text, row_rng) -> response text` writes each row."""

  def __init__(self, tokenizer, respond, max_new_tokens=48, vocab_size=None, seed=0):
    from stepopsd_jax import models
    self.tokenizer, self.respond = tokenizer, respond
    self.config = models.get_preset("qwen3_tiny", vocab_size=vocab_size or tokenizer.vocab_size)
    self.params = sampling.SamplingParams(max_new_tokens=max_new_tokens)
    self.pad_id = tokenizer.pad_token_id
    self.buckets = sampling.Buckets(batch=(8, 16, 32, 64, 128), prompt=(256, 512, 1024))
    self.rng = np.random.default_rng(seed)

  def generate(self, weights, prompts, rng):
    del weights, rng
    r = self.params.max_new_tokens
    tokens = np.full((len(prompts), r), self.pad_id, np.int32)
    lengths = np.zeros(len(prompts), np.int32)
    for i, prompt in enumerate(prompts):
      out = self.respond(self.tokenizer.decode(prompt), self.rng)
      ids = self.tokenizer.encode(out) if isinstance(out, str) else list(out)
      ids = ids[:r]
      tokens[i, :len(ids)], lengths[i] = ids, len(ids)
    logprobs = np.where(np.arange(r)[None] < lengths[:, None], -1.0, 0.0).astype(np.float32)
    return sampling.SampleOutput(tokens, logprobs, lengths, lengths < r, 0)


def admissible(prompt_text: str) -> list[str]:
  line = re.findall(r"Admissible actions: (.*)", prompt_text)[-1]
  return [a.strip() for a in line.split(",")]


def random_policy(prompt_text, rng):
  action = rng.choice(admissible(prompt_text))
  return f"<think>pick</think><action>{action}</action>"
