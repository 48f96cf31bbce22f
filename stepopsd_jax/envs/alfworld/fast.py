"""A faster textworld PDDL engine that produces the same text (textworld==1.7.0 internals).

Almost all of a plain engine step is textworld re-parsing the same strings with TatSu: every
command template, feedback rule and grammar condition is parsed again each time it is derived,
and every derivation deep-copies its symbols and contexts. `FastGrammar` derives exactly as
`textworld.envs.pddl.textgen.ContextSensitiveGrammar.derive` does, with three changes that do
not change its output: parses of start strings and conditions are cached; symbols are never
mutated, so they need no copies; contexts are never mutated once built, so they are shared
instead of deep-copied (a query extends a shallow copy). `FastPddlEnv` uses it, keeps each
signature's facts sorted between changes (`SortedFactsState`: the query engine re-sorts them on
every lookup), and memoises what `load` and `reset` recompute from the same text: the game
logic (the parsed grammar), fast-downward's PDDL->SAS translation, which `PddlState` runs
twice per `load` and twice per `reset`, and the initial facts `PddlState` parses out of the
translation and the library's atoms (added again in their first order: the G rollouts of a
group each load the same game). tests/envs/alfworld/test_fast.py checks observations
and admissible commands byte for byte against the plain engine.
"""

from __future__ import annotations

import collections
import contextlib
import copy
from collections.abc import Callable
from typing import Any

import fast_downward
from textworld import logic as textworld_logic
from textworld.envs.pddl import logic as pddl_logic
from textworld.envs.pddl import textgen
from textworld.core import GameState
from textworld.envs.pddl.pddl import PddlEnv
from textworld.logic import Rule

_TEXTGEN_GLOBALS = vars(textgen)  # EvalSymbol evaluates its expression in textgen's globals
_PDDL2SAS = fast_downward.pddl2sas
_GAME_LOGIC = pddl_logic.GameLogic
_PDDL_STATE = pddl_logic.PddlState


# Parses of start strings and conditions, compiled expressions: the same strings recur in every
# game (they come from the one alfred.twl2 grammar), and nothing here is ever mutated.
_SYMBOLS: dict[str, tuple] = {}
_QUERIES: dict[str, Rule] = {}
_CODE: dict[str, Any] = {}


class FastGrammar:
  """`ContextSensitiveGrammar.derive` with cached parses and no deep copies (same output)."""

  def __init__(self, grammar: textgen.ContextSensitiveGrammar):
    self._rules = grammar._rules  # pylint: disable=protected-access

  def derive(self, start: str, context: dict | None = None) -> str:
    stack = [(symbol, dict(context or {})) for symbol in reversed(self._parse(start))]
    derived = []
    while stack:
      symbol, ctx = stack.pop()
      if isinstance(symbol, textgen.TerminalSymbol):
        derived.append(str(symbol))
      elif isinstance(symbol, textgen.NonterminalSymbol):
        stack += [(s, ctx) for s in reversed(self._replace(symbol, ctx))]
      elif isinstance(symbol, textgen.ConditionalSymbol):
        stack += [(symbol.expression, c) for c in reversed(self._contexts(symbol, ctx))]
      elif isinstance(symbol, textgen.EvalSymbol):
        derived.append(str(self._eval(symbol, ctx)))
      elif isinstance(symbol, textgen.ListSymbol):
        stack += reversed(self._list(symbol, ctx))
      else:
        raise NotImplementedError(f"Unknown symbol: {type(symbol)}")
    return "".join(derived)

  def _parse(self, start: str) -> tuple:
    if start not in _SYMBOLS:
      parse = textgen._parse_and_convert  # pylint: disable=protected-access
      _SYMBOLS[start] = tuple(parse(start, rule_name="symbols"))
    return _SYMBOLS[start]

  def _query(self, expression: str) -> Rule:
    if expression not in _QUERIES:
      _QUERIES[expression] = Rule.parse_conjunctive_query(expression)
    return _QUERIES[expression]

  def _replace(self, symbol: textgen.NonterminalSymbol, ctx: dict) -> list:
    """The right-hand side of the first production whose condition holds."""
    rules = self._rules.get(str(symbol))
    if not rules:
      raise textgen.CSGUnknownSymbolError(symbol)
    for rule in rules:
      if not rule.condition or _any(ctx["state"].all_assignments(self._query(rule.condition),
                                                                   ctx["mapping"])):
        return rule.rhs
    raise IndexError("list index out of range")  # what the original's rules[0] raises

  def _contexts(self, symbol: textgen.ConditionalSymbol, ctx: dict) -> list[dict]:
    """One context per match of the condition's query (the context itself without one)."""
    if not symbol.given:
      return [ctx]
    out = []
    infos = ctx["entity_infos"]
    for mapping in ctx["state"].all_assignments(self._query(symbol.given), ctx["mapping"]):
      variables = dict(ctx["variables"])
      variables.update({ph.name: infos[var.name] for ph, var in mapping.items()})
      out.append(dict(ctx, variables=variables, mapping={**ctx["mapping"], **mapping}))
    return out

  def _eval(self, symbol: textgen.EvalSymbol, ctx: dict) -> Any:
    if symbol.expression not in _CODE:
      _CODE[symbol.expression] = compile(symbol.expression, "<string>", "eval")
    namespace = dict(ctx["variables"], self=symbol, context=ctx)
    return eval(_CODE[symbol.expression], _TEXTGEN_GLOBALS, namespace)  # as textgen does

  def _list(self, symbol: textgen.ListSymbol, ctx: dict) -> list[tuple]:
    """`display_list` of the inner symbol's derivation, as (symbol, context) pairs."""
    inner = symbol.symbol
    if isinstance(inner, textgen.ConditionalSymbol):
      items = [(inner.expression, c) for c in self._contexts(inner, ctx)]
    elif isinstance(inner, textgen.EvalSymbol):
      items = [(textgen.TerminalSymbol(self._eval(inner, ctx)), ctx)]
    else:
      raise NotImplementedError(f"List of {type(inner)}")
    if len(items) <= 1:
      return items or [(textgen.NonterminalSymbol("list_empty"), ctx)]
    sep = (textgen.NonterminalSymbol("list_separator"), ctx)
    out = [items[0]]
    for item in items[1:-1]:
      out += [sep, item]
    return out + [(textgen.NonterminalSymbol("list_last_separator"), ctx), items[-1]]


