"""Checkpoints: the train state and the host-side loop state in one orbax step directory.

`Checkpointer` wraps an orbax `CheckpointManager` with two items per step, written atomically
together: `state` (the TrainState pytree, StandardSave, sharded arrays written by every process)
and `extra` (JSON: RNG key data, the grain iterator state, the trainer's counters). Restores go
straight into the shardings of an abstract state, which may be a different mesh than the save.

orbax 0.12.8 facts this module works around (checked, see tests/train/test_checkpoint.py):
  * `None` fields save fine (as "skip" leaves), but a restore whose structure differs from the
    save silently drops or invents fields (a saved array restored into `None` vanishes; an array
    requested where `None` was saved comes back `None`), so the structure, shapes and dtypes are
    compared with the saved metadata first and a mismatch is an error.
  * An empty or half-deleted step directory still counts as a step (`latest_step()` returns it)
    and restoring it fails with a bare KeyError; it is reported with its path and the fix.
  * A manager built with only `item_names` cannot read item metadata of a checkpoint it did not
    write itself (it logs a warning and returns None), so the handlers are registered up front.
  * The step list is cached when the manager is built; `restore_latest` reloads it.
  * An async save copies device arrays to host before `save` returns, so the state may be
    donated to the next train step right away.
"""

from __future__ import annotations

import base64
import logging
import os
import signal
import threading
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

_BYTES_TAG = "__bytes_b64__"
_RESUME_HINT = "--config.train.resume=False"


class CheckpointError(RuntimeError):
  """A checkpoint that cannot be restored; the message names the directory and the fix."""


class Checkpointer:
  """Saves every `every` steps (or when forced), keeps the newest `keep`, restores the latest."""

  def __init__(self, directory: str, *, every: int, keep: int, async_save: bool = True):
    if every < 1 or keep < 1:
      raise ValueError(f"Checkpointer: every={every} and keep={keep} must both be >= 1.")
    self.every = every
    self.directory = epath.Path(directory if "://" in directory else os.path.abspath(directory))
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                           cleanup_tmp_directories=True,
                                           enable_async_checkpointing=async_save)
    # Handlers up front: with bare item_names a fresh manager cannot read item metadata.
    handlers = {"state": ocp.StandardCheckpointHandler(), "extra": ocp.JsonCheckpointHandler()}
    self._manager = ocp.CheckpointManager(self.directory, options=options,
                                          item_handlers=handlers)
    self._stop = threading.Event()
    self._restore_handler: Callable[[], None] | None = None
    self._closed = False

  # Saving.

  def save(self, step: int, state: Any, extra: dict[str, Any] | None = None, *,
           force: bool = False) -> bool:
    """Starts a save of `state` and `extra` at `step`; False when skipped (interval or exists)."""
    if not force and step % self.every:
      return False
    if step in self._manager.all_steps():
      return False
    args = ocp.args.Composite(state=ocp.args.StandardSave(state),
                              extra=ocp.args.JsonSave(to_json(extra or {})))
    return self._manager.save(step, args=args, force=True)

  def wait(self) -> None:
    """Blocks until the pending async save (if any) is on disk."""
    self._manager.wait_until_finished()

  # Restoring.

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def restore_latest(self, abstract_state: Any) -> tuple[Any, dict[str, Any], int] | None:
    """(state, extra, step) from the newest checkpoint, or None when there is none."""
    self.wait()
    self._manager.reload()  # the step list is cached; another process may have written
    step = self._manager.latest_step()
    if step is None:
      return None
    state, extra = self.restore(step, abstract_state)
    return state, extra, step

  def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict[str, Any]]:
    """Restores `step` into the shapes, dtypes and shardings of `abstract_state`."""
    abstract = _abstract(abstract_state)
    path = self.directory / str(step)
    for item in ("state", "extra"):
      if not (path / item).exists():
        raise CheckpointError(self._corrupt_message(step, f"{path / item} is missing"))
    try:
      saved = self._manager.item_metadata(step).state
      saved = getattr(saved, "tree", saved)
    except Exception as e:  # noqa: BLE001 - any failure to read means the same to the user
      raise CheckpointError(self._corrupt_message(step, f"{type(e).__name__}: {e}")) from e
    problems = _compare(saved, abstract)
    if problems:
      raise CheckpointError(
          f"Checkpoint {path} does not match the state being restored:\n  "
          + "\n  ".join(problems[:20]) + ("\n  ..." if len(problems) > 20 else "")
          + f"\nResume with the config it was saved with, use a new workdir, or pass "
            f"{_RESUME_HINT} to start fresh.")
    args = ocp.args.Composite(state=ocp.args.StandardRestore(abstract),
                              extra=ocp.args.JsonRestore())
    try:
      restored = self._manager.restore(step, args=args)
    except Exception as e:  # noqa: BLE001
      raise CheckpointError(self._corrupt_message(step, f"{type(e).__name__}: {e}")) from e
    return restored.state, from_json(restored.extra)

  def _corrupt_message(self, step: int, reason: str) -> str:
    path = self.directory / str(step)
    older = [s for s in self.all_steps() if s < step]
    then = f"resume from step {older[-1]}" if older else "start from scratch"
    return (f"Checkpoint {path} is incomplete or corrupt ({reason[:500]}). Delete {path} to "
            f"{then}, or pass {_RESUME_HINT} to start fresh.")

  # Pre-emption.

  def install_sigterm_handler(self, callback: Callable[[], None] | None = None) -> None:
    """On SIGTERM set the flag `should_stop()` reads (and call the light `callback`)."""
    if self._restore_handler is not None:
      return

    def on_signal(signum: int) -> None:
      self._stop.set()
      if callback is not None:
        callback()

    self._restore_handler = install_sigterm_handler(on_signal)

  def should_stop(self) -> bool:
    """True once SIGTERM arrived; with several processes, on all of them if on any.

    With more than one process this is a collective: every process must call it at the same
    point of the loop.
    """
    stop = self._stop.is_set()
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      stop = bool(np.max(multihost_utils.process_allgather(np.int32(stop))))
    return stop

  def close(self) -> None:
    """Waits for the last save, releases orbax and puts the previous SIGTERM handler back."""
    if self._closed:
      return
    self._closed = True
    if self._restore_handler is not None:
      self._restore_handler()
      self._restore_handler = None
    self._manager.wait_until_finished()
    self._manager.close()

  def __enter__(self) -> Checkpointer:
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def install_sigterm_handler(on_signal: Callable[[int], None]) -> Callable[[], None]:
  """Routes SIGTERM to `on_signal(signum)`; returns a function that restores the old handler.

  The handler runs on the main thread between bytecodes: `on_signal` must only set flags or log.
  Off the main thread nothing is installed (Python forbids it) and a warning is logged.
  """
  if threading.current_thread() is not threading.main_thread():
    logging.warning("SIGTERM handler not installed: not on the main thread.")
    return lambda: None
  previous = signal.getsignal(signal.SIGTERM)
  signal.signal(signal.SIGTERM, lambda signum, frame: on_signal(signum))

  def restore() -> None:
    signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)

  return restore


