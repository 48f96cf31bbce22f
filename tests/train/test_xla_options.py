"""The training step's XLA options: applied on CPU, a user's XLA_FLAGS win, unknown ones dropped."""

import jax

from stepopsd_jax import models, sharding, train
from stepopsd_jax.batch import StepBatch
from stepopsd_jax.train import xla_options
from tests.train.batches import random_step_batch

CONFIG = models.get_preset("qwen3_tiny", vocab_size=128, num_layers=1)


def _mesh():
  return sharding.make_mesh(devices=jax.devices()[:1])


def test_cpu_step_turns_ynn_fusions_off(monkeypatch):
  monkeypatch.delenv("XLA_FLAGS", raising=False)
  assert xla_options.train_step_options(_mesh()) == {
      "xla_cpu_experimental_ynn_fusion_type": ""}


def test_the_users_xla_flags_win(monkeypatch):
  monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_experimental_ynn_fusion_type=dot")
  assert xla_options.train_step_options(_mesh()) is None


def test_an_option_this_xla_does_not_know_is_dropped(monkeypatch):
  monkeypatch.delenv("XLA_FLAGS", raising=False)
  monkeypatch.setattr(xla_options, "CPU_TRAIN_STEP", {"xla_cpu_no_such_option_here": "1"})
  assert xla_options.train_step_options(_mesh()) is None


def test_the_compiled_step_has_no_ynn_fusion(monkeypatch):
  monkeypatch.delenv("XLA_FLAGS", raising=False)
  mesh, tx = _mesh(), train.make_optimizer(1e-3, 0, 10)
  step = train.jit_train_step(CONFIG, train.StepConfig(estimator="grpo"), tx, mesh)
  batch = jax.device_put(random_step_batch(CONFIG.vocab_size, rows=8), StepBatch.shardings(mesh))
  state = train.init_state(CONFIG, jax.random.key(0), tx, mesh)
  hlo = step.lower(state, batch, jax.random.key(0)).compile().as_text()
  assert "%dot" in hlo and "%ynn_fusion" not in hlo  # instruction names, not metadata
