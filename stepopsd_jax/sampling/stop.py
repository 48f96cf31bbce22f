"""Stop strings on the device: an Aho-Corasick automaton stepped one token at a time.

A stop string such as `</action>` can be split across tokens in many ways, so it cannot be
matched as a token sequence. Instead we build, on the host and once per (vocabulary, stop strings),
a table `next_state[state, token]` over the characters of every token's text; inside the jitted
decode loop each row's state advances with one gather per generated token. State `ACCEPT` (0 of
the table's rows is the start state) is absorbing and means a stop string was completed.

Matching is over decoded text: a stop string with non-ASCII characters split across byte-level
tokens (each decoding to U+FFFD alone) is not seen. ASCII stop strings, the usual case, are exact.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence

import numpy as np


class _AhoCorasick:
  """Character automaton recognising any of `patterns` as a suffix of the text read so far."""

  def __init__(self, patterns: Sequence[str]):
    self.goto: list[dict[str, int]] = [{}]
    self.accepting: list[bool] = [False]
    for pattern in patterns:
      state = 0
      for ch in pattern:
        if ch not in self.goto[state]:
          self.goto.append({})
          self.accepting.append(False)
          self.goto[state][ch] = len(self.goto) - 1
        state = self.goto[state][ch]
      self.accepting[state] = True
    self.fail = [0] * len(self.goto)
    queue = collections.deque(self.goto[0].values())
    while queue:
      state = queue.popleft()
      for ch, nxt in self.goto[state].items():
        queue.append(nxt)
        f = self.fail[state]
        while f and ch not in self.goto[f]:
          f = self.fail[f]
        self.fail[nxt] = self.goto[f].get(ch, 0) if self.goto[f].get(ch, 0) != nxt else 0
        self.accepting[nxt] = self.accepting[nxt] or self.accepting[self.fail[nxt]]

  def step(self, state: int, ch: str) -> int:
    while state and ch not in self.goto[state]:
      state = self.fail[state]
    return self.goto[state].get(ch, 0)


def build_stop_table(token_texts: Sequence[str], stop_strings: Sequence[str]) -> np.ndarray:
  """int32 [num_states + 1, V]: next automaton state after a token; the last row is ACCEPT."""
  if any(not s for s in stop_strings):
    raise ValueError(f"stop_strings={list(stop_strings)!r}: empty stop strings are not allowed.")
  automaton = _AhoCorasick(stop_strings)
  num_states = len(automaton.goto)
  accept = num_states
  alphabet = set("".join(stop_strings))
  table = np.zeros((num_states + 1, len(token_texts)), np.int32)
  table[accept] = accept
  for token, text in enumerate(token_texts):
    if not alphabet.intersection(text):
      continue  # every state falls back to the start state: the table already holds 0
    for state in range(num_states):
      table[state, token] = _run(automaton, state, text, accept)
  return table


def _run(automaton: _AhoCorasick, state: int, text: str, accept: int) -> int:
  for ch in text:
    state = automaton.step(state, ch)
    if automaton.accepting[state]:
      return accept
  return state


def accept_state(table: np.ndarray) -> int:
  return table.shape[0] - 1