# The abstract state and the comparison with what was saved.


def _path_str(path) -> str:
  return "/".join(str(getattr(k, "name", getattr(k, "key", getattr(k, "idx", k)))) for k in path)


def _abstract(tree: Any) -> Any:
  """ShapeDtypeStructs with shardings (arrays are accepted and described by their own)."""
  def leaf(path, x):
    sharding = getattr(x, "sharding", None)
    if sharding is None:
      raise ValueError(f"abstract_state leaf {_path_str(path)} has no sharding: build it with "
                       "jax.ShapeDtypeStruct(shape, dtype, sharding=...).")
    return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)
  return jax.tree_util.tree_map_with_path(leaf, tree)


def _compare(saved: Any, abstract: Any) -> list[str]:
  """Differences in leaves, shapes and dtypes between the saved metadata and `abstract`."""
  have = {_path_str(p): m for p, m in jax.tree_util.tree_flatten_with_path(saved)[0]}
  want = {_path_str(p): a for p, a in jax.tree_util.tree_flatten_with_path(abstract)[0]}
  problems = [f"{k}: not in the checkpoint" for k in want if k not in have]
  problems += [f"{k}: in the checkpoint but not in the state" for k in have if k not in want]
  for k in sorted(want.keys() & have.keys()):
    shape, dtype = tuple(getattr(have[k], "shape", ())), getattr(have[k], "dtype", None)
    if shape != tuple(want[k].shape) or (dtype is not None and dtype != want[k].dtype):
      problems.append(f"{k}: saved {dtype}{list(shape)}, wanted {want[k].dtype}"
                      f"{list(want[k].shape)}")
  return problems


# JSON for the host-side state (bytes, numpy and tuples are not JSON by themselves).


def to_json(obj: Any) -> Any:
  """A JSON-able copy: bytes tagged as base64, numpy/jax values as lists or numbers."""
  if isinstance(obj, (bytes, bytearray)):
    return {_BYTES_TAG: base64.b64encode(bytes(obj)).decode("ascii")}
  if isinstance(obj, dict):
    for k in obj:
      if not isinstance(k, str):
        raise TypeError(f"extra: dict key {k!r} is not a str (JSON needs string keys).")
    return {k: to_json(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [to_json(v) for v in obj]
  if isinstance(obj, (np.ndarray, np.generic, jax.Array)):
    return np.asarray(obj).tolist()
  if obj is None or isinstance(obj, (bool, int, float, str)):
    return obj
  raise TypeError(f"extra: {type(obj).__name__} is not JSON-able ({obj!r:.80}).")


def from_json(obj: Any) -> Any:
  """Undoes `to_json`'s bytes tagging (lists stay lists)."""
  if isinstance(obj, dict):
    if set(obj) == {_BYTES_TAG}:
      return base64.b64decode(obj[_BYTES_TAG])
    return {k: from_json(v) for k, v in obj.items()}
  if isinstance(obj, list):
    return [from_json(v) for v in obj]
  return obj
