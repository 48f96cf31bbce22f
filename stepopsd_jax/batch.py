"""The StepBatch (DESIGN 2): one row per agent step, the one type that crosses from the host-side
rollout into the jitted step.

A pytree (`flax.struct.dataclass`): the rollout builds it from numpy arrays, the multi-host join
re-pads it and places it on the mesh, and `train_step` reads its fields by name. Each field
declares its dims: B rows, P student prompt, T teacher prompt, R response. Prompts are
left-padded and responses right-padded, so every response starts at the same column and the
student and teacher log-probs of a row line up as [B, R] without gathers. `abstract`,
`shardings` and `repad` derive everything from those declarations, so adding a field is one
edit here.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.struct
import jax
import numpy as np
from jax.sharding import Mesh

from stepopsd_jax import sharding

DIMS = "BPTR"  # rows, student prompt, teacher prompt, response


def _field(dims: str, dtype: Any, doc: str):
  return flax.struct.field(metadata={"dims": dims, "dtype": np.dtype(dtype), "doc": doc})


@flax.struct.dataclass
class StepBatch:
  prompt_tokens: Any = _field("BP", np.int32, "left-padded student context")
  prompt_mask: Any = _field("BP", bool, "real prompt tokens")
  teacher_prompt_tokens: Any = _field("BT", np.int32, "left-padded hindsight context (T = 0 "
                                      "when the estimator reads no teacher)")
  teacher_prompt_mask: Any = _field("BT", bool, "real teacher prompt tokens")
  response_tokens: Any = _field("BR", np.int32, "right-padded generated tokens")
  response_mask: Any = _field("BR", bool, "real response tokens")
  control_mask: Any = _field("BR", bool, "tokens StepOPSD may reweight (within response_mask)")
  behavior_logprobs: Any = _field("BR", np.float32, "sampler log-probs, 0 off the response")
  traj_id: Any = _field("B", np.int32, "trajectory")
  step_idx: Any = _field("B", np.int32, "position of the step in its trajectory")
  group_id: Any = _field("B", np.int32, "task group (the G rollouts of one task)")
  step_reward: Any = _field("B", np.float32, "reward received after this step")
  traj_return: Any = _field("B", np.float32, "return of the whole trajectory")
  traj_success: Any = _field("B", bool, "the trajectory succeeded")
  anchor_id: Any = _field("B", np.int32, "hash of the step's first observation (GiGPO)")
  has_hindsight: Any = _field("B", bool, "the teacher prompt holds a hindsight block")
  row_valid: Any = _field("B", bool, "a real row, not padding")

  @property
  def num_rows(self) -> int:
    """Valid rows (a host-side count)."""
    return int(np.asarray(self.row_valid).sum())

  def sizes(self) -> dict[str, int]:
    """{"B": rows, "P": prompt, "T": teacher prompt, "R": response} of this batch."""
    return {"B": self.prompt_tokens.shape[0], "P": self.prompt_tokens.shape[1],
            "T": self.teacher_prompt_tokens.shape[1], "R": self.response_tokens.shape[1]}

  @classmethod
  def abstract(cls, rows: int, prompt: int, teacher: int, response: int,
               mesh: Mesh | None = None) -> StepBatch:
    """ShapeDtypeStructs of every field (placed like `shardings(mesh)` when a mesh is given)."""
    sizes = dict(zip(DIMS, (rows, prompt, teacher, response)))
    place = cls.shardings(mesh) if mesh is not None else None
    return cls(**{f.name: jax.ShapeDtypeStruct(
        tuple(sizes[d] for d in f.metadata["dims"]), f.metadata["dtype"],
        sharding=getattr(place, f.name) if place is not None else None) for f in _fields()})

  @classmethod
  def shardings(cls, mesh: Mesh) -> StepBatch:
    """Rows over the mesh's (data, fsdp) axes, everything else replicated."""
    return cls(**{f.name: sharding.batch_sharding(mesh, len(f.metadata["dims"]))
                  for f in _fields()})

  def repad(self, rows: int, prompt: int, teacher: int, pad_id: int = 0) -> StepBatch:
    """The same batch at larger static shapes (host, numpy): invalid rows appended at the end,
    prompts widened on the left (they are left-padded); responses keep their width."""
    have = self.sizes()
    want = {"B": rows, "P": prompt, "T": teacher, "R": have["R"]}
    if any(want[d] < have[d] for d in DIMS):
      raise ValueError(f"repad can only grow a batch: {have} -> {want}.")
    out = {}
    for f in _fields():
      x = np.asarray(getattr(self, f.name))
      widths = [(0, want["B"] - have["B"])] + [(want[d] - have[d], 0) for d in
                                               f.metadata["dims"][1:]]
      fill = pad_id if f.name.endswith("_tokens") else 0
      out[f.name] = np.pad(x, widths, constant_values=np.asarray(fill).astype(x.dtype))
    return StepBatch(**out)

  def to_numpy(self) -> StepBatch:
    return jax.tree.map(np.asarray, self)


def _fields() -> tuple[dataclasses.Field, ...]:
  return dataclasses.fields(StepBatch)


def field_dims() -> dict[str, str]:
  """{field name: its dims}, e.g. {"prompt_tokens": "BP", ...}."""
  return {f.name: f.metadata["dims"] for f in _fields()}
