"""Retrievers behind one interface, built from a spec and shared by every env of a process.

`Retriever.search(queries, topk) -> list[list[Passage]]`. A task payload carries a
`RetrieverSpec` (plain data), and `get_retriever(spec)` gives one shared instance per spec, so
the N envs of a rollout load one BM25 index or reuse one client, and share a query cache that
`prefetch` fills with one batched call before the envs step one by one.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import threading
from collections.abc import Sequence
from typing import Protocol

from stepopsd_jax.envs.search_qa import http_client
from stepopsd_jax.envs.search_qa.corpus import Passage

RETRIEVERS = ("bm25", "http")


class Retriever(Protocol):
  def search(self, queries: Sequence[str], topk: int) -> list[list[Passage]]:
    """For each query, up to `topk` passages, best first."""


@dataclasses.dataclass(frozen=True)
class RetrieverSpec:
  """Plain-data description of a retriever (it travels in task payloads)."""

  kind: str = "bm25"  # bm25 | http
  corpus: str = ""  # JSONL corpus (bm25)
  url: str = ""  # e.g. http://127.0.0.1:8000/retrieve (http)
  index_dir: str = ""  # bm25: explicit index directory; "" = the cache under STEPOPSD_CACHE_DIR
  # http: per-request timeout; retries with backoff 1, 2, 4 ... s, all within deadline_s
  # (`http_client.HttpRetriever`). The defaults ride out about a minute of server downtime.
  timeout_s: float = http_client.TIMEOUT_S
  retries: int = http_client.RETRIES
  backoff_s: float = http_client.BACKOFF_S
  deadline_s: float = http_client.DEADLINE_S

  def __post_init__(self):
    if self.kind not in RETRIEVERS:
      raise ValueError(f"retriever={self.kind!r}: choose one of {RETRIEVERS}.")
    if self.kind == "bm25" and not self.corpus:
      raise ValueError("retriever='bm25' needs a JSONL corpus: set env.kwargs.corpus "
                       "(or use retriever='http' with env.kwargs.retriever_url).")
    if self.kind == "http" and not self.url:
      raise ValueError("retriever='http' needs env.kwargs.retriever_url, e.g. "
                       "http://127.0.0.1:8000/retrieve")

  def to_payload(self) -> dict:
    return dataclasses.asdict(self)

  @classmethod
  def from_payload(cls, payload: dict) -> RetrieverSpec:
    return cls(**payload)


class CachedRetriever:
  """A retriever with an LRU cache of (query, topk) -> passages; thread-safe."""

  def __init__(self, inner: Retriever, max_entries: int = 100_000):
    self.inner = inner
    self.max_entries = max_entries
    self._cache: collections.OrderedDict = collections.OrderedDict()
    self._lock = threading.Lock()

  def search(self, queries: Sequence[str], topk: int) -> list[list[Passage]]:
    """Cached results where there are some; the misses in one batched call."""
    with self._lock:
      found = {q: self._cache[(q, topk)] for q in queries if (q, topk) in self._cache}
      for q in found:
        self._cache.move_to_end((q, topk))
    missing = list(dict.fromkeys(q for q in queries if q not in found))
    if missing:
      found.update(zip(missing, self.inner.search(missing, topk)))
      self._store(missing, topk, found)
    return [found[q] for q in queries]

  def _store(self, queries: list[str], topk: int, results: dict) -> None:
    with self._lock:
      for q in queries:
        self._cache[(q, topk)] = results[q]
      while len(self._cache) > self.max_entries:
        self._cache.popitem(last=False)


def build_retriever(spec: RetrieverSpec) -> Retriever:
  """A new, uncached retriever for `spec`."""
  if spec.kind == "bm25":
    from stepopsd_jax.envs.search_qa.bm25 import BM25Retriever
    return BM25Retriever(spec.corpus, index_dir=spec.index_dir or None)
  return http_client.HttpRetriever(spec.url, timeout_s=spec.timeout_s, retries=spec.retries,
                                   backoff_s=spec.backoff_s, deadline_s=spec.deadline_s)


@functools.lru_cache(maxsize=8)
def get_retriever(spec: RetrieverSpec) -> CachedRetriever:
  """The process-wide cached retriever of `spec`."""
  return CachedRetriever(build_retriever(spec))
