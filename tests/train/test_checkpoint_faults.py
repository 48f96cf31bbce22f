"""Checkpoint faults: a truncated file of the latest step, a save killed mid-write, a full disk,
a workdir made read-only. Each keeps the last complete checkpoint and says so."""

import contextlib
import os
import shutil
import subprocess
import threading
import time
import uuid

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from stepopsd_jax.train.checkpoint import FILE_SIZES, Checkpointer, CheckpointError

UNRECORDED = {"_CHECKPOINT_METADATA", "commit_success.txt"}  # not needed by a restore
# A restore that fails part way leaves orbax's read coroutines never awaited (harmless noise).
orbax_leftovers = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


def _state(value: float):
  sh = NamedSharding(jax.make_mesh((8,), ("x",)), P("x"))
  return {"w": jax.device_put(jnp.arange(64.0) * value, sh),
          "b": jax.device_put(jnp.full((8,), value, jnp.bfloat16), sh), "none": None}


def _abstract():
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
                      _state(0.0))


def _assert_is_step(state, extra, value):
  """The arrays and host state saved at `value` (built here from numpy, not from `_state`)."""
  np.testing.assert_array_equal(np.asarray(state["w"]), np.arange(64.0, dtype=np.float32) * value)
  np.testing.assert_array_equal(np.asarray(state["b"], np.float32), np.full(8, value, np.float32))
  assert state["none"] is None and extra == {"value": value}


def _saved(directory, steps, keep=3):
  with Checkpointer(str(directory), every=1, keep=keep) as ckpt:
    for step in steps:
      ckpt.save(step, _state(float(step)), {"value": float(step)})
  return directory


def _step_files(step_dir):
  return sorted(os.path.relpath(os.path.join(root, name), step_dir)
                for root, _, names in os.walk(step_dir) for name in names)


@pytest.fixture(scope="module")
def three_steps(tmp_path_factory):
  return _saved(tmp_path_factory.mktemp("saved"), [1, 2, 3])


