"""Passages and the JSONL corpus in the Search-R1 wiki-18 layout, read by byte offset.

Each corpus line is `{"id": "...", "contents": "Title\\ntext"}`: the title is the first line of
`contents`. Only the byte offsets of the lines stay in memory; a passage is read back with
`os.pread`, so a 21M-passage corpus costs 170 MB of offsets, and reads are thread-safe.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterator, Sequence

import numpy as np


class CorpusError(ValueError):
  """A malformed corpus file; the message names the file, the line and the fix."""


@dataclasses.dataclass(frozen=True)
class Passage:
  """One retrieved passage; `contents` is "Title\\ntext" as in the corpus."""

  id: str
  contents: str
  score: float = 0.0

  @property
  def title(self) -> str:
    return self.contents.split("\n", 1)[0]

  @property
  def text(self) -> str:
    parts = self.contents.split("\n", 1)
    return parts[1] if len(parts) > 1 else ""

  def to_json(self) -> dict:
    return {"id": self.id, "contents": self.contents}


def format_information(passages: Sequence[Passage]) -> str:
  """`<information>Doc 1 (Title: t) text\\nDoc 2 ...</information>`, the observation of a search."""
  if not passages:
    return "<information>No passages found.</information>"
  docs = "\n".join(f"Doc {i + 1} (Title: {p.title}) {p.text}".rstrip()
                   for i, p in enumerate(passages))
  return f"<information>{docs}</information>"


def parse_line(line: bytes | str, path: str, lineno: int) -> tuple[str, str]:
  """(id, contents) of one corpus line; raises CorpusError naming the problem and the fix."""
  where = f"corpus {path} line {lineno}"
  try:
    record = json.loads(line)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise CorpusError(f"{where} is not valid JSON ({e}); each line must be one object "
                      '{"id": "...", "contents": "Title\\ntext"}.') from e
  if not isinstance(record, dict) or not isinstance(record.get("contents"), str):
    raise CorpusError(f"{where} has no string 'contents' field; each line must be "
                      '{"id": "...", "contents": "Title\\ntext"} (title on the first line).')
  doc_id = record.get("id", lineno - 1)
  if not isinstance(doc_id, (str, int)):
    raise CorpusError(f"{where}: 'id' must be a string or an integer, got {doc_id!r:.50}.")
  return str(doc_id), record["contents"]


def scan(path: str) -> Iterator[tuple[int, str, str]]:
  """(byte offset, id, contents) of every non-blank line, validating each one."""
  if not os.path.isfile(path):
    raise CorpusError(f"corpus {path!r} does not exist; set env.kwargs.corpus to a JSONL file "
                      "(or generate one: "
                      "python -m stepopsd_jax.envs.search_qa.generate --out DIR).")
  offset = 0
  with open(path, "rb") as f:
    for lineno, line in enumerate(f, start=1):
      if line.strip():
        doc_id, contents = parse_line(line, path, lineno)
        yield offset, doc_id, contents
      offset += len(line)


class Corpus:
  """Random access to a JSONL corpus's passages by row number (0-based, blank lines skipped)."""

  def __init__(self, path: str, offsets: np.ndarray):
    """`offsets`: int64 [N + 1], the start of each passage line and the file size at the end."""
    self.path = path
    self.offsets = offsets
    self._fd = os.open(path, os.O_RDONLY)

  def __len__(self) -> int:
    return len(self.offsets) - 1

  def __del__(self):
    fd = getattr(self, "_fd", None)
    if fd is not None:
      os.close(fd)

  def get(self, row: int, score: float = 0.0) -> Passage:
    start, end = int(self.offsets[row]), int(self.offsets[row + 1])
    line = os.pread(self._fd, end - start, start).split(b"\n", 1)[0]
    doc_id, contents = parse_line(line, self.path, row + 1)
    return Passage(doc_id, contents, score)
