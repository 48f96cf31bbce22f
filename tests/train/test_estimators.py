"""Every `algo.estimator` through the trainer and the real jitted step; the critic; resume.

Compiles are what cost here, so each estimator compiles its step once: the trainer's run on the
credit lab and the fixed random batch share it (one batch bucket and one prompt bucket pin the
StepBatch shapes to those of `random_step_batch(rows=8, prompt=256, teacher=256, response=8)`).
"""

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stepopsd_jax import algorithms, models, sharding, train
from stepopsd_jax.run import setup as setup_lib
from stepopsd_jax.run import trainer
from stepopsd_jax.train import value_model as critic
from stepopsd_jax.train.checkpoint import Checkpointer, CheckpointError
from tests.run.test_trainer import _config, _train_lines
from tests.train.batches import random_step_batch

# Metrics each estimator reports besides the common ones (loss, pg_loss, adv_*, ...).
OWN_METRICS = {
    "stepopsd": ("delta_mean", "weight_mean"),
    "gigpo": ("gigpo/anchor_group_size_mean", "gigpo/anchor_singleton_row_frac"),
    "ppo": ("value_loss", "value_clip_frac", "explained_variance", "value_mean"),
    "steppo": ("value_loss", "value_clip_frac", "explained_variance", "value_mean"),
    "opsd": ("kl_teacher", "opsd_loss"),
}
# 2 tasks x 2 rollouts of <= 2 steps: <= 8 rows, one batch bucket, one prompt bucket.
PINNED_SHAPES = {"rollout.batch_size": "4", "rollout.group_size": "2",
                 "rollout.batch_buckets": "(8,)", "rollout.prompt_buckets": "(256,)",
                 "train.sft_steps": "0"}


def _estimator_config(estimator: str, num_steps: int):
  return _config(**PINNED_SHAPES, **{"algo.estimator": estimator,
                                     "train.num_steps": str(num_steps)})


def _changed(before, after) -> bool:
  return any(not np.array_equal(np.asarray(a), np.asarray(b))
             for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after)))


def _reads(step_fn, args, field: str) -> bool:
  """Whether the traced step reads `batch[field]` at all (a skipped forward never does)."""
  jaxpr = step_fn.trace(*args).jaxpr.jaxpr
  paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(args)[0]]
  var = jaxpr.invars[paths.index(f"[1].{field}")]
  return any(var is v for eqn in jaxpr.eqns for v in eqn.invars) or var in jaxpr.outvars


def _trainer_step(config):
  """(setup, fresh state, the trainer's compiled step, a random batch of its shapes)."""
  setup, params = setup_lib.build(config, jax.random.key(0))
  state = setup.create_state(params)
  teacher = 256 if setup.step_cfg.needs_teacher else 0  # the rollout builds none otherwise
  batch = random_step_batch(setup.model_config.vocab_size, rows=8, prompt=256, teacher=teacher,
                            response=config.rollout.max_new_tokens)
  step = train.jit_train_step(setup.model_config, setup.step_cfg, setup.tx, setup.mesh,
                              setup.critic_tx)
  return setup, state, step, batch


def _steps(step, state, batch, keys):
  history = []
  for i in keys:
    state, metrics = step(state, batch, jax.random.key(i))
    history.append(jax.device_get(metrics))
  return state, history


def _assert_resume_repeats_the_step(setup, step, saved, batch, want, directory):
  """Restoring `saved` from a checkpoint (the trainer's abstract state) and stepping gives the
  metrics `want` that stepping it gave."""
  no_critic = train.abstract_state(setup.model_config, setup.tx, setup.mesh)
  with Checkpointer(str(directory), every=1, keep=1) as ckpt:
    restored, _, _ = ckpt.restore_latest(setup.abstract_state())
    with pytest.raises(CheckpointError, match="critic_"):
      ckpt.restore_latest(no_critic)  # without the critic: an error, not a silent drop
  assert not _changed(saved, restored)
  _, got = _steps(step, restored, batch, [2])
  assert got[0].keys() == want.keys()
  for key, value in want.items():
    np.testing.assert_array_equal(got[0][key], value, err_msg=key)


