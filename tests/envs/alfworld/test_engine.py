"""Engines share fast-downward library copies: none leaks, and a reused copy plays true."""

import gc
import sys

import numpy as np
import pytest

from tests.envs.alfworld.conftest import needs_alfworld

pytestmark = needs_alfworld


def textworld_transcript(game_file, commands):
  """The reference: textworld's own PddlEnv on a library copy of its own, no Engine."""
  import textworld
  from alfworld.agents.environment.alfred_tw_env import AlfredDemangler
  from textworld.envs.pddl.pddl import PddlEnv
  env = AlfredDemangler(PddlEnv(textworld.EnvInfos(admissible_commands=True, won=True)),
                        shuffle=False)
  env.load(game_file)
  states = [env.reset()] + [env.step(c)[0] for c in commands]
  return [(s.feedback, tuple(s["admissible_commands"]), s["won"]) for s in states]


def test_a_dropped_engine_gives_its_library_to_the_next(games):
  from stepopsd_jax.envs.alfworld import Engine, engine as engine_lib
  files = [str(f) for f in games.game_files()]
  rng = np.random.default_rng(0)

  def play_five(commands):
    engine = Engine(fast=True)
    engine.load(files[0])
    engine.reset()
    for k in range(5):
      if len(commands) == k:
        commands.append(str(rng.choice(engine.admissible)))
      engine.step(commands[k])
    return engine

  # A text parsed for the first time in the process can keep the engine that parsed it
  # referenced (from textworld's parse caches); play the walk once so that `first` does not.
  commands = []
  play_five(commands)
  gc.collect()
  first = play_five(commands)  # leaves its library mid-episode in another game
  lib = first._env.unwrapped.downward_lib
  del first
  gc.collect()
  second = Engine(fast=True)
  assert second._env.unwrapped.downward_lib is lib
  second.load(files[1])
  commands = []
  states = [second.reset()]
  for _ in range(12):
    commands.append(str(rng.choice(second.admissible + ["dance"])))
    states.append(second.step(commands[-1]))
  got = [(s.feedback, tuple(s["admissible_commands"]), s["won"]) for s in states]
  assert got == textworld_transcript(files[1], commands)
  assert engine_lib.LIBRARIES.copies >= 1


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/maps")
def test_engines_made_per_episode_do_not_pile_up_library_copies(games):
  """What the OS says is mapped, not the pool's own count: textworld alone maps a new copy
  of libdownward.so per env and never unmaps it."""
  from stepopsd_jax.envs.alfworld import Engine

  def copies():
    with open("/proc/self/maps") as f:
      return len({line.split()[4] for line in f if "libdownward" in line})  # inodes: the
      # copies' temporary files are deleted once loaded, so their paths all end "(deleted)"

  files = [str(f) for f in games.game_files()]
  for _ in range(2):  # warm: whatever copies a batch of 4 needs
    batch = [Engine(fast=True) for _ in range(4)]
    del batch
    gc.collect()
  before = copies()
  for rollout in range(10):
    batch = [Engine(fast=True) for _ in range(4)]
    for k, engine in enumerate(batch):
      engine.load(files[(rollout + k) % len(files)])
      engine.reset()
    del batch, engine
    gc.collect()
  assert copies() == before  # 40 engines, no new copy
