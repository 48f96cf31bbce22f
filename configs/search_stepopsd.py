"""StepOPSD on Search-QA (Search-R1 protocol) with Qwen2.5-3B-Instruct, as in the paper.

    python -m stepopsd_jax.envs.search_qa.serve --corpus wiki-18.jsonl --port 8000 &  # or e5
    python -m stepopsd_jax.train --config=configs/search_stepopsd.py --workdir=DIR \
        --config.model.path=/ckpt/Qwen2.5-3B-Instruct --config.tokenizer.path=/ckpt/Qwen2.5-3B-Instruct

Data: Search-R1 / verl parquet files (`env.kwargs.train_files`, `env.kwargs.eval_files`, paths or
globs). Retrieval: a Search-R1 retrieval server (`env.kwargs.retriever="http"`, the default,
e.g. dense e5 over wiki-18) or an in-process BM25 index over a JSONL corpus
(`--config.env.kwargs.retriever=bm25 --config.env.kwargs.corpus=wiki-18.jsonl`).
`num_*_tasks=-1` means every row of the files.

`runlocal`: a tiny random Qwen2 on the generated synthetic corpus (make it first with
`python -m stepopsd_jax.envs.search_qa.generate --out /tmp/search_qa_synth`, the default
`data_dir`; elsewhere pass `:runlocal,data_dir=DIR`). Check data and retriever without a model:
`python -m stepopsd_jax.evaluate --config=configs/search_stepopsd.py:runlocal --workdir=DIR
--policy=oracle` (EM 1.0). The prompt and the `<search>`/`<answer>` parsing, stop strings and
format warm-up come from the env's agent protocol (`stepopsd_jax/envs/search_qa/agent.py`).
"""

import os

import ml_collections

from stepopsd_jax.run.config import base_config, parse_arg


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, estimator="stepopsd", runlocal=False, data_dir="/tmp/search_qa_synth")
  c = base_config()
  c.model.update(preset="qwen2p5_3b_instruct",  # shapes only; set model.path to the checkpoint
                 dtype="bfloat16", remat_policy="full")
  c.tokenizer.train_vocab_size = 4000  # only without tokenizer.path (the checkpoint's)
  c.env.name = "search_qa"
  c.env.kwargs = ml_collections.ConfigDict(dict(
      train_files="data/nq_hotpotqa_train/train.parquet",
      eval_files="data/nq_hotpotqa_train/test.parquet",
      corpus="",  # JSONL {"id", "contents"} for retriever="bm25"
      index_dir="",  # bm25 index directory; "" = a cache under $STEPOPSD_CACHE_DIR
      retriever="http",  # http | bm25
      retriever_url="http://127.0.0.1:8000/retrieve",
      # http: a request times out after timeout_s; a failed one (down, 5xx, garbage) is retried
      # after backoff_s, 2x, 4x ... at most `retries` times within deadline_s, then the episodes
      # needing it end as env errors (rollout/env_errors). About a minute of downtime rides out.
      timeout_s=30.0, retries=6, backoff_s=1.0, deadline_s=120.0,
      topk=3, max_turns=4))
  c.env.num_train_tasks = -1  # every row
  c.env.num_eval_tasks = 2048  # a seeded sample for periodic eval; -1 for the full test sets
  c.rollout.update(
      batch_size=640,  # 128 questions x 5 rollouts
      group_size=5, max_new_tokens=500,
      history_window=4,  # every earlier turn (max_turns=4): retrieved passages stay visible
      control_mode="no_observation",  # copied <information> text is never reweighted
      invalid_penalty=0.01,
      hindsight_reference=True,  # the golden answer for the teacher
      batch_buckets=(64, 128, 256, 512, 1024, 2048, 4096),
      prompt_buckets=(512, 1024, 2048, 4096))
  c.algo.update(estimator=a["estimator"], kl_coef=0.001, micro_batches=8)
  c.optim.update(lr=1e-6, warmup_steps=10, weight_decay=0.01, b2=0.999)
  c.train.update(num_steps=300, sft_lr=1e-5,  # no warm-up: an instruct model follows the tags
                 eval_every=50, checkpoint_every=50)
  c.mesh.update(data=1, fsdp=-1)

  if a["runlocal"]:  # tiny CPU smoke test on the generated synthetic data
    d = a["data_dir"]
    c.model.update(preset="qwen2_tiny", dtype="float32", remat_policy="none")
    c.tokenizer.train_vocab_size = 2000
    c.env.kwargs.update(train_files=os.path.join(d, "train.parquet"),
                        eval_files=os.path.join(d, "test.parquet"),
                        corpus=os.path.join(d, "corpus.jsonl"), retriever="bm25")
    c.env.num_train_tasks, c.env.num_eval_tasks = 64, 16
    c.rollout.update(batch_size=20, group_size=5, max_new_tokens=32,
                     batch_buckets=(8, 16, 32, 64, 128), prompt_buckets=(128, 256, 512, 1024))
    c.algo.update(micro_batches=1, kl_coef=0.0)
    c.optim.update(lr=3e-4, warmup_steps=2)
    c.train.update(num_steps=4, sft_steps=10, sft_lr=3e-3, eval_every=2, checkpoint_every=2)
    c.mesh.update(data=-1, fsdp=1)
  return c