@pytest.mark.parametrize("estimator", algorithms.ESTIMATORS)
def test_each_estimator_trains_the_credit_lab_and_a_random_batch(estimator, tmp_path):
  config = _estimator_config(estimator, num_steps=2)
  final = trainer.run(config, str(tmp_path / "run"))
  lines = [l for l in _train_lines(tmp_path / "run") if any(k.startswith("train/") for k in l)]
  assert [l["step"] for l in lines] == [1, 2]
  for line in lines:
    assert all(v is not None and np.isfinite(v) for v in line.values()), line  # null = NaN
    assert all(f"train/{key}" in line for key in OWN_METRICS.get(estimator, ())), line
  evals = json.loads((tmp_path / "run" / "eval.json").read_text())
  assert "success" in final and evals[-1]["step"] == 2

  # Three steps of the same compiled step on a fixed batch (resuming before the third).
  setup, state, step, batch = _trainer_step(config)
  uses_critic = estimator in ("ppo", "steppo")
  assert _reads(step, (state, batch, jax.random.key(0)), "teacher_prompt_tokens") == (
      estimator in ("stepopsd", "opsd"))
  initial = jax.device_get(state)
  assert (initial.critic_params is None) == (initial.critic_opt_state is None) != uses_critic
  state, history = _steps(step, state, batch, [0, 1])
  saved = jax.device_get(state)
  if uses_critic:
    with Checkpointer(str(tmp_path / "ckpt"), every=1, keep=1) as ckpt:
      ckpt.save(2, state)
  state, last = _steps(step, state, batch, [2])
  history += last
  assert all(np.isfinite(v).all() for h in history for v in h.values()), history
  assert history[0]["grad_norm"] > 0 and _changed(initial.params, state.params)
  if uses_critic:
    assert _changed(initial.critic_params, state.critic_params)
    assert history[0]["value_mean"] == 0 < history[0]["value_loss"]  # the head starts at zero
    assert history[-1]["value_loss"] < history[0]["value_loss"]
    _assert_resume_repeats_the_step(setup, step, saved, batch, history[-1], tmp_path / "ckpt")
  else:
    assert state.critic_params is None and "value_loss" not in history[-1]


# Cheap checks: a 1-layer model, abstract shapes or one small compiled function.
CONFIG = models.get_preset("qwen3_tiny", vocab_size=128, num_layers=1)
TX = train.make_optimizer(1e-3, 0, 10)
CRITIC_TX = train.make_optimizer(1e-2, 0, 10)


def test_critic_is_sharded_like_the_policy_without_lm_head():
  untied = models.get_preset("qwen2_tiny", vocab_size=128)
  assert not untied.tie_embeddings
  mesh = sharding.make_mesh(2, 2, 2)
  shardings = train.state_shardings(untied, TX, mesh, False, False, critic_tx=CRITIC_TX)
  backbone = shardings.critic_params["backbone"]
  assert set(backbone) == set(shardings.params) - {"lm_head"}
  for key in backbone:
    assert jax.tree.leaves(backbone[key]) == jax.tree.leaves(shardings.params[key]), key
  state = jax.eval_shape(lambda: train.init_state(untied, jax.random.key(0), TX, mesh,
                                                  critic_tx=CRITIC_TX))
  assert state.critic_params["head"]["w"].shape == (untied.hidden_size,)
  assert jax.tree.structure(state.critic_opt_state) == jax.tree.structure(
      shardings.critic_opt_state)
  assert train.state_shardings(untied, TX, mesh, False, False).critic_params is None


def test_critic_starts_as_the_policy_backbone_with_a_zero_head():
  params = models.param_shapes(CONFIG)
  c = critic.init_critic(CONFIG, params)
  assert jax.tree.leaves(c["backbone"]) == jax.tree.leaves(params)  # the jitted init copies
  assert not np.asarray(c["head"]["w"]).any() and float(c["head"]["b"]) == 0.0