def _any(iterable) -> bool:
  return next(iter(iterable), None) is not None


class _Memo:
  """A small LRU memo of a function of hashable (string) arguments."""

  def __init__(self, fn: Callable, maxsize: int):
    self.fn, self.maxsize = fn, maxsize
    self.cache: collections.OrderedDict = collections.OrderedDict()

  def __call__(self, *args, **kwargs):
    key = (args, tuple(sorted(kwargs.items())))
    if key in self.cache:
      self.cache.move_to_end(key)
      return self.cache[key]
    value = self.cache[key] = self.fn(*args, **kwargs)
    if len(self.cache) > self.maxsize:
      self.cache.popitem(last=False)
    return value


def _fast_logic(domain: str, grammar: str) -> pddl_logic.GameLogic:
  logic = _GAME_LOGIC(domain=domain, grammar=grammar)
  logic.grammar = FastGrammar(logic.grammar)
  return logic


class SortedFactsState(_PDDL_STATE):
  """`PddlState` that hands out its facts from caches kept until a fact changes.

  textworld's query engine (`State._all_applicable_assignments`) sorts a signature's fact set
  on every lookup, thousands of times a step: here the facts of a signature come out sorted
  already, as a `_Sorted` tuple that the engine's `sorted` copies without comparing (`_sorted`,
  in force while a `FastPddlEnv` loads, resets or steps; propositions are totally ordered, so
  the order is the one sorting gives). `PddlEnv._gather_infos` lists all facts once per
  admissible action: here `facts` is a tuple in the order the generator would give.
  """

  def __init__(self, downward_lib, pddl_problem: str, logic: pddl_logic.GameLogic):
    """`PddlState.__init__`; a problem this process built before (with this game logic) skips
    turning the translation's and the library's atoms into propositions: its facts are added
    again, in the order they were first added (so the fact sets iterate in the same order)."""
    key = (id(logic), pddl_problem)
    built = _INITIAL_STATES.get(key)
    if built is None or built[0] is not logic:
      self.__dict__["_added"] = []
      super().__init__(downward_lib, pddl_problem, logic)
      added = self.__dict__.pop("_added")
      shared = {k: getattr(self, k) for k in _SHARED}
      _INITIAL_STATES[key] = (logic, shared, added)
      while len(_INITIAL_STATES) > _INITIAL_STATES_MAX:
        _INITIAL_STATES.pop(next(iter(_INITIAL_STATES)))
      return
    _, shared, added = built
    self._facts, self._vars_by_name = collections.defaultdict(set), {}
    self._vars_by_type, self._var_counts = collections.defaultdict(set), collections.Counter()
    self.__dict__.update(shared)
    self.downward_lib = downward_lib
    downward_lib.load_sas(self.sas.encode("utf-8"))
    downward_lib.load_sas_replan(self.sas_replan.encode("utf-8"))
    for facts in added:
      self.add_facts(facts)

  def add_facts(self, props):
    props = list(props)
    if "_added" in self.__dict__:  # recording the first build of a problem
      self.__dict__["_added"].append(props)
    super().add_facts(props)

  def facts_with_signature(self, sig):
    cache = self.__dict__.setdefault("_sorted_facts", {})
    if sig not in cache:
      cache[sig] = _Sorted(sorted(super().facts_with_signature(sig)))
    return cache[sig]

  @property
  def facts(self):
    if self.__dict__.get("_all_facts") is None:
      self.__dict__["_all_facts"] = tuple(super().facts)
    return self.__dict__["_all_facts"]

  def add_fact(self, prop):
    self._changed(prop)
    super().add_fact(prop)

  def remove_fact(self, prop):
    self._changed(prop)
    super().remove_fact(prop)

  def _changed(self, prop) -> None:
    self.__dict__.get("_sorted_facts", {}).pop(prop.signature, None)
    self.__dict__["_all_facts"] = None


