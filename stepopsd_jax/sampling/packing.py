"""Prompts packed several to a prefill row: where each prompt goes, and where each decode row
finds its prompt again (host arrays; `generation.prefill_packed` runs the packed prefill)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np


class Packed(NamedTuple):
  """Prompts packed into prefill rows of one prompt bucket's width (host arrays)."""
  tokens: np.ndarray  # int32 [N, W]
  positions: np.ndarray  # int32 [N, W]: 0 at each prompt's first token
  segments: np.ndarray  # int32 [N, W]: 1 + the prompt's index; 0 on unused slots
  starts: np.ndarray  # int32 [prompts]: each prompt's first slot, flattened (row * W + column)


def pack(seqs: Sequence[Sequence[int]], width: int, rows_multiple: int = 1) -> Packed:
  """First-fit decreasing: the longest prompt first, each into the first row with room (ties in
  order). Rows are rounded up to a power of two times `rows_multiple` (a compile per bucket, and
  rows that shard evenly). Every prompt must fit in `width`."""
  order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))
  used: list[int] = []
  place = [(0, 0)] * len(seqs)
  for i in order:
    n = len(seqs[i])
    if n > width:
      raise ValueError(f"prompt {i} has {n} tokens, more than the packing width {width}.")
    row = next((r for r, u in enumerate(used) if u + n <= width), len(used))
    if row == len(used):
      used.append(0)
    place[i], used[row] = (row, used[row]), used[row] + n
  rows = rows_multiple
  while rows < len(used):
    rows *= 2
  tokens, positions, segments = (np.zeros((rows, width), np.int32) for _ in range(3))
  for i, (row, col) in enumerate(place):
    n = len(seqs[i])
    tokens[row, col:col + n] = seqs[i]
    positions[row, col:col + n] = np.arange(n)
    segments[row, col:col + n] = i + 1
  starts = np.asarray([row * width + col for row, col in place], np.int32)
  return Packed(tokens, positions, segments, starts)


def unpack_index(lengths: np.ndarray, starts: np.ndarray, rows_B: np.ndarray, real_B: np.ndarray,
                 width: int) -> tuple[np.ndarray, np.ndarray]:
  """Where each decode row's left-padded prompt slots come from in the packed prefill: a flat
  index [B, W] (row * W + column; 0 on padding) and the prompt mask [B, W]. Row b takes prompt
  `rows_B[b]`; rows with `real_B` False are padding (all-False mask)."""
  n = np.where(real_B, lengths[rows_B], 0)[:, None]
  col = np.arange(width)[None, :]
  mask = col >= width - n
  index = np.where(mask, starts[rows_B][:, None] + col - (width - n), 0).astype(np.int32)
  return index, mask