@orbax_leftovers
def test_a_truncated_file_of_the_latest_step_falls_back_to_the_previous(three_steps, tmp_path,
                                                                         caplog):
  """Every file a restore relies on, truncated to half in step 3: step 2 comes back, and the
  warning names step 3 and the file. Some of these truncations orbax restores without an error
  (merged per-process OCDBT files): only the size record written at save time catches them."""
  files = [f for f in _step_files(three_steps / "3") if f not in UNRECORDED]
  assert FILE_SIZES in files and any("ocdbt.process_0" in f for f in files) and len(files) >= 10
  for name in files:
    work = tmp_path / name.replace("/", "_")
    shutil.copytree(three_steps, work)
    path = work / "3" / name
    os.truncate(path, os.path.getsize(path) // 2)
    caplog.clear()
    with Checkpointer(str(work), every=1, keep=3) as ckpt:
      state, extra, step = ckpt.restore_latest(_abstract())
      assert step == 2 and list(ckpt.skipped) == [3], name
      _assert_is_step(state, extra, 2.0)
    warnings = [r.message for r in caplog.records if r.levelname == "WARNING"
                and r.message.startswith(f"Skipping checkpoint {work / '3'}:")]
    assert len(warnings) == 1 and "trying step 2" in warnings[0], (name, warnings)
    if name != FILE_SIZES:
      assert f"{path} has {os.path.getsize(path)} bytes" in warnings[0], (name, warnings)


@orbax_leftovers
def test_garbage_of_the_same_size_never_restores_wrong_data(three_steps, tmp_path):
  """Random bytes over any one file of step 3, size kept (the size record cannot see it): the
  restore reads it and fails, so step 2 comes back, or never reads it and step 3 comes back
  exactly as saved. The files a restore reads must be caught."""
  rng = np.random.default_rng(0)
  fell_back = set()
  for name in _step_files(three_steps / "3"):
    work = tmp_path / name.replace("/", "_")
    shutil.copytree(three_steps, work)
    path = work / "3" / name
    path.write_bytes(rng.integers(0, 256, os.path.getsize(path), dtype=np.uint8).tobytes())
    with Checkpointer(str(work), every=1, keep=3) as ckpt:
      state, extra, step = ckpt.restore_latest(_abstract())
    _assert_is_step(state, extra, float(step))
    if step == 2:
      fell_back.add(name)
  read = {"extra/metadata", "state/_METADATA", "state/manifest.ocdbt", FILE_SIZES}
  assert read <= fell_back and any(n.startswith("state/d/") for n in fell_back), fell_back


def test_saving_a_skipped_step_again_replaces_it(three_steps, tmp_path):
  work = shutil.copytree(three_steps, tmp_path / "work")
  path = work / "3" / "extra" / "metadata"
  os.truncate(path, 1)
  with Checkpointer(str(work), every=1, keep=3) as ckpt:
    assert ckpt.restore_latest(_abstract())[2] == 2
    assert ckpt.save(3, _state(30.0), {"value": 30.0})
  with Checkpointer(str(work), every=1, keep=3) as ckpt:
    state, extra, step = ckpt.restore_latest(_abstract())
  assert step == 3 and not ckpt.skipped
  _assert_is_step(state, extra, 30.0)


def test_a_save_killed_mid_write_is_never_a_step_and_only_a_writer_removes_it(three_steps,
                                                                               tmp_path):
  """A kill -9 during a save leaves `4.orbax-checkpoint-tmp`: restores ignore it, a reader (e.g.
  `evaluate` next to a running trainer, whose save may be in flight) leaves it alone, and the
  first save of a writer removes it."""
  work = shutil.copytree(three_steps, tmp_path / "work")
  partial = work / "4.orbax-checkpoint-tmp"
  shutil.copytree(work / "3", partial)
  os.truncate(partial / "extra" / "metadata", 1)
  with Checkpointer(str(work), every=1, keep=3) as reader:
    state, extra, step = reader.restore_latest(_abstract())
    assert step == 3 and reader.all_steps() == [1, 2, 3]
    _assert_is_step(state, extra, 3.0)
  assert partial.exists()
  with Checkpointer(str(work), every=1, keep=3) as writer:
    writer.save(4, _state(4.0), {"value": 4.0})
  assert not partial.exists() and sorted(os.listdir(work)) == ["2", "3", "4"]


# A save that cannot write.


@contextlib.contextmanager
def _tiny_tmpfs(path, size="2m"):
  """A small tmpfs at `path` (needs root with CAP_SYS_ADMIN: skipped otherwise)."""
  os.makedirs(path)
  mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                           capture_output=True, check=False)
  if mounted.returncode:
    pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
  try:
    yield path
  finally:
    subprocess.run(["umount", "-l", str(path)], check=False)


def _fill(directory):
  """Writes a file until the disk is full; returns its path."""
  filler = os.path.join(directory, "filler")
  fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
  try:
    while True:
      os.write(fd, b"\0" * 65536)
  except OSError:
    pass
  try:  # a last partial block
    while True:
      os.write(fd, b"\0" * 512)
  except OSError:
    pass
  os.close(fd)
  return filler


@contextlib.contextmanager
def _read_only(path):
  """`path` made unwritable: chmod for a normal user; root ignores modes, so `chattr +i`."""
  probe = os.path.join(path, f"probe-{uuid.uuid4().hex}")
  root = os.geteuid() == 0
  if root:
    made = subprocess.run(["chattr", "+i", str(path)], capture_output=True, check=False)
    if made.returncode:
      pytest.skip(f"root cannot make {path} read-only here: {made.stderr.decode().strip()}")
  else:
    os.chmod(path, 0o555)
  try:
    with pytest.raises(OSError):
      open(probe, "w").close()  # pylint: disable=consider-using-with
    yield path
  finally:
    if root:
      subprocess.run(["chattr", "-i", str(path)], check=False)
    else:
      os.chmod(path, 0o755)


