"""Retriever outages against the project's own server (`serve.make_server` over the BM25 index),
started, stopped and made to answer garbage on a loopback port inside each test.

A short outage or a few garbage answers are ridden out by the client's retries; a longer one ends
the episodes that needed a search as env errors (`rollout/env_errors`), after one retry budget
for the whole turn, and the run goes on.
"""

import re
import threading
import time

import jax
import pytest

from stepopsd_jax import sampling
from stepopsd_jax.envs import make_tasks
from stepopsd_jax.envs.search_qa import HttpRetriever, RetrieverError, retrievers, serve
from stepopsd_jax.rollout import RolloutConfig, collect, prompts
from stepopsd_jax.rollout.random_policy import train_env_tokenizer
from tests.rollout.conftest import ScriptedSampler

ENV = "search_qa"
PROMPT = prompts.PromptConfig(history_window=4)
GARBAGE = [b"<html>502 Bad Gateway</html>", b'{"result": "warming up"}',
           b'{"result": [[{"document": {"title": "no contents"}}]]}']


class _Server:
  """The project's retrieval server on a fixed loopback port, restartable; while `garbage` > 0
  each request gets one of GARBAGE (HTTP 200) instead of an answer."""

  def __init__(self, bm25):
    self.bm25, self.port, self.requests, self.garbage = bm25, 0, 0, 0
    self._server = None
    self.start()
    self.port = self._server.server_address[1]

  @property
  def url(self):
    return f"http://127.0.0.1:{self.port}/retrieve"

  def start(self):
    server = serve.make_server(self.bm25, "127.0.0.1", self.port)
    outer, project_post = self, server.RequestHandlerClass.do_POST

    def do_post(handler):
      outer.requests += 1
      if outer.garbage <= 0:
        return project_post(handler)
      outer.garbage -= 1
      handler.rfile.read(int(handler.headers.get("Content-Length", 0)))
      body = GARBAGE[outer.requests % len(GARBAGE)]
      handler.send_response(200)
      handler.send_header("Content-Length", str(len(body)))
      handler.end_headers()
      handler.wfile.write(body)
      return None

    server.RequestHandlerClass = type("Handler", (server.RequestHandlerClass,),
                                      {"do_POST": do_post})
    server.daemon_threads, server.block_on_close = True, False
    threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True).start()
    self._server = server

  def stop(self):
    self._server.shutdown()
    self._server.server_close()


@pytest.fixture
def server(bm25):
  s = _Server(bm25)
  yield s
  s.stop()


def test_a_restarting_server_is_ridden_out_by_retries(server, bm25, caplog):
  queries = ["who was born in 1884", "Rouzaim Naifaikum"]
  server.stop()
  threading.Timer(0.6, server.start).start()  # down for 0.6 s, then back on the same port
  client = HttpRetriever(server.url, timeout_s=2.0, retries=8, backoff_s=0.05, deadline_s=30)
  start = time.monotonic()
  assert client.search(queries, 3) == bm25.search(queries, 3)
  assert time.monotonic() - start >= 0.6 and client.num_retries >= 2
  retries = [r.message for r in caplog.records if r.levelname == "WARNING"]
  assert len(retries) == client.num_retries
  assert re.search(rf"{re.escape(server.url)}: attempt 1 of 9 failed \(URLError: .*Connection "
                   r"refused.*retrying in 0\.05 s", retries[0])


def test_garbage_answers_are_retried_like_failures(server, bm25):
  server.garbage = 3  # not JSON, the wrong shape, a document without contents
  client = HttpRetriever(server.url, timeout_s=2.0, retries=3, backoff_s=0.01)
  assert client.search(["Rouzaim Naifaikum"], 2) == bm25.search(["Rouzaim Naifaikum"], 2)
  assert server.requests == 4 and client.num_retries == 3


