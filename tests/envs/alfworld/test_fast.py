"""The fast engine is byte-identical to textworld's plain one; its caches and patches behave."""

import sys

import numpy as np

from tests.envs.alfworld.conftest import needs_alfworld

pytestmark = needs_alfworld
RANDOM_STEPS = 8


def transcript(engine, commands):
  """After reset and after each command: the state's keys in order, feedback, admissible
  commands, won, score, done, the last action and command, and the facts."""
  states = [engine.reset()] + [engine.step(command) for command in commands]
  return [(tuple(s), s.feedback, tuple(s["admissible_commands"]), s["won"], s.get("score"),
           s.get("done"), str(s["_last_action"]), s.last_command, tuple(map(str, s["_facts"])))
          for s in states]


def walk_then_win(engine, seed):
  """A random walk (admissible commands and junk), the planner's plan to the win, junk."""
  rng = np.random.default_rng(seed)
  engine.reset()
  commands = []
  for _ in range(RANDOM_STEPS):
    options = engine.admissible + ["dance", "go to the moon"]
    commands.append(str(rng.choice(options)))
    engine.step(commands[-1])
  plan = engine.plan()
  assert plan, "the planner should solve a generated game from any state"
  return commands + plan + ["dance"]  # and a command that is not valid in the won state


def test_fast_engine_matches_plain_engine_byte_for_byte(games):
  """Every game type: a random walk then a full plan to the win, text compared exactly."""
  from stepopsd_jax.envs.alfworld import Engine
  fast, plain = Engine(fast=True), Engine(fast=False)
  for k, game_file in enumerate(games.game_files()):
    fast.load(str(game_file))
    plain.load(str(game_file))
    commands = walk_then_win(fast, seed=k)
    want = transcript(plain, commands)
    got = transcript(fast, commands)
    assert got == want, game_file
    assert want[-1][3] is True  # the plan won the game on the plain engine too
    assert got == transcript(fast, commands)  # and again from the memoised translation


def test_a_game_loaded_again_starts_from_its_initial_state(games, monkeypatch):
  """A second engine loading a game another engine played (and so changed) takes the memoised
  initial facts, parses no atom, and plays as the plain engine does, facts in the same order."""
  from textworld.envs.pddl import logic as pddl_logic

  from stepopsd_jax.envs.alfworld import Engine, fast
  fast.clear_caches(parses=False)
  parsed = []
  original = pddl_logic.Atom.get_fact
  monkeypatch.setattr(pddl_logic.Atom, "get_fact",
                      lambda self, *a: parsed.append(1) or original(self, *a))
  first, plain = Engine(fast=True), Engine(fast=False)
  for k, game_file in enumerate(games.game_files()[:3]):
    first.load(str(game_file))
    commands = walk_then_win(first, seed=k)  # the planner's plan wins: the state changed
    second = Engine(fast=True)
    parsed.clear()
    second.load(str(game_file))
    assert not parsed  # the facts came from the memo
    plain.load(str(game_file))
    assert transcript(second, commands) == transcript(plain, commands), game_file
    assert transcript(second, commands) == transcript(plain, commands)  # reset: from the memo


def test_reset_reuses_the_translation_and_restores_patches(games, monkeypatch):
  import fast_downward
  import textworld.logic
  from textworld.envs.pddl import logic as pddl_logic

  from stepopsd_jax.envs.alfworld import Engine, fast
  fast.clear_caches()
  calls = []
  original = fast._TRANSLATIONS.fn
  monkeypatch.setattr(fast._TRANSLATIONS, "fn",
                      lambda *a, **k: calls.append(1) or original(*a, **k))
  argv = list(sys.argv)
  engine = Engine(fast=True)
  engine.load(str(games.game_files()[0]))
  loaded = len(calls)
  for _ in range(3):
    engine.reset()
  assert loaded == 2 and len(calls) == 2  # plain textworld would translate twice per reset
  assert fast_downward.pddl2sas is fast._PDDL2SAS
  assert pddl_logic.GameLogic is fast._GAME_LOGIC
  engine.step(engine.admissible[0])
  assert "sorted" not in vars(textworld.logic)  # the query engine's `sorted` is the builtin again
  assert sys.argv == argv  # fast-downward's translator overwrites it; the engine restores it


def test_fast_grammar_derives_like_textworld(games):
  """Direct derivations of the grammar's symbols, with and without a bound context."""
  from textworld.envs.pddl.textgen import ContextSensitiveGrammar

  from stepopsd_jax.envs.alfworld import Engine
  engine = Engine(fast=True)
  engine.load(str(games.game_files()[1]))
  engine.reset()
  pddl_env = engine._env.unwrapped
  grammar = pddl_env._logic.grammar
  plain = ContextSensitiveGrammar()
  plain._rules = grammar._rules
  context = dict(state=pddl_env._pddl_state, facts=list(pddl_env._pddl_state.facts),
                 variables={}, mapping={}, entity_infos=pddl_env._entity_infos)
  for start in ("#intro#", "#look.feedback#", "#task#", "#help.feedback#", "plain text",
                "#list_appliances#"):
    assert grammar.derive(start, context) == plain.derive(start, context), start


def test_reset_builds_the_initial_state_only_when_a_command_changed_it(games, monkeypatch):
  from stepopsd_jax.envs.alfworld import Engine, fast
  built = []

  class Counted(fast.SortedFactsState):
    def __init__(self, *args, **kwargs):
      built.append(1)
      super().__init__(*args, **kwargs)

  monkeypatch.setattr(fast, "SortedFactsState", Counted)
  engine = Engine(fast=True)
  engine.load(str(games.game_files()[2]))
  assert len(built) == 1
  first = engine.reset()
  engine.reset()
  assert len(built) == 1  # load's state, unchanged: taken as it is
  engine.step(first["admissible_commands"][0])
  engine.reset()
  assert len(built) == 2  # a command changed it: built again
  engine.step("dance")  # not admissible: changes nothing, but the rule is simply "a command"
  engine.reset()
  assert len(built) == 3
