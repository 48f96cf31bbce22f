"""Credit lab knobs, the per-task layout drawn from a seed, and every text the agent reads.

An episode is a walk through `horizon` rooms, opening one of `num_choices` doors in each. A clue
names the treasure door of one room, the critical step (1-based, like the room numbers the agent
reads). In `critical_step` only that door decides success; in `null_causal` (the control) the
surface is identical but success is a coin flip that no action influences.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import numpy as np

VARIANTS = ("critical_step", "null_causal")
CLUE_MODES = ("task", "first_observation", "none")
COLOURS = ("red", "green", "blue", "yellow", "purple", "orange", "white", "black", "silver",
           "golden", "pink", "brown")
ROOMS = ("a dusty hall", "a narrow corridor", "a cold cellar", "a quiet library", "a small chapel",
         "a cluttered workshop", "a bright kitchen", "a damp cave", "an empty ballroom",
         "a tiny study")
INVALID_ACTION = "Nothing happens. Choose one of the admissible actions."


@dataclasses.dataclass(frozen=True)
class CreditLabConfig:
  """The causal structure of a credit lab task; stored in the task payload."""

  variant: str = "critical_step"  # or "null_causal"
  horizon: int = 4  # K rooms; every episode lasts exactly K steps
  num_choices: int = 4  # N doors per room
  critical_step: int = 2  # 1-based room whose door decides success (critical_step variant)
  clue_mode: str = "task"  # "task": clue in the task text; "first_observation": shown once;
  # "none": no clue anywhere (with treasure_colours=1 the door is fixed across tasks: only
  # reward, or a hindsight teacher shown a winner, reveals it)
  reward_noise: float = 0.0  # std of Gaussian noise added to the final reward
  coin_p: float = 0.5  # success probability of the null_causal coin
  num_colours: int = 0  # palette the doors are drawn from (0: all); = num_choices makes every
  # task use the same doors, so a from-scratch policy needs no copying to act validly
  treasure_colours: int = 0  # the treasure's colour is drawn from the palette's first this-many
  # colours (0: from the task's own doors). 1 fixes it (always red): the decision needs no
  # reading, only credit for the right room; 2, 3, ... make the policy read the clue again.

  def __post_init__(self):
    _check_choice("variant", self.variant, VARIANTS)
    _check_choice("clue_mode", self.clue_mode, CLUE_MODES)
    if self.horizon < 1:
      raise ValueError(f"horizon={self.horizon} must be at least 1.")
    if not 2 <= self.num_choices <= len(COLOURS):
      raise ValueError(f"num_choices={self.num_choices} must be in [2, {len(COLOURS)}].")
    if self.num_colours and not self.num_choices <= self.num_colours <= len(COLOURS):
      raise ValueError(f"num_colours={self.num_colours} must be 0 (all) or in "
                       f"[num_choices={self.num_choices}, {len(COLOURS)}].")
    palette = self.num_colours or len(COLOURS)
    if not 0 <= self.treasure_colours <= palette:
      raise ValueError(f"treasure_colours={self.treasure_colours} must be 0 (any door) or in "
                       f"[1, {palette}] (the palette size, num_colours or all {len(COLOURS)}).")
    if not 1 <= self.critical_step <= self.horizon:
      raise ValueError(f"critical_step={self.critical_step} is 1-based: it must be in "
                       f"[1, horizon={self.horizon}].")
    if self.reward_noise < 0:
      raise ValueError(f"reward_noise={self.reward_noise} must be >= 0.")
    if not 0.0 <= self.coin_p <= 1.0:
      raise ValueError(f"coin_p={self.coin_p} must be in [0, 1].")

  @property
  def subset(self) -> str:
    """The per-subset metrics key: the variant, with `_memory` when the clue is shown once."""
    return self.variant + {"task": "", "first_observation": "_memory",
                           "none": "_no_clue"}[self.clue_mode]

  def to_payload(self) -> dict[str, Any]:
    return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

  @classmethod
  def from_payload(cls, payload: dict[str, Any]) -> "CreditLabConfig":
    fields = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in payload.items() if k in fields})


def _check_choice(name: str, value: str, choices: tuple[str, ...]):
  if value not in choices:
    raise ValueError(f"{name}={value!r}: choose one of {choices}.")


@dataclasses.dataclass(frozen=True)
class Layout:
  """Everything a task seed decides: door colours and their order per room, room descriptions."""

  config: CreditLabConfig
  doors: tuple[tuple[str, ...], ...]  # per room, in the order shown and admissible
  rooms: tuple[str, ...]  # a description per room
  treasure_door: str  # the colour the clue names for the critical room

  @classmethod
  @functools.lru_cache(maxsize=4096)  # the G rollouts of a group reset with the same task
  def from_seed(cls, config: CreditLabConfig, seed: int) -> "Layout":
    rng = np.random.default_rng(seed)
    palette = COLOURS[:config.num_colours or len(COLOURS)]
    if config.treasure_colours:  # the treasure's colour first, then the other doors
      treasure = palette[rng.integers(config.treasure_colours)]
      others = [c for c in palette if c != treasure]
      picks = rng.permutation(len(others))[:config.num_choices - 1]
      colours = [treasure] + [others[i] for i in picks]
    else:
      colours = [palette[i] for i in rng.permutation(len(palette))[:config.num_choices]]
      treasure = colours[rng.integers(config.num_choices)]
    doors = tuple(tuple(colours[j] for j in rng.permutation(config.num_choices))
                  for _ in range(config.horizon))
    rooms = tuple(ROOMS[i] for i in rng.integers(len(ROOMS), size=config.horizon))
    return cls(config, doors, rooms, treasure)

  def actions(self, room: int) -> list[str]:
    """Admissible actions in `room` (0-based), in the order the observation lists the doors."""
    return [f"open {colour} door" for colour in self.doors[room]]

  def clue(self) -> str:
    return (f"The treasure is behind the {self.treasure_door} door of room "
            f"{self.config.critical_step}.")

  def task_description(self) -> str:
    c = self.config
    text = (f"Find the treasure. You walk through {c.horizon} rooms and open exactly one door in "
            f"each; the search ends after room {c.horizon}.")
    if c.clue_mode == "task":
      return f"{text} {self.clue()}"
    if c.clue_mode == "first_observation":
      return f"{text} A clue is shown only once: remember it."
    return text

  def room_text(self, room: int) -> str:
    return (f"You are in room {room + 1} of {self.config.horizon}, {self.rooms[room]}. "
            f"Doors: {', '.join(self.doors[room])}.")

  def first_observation(self) -> str:
    if self.config.clue_mode == "first_observation":
      return f'A note on the wall reads: "{self.clue()}" {self.room_text(0)}'
    return self.room_text(0)

  def reference(self) -> str:
    """The expert plan, for hindsight contexts (the same text for the null control)."""
    return (f"In room {self.config.critical_step}, open the {self.treasure_door} door. "
            "The doors of the other rooms do not matter.")