# Per process. A group's G rollouts play one game, so they share one translation and one
# parse of its initial facts: (game logic, problem text) -> (the logic, the `_SHARED`
# attributes, the facts in the order they were added).
_INITIAL_STATES: dict = {}
_INITIAL_STATES_MAX = 32
# What `PddlState.__init__` sets besides the facts and the library; only ever read afterwards.
_SHARED = ("_logic", "pddl_problem", "task", "sas", "sas_replan", "_actions", "name2type")
_TRANSLATIONS = _Memo(_PDDL2SAS, maxsize=32)
_LOGICS = _Memo(_fast_logic, maxsize=32)


class _Sorted(tuple):
  """Facts in sorted order already."""


def _sorted(iterable, *args, **kwargs) -> list:
  """`sorted` for textworld's query engine: a `_Sorted` tuple is copied (its n - 1 comparisons
  of propositions, each a Python call, were about a sixth of an engine step); the rest is
  sorted."""
  if type(iterable) is _Sorted and not args and not kwargs:
    return list(iterable)
  return sorted(iterable, *args, **kwargs)


@contextlib.contextmanager
def _presorted_queries():
  """Within the block, textworld's query engine takes `_Sorted` fact tuples as they are."""
  textworld_logic.sorted = _sorted  # shadows the builtin in that module only
  try:
    yield
  finally:
    vars(textworld_logic).pop("sorted", None)


@contextlib.contextmanager
def _memoised_translation(initial_state: SortedFactsState | None = None):
  """Within the block, textworld's PddlEnv builds `SortedFactsState`s (or takes
  `initial_state`, if given, for the one it would build), and it and PddlState reuse memoised
  translations and game logics."""
  fast_downward.pddl2sas, pddl_logic.GameLogic = _TRANSLATIONS, _LOGICS
  pddl_logic.PddlState = (SortedFactsState if initial_state is None
                          else lambda *args, **kwargs: initial_state)
  try:
    yield
  finally:
    fast_downward.pddl2sas, pddl_logic.GameLogic = _PDDL2SAS, _GAME_LOGIC
    pddl_logic.PddlState = _PDDL_STATE


class FastPddlEnv(PddlEnv):
  """textworld's `PddlEnv` with `FastGrammar` and memoised translation; the same states.

  `load` builds the game's initial state (and loads its task into the library), and textworld's
  `reset` builds it again: a reset that follows a `load` or another `reset` with no command in
  between takes the state already built (nothing has changed it or the library's copy).
  """

  _initial = False  # whether `_pddl_state` is the game's initial state, unchanged

  def load(self, filename_or_data) -> None:
    self._initial = False
    with _memoised_translation(), _presorted_queries():
      super().load(filename_or_data)
    self._initial = True

  def reset(self):
    initial, self._initial = self._initial, False
    with _memoised_translation(self._pddl_state if initial else None), _presorted_queries():
      state = super().reset()
    self._initial = True
    return state

  def step(self, command: str):
    self._initial = False
    if (stripped := command.strip()) not in self.state["_valid_commands"]:
      return self._nothing_happens(stripped)
    with _presorted_queries():
      return super().step(command)

  def _nothing_happens(self, command: str):
    """textworld's `step` of a command that is not one of the valid ones: no action applies, so
    the state, and every info `_gather_infos` would recompute from it (the admissible commands
    with their grammar derivations: most of a step), are the previous state's. The new state
    has textworld's keys in textworld's order; lists and dicts are copied."""
    previous = self.prev_state = self.state
    self.state = state = GameState()
    state.last_command = command
    self._last_action = None
    state.feedback = state.raw = "Nothing happens."
    for key, value in previous.items():
      if key not in _STEP_KEYS:
        state[key] = copy.copy(value) if isinstance(value, (list, dict)) else value
    state["last_action"] = state["_last_action"] = None
    if "walkthrough" in self.request_infos.extras:
      state["extra.walkthrough"] = previous["extra.walkthrough"]
    state["score"] = 1 if state["won"] else 0
    state["done"] = state["won"] or state["lost"]
    return state, state["score"], state["done"]


# The keys textworld's `PddlEnv.step` sets itself (the rest come from `_gather_infos`).
_STEP_KEYS = frozenset({"last_command", "feedback", "raw", "extra.walkthrough", "score", "done"})


def clear_caches(parses: bool = True) -> None:
  """Forgets the memoised translations, game logics and initial facts (and the parses) of this
  process."""
  caches = [_TRANSLATIONS.cache, _LOGICS.cache, _INITIAL_STATES] + (
      [_SYMBOLS, _QUERIES, _CODE] if parses else [])
  for cache in caches:
    cache.clear()
