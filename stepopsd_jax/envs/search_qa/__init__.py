"""Search-QA in the Search-R1 protocol: `<search>` / `<answer>` turns, top-k passages from a
local BM25 index or a retrieval server, exact-match reward, verl / Search-R1 parquet data.

Registered name: `search_qa`. Knobs of `make_tasks(split, num, seed, **kwargs)` (they reach it
from `env.kwargs` in a config): `train_files`, `eval_files` (or `files`), `corpus`, `retriever`
("bm25" | "http"), `retriever_url`, `topk`, `max_turns`, `index_dir`, and the HTTP client's
`timeout_s` (per request, 30), `retries` (6), `backoff_s` (1.0, doubled each retry) and
`deadline_s` (120: the most one search waits, retries included).
The agent protocol (`agent.py`) tells the rollout loop how to parse, stop, prompt and prefetch.
"""

from stepopsd_jax.envs.base import register_env
from stepopsd_jax.envs.search_qa.agent import PROTOCOL, transcript_text
from stepopsd_jax.envs.search_qa.answer import (
    exact_match,
    golden_answers,
    normalize_answer,
)
from stepopsd_jax.envs.search_qa.corpus import CorpusError, Passage, format_information
from stepopsd_jax.envs.search_qa.data import (
    QARecord,
    make_prompt,
    read_parquet,
    source_average,
    write_parquet,
)
from stepopsd_jax.envs.search_qa.env import (
    SearchQAEnv,
    make_tasks,
    oracle_policy,
    prefetch,
    random_format_policy,
)
from stepopsd_jax.envs.search_qa.http_client import HttpRetriever, RetrieverError
from stepopsd_jax.envs.search_qa.retrievers import (
    Retriever,
    RetrieverSpec,
    build_retriever,
    get_retriever,
)
from stepopsd_jax.envs.search_qa.tags import STOP_STRINGS, ParsedTurn, parse_response

register_env("search_qa", SearchQAEnv, make_tasks, protocol=PROTOCOL)

__all__ = [
    "PROTOCOL", "STOP_STRINGS", "CorpusError", "HttpRetriever", "ParsedTurn", "Passage",
    "QARecord", "Retriever", "RetrieverError", "RetrieverSpec", "SearchQAEnv", "build_retriever",
    "exact_match", "format_information", "get_retriever", "golden_answers", "make_prompt",
    "make_tasks", "normalize_answer", "oracle_policy", "parse_response", "prefetch",
    "random_format_policy", "read_parquet", "source_average", "transcript_text", "write_parquet",
]
