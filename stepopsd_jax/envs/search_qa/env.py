"""The Search-QA env (Search-R1 protocol), its task sets, the oracle policy and prefetching.

Each step takes the model's whole response. `<search>q</search>` returns the top-k passages as
`<information>Doc 1 (Title: ...) ...</information>`; `<answer>a</answer>` ends the episode with
reward 1.0 if `a` matches a golden answer (exact match after normalisation) else 0.0; anything
else is an invalid action (reward 0, `valid_action=False`, the penalty is the runner's). An
episode has at most `max_turns` responses: the last one that is not an answer ends it unwon
(`truncated`). A retrieval failure raises RetrieverError, which `BatchedEnv` turns into a
failed, counted episode (`rollout/env_errors`). When the batched prefetch of a turn has already
failed (after the client's retries), the envs whose search it held fail at once instead of each
retrying alone: an outage costs one retry budget per turn, not one per episode.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from stepopsd_jax.envs.base import StepResult, Task
from stepopsd_jax.envs.search_qa import data, http_client
from stepopsd_jax.envs.search_qa.answer import exact_match
from stepopsd_jax.envs.search_qa.corpus import format_information
from stepopsd_jax.envs.search_qa.http_client import RetrieverError
from stepopsd_jax.envs.search_qa.retrievers import (
  Retriever,
  RetrieverSpec,
  get_retriever,
)
from stepopsd_jax.envs.search_qa.tags import ANSWER, SEARCH, parse_response

log = logging.getLogger(__name__)

DEFAULT_TOPK, DEFAULT_MAX_TURNS = 3, 4
SPLIT_FILES = {"train": "train_files", "eval": "eval_files", "test": "eval_files",
               "valid": "eval_files"}
_WORD = re.compile(r"[^\W_]+(?:['.-][^\W_]+)*")  # words, skipping tags and punctuation
INVALID_OBSERVATION = ("Your previous response was invalid. To search, put one query between "
                       "<search> and </search>. To answer, put the answer between <answer> and "
                       "</answer>. Use exactly one of the two.")


class SearchQAEnv:
  """One question at a time; the retriever comes from the task payload's spec (shared per
  process) unless one is passed here."""

  def __init__(self, seed: int = 0, retriever: Retriever | None = None):
    self.seed = seed  # episodes are deterministic; kept for the registry's make_env(seed=...)
    self._fixed_retriever = retriever
    self._task: Task | None = None
    self._turn = 0
    self._searches = 0
    self._over = True
    self._failed_search: tuple[str, str] | None = None  # (query, error) from `prefetch`

  @property
  def task_description(self) -> str:
    return self._current().payload["prompt"]

  @property
  def max_steps(self) -> int:
    return int(self._current().payload["max_turns"])

  @property
  def question(self) -> str:
    return self._current().payload["question"]

  @property
  def turns_left(self) -> int:
    return 0 if self._over else self.max_steps - self._turn

  @property
  def retriever(self) -> Retriever:
    if self._fixed_retriever is not None:
      return self._fixed_retriever
    return get_retriever(RetrieverSpec.from_payload(self._current().payload["retriever"]))

  def reset(self, task: Task) -> StepResult:
    self._task, self._turn, self._searches, self._over = task, 0, 0, False
    self._failed_search = None
    return StepResult(f"Question: {task.payload['question']}", 0.0, False, self._info(True))

  def step(self, action: str) -> StepResult:
    task = self._running()
    self._turn += 1
    turn = parse_response(action)
    if turn.kind == ANSWER:
      return self._finish(turn.content)
    if turn.kind == SEARCH:
      self._searches += 1
      failed, self._failed_search = self._failed_search, None
      if failed is not None and failed[0] == turn.content:
        raise RetrieverError(f"the batched search of this turn failed: {failed[1]}")
      passages = self.retriever.search([turn.content], int(task.payload["topk"]))[0]
      observation = format_information(passages)
    else:
      observation = INVALID_OBSERVATION
    info = self._info(turn.valid, reason=turn.reason)
    if self._turn >= self.max_steps:
      self._over = True
      info["truncated"] = True
      return StepResult(f"{observation}\nNo turns left: the episode is over.", 0.0, True, info)
    return StepResult(observation, 0.0, False, info)

  def planned_search(self, action: str | None) -> tuple[Retriever, int, str] | None:
    """(retriever, topk, query) that `step(action)` would search with; None if no search."""
    if self._over or self._task is None or action is None:
      return None
    turn = parse_response(action)
    if turn.kind != SEARCH:
      return None
    return self.retriever, int(self._task.payload["topk"]), turn.content

  def search_failed(self, query: str, error: str) -> None:
    """Tells the env that the batched search of `query` failed: its next step, if it searches
    that query, raises RetrieverError instead of retrying alone."""
    self._failed_search = (query, error)

  def expert_action(self) -> str:
    """The oracle: search the question first, then answer with the first golden answer."""
    payload = self._running().payload
    if self._searches == 0 and self._turn + 1 < self.max_steps:
      return f"<think>I should look this up.</think><search>{payload['question']}</search>"
    return f"<think>I know the answer.</think><answer>{payload['golden_answers'][0]}</answer>"

  def _finish(self, answer: str) -> StepResult:
    self._over = True
    won = exact_match(answer, self._current().payload["golden_answers"])
    info = self._info(True, won=won, reason="ok")
    info["answer"] = answer
    verdict = "correct" if won else "incorrect"
    return StepResult(f"Your answer is {verdict}.", float(won), True, info)

  def _info(self, valid: bool, won: bool = False, reason: str = "ok") -> dict:
    return dict(won=won, admissible_actions=None, subset=self._current().subset,
                valid_action=valid, parse_reason=reason, num_searches=self._searches,
                em=float(won))

  def _current(self) -> Task:
    if self._task is None:
      raise RuntimeError("No episode yet: call reset(task) first.")
    return self._task

  def _running(self) -> Task:
    task = self._current()
    if self._over:
      raise RuntimeError("The episode is over: call reset(task) to start another.")
    return task


def oracle_policy(env: SearchQAEnv, result: StepResult, rng: np.random.Generator) -> str:
  """One search, then the golden answer (EM 1.0); deterministic (`rng` unused)."""
  del result, rng
  return env.expert_action()


def random_format_policy(env: SearchQAEnv, result: StepResult, rng: np.random.Generator) -> str:
  """Random well-formed responses, for a format warm-up: a search of a few random words of the
  question, or (after a search, and always on the last turn) an answer with a random short span
  of the last observation. It never looks at the golden answers."""
  answer_now = env.turns_left <= 1 or (env.turns_left < env.max_steps and rng.random() < 0.5)
  source = _WORD.findall(result.observation if answer_now else env.question) or ["unknown"]
  n = int(rng.integers(1, 4))
  start = int(rng.integers(max(len(source) - n, 0) + 1))
  words = " ".join(source[start:start + n])
  if answer_now:
    return f"<think>I will answer.</think><answer>{words}</answer>"
  return f"<think>I need to search.</think><search>{words}</search>"


def prefetch(envs: Sequence[Any], actions: Sequence[str | None]) -> int:
  """Runs the searches that `envs[i].step(actions[i])` will make as one batched call per
  retriever, filling the shared query cache; returns the number of queries sent. When a batch
  fails (the client has retried already), each env of it is told, and its step raises the error,
  ending that episode as a counted env error."""
  batches: dict[tuple[int, int], tuple[Any, int, list[str], list[SearchQAEnv]]] = {}
  for env, action in zip(envs, actions):
    planned = env.planned_search(action) if isinstance(env, SearchQAEnv) else None
    if planned is not None:
      retriever, topk, query = planned
      batch = batches.setdefault((id(retriever), topk), (retriever, topk, [], []))
      batch[2].append(query)
      batch[3].append(env)
  sent = 0
  for retriever, topk, queries, searching in batches.values():
    try:
      retriever.search(queries, topk)
      sent += len(queries)
    except Exception as e:  # noqa: BLE001 (the steps raise it, per episode)
      log.warning("prefetch of %d queries failed; their episodes end as env errors: %s",
                  len(queries), e)
      for env, query in zip(searching, queries):
        env.search_failed(query, f"{type(e).__name__}: {e}")
  return sent


def _split_files(split: str, kwargs: dict) -> tuple[Any, str]:
  if kwargs.get("files"):
    return kwargs["files"], "files"
  if split not in SPLIT_FILES:
    raise ValueError(f"split={split!r}: choose one of {sorted(SPLIT_FILES)}, or pass files=.")
  key = SPLIT_FILES[split]
  if not kwargs.get(key):
    raise ValueError(f"Search-QA split {split!r} needs parquet files: set env.kwargs.{key} "
                     "(paths or globs in the verl / Search-R1 layout).")
  return kwargs[key], key


def select_rows(num_rows: int, num: int, seed: int) -> np.ndarray:
  """Row indices: all of them for num <= 0, else a seeded sample of `num` in file order."""
  if num <= 0 or num == num_rows:
    return np.arange(num_rows)
  if num > num_rows:
    raise ValueError(f"num={num} tasks asked for, but the files hold {num_rows} rows; use "
                     "num=-1 (or 0) for all rows.")
  return np.sort(np.random.default_rng(seed).choice(num_rows, size=num, replace=False))


def make_tasks(split: str, num: int, seed: int = 0, *, files: Any = None, train_files: Any = None,
               eval_files: Any = None, corpus: str = "", retriever: str = "bm25",
               retriever_url: str = "", topk: int = DEFAULT_TOPK,
               max_turns: int = DEFAULT_MAX_TURNS, index_dir: str = "",
               timeout_s: float = http_client.TIMEOUT_S, retries: int = http_client.RETRIES,
               backoff_s: float = http_client.BACKOFF_S,
               deadline_s: float = http_client.DEADLINE_S) -> list[Task]:
  """Tasks of `split` from parquet: `files` if given, else `train_files` ("train") or
  `eval_files` ("eval"/"test"/"valid"). `num` <= 0 means every row; a smaller `num` is a
  seeded sample kept in file order. Ids look like "hotpotqa-train-000017" (row number).
  `timeout_s`, `retries`, `backoff_s`, `deadline_s`: the HTTP retriever's per-request timeout
  and retries with exponential backoff within a total deadline (`http_client.HttpRetriever`)."""
  if topk < 1 or max_turns < 1:
    raise ValueError(f"topk={topk} and max_turns={max_turns} must be >= 1.")
  spec = RetrieverSpec(kind=retriever, corpus=corpus, url=retriever_url, index_dir=index_dir,
                       timeout_s=timeout_s, retries=retries, backoff_s=backoff_s,
                       deadline_s=deadline_s)
  paths, key = _split_files(split, dict(files=files, train_files=train_files,
                                        eval_files=eval_files))
  records = data.read_parquet(paths, key)
  shared = dict(retriever=spec.to_payload(), topk=int(topk), max_turns=int(max_turns))
  return [_task(records[i], int(i), split, shared) for i in select_rows(len(records), num, seed)]


def _task(record: data.QARecord, row: int, split: str, shared: dict) -> Task:
  payload = dict(question=record.question, golden_answers=list(record.golden_answers),
                 prompt=data.prompt_text(record.prompt), data_source=record.data_source,
                 row=row, **shared)
  return Task(f"{record.data_source}-{split}-{row:06d}", record.data_source, payload,
              reference=record.golden_answers[0])
