"""Client of the Search-R1 retrieval server: `POST /retrieve` with timeouts, retries, batching.

Request: `{"queries": [...], "topk": k, "return_scores": true}`. Response: `{"result": [...]}`
with one list per query of `{"document": {"id", "contents"}, "score": s}` (or, without scores,
bare `{"id", "contents"}` documents).

Outages: a refused connection, a timeout, HTTP 5xx or 429, and an answer that is not the
protocol's (not JSON, the wrong shape: a proxy's error page, a server half started) are retried
with exponential backoff (`backoff_s`, 2x, 4x, ...) for at most `retries` more attempts and
`deadline_s` seconds in all, each retry logged as a warning; then `RetrieverError`, which ends the
episodes that needed the search as env errors (`BatchedEnv`, counted in `rollout/env_errors`).
Other 4xx answers are not retried: the request itself is wrong.
"""

from __future__ import annotations

import http.client
import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Sequence

from stepopsd_jax.envs.search_qa.corpus import Passage

log = logging.getLogger(__name__)

SERVE_HINT = ("start one with `python -m stepopsd_jax.envs.search_qa.serve --corpus FILE "
              "--port 8000`, or fix env.kwargs.retriever_url")
# Defaults: ride out about a minute of downtime (waits 1+2+4+8+16+32 s), give up after 2 min.
TIMEOUT_S, RETRIES, BACKOFF_S, DEADLINE_S = 30.0, 6, 1.0, 120.0


class RetrieverError(RuntimeError):
  """Retrieval failed; the message says why and what to do."""


class _Retryable(Exception):
  pass


class HttpRetriever:
  """Top-k passages from a Search-R1-protocol retrieval server."""

  def __init__(self, url: str, timeout_s: float = TIMEOUT_S, retries: int = RETRIES,
               backoff_s: float = BACKOFF_S, batch_size: int = 512, *,
               deadline_s: float = DEADLINE_S):
    """`url` is the full endpoint, e.g. "http://127.0.0.1:8000/retrieve". A request gets
    `timeout_s`; a failed one is retried after `backoff_s`, 2x, 4x ... seconds, at most `retries`
    times and never past `deadline_s` seconds after the first attempt began."""
    if not url.startswith(("http://", "https://")):
      raise ValueError(f"retriever_url={url!r} must start with http:// or https://, e.g. "
                       "http://127.0.0.1:8000/retrieve")
    if timeout_s <= 0 or retries < 0 or batch_size < 1 or backoff_s < 0 or deadline_s <= 0:
      raise ValueError(f"timeout_s={timeout_s} and deadline_s={deadline_s} must be > 0, "
                       f"retries={retries} and backoff_s={backoff_s} >= 0, batch_size="
                       f"{batch_size} >= 1.")
    self.url, self.timeout_s, self.retries = url, timeout_s, retries
    self.backoff_s, self.batch_size, self.deadline_s = backoff_s, batch_size, deadline_s
    self.num_requests = self.num_retries = 0  # counters for logs and tests

  def search(self, queries: Sequence[str], topk: int) -> list[list[Passage]]:
    """For each query, the server's top-`topk` passages, in `batch_size` requests."""
    if topk < 1:
      raise ValueError(f"topk={topk} must be >= 1.")
    out: list[list[Passage]] = []
    for start in range(0, len(queries), self.batch_size):
      out.extend(self._batch(list(queries[start:start + self.batch_size]), topk))
    return out

  def _batch(self, queries: list[str], topk: int) -> list[list[Passage]]:
    body = json.dumps({"queries": queries, "topk": topk, "return_scores": True}).encode()
    start = time.monotonic()
    for attempt in range(self.retries + 1):
      left = self.deadline_s - (time.monotonic() - start)
      try:
        self.num_requests += 1
        return _parse_result(self._post(body, min(self.timeout_s, max(left, 1e-3))),
                             len(queries))
      except _Retryable as e:
        error = str(e)
      wait = self.backoff_s * 2 ** attempt
      left = self.deadline_s - (time.monotonic() - start)
      if attempt == self.retries or wait >= left:
        break
      log.warning("retrieval server %s: attempt %d of %d failed (%s); retrying in %.3g s.",
                  self.url, attempt + 1, self.retries + 1, error, wait)
      self.num_retries += 1
      time.sleep(wait)
    raise RetrieverError(f"retrieval server {self.url} failed {attempt + 1} time(s) in "
                         f"{time.monotonic() - start:.1f}s (last: {error}); {SERVE_HINT}.")

  def _post(self, body: bytes, timeout_s: float) -> object:
    request = urllib.request.Request(self.url, data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
      with urllib.request.urlopen(request, timeout=timeout_s) as response:
        payload = response.read()
    except urllib.error.HTTPError as e:
      detail = e.read()[:300].decode("utf-8", "replace")
      if e.code >= 500 or e.code == 429:
        raise _Retryable(f"HTTP {e.code}: {detail}") from e
      raise RetrieverError(f"retrieval server {self.url} rejected the request with HTTP "
                           f"{e.code}: {detail}") from e
    except (urllib.error.URLError, http.client.HTTPException, TimeoutError, ConnectionError,
            OSError) as e:
      raise _Retryable(f"{type(e).__name__}: {getattr(e, 'reason', e)} "
                       f"(timeout {timeout_s:.3g}s)") from e
    try:
      return json.loads(payload)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
      raise _Retryable(f"invalid JSON: {payload[:200]!r}") from e


def _parse_result(response: object, num_queries: int) -> list[list[Passage]]:
  """Passages from a `{"result": [...]}` response; a malformed one is retryable."""
  result = response.get("result") if isinstance(response, dict) else None
  if not isinstance(result, list) or len(result) != num_queries:
    raise _Retryable(f"answered {str(response)[:200]}; expected {{\"result\": [...]}} with one "
                     f"list per query ({num_queries})")
  try:
    return [[_passage(item) for item in docs] for docs in result]
  except (AttributeError, KeyError, TypeError, ValueError) as e:
    raise _Retryable(f"a malformed document ({e!r}); expected "
                     '{"document": {"id", "contents"}, "score": s} items') from e


def _passage(item: dict) -> Passage:
  doc = item.get("document", item)
  return Passage(str(doc.get("id", "")), str(doc["contents"]), float(item.get("score", 0.0)))
