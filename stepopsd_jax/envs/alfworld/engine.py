"""One ALFWorld game on the real engine: textworld's `PddlEnv` behind alfworld's demangler.

`Engine(fast=False)` is the plain engine, exactly as alfworld's `AlfredTWEnv` builds it (minus
the gym batching); `Engine(fast=True)` swaps in `fast.FastPddlEnv`, which gives the same text.
Neither asks the engine for `policy_commands` every step (that replans, which is slow); the
expert plan comes from `plan()` on demand.

textworld's `PddlEnv` loads its own copy of fast-downward's 33 MB shared library (the library
keeps one task in globals) and nothing ever unloads it: built once per episode, as a rollout's
envs are, that leaked a copy per env (~2.6 MiB of memory and ~15 ms each). An engine here
borrows a copy from `LIBRARIES` and gives it back when its textworld env is collected; a copy
serves one live engine at a time, and every `load`/`reset` loads its task into it anew, as
textworld does when one env plays a second game.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
import warnings
import weakref

from stepopsd_jax.envs.alfworld import planner, wheel

FAST_TEXTWORLD = "1.7.0"  # the textworld version fast.py was written and tested against


class GameError(RuntimeError):
  """A game file that cannot be read or played."""


@contextlib.contextmanager
def _kept_argv():
  """fast-downward's translator overwrites `sys.argv`; put it back."""
  argv = list(sys.argv)
  try:
    yield
  finally:
    sys.argv[:] = argv


class LibraryPool:
  """fast-downward library copies shared, one live engine at a time, by this process's engines."""

  def __init__(self):
    self._free: list = []
    self._lock = threading.Lock()
    self.copies = 0  # copies this pool has loaded

  def take(self):
    with self._lock:
      if self._free:
        return self._free.pop()
      self.copies += 1
    return wheel.import_module("fast_downward").load_lib()

  def give(self, lib) -> None:
    with self._lock:
      self._free.append(lib)


LIBRARIES = LibraryPool()


@contextlib.contextmanager
def _lent_library(lib):
  """Within the block, fast-downward's `load_lib` (called by `PddlEnv.__init__`) returns `lib`."""
  fast_downward = wheel.import_module("fast_downward")
  load_lib = fast_downward.load_lib
  fast_downward.load_lib = lambda: lib
  try:
    yield
  finally:
    fast_downward.load_lib = load_lib


class Engine:
  """Loads games and plays them; `state` is the last textworld `GameState`."""

  def __init__(self, fast: bool = True, data_dir: str | None = None):
    wheel.set_data_env(data_dir)
    textworld = wheel.import_module("textworld")
    tw_env = wheel.import_module("alfworld.agents.environment.alfred_tw_env")
    if fast and textworld.__version__ != FAST_TEXTWORLD:
      warnings.warn(f"The fast ALFWorld engine was checked against textworld {FAST_TEXTWORLD}, "
                    f"found {textworld.__version__}: using the plain engine.")
      fast = False
    module = "stepopsd_jax.envs.alfworld.fast" if fast else "textworld.envs.pddl.pddl"
    pddl_env = getattr(wheel.import_module(module), "FastPddlEnv" if fast else "PddlEnv")
    infos = textworld.EnvInfos(admissible_commands=True, won=True)
    self.fast = fast
    lib = LIBRARIES.take()
    try:
      with _lent_library(lib):
        pddl = pddl_env(infos)
    except BaseException:
      LIBRARIES.give(lib)
      raise
    weakref.finalize(pddl, LIBRARIES.give, lib)
    self._env = tw_env.AlfredDemangler(pddl, shuffle=False)
    self.game_file: str | None = None
    self.game: dict = {}
    self.state = None

  def load(self, game_file: str) -> None:
    """Reads and loads `game_file`; a file that fails raises `GameError` naming it."""
    try:
      with open(game_file) as f:
        game = json.load(f)
      for key in ("pddl_domain", "grammar", "pddl_problem"):
        if not isinstance(game.get(key), str):
          raise ValueError(f"no {key!r} text in the game file")  # noqa: TRY004
      with _kept_argv():
        self._env.load(game_file)
    except Exception as exc:  # pylint: disable=broad-except
      self.game_file = None
      raise GameError(f"Cannot load ALFWorld game {game_file}: "
                      f"{type(exc).__name__}: {exc}") from exc
    self.game_file, self.game = os.fspath(game_file), game

  def reset(self):
    if self.game_file is None:
      raise GameError("No game loaded.")
    try:
      with _kept_argv():
        self.state = self._env.reset()
    except Exception as exc:  # pylint: disable=broad-except
      raise GameError(f"Cannot start ALFWorld game {self.game_file}: "
                      f"{type(exc).__name__}: {exc}") from exc
    return self.state

  def step(self, command: str):
    """Applies `command`; one the engine does not list as admissible gives "Nothing happens."."""
    self.state, _, _ = self._env.step(command)
    return self.state

  @property
  def admissible(self) -> list[str]:
    return list(self.state["admissible_commands"])

  @property
  def won(self) -> bool:
    return bool(self.state["won"])

  def plan(self) -> list[str] | None:
    """The planner's commands from the current state to the goal; None if it finds none."""
    pddl_env = self._env.unwrapped
    pddl_state = pddl_env._pddl_state  # pylint: disable=protected-access
    problem = planner.relevant_problem(self.game["pddl_problem"], list(pddl_state.facts),
                                       pddl_state.name2type)
    with _kept_argv():
      ops = planner.solve(self.game["pddl_domain"], problem)
    if ops is None:
      return None
    infos = pddl_env._entity_infos  # pylint: disable=protected-access
    return pddl_state.plan_to_templated_actions(ops, infos)
