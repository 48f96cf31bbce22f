"""StepRows -> StepBatch: the rollout's agent steps padded to bucketed static shapes.

A StepRow is one agent step as the rollout loop records it (host side, unpadded). The batch's
row count and prompt widths are rounded up to the sampler's buckets (`Buckets.step_rows` and
`prompt`), so the train step compiles once per bucket combination, not per batch; the type
itself is `stepopsd_jax.batch.StepBatch`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from stepopsd_jax.batch import StepBatch
from stepopsd_jax.sampling import Buckets, pad_left


@dataclasses.dataclass
class StepRow:
  """One agent step as the rollout loop records it (host side, unpadded)."""
  prompt: list[int]
  teacher_prompt: list[int]  # empty when the estimator reads no teacher
  response: list[int]
  logprobs: list[float]
  control: list[bool]
  traj_id: int
  step_idx: int
  group_id: int
  step_reward: float
  anchor_id: int
  traj_return: float = 0.0
  traj_success: bool = False
  has_hindsight: bool = False


def _bucket(sizes: tuple[int, ...], n: int, what: str) -> int:
  size = Buckets.pick(sizes, n)
  if size is None:
    raise ValueError(f"{n} {what} exceed the largest bucket {sizes[-1]}; add a larger bucket "
                     "(the rollout loop keeps prompts within it: build rows with it).")
  return size


def check_ids(traj_id: np.ndarray, group_id: np.ndarray, row_valid: np.ndarray) -> None:
  """The estimators' segment sums have one slot per row: ids must lie in [0, B)."""
  b = len(row_valid)
  for name, ids in (("traj_id", traj_id), ("group_id", group_id)):
    bad = ids[row_valid & ((ids < 0) | (ids >= b))]
    if bad.size:
      raise ValueError(f"{name} {bad[:4].tolist()} outside [0, {b}) (the batch's rows): number "
                       "trajectories and groups densely from 0, e.g. by order of first row.")


def pad_right(seqs: Sequence[Sequence], width: int, fill, dtype, rows: int) -> np.ndarray:
  out = np.full((rows, width), fill, dtype)
  for i, seq in enumerate(seqs):
    seq = list(seq)[:width]
    out[i, :len(seq)] = seq
  return out


def build_step_batch(rows: Sequence[StepRow], *, pad_id: int, response_len: int,
                     buckets: Buckets = Buckets()) -> StepBatch:
  """Pads rows to bucketed shapes: B to a row bucket, the prompts to prompt buckets (teacher
  prompts to width 0 when no row has one)."""
  b = _bucket(buckets.step_rows, max(len(rows), 1), "step rows")
  p = _bucket(buckets.prompt, max([len(r.prompt) for r in rows] + [1]), "prompt tokens")
  longest_teacher = max([len(r.teacher_prompt) for r in rows] + [0])
  pt = _bucket(buckets.prompt, longest_teacher, "teacher tokens") if longest_teacher else 0
  column = lambda name, dtype: np.array([getattr(r, name) for r in rows] + [0] * (b - len(rows)),
                                        dtype)
  valid = np.arange(b) < len(rows)
  check_ids(column("traj_id", np.int32), column("group_id", np.int32), valid)
  prompt, prompt_mask = pad_left([r.prompt for r in rows], p, pad_id, b)
  teacher, teacher_mask = pad_left([r.teacher_prompt for r in rows], pt, pad_id, b)
  response_mask = pad_right([[True] * len(r.response) for r in rows], response_len, False, bool, b)
  return StepBatch(
      prompt_tokens=prompt, prompt_mask=prompt_mask, teacher_prompt_tokens=teacher,
      teacher_prompt_mask=teacher_mask,
      response_tokens=pad_right([r.response for r in rows], response_len, pad_id, np.int32, b),
      response_mask=response_mask,
      control_mask=pad_right([r.control for r in rows], response_len, False, bool, b)
      & response_mask,
      behavior_logprobs=pad_right([r.logprobs for r in rows], response_len, 0.0, np.float32, b),
      traj_id=column("traj_id", np.int32), step_idx=column("step_idx", np.int32),
      group_id=column("group_id", np.int32), step_reward=column("step_reward", np.float32),
      traj_return=column("traj_return", np.float32), traj_success=column("traj_success", bool),
      anchor_id=column("anchor_id", np.int32), has_hindsight=column("has_hindsight", bool),
      row_valid=valid)