def test_step_value_is_read_before_the_action():
  """V(step) is the value at the last prompt token, which is also where the per-token values
  start (the state before the first response token): causal attention makes them equal."""
  c = critic.init_critic(CONFIG, models.init_params(CONFIG, jax.random.key(1)))
  c["head"] = {"w": jax.random.normal(jax.random.key(2), (CONFIG.hidden_size,)), "b": 0.5}
  batch = random_step_batch(CONFIG.vocab_size, rows=8)
  values = jax.jit(functools.partial(critic.values, CONFIG), static_argnames="per_token")
  step_v, token_v = values(c, batch, per_token=False), values(c, batch, per_token=True)
  assert step_v.shape == (8,) and token_v.shape == batch.response_tokens.shape
  valid = batch.row_valid
  np.testing.assert_allclose(np.asarray(token_v)[valid, 0], np.asarray(step_v)[valid],
                             rtol=1e-5, atol=1e-5)
  assert np.ptp(np.asarray(token_v)[valid]) > 0  # not a constant


@functools.lru_cache(maxsize=None)
def _critic_update(cfg):
  """critic.update jitted alone, its targets from the values of `anchor` (rollout-time) params."""
  def update(state, batch, anchor):
    old = critic.values(CONFIG, anchor, batch, per_token=cfg.estimator == "ppo")
    targets, _ = algorithms.estimate(batch, cfg, old)
    totals = {"num_tokens": jnp.sum(batch.response_mask & batch.row_valid[:, None]),
              "num_rows": jnp.sum(batch.row_valid)}
    params, opt_state, _, metrics = critic.update(state, batch, targets, CONFIG, cfg, CRITIC_TX,
                                                  totals)
    return state.replace(critic_params=params, critic_opt_state=opt_state), metrics
  return jax.jit(update)


def test_critic_micro_batches_give_the_full_batch_update():
  batch = random_step_batch(CONFIG.vocab_size, rows=8)
  mesh = sharding.make_mesh(devices=jax.devices()[:1])
  results = []
  for n in (1, 2):
    cfg = train.StepConfig(estimator="ppo", micro_batches=n)
    state = train.init_state(CONFIG, jax.random.key(0), TX, mesh, critic_tx=CRITIC_TX)
    anchor = jax.device_get(state.critic_params)
    state, _ = _critic_update(cfg)(state, batch, anchor)
    results.append(_critic_update(cfg)(state, batch, anchor))  # V has moved off the anchor
  (one, m1), (two, m2) = results
  for key in ("value_loss", "value_clip_frac", "value_grad_norm", "explained_variance"):
    np.testing.assert_allclose(m2[key], m1[key], rtol=1e-5, atol=1e-7, err_msg=key)
  # The micro-batch sums add the rows in another order; Adam divides each gradient by its own
  # running scale, so a parameter whose gradient is ~0 can move by a rounding-sized fraction of
  # a full step (lr 1e-2): 1e-4 is 1% of one step.
  for a, b in zip(jax.tree.leaves(one.critic_params), jax.tree.leaves(two.critic_params)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-4)


def test_bad_estimator_and_knobs_name_the_key():
  with pytest.raises(ValueError, match="algo.estimator='a2c'"):
    train.StepConfig(estimator="a2c")
  with pytest.raises(ValueError, match="algo.opsd_kl"):
    train.StepConfig(estimator="opsd", opsd_kl="k4")
  with pytest.raises(ValueError, match="needs critic"):
    train.jit_train_step(CONFIG, train.StepConfig(estimator="ppo"), TX,
                         sharding.make_mesh(devices=jax.devices()[:1]))
  for estimator, (teacher, has_critic) in {"grpo": (False, False), "stepopsd": (True, False),
                                           "opsd": (True, False), "ppo": (False, True),
                                           "steppo": (False, True), "gigpo": (False, False)
                                           }.items():
    cfg = train.StepConfig(estimator=estimator)
    assert (cfg.needs_teacher, cfg.needs_critic) == (teacher, has_critic), estimator
