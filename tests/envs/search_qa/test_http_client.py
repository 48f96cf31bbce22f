"""The HTTP client against a real `serve` process, and against servers that stall, fail or are down."""

import http.server
import json
import re
import socket
import threading
import time
import urllib.error
import urllib.request

import pytest

from stepopsd_jax.envs import BatchedEnv, make_tasks
from stepopsd_jax.envs.search_qa import HttpRetriever, RetrieverError, SearchQAEnv

ENV = "search_qa"


def test_same_passages_as_in_process_bm25(server_url, bm25, world):
  queries = [t.payload["question"] for t in make_tasks(ENV, "eval", -1, **world.task_kwargs())]
  queries += ["", "zzzz nothing matches", "Émile — ünïcode?"]
  client = HttpRetriever(server_url, timeout_s=10, batch_size=7)  # several requests
  for topk in (1, 3, 5):
    assert client.search(queries, topk) == bm25.search(queries, topk)


def test_episode_over_http_wins_with_the_oracle(server_url, world):
  tasks = make_tasks(ENV, "eval", 6, seed=1, **world.task_kwargs(retriever="http",
                                                                 retriever_url=server_url))
  env = SearchQAEnv()
  for task in tasks:
    result = env.reset(task)
    search = env.step(env.expert_action())
    assert search.observation.startswith("<information>Doc 1 (Title: ")
    result = env.step(env.expert_action())
    assert result.done and result.info["won"] and result.reward == 1.0


class _Handler(http.server.BaseHTTPRequestHandler):
  """Counts requests; stalls or answers 500 / 400 / garbage as the server's `mode` says."""

  def do_POST(self):
    server = self.server
    server.requests += 1
    self.rfile.read(int(self.headers.get("Content-Length", 0)))
    if server.mode == "stall":
      time.sleep(1.0)
      return
    code, body = {"500": (500, b'{"error": "boom"}'), "400": (400, b'{"error": "bad"}'),
                  "garbage": (200, b"not json"), "short": (200, b'{"result": []}')}[server.mode]
    self.send_response(code)
    self.send_header("Content-Length", str(len(body)))
    self.end_headers()
    self.wfile.write(body)

  def log_message(self, *args):
    pass


@pytest.fixture
def bad_server():
  server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
  server.daemon_threads, server.block_on_close, server.requests = True, False, 0
  threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
  yield server
  server.shutdown()
  server.server_close()


def _client(server, **kw):
  return HttpRetriever(f"http://127.0.0.1:{server.server_address[1]}/retrieve",
                       **dict(dict(timeout_s=0.2, retries=2, backoff_s=0.01), **kw))


@pytest.mark.parametrize("mode,match", [("stall", "timed out|timeout"), ("500", "HTTP 500"),
                                        ("garbage", "invalid JSON"),
                                        ("short", "one list per query")])
def test_stalling_or_failing_server_is_retried_then_a_clear_error(bad_server, mode, match):
  bad_server.mode = mode
  start = time.monotonic()
  with pytest.raises(RetrieverError, match="failed 3 time") as e:
    _client(bad_server).search(["q"], 3)
  assert bad_server.requests == 3
  assert time.monotonic() - start < 5
  message = str(e.value)
  assert "127.0.0.1" in message and "stepopsd_jax.envs.search_qa.serve" in message
  assert re.search(match, message)


@pytest.mark.parametrize("mode,match", [("400", "HTTP 400")])
def test_client_errors_are_not_retried(bad_server, mode, match):
  bad_server.mode = mode
  with pytest.raises(RetrieverError, match=match):
    _client(bad_server).search(["q"], 3)
  assert bad_server.requests == 1


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_server_down_fails_the_episode_not_the_run(world):
  """Searches fail after the retries and end their episodes as counted env errors; answers go on."""
  url = f"http://127.0.0.1:{_free_port()}/retrieve"
  tasks = make_tasks(ENV, "eval", 4, **world.task_kwargs(retriever="http", retriever_url=url,
                                                          retries=1, timeout_s=0.5))
  env = BatchedEnv(lambda i: SearchQAEnv(retriever=HttpRetriever(url, 0.5, 1, 0.01)), 4)
  env.reset(tasks)
  answer = f"<answer>{tasks[1].payload['golden_answers'][0]}</answer>"
  results = env.step(["<search>who</search>", answer, "<search>what</search>", "<answer>no</answer>"])
  assert env.num_env_errors == 2 and env.all_done
  assert [r.info["won"] for r in results] == [False, True, False, False]
  assert "RetrieverError" in results[0].info["error"] and "failed 2 time" in results[0].info["error"]


def test_bad_urls_and_knobs():
  with pytest.raises(ValueError, match="http://"):
    HttpRetriever("localhost:8000/retrieve")
  with pytest.raises(ValueError, match="timeout_s"):
    HttpRetriever("http://x/retrieve", timeout_s=0)


def test_server_protocol_without_scores_and_bad_requests(server_url):
  def post(body):
    req = urllib.request.Request(server_url, data=json.dumps(body).encode(), method="POST")
    with urllib.request.urlopen(req, timeout=10) as r:
      return json.loads(r.read())

  docs = post({"queries": ["capital"], "topk": 2, "return_scores": False})["result"]
  assert len(docs) == 1 and all(set(d) == {"id", "contents"} for d in docs[0])
  for bad in ({"queries": "not a list"}, {"queries": ["q"], "topk": 0}, {"queries": [3]}):
    with pytest.raises(urllib.error.HTTPError) as e:
      post(bad)
    assert e.value.code == 400 and "error" in json.loads(e.value.read())
  health = server_url.rsplit("/", 1)[0] + "/health"
  with urllib.request.urlopen(health, timeout=10) as r:
    assert json.loads(r.read())["status"] == "ok"
