"""Checkpointer: sharded round trips across meshes, keep-N, host state, errors, SIGTERM."""

import os
import signal

import grain
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from stepopsd_jax import models, sharding, train
from stepopsd_jax.train.checkpoint import Checkpointer, CheckpointError


@pytest.fixture(scope="module")
def setup():
  """A tiny TrainState (ref_params None, EMA kept), Adam moments non-zero, on a 1-device mesh."""
  config = models.get_preset("qwen3_tiny")
  tx = train.make_optimizer(1e-3, 0, 10)
  mesh = sharding.make_mesh(devices=jax.devices()[:1])
  rng = np.random.default_rng(0)
  params = jax.tree.map(lambda s: rng.standard_normal(s.shape).astype(s.dtype),
                        models.param_shapes(config))
  state = train.create_state(config, params, tx, mesh, keep_ema=True)
  opt_state = jax.tree.map(lambda x: x + 1, state.opt_state)  # eager: no compile to wait for
  state = state.replace(step=state.step + 1, opt_state=opt_state)
  assert state.ref_params is None
  return config, tx, state


def _abstract(config, tx, state, mesh):
  shardings = train.state_shardings(config, tx, mesh, False, True)
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                      jax.eval_shape(lambda: state), shardings)


def _small(value: float = 1.0):
  sh = NamedSharding(jax.make_mesh((8,), ("x",)), P("x"))
  return {"w": jax.device_put(jnp.arange(8.0) * value, sh), "none": None}


def _small_abstract():
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
                      _small())


def test_round_trip_into_a_different_mesh(setup, tmp_path):
  config, tx, state = setup
  iterator = iter(grain.MapDataset.range(10).shuffle(seed=0).to_iter_dataset())
  _ = [next(iterator) for _ in range(3)]
  extra = {"rng": np.asarray(jax.random.key_data(jax.random.key(7))), "episodes": np.int64(12),
           "data": iterator.get_state(), "blob": b"\x00\xffabc", "pair": (1, 2.5)}
  ckpt = Checkpointer(str(tmp_path), every=1, keep=2)
  assert ckpt.save(1, state, extra)
  ckpt.close()
  upcoming = [next(iterator) for _ in range(4)]

  mesh = sharding.make_mesh(2, 2, 2)
  abstract = _abstract(config, tx, state, mesh)
  with Checkpointer(str(tmp_path), every=1, keep=2) as ckpt:
    restored, got, step = ckpt.restore_latest(abstract)
  assert step == 1 and restored.ref_params is None
  want = jax.tree_util.tree_leaves_with_path(state)
  have = jax.tree_util.tree_leaves_with_path(restored)
  assert [p for p, _ in have] == [p for p, _ in want]
  for (path, a), b, s in zip(want, jax.tree.leaves(restored), jax.tree.leaves(abstract)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=str(path))
    assert b.sharding == s.sharding, path
  assert any(len(x.sharding.device_set) == 8 and not x.sharding.is_fully_replicated
             for x in jax.tree.leaves(restored))
  assert np.asarray(restored.opt_state[1][0].mu["embed_tokens"]).any()  # Adam moments came back

  assert got["rng"] == extra["rng"].tolist() and got["episodes"] == 12
  assert got["blob"] == b"\x00\xffabc" and got["pair"] == [1, 2.5]
  resumed = iter(grain.MapDataset.range(10).shuffle(seed=0).to_iter_dataset())
  resumed.set_state(got["data"])
  assert [next(resumed) for _ in range(4)] == upcoming


def test_every_keep_and_donation_after_async_save(tmp_path):
  ckpt = Checkpointer(str(tmp_path), every=2, keep=2, async_save=True)
  saved = []
  for step in range(7):
    state = _small(step)
    saved.append(ckpt.save(step, state, {"step": step}))
    jax.tree.map(lambda x: x.delete(), state)  # as if donated to the next train step
  assert saved == [True, False, True, False, True, False, True]
  assert ckpt.save(7, _small(7.0), {}, force=True)
  assert not ckpt.save(7, _small(7.0), {}, force=True)  # already there
  ckpt.wait()
  assert ckpt.all_steps() == [6, 7]
  state, extra, step = ckpt.restore_latest(_small_abstract())
  assert step == 7 and extra == {} and state["none"] is None
  np.testing.assert_array_equal(np.asarray(state["w"]), np.arange(8.0) * 7)
  state, extra = ckpt.restore(6, _small_abstract())
  assert extra == {"step": 6}
  np.testing.assert_array_equal(np.asarray(state["w"]), np.arange(8.0) * 6)
  ckpt.close()
  with pytest.raises(ValueError, match="every=0"):
    Checkpointer(str(tmp_path), every=0, keep=1)


