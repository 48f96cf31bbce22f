"""The credit lab env and its task sets.

Reward comes only at the last step: 1.0 on success, 0.0 otherwise, plus optional Gaussian noise.
An invalid action (not admissible, garbage, empty) is a wasted step: the agent moves on to the
next room without opening a door, and at the critical room that counts as a wrong choice.
"""

from __future__ import annotations

import numpy as np

from stepopsd_jax.envs.base import StepResult, Task
from stepopsd_jax.envs.credit_lab.layout import INVALID_ACTION, CreditLabConfig, Layout

SPLITS = ("train", "eval")


class CreditLabEnv:
  """One credit lab episode at a time; the variant and its knobs come from the task payload.

  The task fixes the layout and texts. The outcome draws (the null_causal coin, reward noise)
  come, fresh at every reset, from a generator keyed by (task seed, env `seed`, episode count):
  deterministic, independent of every action, and different across the G rollouts of a group
  when their envs get distinct seeds (`BatchedEnv(lambda i: CreditLabEnv(seed=i), G)`).
  """

  def __init__(self, seed: int = 0):
    if seed < 0:
      raise ValueError(f"seed={seed} must be >= 0.")
    self.seed = seed
    self.num_episodes = 0
    self._layout: Layout | None = None
    self._room = 0  # 0-based index of the current room; == horizon once the episode is over
    self._clue_followed = False
    self._coin = False
    self._noise = 0.0

  @property
  def task_description(self) -> str:
    return self._current_layout().task_description()

  @property
  def max_steps(self) -> int:
    return self._current_layout().config.horizon

  def reset(self, task: Task) -> StepResult:
    config = CreditLabConfig.from_payload(task.payload)
    task_seed = int(task.payload["seed"])
    self._layout = Layout.from_seed(config, task_seed)
    outcome_rng = np.random.default_rng([task_seed, self.seed, self.num_episodes])
    self._coin = bool(outcome_rng.random() < config.coin_p)
    self._noise = float(outcome_rng.normal()) * config.reward_noise
    self.num_episodes += 1
    self._room = 0
    self._clue_followed = False
    return StepResult(self._layout.first_observation(), 0.0, False, self._info(True))

  def step(self, action: str) -> StepResult:
    layout = self._running_layout()
    doors = dict(zip(layout.actions(self._room), layout.doors[self._room]))
    colour = doors.get(_normalise(action))
    if self._room + 1 == layout.config.critical_step:
      self._clue_followed = colour == layout.treasure_door
    self._room += 1
    said = INVALID_ACTION if colour is None else f"You open the {colour} door."
    if self._room < layout.config.horizon:
      moved = "You move on without opening a door. " if colour is None else ""
      return StepResult(f"{said} {moved}{layout.room_text(self._room)}", 0.0, False,
                        self._info(colour is not None))
    return self._finish(said, colour is not None)

  def expert_action(self) -> str:
    """The clue's door at the critical room, the first admissible door elsewhere."""
    layout = self._running_layout()
    if self._room + 1 == layout.config.critical_step:
      return f"open {layout.treasure_door} door"
    return layout.actions(self._room)[0]

  def _finish(self, said: str, valid: bool) -> StepResult:
    won = self._won()
    ending = "you found the treasure!" if won else "you did not find the treasure."
    info = self._info(valid, won=won)
    info["clue_followed"] = self._clue_followed
    return StepResult(f"{said} The search is over: {ending}", float(won) + self._noise, True, info)

  def _won(self) -> bool:
    if self._current_layout().config.variant == "null_causal":
      return self._coin
    return self._clue_followed

  def _info(self, valid: bool, won: bool = False) -> dict:
    layout = self._current_layout()
    over = self._room >= layout.config.horizon
    return dict(won=won, admissible_actions=[] if over else layout.actions(self._room),
                subset=layout.config.subset, valid_action=valid)

  def _current_layout(self) -> Layout:
    if self._layout is None:
      raise RuntimeError("No episode yet: call reset(task) first.")
    return self._layout

  def _running_layout(self) -> Layout:
    layout = self._current_layout()
    if self._room >= layout.config.horizon:
      raise RuntimeError("The episode is over: call reset(task) to start another.")
    return layout


def _normalise(action: object) -> str | None:
  """Case- and whitespace-insensitive action text; None for non-strings."""
  return " ".join(action.lower().split()) if isinstance(action, str) else None


def task_seed(seed: int, split: str, index: int) -> int:
  """The layout seed of task `index`; its low bit is the split, so splits never share a seed."""
  if split not in SPLITS:
    raise ValueError(f"split={split!r}: choose one of {SPLITS}.")
  split_id = SPLITS.index(split)
  state = np.random.SeedSequence([seed, split_id, index]).generate_state(1, np.uint64)[0]
  return int(state >> np.uint64(2)) * 2 + split_id


def make_tasks(split: str, num: int, seed: int = 0, **knobs) -> list[Task]:
  """`num` tasks with ids like "critical_step-train-00017"; `knobs` are CreditLabConfig fields."""
  config = CreditLabConfig(**knobs)
  tasks = []
  for i in range(num):
    payload = dict(seed=task_seed(seed, split, i), **config.to_payload())
    reference = Layout.from_seed(config, payload["seed"]).reference()
    tasks.append(Task(f"{config.subset}-{split}-{i:05d}", config.subset, payload, reference))
  return tasks