@pytest.mark.parametrize("fault", ["garbage", "down"])
def test_a_retry_budget_is_bounded_by_the_deadline(server, fault):
  server.garbage = 10**6
  if fault == "down":
    server.stop()
  client = HttpRetriever(server.url, timeout_s=5.0, retries=100, backoff_s=0.1, deadline_s=1.0)
  outcome = []
  start = time.monotonic()
  worker = threading.Thread(target=lambda: outcome.append(_error_of(client.search, ["q"], 3)),
                            daemon=True)  # without a deadline it would retry for ~4 years
  worker.start()
  worker.join(timeout=10)
  assert outcome, "the search did not give up by its deadline"
  assert isinstance(outcome[0], RetrieverError)
  assert re.search(r"failed 4 time\(s\) in .*s \(last: .*\); start one with `python -m "
                   r"stepopsd_jax.envs.search_qa.serve", str(outcome[0]))
  # Waits 0.1 + 0.2 + 0.4 s; the next (0.8 s) would pass the 1 s deadline, so no 5th attempt.
  assert 0.7 <= time.monotonic() - start < 1.0 + 0.5
  assert client.num_requests == 4


def _error_of(fn, *args):
  try:
    fn(*args)
  except Exception as e:  # pylint: disable=broad-except
    return e
  return None


# End to end: rollout.collect over HTTP with a scripted policy.


@pytest.fixture(scope="module")
def tokenizer(world):
  train = make_tasks(ENV, "train", 16, seed=0, **world.task_kwargs())
  return train_env_tokenizer(ENV, train, PROMPT, vocab_size=800)


def _sampler(tokenizer, searchers, answers):
  """Tasks whose question is in `searchers` search it first, then answer; the others answer at
  once. The answer is the golden one, so every episode that runs to its end is won."""

  def respond(prompt_text, rng):
    del rng
    user = prompt_text.rsplit("<|im_start|>user\n", 1)[-1].split("<|im_end|>")[0]
    question = re.search(r"Question: (.*)", user).group(1).strip()
    if question in searchers and user.split("\n\n")[-1].startswith("Question:"):  # 1st turn
      return f"<think>look it up</think><search>{question}</search>"
    return f"<think>I know</think><answer>{answers[question]}</answer>"

  sampler = ScriptedSampler(tokenizer, respond, max_new_tokens=64)
  sampler.buckets = sampling.Buckets(batch=(8, 16, 32), prompt=(256, 512, 1024, 2048))
  return sampler


@pytest.mark.parametrize("fault", ["down", "garbage"])
def test_an_outage_past_the_deadline_fails_only_the_searching_episodes(server, world, tokenizer,
                                                                      fault, caplog):
  retries = 3
  tasks = make_tasks(ENV, "eval", 4, seed=5, **world.task_kwargs(
      retriever="http", retriever_url=server.url, timeout_s=2.0, retries=retries, backoff_s=0.05,
      deadline_s=10.0))
  searchers = {t.payload["question"] for t in tasks[:2]}
  answers = {t.payload["question"]: t.payload["golden_answers"][0] for t in tasks}
  sampler, cfg, g = _sampler(tokenizer, searchers, answers), RolloutConfig(group_size=3), 3
  client = retrievers.get_retriever(
      retrievers.RetrieverSpec.from_payload(tasks[0].payload["retriever"])).inner
  client.num_requests = 0
  server.garbage = 10**6
  if fault == "down":
    server.stop()

  result = collect(sampler, None, tokenizer, ENV, tasks, jax.random.key(0), cfg)
  m = result.metrics
  assert m["env_errors"] == 2 * g  # the 6 searching episodes; the 6 answering ones ran
  assert [t.won for t in result.trajectories] == [False] * (2 * g) + [True] * (2 * g)
  assert [len(t.rows) for t in result.trajectories] == [1] * (4 * g)
  assert m["success"] == 0.5 and m["invalid_actions"] == 0
  # One retry budget for the turn's batched search, not one per episode.
  assert client.num_requests == retries + 1
  if fault == "garbage":
    assert server.requests == retries + 1
  assert any(r.levelname == "WARNING" and "prefetch of 6 queries failed; their episodes end as "
             f"env errors: retrieval server {server.url} failed 4 time(s)" in r.message
             for r in caplog.records)

  server.garbage = 0  # the server is back: the run goes on and the searchers win
  if fault == "down":
    server.start()
  result = collect(sampler, None, tokenizer, ENV, tasks, jax.random.key(1), cfg)
  assert result.metrics["env_errors"] == 0 and result.metrics["success"] == 1.0
  assert [len(t.rows) for t in result.trajectories] == [2] * (2 * g) + [1] * (2 * g)
