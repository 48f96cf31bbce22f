"""Checkpoints: the train state and the host-side loop state in one orbax step directory.

`Checkpointer` wraps an orbax `CheckpointManager` with two items per step, written atomically
together: `state` (the TrainState pytree, StandardSave, sharded arrays written by every process)
and `extra` (JSON: RNG key data, the grain iterator state, the trainer's counters). Restores go
straight into the shardings of an abstract state, which may be a different mesh than the save.

What a run survives: a step whose files are missing, truncated or unreadable is skipped with a
warning naming the step, the file and the error, and the previous complete one is restored; a
save that fails (disk full, directory made read-only) raises a `CheckpointError` naming the path,
and leaves the previous checkpoint intact.

orbax 0.12.8 facts this module works around (checked, see tests/train/test_checkpoint*.py):
  * `None` fields save fine (as "skip" leaves), but a restore whose structure differs from the
    save silently drops or invents fields (a saved array restored into `None` vanishes; an array
    requested where `None` was saved comes back `None`), so the structure, shapes and dtypes are
    compared with the saved metadata first and a mismatch is an error.
  * An empty or half-deleted step directory still counts as a step (`latest_step()` returns it)
    and restoring it fails with a bare KeyError.
  * A committed step with a truncated file may restore without any error: per-process OCDBT
    files that were merged and the commit markers are never read. So every file's size is
    recorded in `FILE_SIZES` inside the step directory just before orbax's commit rename (its
    `post_finalization_callback`), and checked before a restore; the other truncations surface
    as tensorstore or JSON errors from the restore itself. The step's `_CHECKPOINT_METADATA` is
    left out: orbax rewrites it after the commit (and a restore does not need it).
  * A save that fails in the background surfaces at the next `wait_until_finished` (in `save`,
    `wait`, `close`), and again at every later one; by then the manager has already dropped the
    step it was about to replace from its cached step list, although that step is still on disk
    (orbax deletes old steps only after a commit). The manager is rebuilt after a failure.
  * A manager built with `cleanup_tmp_directories=True` deletes unfinished `*.orbax-checkpoint-tmp`
    directories when it is constructed, including those of a save in flight in another process
    (`evaluate` next to a training run); here only a writer removes them, before its first save.
  * A manager built with only `item_names` cannot read item metadata of a checkpoint it did not
    write itself (it logs a warning and returns None), so the handlers are registered up front.
  * The step list is cached when the manager is built; `restore_latest` reloads it.
  * An async save copies device arrays to host before `save` returns, so the state may be
    donated to the next train step right away.
"""

from __future__ import annotations

import base64
import json
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

log = logging.getLogger(__name__)

FILE_SIZES = "stepopsd_file_sizes.json"  # {"files": {relative path: bytes}}, per step
_REWRITTEN = {"_CHECKPOINT_METADATA"}  # orbax rewrites it after the commit (its timestamp)
_TMP_MARK = ".orbax-checkpoint-tmp"  # orbax's suffix of an unfinished step directory
_BYTES_TAG = "__bytes_b64__"
_RESUME_HINT = "--config.train.resume=False"


class CheckpointError(RuntimeError):
  """A checkpoint that cannot be saved or restored; the message names the path and the fix."""


class CorruptCheckpointError(CheckpointError):
  """A step whose files are missing, truncated or unreadable; `restore_latest` skips it."""

  def __init__(self, message: str, step: int, reason: str):
    super().__init__(message)
    self.step, self.reason = step, reason


