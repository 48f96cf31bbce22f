"""The jitted step: learning on a fixed batch, lambda=0 == GRPO, micro-batches, sharding."""

import functools

import jax
import numpy as np
import pytest

from stepopsd_jax import algorithms, models, sharding, train
from stepopsd_jax.batch import StepBatch
from stepopsd_jax.train import micro
from stepopsd_jax.train import step as step_lib
from stepopsd_jax.train.forward import response_logprobs
from tests.train.batches import random_step_batch

CONFIG = models.get_preset("qwen3_tiny", vocab_size=128, num_layers=1)  # compiles faster


@pytest.fixture(scope="module")
def batch():
  b = random_step_batch(CONFIG.vocab_size, rows=8)
  params = models.init_params(CONFIG, jax.random.key(0))
  logp, _ = response_logprobs(CONFIG, params, b.prompt_tokens, b.prompt_mask,
                              b.response_tokens, b.response_mask, 1.0)
  return b.replace(behavior_logprobs=np.where(b.response_mask, np.asarray(logp),
                                              0.0).astype(np.float32))


TX = train.make_optimizer(1e-3, 0, 10)
_FIXTURE_TRAJ_ID = np.array([0, 0, 1, 2, 2, 2, 3, 0])  # random_step_batch(rows=8), by hand


@functools.lru_cache(maxsize=None)
def _compiled(cfg, mesh_shape):
  mesh = sharding.make_mesh(*mesh_shape, devices=jax.devices()[:int(np.prod(mesh_shape))])
  return mesh, train.jit_train_step(CONFIG, cfg, TX, mesh)


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
  if estimator == "stepopsd":  # trajectories of 2, 1, 3, 1 steps; 60% of tokens are control
    counts = history[0]["control_tokens_by_step"]
    assert counts.shape == (8,) and np.all(counts[:3] > 0) and not np.any(counts[3:])


