"""The hindsight teacher prompt of StepOPSD and OPSD (DESIGN 4.8, step 2).

The teacher sees the student's user message for a step with a hindsight block appended:

    [Hindsight] This attempt failed (return 0).
    A successful attempt at this task took these actions: 1. open red door; 2. open blue door
    Reference: ...

The block shows the trajectory's own outcome, the actions of *another* trajectory of its group
that succeeded (the shortest such sibling; never the trajectory's own actions: a teacher shown
the tokens it scores learns nothing), and optionally the task's reference (expert plan or
answer). Without a sibling's actions or a reference there is nothing privileged to show: the row
gets no block, and the step gives it no reshaping (`has_hindsight` false).

A block that would push the teacher prompt past the largest prompt bucket is shortened, never
allowed to stop the run: first the sibling's actions far from the current step are left out,
then the reference is cut; the student's message always stays whole.
"""

from __future__ import annotations

import bisect
import dataclasses
from collections.abc import Callable, Sequence

OMITTED = "..."


@dataclasses.dataclass(frozen=True)
class Hindsight:
  """What a trajectory's teacher may be shown (before fitting it to a row)."""
  won: bool
  traj_return: float
  demo_actions: tuple[str, ...] | None  # a winning sibling's actions by step; "" = parse failed
  reference: str | None

  @property
  def available(self) -> bool:
    return self.demo_actions is not None or self.reference is not None


def demo_source(wins: Sequence[bool], lengths: Sequence[int], group: Sequence[int],
                me: int) -> int | None:
  """The trajectory whose actions `me`'s teacher is shown: the shortest other winner of the
  group (lowest index on ties), or None when no other trajectory of the group won."""
  others = [j for j in group if j != me and wins[j]]
  return min(others, key=lambda j: (lengths[j], j)) if others else None


def block(h: Hindsight, step: int, radius: int | None = None,
          reference_chars: int | None = None) -> str | None:
  """The block text for the row of step `step` (0-based); None when nothing is available.

  `radius`: show only the sibling's actions of steps within `radius` of this one (the others
  become "..."); `reference_chars`: cut the reference to that many characters. Steps whose
  response did not parse are left out (their number is skipped, so numbers stay the steps').
  """
  if not h.available:
    return None
  lines = [f"[Hindsight] This attempt {'succeeded' if h.won else 'failed'} "
           f"(return {h.traj_return:g})."]
  if h.demo_actions is not None:
    lines.append("A successful attempt at this task took these actions: "
                 + _demo_list(h.demo_actions, step, radius))
  if h.reference is not None:
    ref = h.reference if reference_chars is None else h.reference[:reference_chars]
    lines.append(f"Reference: {ref}" + (OMITTED if len(ref) < len(h.reference) else ""))
  return "\n".join(lines)


def _demo_list(actions: Sequence[str], step: int, radius: int | None) -> str:
  items, skipped = [], False
  for k, action in enumerate(actions):
    if radius is not None and abs(k - step) > radius:
      if not skipped:
        items.append(OMITTED)
      skipped = True
      continue
    skipped = False
    if action:
      items.append(f"{k + 1}. {action}")
  return "; ".join(items)


@dataclasses.dataclass(frozen=True)
class Fitted:
  tokens: list[int]  # the teacher prompt's token ids
  has_hindsight: bool  # a block is in it
  shortened: bool  # the block had to be shortened to fit


def teacher_prompt(render: Callable[[str], list[int]], user_text: str, h: Hindsight, step: int,
                   limit: int, student: list[int]) -> Fitted:
  """The teacher prompt of one row, at most `limit` tokens; `student` is the student prompt
  (what the teacher prompt falls back to when no block fits or none is available)."""
  if not h.available:
    return Fitted(student, False, False)
  if len(student) >= limit:  # the student's prompt fills the bucket: no room for any block
    return Fitted(student, False, True)
  candidates = _shorter_and_shorter(h, step)
  tokens_of = lambda i: render(user_text + "\n\n" + block(h, step, *candidates[i]))
  full = tokens_of(0)
  if len(full) <= limit:
    return Fitted(full, True, False)
  # Candidates get shorter along the list: find the first that fits by bisection.
  lengths = _LazyLengths(lambda i: len(tokens_of(i)))
  i = bisect.bisect_left(lengths, -limit, lo=1, hi=len(candidates), key=lambda n: -n)
  while i < len(candidates):  # tokenization is not always monotone in the text: check
    tokens = tokens_of(i)
    if len(tokens) <= limit:
      return Fitted(tokens, True, True)
    i += 1
  return Fitted(student, False, True)


def _shorter_and_shorter(h: Hindsight, step: int) -> list[tuple[int | None, int | None]]:
  """(radius, reference_chars) from the whole block to the least of it, each no longer than the
  one before: sibling actions away from this step go first, then the reference's tail."""
  n = len(h.demo_actions or ())
  radii = [None] + list(range(max(n - 1, step, 0), -1, -1))
  out = [(r, None) for r in radii]
  if h.reference is not None:
    out += [(0, c) for c in range(len(h.reference) - 1, -1, -1)]
  return out


class _LazyLengths:
  """A sequence whose items are computed on access (bisect reads only log2(n) of them)."""

  def __init__(self, fn: Callable[[int], int]):
    self._fn, self._cache = fn, {}

  def __getitem__(self, i: int) -> int:
    if i not in self._cache:
      self._cache[i] = self._fn(i)
    return self._cache[i]

  def __len__(self) -> int:  # bisect is always given hi
    raise TypeError("_LazyLengths has no length")