class Checkpointer:
  """Saves every `every` steps (or when forced), keeps the newest `keep`, restores the latest."""

  def __init__(self, directory: str, *, every: int, keep: int, async_save: bool = True):
    if every < 1 or keep < 1:
      raise ValueError(f"Checkpointer: every={every} and keep={keep} must both be >= 1.")
    self.every, self.keep, self.async_save = every, keep, async_save
    self.directory = epath.Path(directory if "://" in directory else os.path.abspath(directory))
    self.skipped: dict[int, str] = {}  # corrupt steps met by restore_latest -> why
    self._pending: int | None = None  # the step of the save in flight
    self._cleaned = False  # unfinished directories of earlier runs removed
    self._stop = threading.Event()
    self._restore_handler: Callable[[], None] | None = None
    self._closed = False
    self._manager = self._new_manager()

  def _new_manager(self) -> ocp.CheckpointManager:
    # Always the async checkpointer (the size record needs its callback); a sync save waits.
    # Directories are made in `save`: made in the background, a failure (read-only directory)
    # leaves orbax's writer threads waiting 300 s for them, which blocks the process's exit.
    options = ocp.CheckpointManagerOptions(
        max_to_keep=self.keep, create=True, cleanup_tmp_directories=False,
        enable_async_checkpointing=True,
        async_options=ocp.AsyncOptions(post_finalization_callback=self._record_sizes,
                                       create_directories_asynchronously=False))
    # Handlers up front: with bare item_names a fresh manager cannot read item metadata.
    handlers = {"state": ocp.StandardCheckpointHandler(), "extra": ocp.JsonCheckpointHandler()}
    try:
      return ocp.CheckpointManager(self.directory, options=options, item_handlers=handlers)
    except OSError as e:
      raise CheckpointError(f"Cannot create the checkpoint directory {self.directory} "
                            f"({_one_line(e)}): make it writable or pass another --workdir.") from e

  # Saving.

  def save(self, step: int, state: Any, extra: dict[str, Any] | None = None, *,
           force: bool = False) -> bool:
    """Starts a save of `state` and `extra` at `step`; False when skipped (interval or exists).

    Raises CheckpointError (naming the path) when this save, or the previous async one, failed.
    """
    if not force and step % self.every:
      return False
    self._finish_pending()
    self._remove_unfinished()
    corrupt = self.skipped.pop(step, None)
    if corrupt is not None and step in self._manager.all_steps():
      log.warning("Replacing corrupt checkpoint %s (%s).", self.directory / str(step), corrupt)
      self._manager.delete(step)
    if step in self._manager.all_steps():
      return False
    args = ocp.args.Composite(state=ocp.args.StandardSave(state),
                              extra=ocp.args.JsonSave(to_json(extra or {})))
    self._pending = step
    try:
      started = self._manager.save(step, args=args, force=True)
    except Exception as e:  # noqa: BLE001 - disk full, read-only, ...: all mean the same here
      self._pending = None
      raise self._save_failed(step, e) from e
    if not self.async_save:
      self._finish_pending()
    return started

  def wait(self) -> None:
    """Blocks until the pending async save (if any) is on disk; raises if it failed."""
    self._finish_pending()

  def _finish_pending(self) -> None:
    step = self._pending
    if step is None:
      return
    try:
      self._manager.wait_until_finished()
    except Exception as e:  # noqa: BLE001
      raise self._save_failed(step, e) from e
    finally:
      self._pending = None

  def _save_failed(self, step: int, error: Exception) -> CheckpointError:
    """The error of a failed save; the manager is rebuilt so that later saves may succeed."""
    try:
      self._manager.close()
    except Exception:  # noqa: BLE001 - it re-raises the failure we are reporting
      pass
    self._manager = self._new_manager()
    self._cleaned = False  # the next save removes what this one left half-written
    older = [s for s in self._manager.all_steps() if s < step]
    kept = (f"the previous checkpoint {self.directory / str(max(older))} is intact" if older
            else "there is no earlier checkpoint")
    return CheckpointError(
        f"Saving checkpoint {self.directory / str(step)} failed ({_one_line(error)}); {kept}. "
        f"Free space on the disk of {self.directory} or make it writable (or move --workdir), "
        f"then rerun to resume.")

  def _record_sizes(self) -> None:
    """Writes FILE_SIZES into the step being committed (orbax calls this on the primary host,
    after every process has written, before the commit rename); never raises."""
    try:
      step = self._pending
      found = list(self.directory.glob(f"{step}{_TMP_MARK}*"))
      path = found[0] if len(found) == 1 else self.directory / str(step)  # no rename on GCS
      sizes = {str(f.relative_to(path)): f.stat().length for f in _files(path)
               if str(f.relative_to(path)) not in _REWRITTEN}
      (path / FILE_SIZES).write_text(json.dumps({"files": sizes}, sort_keys=True))
    except Exception as e:  # noqa: BLE001 - the step is still a valid orbax checkpoint
      log.warning("Checkpoint step %s: could not record its file sizes (%s); its restore relies "
                  "on orbax's own checks.", self._pending, _one_line(e))

  def _remove_unfinished(self) -> None:
    """Deletes the unfinished step directories of a killed run, once, before the first save."""
    if self._cleaned:
      return
    self._cleaned = True
    if jax.process_index() != 0:
      return
    for path in self.directory.glob(f"*{_TMP_MARK}*"):
      log.warning("Removing unfinished checkpoint %s (a save that never committed).", path)
      if path.is_dir():
        path.rmtree(missing_ok=True)
      else:
        path.unlink(missing_ok=True)

  # Restoring.

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def restore_latest(self, abstract_state: Any) -> tuple[Any, dict[str, Any], int] | None:
    """(state, extra, step) from the newest complete checkpoint, or None when there is none.

    A corrupt step is skipped with a warning (and remembered in `skipped`, so that saving that
    step again replaces it); when every step is corrupt this raises.
    """
    self.wait()
    self._manager.reload()  # the step list is cached; another process may have written
    steps = sorted(self._manager.all_steps(), reverse=True)
    for k, step in enumerate(steps):
      restored, problem = None, None
      try:
        restored = self.restore(step, abstract_state)
      except CorruptCheckpointError as e:
        problem = e
      if _all_processes(problem is None):  # every process restores the same step
        return (*restored, step)
      reason = problem.reason if problem else "corrupt on another process"
      self.skipped[step] = reason
      then = f"trying step {steps[k + 1]}" if k + 1 < len(steps) else "no older step"
      log.warning("Skipping checkpoint %s: %s; %s.", self.directory / str(step), reason, then)
    if not steps:
      return None
    raise CheckpointError(
        f"Every checkpoint in {self.directory} is incomplete or corrupt (steps "
        f"{', '.join(map(str, steps))}; see the warnings above). Delete {self.directory} or pass "
        f"{_RESUME_HINT} to start fresh.")

  def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict[str, Any]]:
    """Restores `step` into the shapes, dtypes and shardings of `abstract_state`.

    Raises CorruptCheckpointError for missing, truncated or unreadable files, CheckpointError
    when the saved structure differs from `abstract_state`.
    """
    abstract = _abstract(abstract_state)
    path = self.directory / str(step)
    self._check_files(step)
    try:
      saved = self._manager.item_metadata(step).state
      saved = getattr(saved, "tree", saved)
    except Exception as e:  # noqa: BLE001 - any failure to read means the same to the user
      raise self._corrupt(step, f"{path / 'state'}: {_one_line(e)}") from e
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
      raise self._corrupt(step, f"{path}: {_one_line(e)}") from e
    return restored.state, from_json(restored.extra)

  def _check_files(self, step: int) -> None:
    """Raises CorruptCheckpointError if an item is missing or a file's size differs from the
    one recorded at save time (steps saved without a record are left to orbax's checks)."""
    path = self.directory / str(step)
    for item in ("state", "extra"):
      if not (path / item).exists():
        raise self._corrupt(step, f"{path / item} is missing")
    record = path / FILE_SIZES
    if not record.exists():
      return
    try:
      sizes = json.loads(record.read_text())["files"]
    except Exception as e:  # noqa: BLE001
      raise self._corrupt(step, f"{record} is unreadable ({_one_line(e)})") from e
    for name, size in sorted(sizes.items()):
      file = path / name
      have = file.stat().length if file.exists() else None
      if have != size:
        state = "is missing" if have is None else f"has {have} bytes"
        raise self._corrupt(step, f"{file} {state}, {size} when saved (truncated?)")

  def _corrupt(self, step: int, reason: str) -> CorruptCheckpointError:
    path = self.directory / str(step)
    older = [s for s in self.all_steps() if s < step]
    then = f"resume from step {older[-1]}" if older else "start from scratch"
    return CorruptCheckpointError(
        f"Checkpoint {path} is incomplete or corrupt ({reason[:500]}). Delete {path} to {then}, "
        f"or pass {_RESUME_HINT} to start fresh.", step, reason[:500])

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
    return not _all_processes(not self._stop.is_set())

  def close(self) -> None:
    """Waits for the last save, releases orbax and puts the previous SIGTERM handler back;
    raises CheckpointError if that save failed."""
    if self._closed:
      return
    self._closed = True
    if self._restore_handler is not None:
      self._restore_handler()
      self._restore_handler = None
    try:
      self._finish_pending()
    finally:
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
    log.warning("SIGTERM handler not installed: not on the main thread.")
    return lambda: None
  previous = signal.getsignal(signal.SIGTERM)
  signal.signal(signal.SIGTERM, lambda signum, frame: on_signal(signum))

  def restore() -> None:
    signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)

  return restore


def _all_processes(ok: bool) -> bool:
  """`ok` on every process (a collective when there are several)."""
  if jax.process_count() == 1:
    return ok
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return bool(np.min(multihost_utils.process_allgather(np.int32(ok))))


def _files(root: epath.Path):
  for directory, _, names in root.walk():
    for name in names:
      yield directory / name


def _one_line(error: BaseException) -> str:
  return f"{type(error).__name__}: {' '.join(str(error).split())}"[:300]


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