def test_lambda_zero_reproduces_grpo_parameters(batch):
  grpo, _ = _run(batch, train.StepConfig(estimator="grpo"))
  opsd, history = _run(batch, train.StepConfig(estimator="stepopsd", lambda_mix=0.0))
  assert "delta_mean" in history[0]
  for a, b in zip(jax.tree.leaves(grpo.params), jax.tree.leaves(opsd.params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("estimator,budget,arranged", [
    ("grpo", "trajectory", False), ("stepopsd", "trajectory", False),
    ("stepopsd", "trajectory", True), ("stepopsd", "step", False)])
def test_micro_batches_give_the_full_batch_update(batch, estimator, budget, arranged):
  """Two micro-batches train exactly as one: StepOPSD's trajectory budget through the
  gradient-free pass when a trajectory spans both (the fixture's rows 0, 1), through each
  micro-batch's own forward when `micro.arrange` put every trajectory in one."""
  if arranged:
    batch = micro.arrange(batch, 2)
    assert not np.array_equal(batch.traj_id, _FIXTURE_TRAJ_ID)  # rows moved
  cfg = train.StepConfig(estimator=estimator, lambda_mix=0.7, credit_budget=budget)
  one, h1 = _run(batch, cfg, steps=2)
  two, h2 = _run(batch, train.StepConfig(**{**cfg.__dict__, "micro_batches": 2}), steps=2)
  keys = ["loss", "grad_norm", "pg_loss"]
  if estimator == "stepopsd":
    keys += ["weight_mean", "weight_std", "delta_mean", "adv_mean", "weight_by_step"]
  for key in keys:
    np.testing.assert_allclose(h1[-1][key], h2[-1][key], rtol=1e-5, atol=1e-7)
  for a, b in zip(jax.tree.leaves(one.params), jax.tree.leaves(two.params)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)  # Adam amplifies ulps
  if budget == "trajectory" and estimator == "stepopsd":
    assert h2[-1]["micro_whole_trajectories"] == float(arranged)


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


def _joined_groups_batch(process_1_offset: int) -> StepBatch:
  """Two processes' rows joined: each brought two 2-trajectory groups with returns (1, 0), one
  step per trajectory; process 1's trajectory and group ids moved by `process_1_offset`."""
  b = random_step_batch(CONFIG.vocab_size, rows=8, seed=3)
  local_traj, local_group = np.array([0, 1, 2, 3]), np.array([0, 0, 1, 1])
  returns, valid = np.array([1, 0, 1, 0] * 2, np.float32), np.ones(8, bool)
  last3 = lambda mask: mask | (np.arange(mask.shape[1]) >= mask.shape[1] - 3)[None]
  response_mask = b.response_mask.copy()
  response_mask[:, 0] = True  # the helper pads with invalid rows at the end: make all 8 real
  return b.replace(
      traj_id=np.concatenate([local_traj, local_traj + process_1_offset]).astype(np.int32),
      group_id=np.concatenate([local_group, local_group + process_1_offset]).astype(np.int32),
      traj_return=returns, step_reward=returns.copy(), traj_success=returns > 0,
      step_idx=np.zeros(8, np.int32), row_valid=valid, has_hindsight=valid.copy(),
      prompt_mask=last3(b.prompt_mask), teacher_prompt_mask=last3(b.teacher_prompt_mask),
      response_mask=response_mask, control_mask=b.control_mask & response_mask)


@pytest.mark.parametrize("offset", [1 << 20, 8, 4])  # the old multi-host stride; rows; dense
def test_ids_of_joined_processes_give_every_row_its_advantage(offset):
  """GRPO of (1, 0) groups is +-1/sqrt(2) on every row, whatever range process 1's ids were
  moved to (hand value: mean 0.5, unbiased std sqrt(0.5)); with ids past B the segment sums
  used to drop process 1's rows and give them A = 0."""
  b = _joined_groups_batch(offset)
  cfg = train.StepConfig(estimator="grpo")
  adv = jax.jit(lambda x: algorithms.estimate(step_lib.with_dense_ids(x), cfg)[0].adv_rows)(b)
  np.testing.assert_allclose(np.asarray(adv), [2 ** -0.5, -2 ** -0.5] * 4, rtol=1e-5)


def test_the_step_on_offset_ids_equals_the_step_on_dense_ids():
  """Parameters after StepOPSD steps on the joined batch (ids moved by 2^20) equal those on the
  same rows numbered densely by hand, and the weights stay in their clip range (they reached
  1e12 when a trajectory's budget divided by a clamped mean of 0)."""
  cfg = train.StepConfig(estimator="stepopsd", lambda_mix=0.5, alpha_clip=0.2)
  offset, dense = _run(_joined_groups_batch(1 << 20), cfg, steps=2), _run(
      _joined_groups_batch(4), cfg, steps=2)
  for a, b in zip(jax.tree.leaves(offset[0].params), jax.tree.leaves(dense[0].params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  for h in offset[1]:
    assert 0.8 - 1e-6 <= h["weight_min"] <= h["weight_max"] <= 1.2 / 0.8 + 1e-6, h


def test_micro_batches_holding_ids_past_their_rows_shape_like_one_batch():
  """The joined batch (ids moved by 2^20): 8 one-step trajectories, so every micro-batch of 4
  rows holds whole trajectories whose dense ids run up to 7 (past its 4 rows), and shapes its
  own advantages. One-step trajectories under the trajectory budget get weight 1 exactly."""
  cfg = train.StepConfig(estimator="stepopsd", lambda_mix=0.5, alpha_clip=0.2)
  b = _joined_groups_batch(1 << 20)
  one, h1 = _run(b, cfg, steps=2)
  two, h2 = _run(b, train.StepConfig(**{**cfg.__dict__, "micro_batches": 2}), steps=2)
  assert h2[-1]["micro_whole_trajectories"] == 1.0
  assert h2[-1]["weight_min"] == h2[-1]["weight_max"] == 1.0
  for a, c in zip(jax.tree.leaves(one.params), jax.tree.leaves(two.params)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(c), atol=1e-5)


@pytest.mark.parametrize("estimator", ["stepopsd", "opsd"])
def test_rows_without_hindsight_are_not_reshaped(batch, estimator):
  """No hindsight block on any row: Delta = 0, w = 1, no OPSD KL, whatever the teacher's
  weights (a frozen reference differs from the policy after one step): the update is GRPO's."""
  plain = batch.replace(has_hindsight=np.zeros_like(batch.has_hindsight))
  grpo, _ = _run(plain, train.StepConfig(estimator="grpo"), steps=2)
  cfg = train.StepConfig(estimator=estimator, teacher="reference", lambda_mix=0.5)
  state, history = _run(plain, cfg, steps=2)
  for h in history:
    if estimator == "stepopsd":
      assert h["delta_min"] == h["delta_max"] == 0 and h["weight_min"] == h["weight_max"] == 1
    else:
      assert h["opsd_loss"] == 0 and h["kl_teacher"] == 0
  for a, b in zip(jax.tree.leaves(grpo.params), jax.tree.leaves(state.params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def _unpadded_logprobs(params, prompt_row, prompt_mask_row, response_row, response_mask_row):
  """Log-probs of one row's response from a forward over its real tokens only (no padding)."""
  prompt = [int(t) for t, m in zip(prompt_row, prompt_mask_row) if m]
  response = [int(t) for t, m in zip(response_row, response_mask_row) if m]
  logits = models.logits(CONFIG, params, np.asarray([prompt + response]))[0]
  logp = jax.nn.log_softmax(logits, axis=-1)
  return np.asarray([logp[len(prompt) - 1 + k, t] for k, t in enumerate(response)])


def test_teacher_logprobs_line_up_with_the_student_tokens_after_repadding(batch):
  """The teacher prompt is longer than the student's, and a multi-host join widens both on the
  left: the [B, R] teacher log-probs are still those of each row's own response tokens."""
  params = models.init_params(CONFIG, jax.random.key(1))
  grown = batch.repad(16, batch.prompt_tokens.shape[1] + 5,
                      batch.teacher_prompt_tokens.shape[1] + 9)
  for b in (batch, grown):
    logp, _ = response_logprobs(CONFIG, params, b.teacher_prompt_tokens,
                                b.teacher_prompt_mask, b.response_tokens,
                                b.response_mask, 1.0)
    for row in np.flatnonzero(b.row_valid):
      expected = _unpadded_logprobs(params, b.teacher_prompt_tokens[row],
                                    b.teacher_prompt_mask[row], b.response_tokens[row],
                                    b.response_mask[row])
      np.testing.assert_allclose(np.asarray(logp[row])[b.response_mask[row]], expected,
                                 atol=1e-5)


def test_credit_shows_the_gap_and_the_weights_the_step_uses(batch):
  """`credit` (for inspection) gives Delta = teacher - student log-probs of each response token,
  each side recomputed here by an unpadded per-row forward, and the step's own shaping."""
  params = models.init_params(CONFIG, jax.random.key(2))
  cfg = train.StepConfig(estimator="stepopsd", lambda_mix=1.0, credit_budget="none")
  got = step_lib.credit(params, batch, config=CONFIG, cfg=cfg)
  for row in np.flatnonzero(batch.row_valid):
    teacher, student = (_unpadded_logprobs(params, getattr(batch, f"{p}_tokens")[row],
                                           getattr(batch, f"{p}_mask")[row],
                                           batch.response_tokens[row], batch.response_mask[row])
                        for p in ("teacher_prompt", "prompt"))
    np.testing.assert_allclose(np.asarray(got.delta[row])[batch.response_mask[row]],
                               teacher - student, atol=1e-5)
  # lambda 1, no budget: A^ = w A with w = clip(2 sigmoid(sign(A) Delta), 0.8, 1.2) on control
  sign = np.sign(np.asarray(got.adv_rows))[:, None]
  w = np.clip(2 / (1 + np.exp(-sign * np.asarray(got.delta))), 0.8, 1.2)
  control = batch.control_mask & batch.response_mask & batch.row_valid[:, None]
  np.testing.assert_allclose(np.asarray(got.weights)[control], w[control], rtol=1e-6)


def test_a_non_finite_update_is_skipped_inside_the_step(batch):
  """A batch whose behaviour log-probs are -inf makes the PPO ratio infinite: the step keeps the
  parameters and the optimizer state as they were and reports the skip; the next good batch
  updates normally."""
  cfg = train.StepConfig(estimator="grpo")
  mesh, step = _compiled(cfg, (1, 1, 1))
  state = train.init_state(CONFIG, jax.random.key(0), TX, mesh)
  before = jax.device_get(state)
  bad = batch.replace(behavior_logprobs=np.where(batch.response_mask, -np.inf, 0.0).astype(
      np.float32))
  state, metrics = step(state, bad, jax.random.key(0))
  assert metrics["skipped_update"] == 1 and not np.isfinite(metrics["loss"])
  after = jax.device_get(state)
  for a, b in zip(jax.tree.leaves((before.params, before.opt_state)),
                  jax.tree.leaves((after.params, after.opt_state))):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert int(after.step) == 1  # the step counter still moves: it counts batches seen
  state, metrics = step(state, batch, jax.random.key(1))
  assert metrics["skipped_update"] == 0
  assert any(not np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(
      jax.tree.leaves(before.params), jax.tree.leaves(jax.device_get(state).params)))


def test_weight_stats_where_the_weight_acts_leave_out_zero_advantage_tokens():
  """Two control tokens with A != 0 (w = 1.2 and 0.8: std 0.2 by hand) and two of a group
  whose advantage is 0 (w = 1): over all four the std is sqrt(0.02) = 0.1414."""
  b = jax.tree.map(lambda x: x[:4], random_step_batch(CONFIG.vocab_size, rows=8, response=2))
  b = b.replace(row_valid=np.ones(4, bool), response_mask=np.ones((4, 2), bool), control_mask=np.asarray([[1, 0]] * 4, bool),
                step_idx=np.zeros(4, np.int32), traj_success=np.asarray([1, 0, 1, 1], bool))
  adv = np.asarray([[0.7, 0.7], [-0.7, -0.7], [0, 0], [0, 0]], np.float32)
  w = np.asarray([[1.2, 1], [0.8, 1], [1, 1], [1, 1]], np.float32)
  targets = algorithms.Targets(adv_tokens=adv, delta=np.zeros_like(adv), weights=w)
  m = {k: float(v) for k, v in step_lib.step_metrics(b, targets, 1).items() if np.ndim(v) == 0}
  assert m["weight_acting_std"] == pytest.approx(0.2)
  assert m["weight_std"] == pytest.approx(np.sqrt(0.02))
  assert m["acting_control_frac"] == pytest.approx(0.5)
