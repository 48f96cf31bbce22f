"""The update moves the policy the way the advantages say: the sign test of the whole step.

Losses going down on a fixed batch would also pass with a flipped advantage; this test would not:
after one step, the log-probability of each trajectory's response tokens must rise where its
advantage is positive and fall where it is negative. To first order in the step size, the
token-mean objective sum_rows A * (change of the row's summed log-prob) must grow: with Adam's first
step (about -lr * sign(g)) its change is lr * |g|_1 > 0.
"""

import jax
import numpy as np

from stepopsd_jax import algorithms, models, sharding, train
from stepopsd_jax.train.forward import response_logprobs
from tests.train.batches import random_step_batch

CONFIG = models.get_preset("qwen3_tiny", vocab_size=128, num_layers=1)


def _row_logp(params, b):
  logp, _ = response_logprobs(CONFIG, params, b.prompt_tokens, b.prompt_mask,
                              b.response_tokens, b.response_mask, 1.0)
  return np.where(b.response_mask, np.asarray(logp), 0.0).sum(axis=1)


def test_one_step_raises_the_advantage_weighted_logp():
  b = random_step_batch(CONFIG.vocab_size, rows=8)
  tx = train.make_optimizer(1e-4, 0, 10, grad_clip=1e9)
  mesh = sharding.make_mesh(1, 1, 1, devices=jax.devices()[:1])
  state = train.init_state(CONFIG, jax.random.key(0), tx, mesh)
  before = _row_logp(state.params, b)
  logp, _ = response_logprobs(CONFIG, state.params, b.prompt_tokens, b.prompt_mask,
                              b.response_tokens, b.response_mask, 1.0)
  b = b.replace(behavior_logprobs=np.where(b.response_mask, np.asarray(logp),
                                           0.0).astype(np.float32))
  step = train.jit_train_step(CONFIG, train.StepConfig(estimator="grpo"), tx, mesh)
  state, _ = step(state, b, jax.random.key(0))
  change = _row_logp(state.params, b) - before
  adv = np.asarray(algorithms.grpo_advantages(b.traj_return, b.group_id, b.traj_id,
                                              b.row_valid))
  moved = b.row_valid & (adv != 0)
  assert moved.sum() >= 2
  assert np.sum(adv[moved] * change[moved]) > 0, (adv, change)
  # ...and, on average, positive-advantage rows gain log-prob that negative ones lose.
  assert change[moved & (adv > 0)].mean() > change[moved & (adv < 0)].mean()
