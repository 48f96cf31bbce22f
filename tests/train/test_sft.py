"""The SFT step's loss against a brute-force NLL computed row by row on unpadded sequences."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from stepopsd_jax import models
from stepopsd_jax.train.sft import Demonstrations, sft_step

CONFIG = models.get_preset("qwen3_tiny", vocab_size=64)


def _batch():
  prompts = [[5, 9, 11, 3], [7, 2], [4, 4, 8]]
  responses = [[12, 13], [14, 15, 16], [17]]
  p, r = 5, 4
  tok = np.zeros((3, p), np.int32)
  pm = np.zeros((3, p), bool)
  res = np.zeros((3, r), np.int32)
  rm = np.zeros((3, r), bool)
  for i, (a, b) in enumerate(zip(prompts, responses)):
    tok[i, p - len(a):], pm[i, p - len(a):] = a, True  # left-padded prompt
    res[i, :len(b)], rm[i, :len(b)] = b, True  # right-padded response
  batch = Demonstrations(*(jnp.asarray(x) for x in (tok, pm, res, rm)))
  return prompts, responses, batch


def _reference(params, prompts, responses):
  """Token means of -log p over response tokens and over prompt tokens after the first."""
  resp, prompt = [], []
  for a, b in zip(prompts, responses):
    seq = a + b
    logp = jax.nn.log_softmax(models.logits(CONFIG, params, jnp.asarray([seq]))[0], axis=-1)
    nll = [-float(logp[t - 1, seq[t]]) for t in range(1, len(seq))]
    prompt += nll[:len(a) - 1]
    resp += nll[len(a) - 1:]
  return float(np.mean(resp)), float(np.mean(prompt))


def test_response_loss_and_prompt_loss_match_a_row_by_row_reference():
  params = models.init_params(CONFIG, jax.random.key(0))
  prompts, responses, batch = _batch()
  tx = optax.sgd(0.0)
  resp, prompt = _reference(params, prompts, responses)
  _, _, loss = sft_step(params, tx.init(params), batch, config=CONFIG, tx=tx)
  np.testing.assert_allclose(float(loss), resp, rtol=1e-5)
  _, _, loss = sft_step(params, tx.init(params), batch, config=CONFIG, tx=tx, prompt_loss=True)
  np.testing.assert_allclose(float(loss), resp + prompt, rtol=1e-5)