def test_empty_directory_restores_none(tmp_path):
  with Checkpointer(str(tmp_path / "ckpt"), every=1, keep=1, async_save=False) as ckpt:
    assert ckpt.restore_latest(_small_abstract()) is None


def test_corrupt_checkpoint_names_the_path_and_the_fix(tmp_path, caplog):
  """A corrupt latest step is skipped with a warning; restoring it directly, or a directory with
  no complete step, is an error naming the path and the fix."""
  ckpt = Checkpointer(str(tmp_path), every=1, keep=3, async_save=False)
  ckpt.save(2, _small(2.0), {})
  os.makedirs(tmp_path / "4")  # orbax still lists an empty step directory as the latest
  with pytest.raises(CheckpointError, match=r"(?s)4/state is missing.*Delete .*/4 to resume "
                                            r"from step 2.*resume=False"):
    ckpt.restore(4, _small_abstract())
  state, _, step = ckpt.restore_latest(_small_abstract())
  assert step == 2 and ckpt.skipped == {4: f"{tmp_path / '4' / 'state'} is missing"}
  np.testing.assert_array_equal(np.asarray(state["w"]), np.arange(8.0) * 2)
  assert any(r.levelname == "WARNING" and f"Skipping checkpoint {tmp_path / '4'}" in r.message
             and "trying step 2" in r.message for r in caplog.records)
  os.rmdir(tmp_path / "4")
  for root, _, files in os.walk(tmp_path / "2" / "state"):
    for name in files:
      if os.path.basename(root) == "d":
        with open(os.path.join(root, name), "wb") as f:
          f.write(b"garbage")
  with pytest.raises(CheckpointError, match=r"(?s)2 is incomplete or corrupt.*start from scratch"):
    ckpt.restore(2, _small_abstract())
  with pytest.raises(CheckpointError, match=r"Every checkpoint in .* is incomplete or corrupt "
                                            r"\(steps 2;.*resume=False"):
    ckpt.restore_latest(_small_abstract())
  ckpt.close()


def test_mismatched_state_is_an_error_not_a_silent_drop(tmp_path):
  with Checkpointer(str(tmp_path), every=1, keep=1, async_save=False) as ckpt:
    ckpt.save(1, _small(), {})
    abstract = _small_abstract()
    more = {**abstract, "none": abstract["w"]}  # orbax alone would hand back None here
    with pytest.raises(CheckpointError, match="none: not in the checkpoint"):
      ckpt.restore_latest(more)
    with pytest.raises(CheckpointError, match="w: in the checkpoint but not in the state"):
      ckpt.restore_latest({"w": None, "none": None})
    short = {"w": jax.ShapeDtypeStruct((4,), jnp.float32, sharding=abstract["w"].sharding)}
    with pytest.raises(CheckpointError, match=r"w: saved float32\[8\], wanted float32\[4\]"):
      ckpt.restore_latest({**short, "none": None})
    with pytest.raises(ValueError, match="w has no sharding"):
      ckpt.restore_latest({"w": jax.ShapeDtypeStruct((8,), jnp.float32), "none": None})


def test_sigterm_sets_the_flag_and_close_restores_the_handler(tmp_path):
  original = signal.getsignal(signal.SIGTERM)
  previous = lambda signum, frame: None  # noqa: E731
  signal.signal(signal.SIGTERM, previous)
  try:
    calls = []
    ckpt = Checkpointer(str(tmp_path), every=1, keep=1)
    ckpt.install_sigterm_handler(lambda: calls.append(1))
    assert not ckpt.should_stop()
    os.kill(os.getpid(), signal.SIGTERM)
    assert ckpt.should_stop() and calls == [1]
    ckpt.close()
    assert signal.getsignal(signal.SIGTERM) is previous
  finally:
    signal.signal(signal.SIGTERM, original)