@pytest.mark.parametrize("async_save", [True, False])
def test_a_full_disk_keeps_the_previous_checkpoint_and_names_the_path(tmp_path, async_save):
  """keep=1, so that step 1 would be the one orbax deletes once step 2 is in."""
  with _tiny_tmpfs(tmp_path / "disk") as disk:
    directory = disk / "checkpoints"
    ckpt = Checkpointer(str(directory), every=1, keep=1, async_save=async_save)
    ckpt.save(1, _state(1.0), {"value": 1.0})
    ckpt.wait()
    filler = _fill(disk)
    with pytest.raises(CheckpointError) as error:
      ckpt.save(2, _state(2.0), {"value": 2.0})
      ckpt.wait()
    message = str(error.value)
    assert message.startswith(f"Saving checkpoint {directory / '2'} failed (")
    assert "No space left on device" in message and "\n" not in message
    assert f"the previous checkpoint {directory / '1'} is intact" in message
    assert "Free space on the disk of" in message
    assert ckpt.all_steps() == [1]
    os.remove(filler)
    ckpt.save(3, _state(3.0), {"value": 3.0})  # room again: the next save works
    ckpt.close()
    with Checkpointer(str(directory), every=1, keep=1) as reader:
      assert reader.all_steps() == [3]
      _assert_is_step(*reader.restore_latest(_abstract())[:2], 3.0)


def test_a_full_disk_then_a_restart_resumes_from_the_previous_checkpoint(tmp_path):
  with _tiny_tmpfs(tmp_path / "disk") as disk:
    directory = disk / "checkpoints"
    ckpt = Checkpointer(str(directory), every=1, keep=1)
    ckpt.save(1, _state(1.0), {"value": 1.0})
    ckpt.wait()
    _fill(disk)
    ckpt.save(2, _state(2.0), {"value": 2.0})
    with pytest.raises(CheckpointError, match="No space left on device"):
      ckpt.close()  # the trainer's last call
    with Checkpointer(str(directory), every=1, keep=1) as restarted:  # disk still full
      state, extra, step = restarted.restore_latest(_abstract())
    assert step == 1
    _assert_is_step(state, extra, 1.0)


def _new_threads_left(before, grace_s=5.0):
  """Non-daemon threads started since `before` still alive after `grace_s` (they would hold the
  process at exit)."""
  deadline = time.monotonic() + grace_s
  while True:
    left = [t.name for t in threading.enumerate() if t not in before and not t.daemon]
    if not left or time.monotonic() > deadline:
      return left
    time.sleep(0.05)


def test_a_workdir_made_read_only_keeps_the_previous_checkpoint_and_names_the_path(tmp_path):
  """Also: the failed save leaves no writer thread behind (orbax's, waiting 300 s for a step
  directory that was never made, kept the process from exiting)."""
  before = set(threading.enumerate())
  directory = tmp_path / "checkpoints"
  ckpt = Checkpointer(str(directory), every=1, keep=1)
  ckpt.save(1, _state(1.0), {"value": 1.0})
  ckpt.wait()
  with _read_only(directory):
    with pytest.raises(CheckpointError) as error:
      ckpt.save(2, _state(2.0), {"value": 2.0})
      ckpt.wait()
  message = str(error.value)
  assert message.startswith(f"Saving checkpoint {directory / '2'} failed (")
  assert ("Permission denied" in message or "Operation not permitted" in message), message
  assert f"the previous checkpoint {directory / '1'} is intact" in message
  assert "make it writable" in message and "\n" not in message
  ckpt.close()
  assert not _new_threads_left(before)
  with Checkpointer(str(directory), every=1, keep=1) as reader:
    state, extra, step = reader.restore_latest(_abstract())
  assert step == 1 and sorted(os.listdir(directory)) == ["1"]
  _assert_is_step(state, extra, 1.0)
