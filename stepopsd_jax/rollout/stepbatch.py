"""The StepBatch (DESIGN 2): one row per agent step, numpy arrays with bucketed static shapes.

Prompts are left-padded and responses right-padded, so every response starts at the same column
and the student and teacher log-probs of a row line up as [B, R] without gathers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from stepopsd_jax.sampling.sampler import Buckets


@dataclasses.dataclass
class StepBatch:
  prompt_tokens: np.ndarray  # int32 [B, P], left-padded student context
  prompt_mask: np.ndarray  # bool [B, P], real prompt tokens
  teacher_prompt_tokens: np.ndarray  # int32 [B, P_T], left-padded hindsight context
  teacher_prompt_mask: np.ndarray  # bool [B, P_T]
  response_tokens: np.ndarray  # int32 [B, R], right-padded
  response_mask: np.ndarray  # bool [B, R]
  control_mask: np.ndarray  # bool [B, R], subset of response_mask
  behavior_logprobs: np.ndarray  # f32 [B, R], 0 outside response_mask
  traj_id: np.ndarray  # int32 [B]
  step_idx: np.ndarray  # int32 [B]
  group_id: np.ndarray  # int32 [B]
  step_reward: np.ndarray  # f32 [B]
  traj_return: np.ndarray  # f32 [B]
  traj_success: np.ndarray  # bool [B]
  anchor_id: np.ndarray  # int32 [B]
  has_hindsight: np.ndarray  # bool [B], the teacher prompt holds a hindsight block
  row_valid: np.ndarray  # bool [B]

  @property
  def num_rows(self) -> int:
    return int(self.row_valid.sum())

  def arrays(self) -> dict[str, np.ndarray]:
    return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


@dataclasses.dataclass
class StepRow:
  """One agent step as the rollout loop records it (host side, unpadded)."""
  prompt: list[int]
  teacher_prompt: list[int]
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


def pad_left(seqs: Sequence[Sequence[int]], width: int, pad_id: int, rows: int) -> tuple:
  tokens = np.full((rows, width), pad_id, np.int32)
  mask = np.zeros((rows, width), bool)
  for i, seq in enumerate(seqs):
    seq = list(seq)[-width:]
    if seq:
      tokens[i, width - len(seq):], mask[i, width - len(seq):] = seq, True
  return tokens, mask


def pad_right(seqs: Sequence[Sequence], width: int, fill, dtype, rows: int) -> np.ndarray:
  out = np.full((rows, width), fill, dtype)
  for i, seq in enumerate(seqs):
    seq = list(seq)[:width]
    out[i, :len(seq)] = seq
  return out


def build_step_batch(rows: Sequence[StepRow], *, pad_id: int, response_len: int,
                     buckets: Buckets = Buckets()) -> StepBatch:
  """Pads rows to bucketed shapes: B to a batch bucket, P and P_T to prompt buckets."""
  b = _bucket(buckets.batch, max(len(rows), 1), "step rows")
  p = _bucket(buckets.prompt, max([len(r.prompt) for r in rows] + [1]), "prompt tokens")
  pt = _bucket(buckets.prompt, max([len(r.teacher_prompt) for r in rows] + [1]), "teacher tokens")
  valid = np.arange(b) < len(rows)
  check_ids(np.array([r.traj_id for r in rows] + [0] * (b - len(rows))),
            np.array([r.group_id for r in rows] + [0] * (b - len(rows))), valid)
  prompt, prompt_mask = pad_left([r.prompt for r in rows], p, pad_id, b)
  teacher, teacher_mask = pad_left([r.teacher_prompt for r in rows], pt, pad_id, b)
  lengths = [len(r.response) for r in rows]
  response_mask = pad_right([[True] * n for n in lengths], response_len, False, bool, b)
  column = lambda name, dtype: np.array([getattr(r, name) for r in rows] + [0] * (b - len(rows)),
                                        dtype)
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
      traj_return=column("traj_return", np.float32),
      traj_success=column("traj_success", bool), anchor_id=column("anchor_id", np.int32),
      has_hindsight=column("has_hindsight", bool), row_valid=valid)


def repad(arrays: dict[str, np.ndarray], rows: int, prompt_len: int, teacher_len: int,
          pad_id: int = 0) -> dict[str, np.ndarray]:
  """The same StepBatch arrays at larger static shapes: invalid rows appended at the end, the
  (left-padded) student and teacher prompts widened on the left. Responses keep their width."""
  b, p = arrays["prompt_tokens"].shape
  pt = arrays["teacher_prompt_tokens"].shape[1]
  if rows < b or prompt_len < p or teacher_len < pt:
    raise ValueError(f"repad can only grow a batch: [{b}, {p}, {pt}] -> "
                     f"[{rows}, {prompt_len}, {teacher_len}] (rows, prompt, teacher prompt).")
  widen = {"prompt_tokens": prompt_len - p, "prompt_mask": prompt_len - p,
           "teacher_prompt_tokens": teacher_len - pt, "teacher_prompt_mask": teacher_len - pt}
  out = {}
  for name, x in arrays.items():
    pad = [(0, rows - b)] + [(0, 0)] * (x.ndim - 1)
    if name in widen:
      pad[1] = (widen[name], 0)
    fill = pad_id if name.endswith("_tokens") else 0
    out[name] = np.pad(x, pad, constant_values=np.asarray(fill).astype(x.dtype))
  return out
