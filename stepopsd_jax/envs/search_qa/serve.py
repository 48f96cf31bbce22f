"""A retrieval server speaking the Search-R1 protocol over the local BM25 index.

    python -m stepopsd_jax.envs.search_qa.serve --corpus corpus.jsonl --port 8000

`POST /retrieve` with `{"queries": [...], "topk": k, "return_scores": true}` answers
`{"result": [[{"document": {"id", "contents"}, "score": s}, ...], ...]}` (bare documents when
`return_scores` is false); `GET /health` answers `{"status": "ok", "num_docs": N}`. `--port 0`
picks a free port; the "Serving" line on stdout says which.
"""

from __future__ import annotations

import argparse
import http.server
import json
import sys
from collections.abc import Sequence

from stepopsd_jax.envs.search_qa.bm25 import BM25Retriever

MAX_BODY_BYTES = 16 << 20


class BadRequest(ValueError):
  pass


def answer(retriever: BM25Retriever, request: object, default_topk: int) -> dict:
  """The response body of one `/retrieve` request; raises BadRequest for a malformed one."""
  if not isinstance(request, dict) or not isinstance(request.get("queries"), list):
    raise BadRequest('expected a JSON object {"queries": [...], "topk": k, "return_scores": b}')
  queries = request["queries"]
  if not all(isinstance(q, str) for q in queries):
    raise BadRequest("every entry of 'queries' must be a string")
  topk = request.get("topk", default_topk)
  if not isinstance(topk, int) or isinstance(topk, bool) or topk < 1:
    raise BadRequest(f"'topk' must be a positive integer, got {topk!r}")
  results = retriever.search(queries, topk)
  if request.get("return_scores", False):
    return {"result": [[{"document": p.to_json(), "score": p.score} for p in r] for r in results]}
  return {"result": [[p.to_json() for p in r] for r in results]}


def make_handler(retriever: BM25Retriever, default_topk: int) -> type:
  """A request handler class bound to `retriever`."""

  class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
      if self.path.rstrip("/") == "/health":
        self._send(200, {"status": "ok", "num_docs": len(retriever)})
      else:
        self._send(404, {"error": f"no route GET {self.path}; use POST /retrieve"})

    def do_POST(self):
      if self.path.rstrip("/") != "/retrieve":
        self._send(404, {"error": f"no route POST {self.path}; use POST /retrieve"})
        return
      try:
        length = int(self.headers.get("Content-Length", 0))
        if length > MAX_BODY_BYTES:
          raise BadRequest(f"body of {length} bytes exceeds {MAX_BODY_BYTES}")
        self._send(200, answer(retriever, json.loads(self.rfile.read(length)), default_topk))
      except (BadRequest, json.JSONDecodeError, ValueError) as e:
        self._send(400, {"error": str(e)})
      except Exception as e:  # noqa: BLE001 (a 500 answer, not a dead server)
        self._send(500, {"error": repr(e)})

    def _send(self, code: int, body: dict):
      data = json.dumps(body).encode()
      self.send_response(code)
      self.send_header("Content-Type", "application/json")
      self.send_header("Content-Length", str(len(data)))
      self.end_headers()
      self.wfile.write(data)

    def log_message(self, *args):  # one line per request is too much at training rates
      pass

  return Handler


def make_server(retriever: BM25Retriever, host: str = "127.0.0.1", port: int = 0,
                default_topk: int = 3) -> http.server.ThreadingHTTPServer:
  """A bound server (not yet serving: call `serve_forever`); port 0 picks a free one."""
  return http.server.ThreadingHTTPServer((host, port), make_handler(retriever, default_topk))


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--corpus", required=True, help="JSONL corpus of {id, contents} lines")
  parser.add_argument("--port", type=int, default=8000, help="0 picks a free port")
  parser.add_argument("--host", default="127.0.0.1", help="0.0.0.0 to serve other machines")
  parser.add_argument("--topk", type=int, default=3, help="when a request gives none")
  parser.add_argument("--index-dir", default=None, help="BM25 index directory (default: cache)")
  return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
  args = parse_args(argv)
  try:
    retriever = BM25Retriever(args.corpus, index_dir=args.index_dir)
  except (ValueError, OSError) as e:  # CorpusError is a ValueError
    print(f"error: {e}", file=sys.stderr)
    return 2
  server = make_server(retriever, args.host, args.port, args.topk)
  host, port = server.server_address[:2]
  print(f"Serving {len(retriever)} passages on http://{host}:{port}/retrieve", flush=True)
  try:
    server.serve_forever()
  except KeyboardInterrupt:
    pass
  finally:
    server.server_close()
  return 0


if __name__ == "__main__":
  sys.exit(main())
