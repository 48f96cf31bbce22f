"""StepOPSD on ALFWorld (verl-agent's setup) with Qwen3-1.7B, as in the paper.

    export ALFWORLD_DATA=/data/alfworld  # holds json_2.1.1/{train,valid_seen,valid_unseen}
    python -m stepopsd_jax.train --config=configs/alfworld_stepopsd.py --workdir=DIR \
        --config.model.path=/ckpt/Qwen3-1.7B --config.tokenizer.path=/ckpt/Qwen3-1.7B

verl-agent's ALFWorld recipe: 16 games x 8 rollouts per step, at most 50 steps per episode,
the last 2 (observation, action) pairs in the prompt (`prompt.py`), 512 new tokens per step,
reward 10 for a win (10 x won), 0.1 off a malformed response, evaluation on `valid_unseen`
(`:eval_split=valid_seen` for the in-distribution split). Per-subset metrics use the paper's
column names (Pick, Look, Clean, Heat, Cool, PickTwo).

The data directory is `:data_dir=DIR`, else `$ALFWORLD_DATA`. Without the official data, build
games offline and point at them:

    python -m stepopsd_jax.envs.alfworld.generate --out /tmp/alf --split train --per-type 2 --seed 0
    python -m stepopsd_jax.envs.alfworld.generate --out /tmp/alf --split valid_unseen \
        --per-type 2 --seed 0
    ALFWORLD_DATA=/tmp/alf python -m stepopsd_jax.train \
        --config=configs/alfworld_stepopsd.py:runlocal --workdir=/tmp/alfrun

`runlocal`: a tiny random Qwen3 with a SentencePiece tokenizer trained on the games' texts, a
few steps on a CPU (success stays ~0: it checks the plumbing, not learning). Check the games
without a model: `python -m stepopsd_jax.evaluate --config=configs/alfworld_stepopsd.py:runlocal
--workdir=DIR --policy=oracle` (the expert: success 1.0 on every task type).
"""

import os

import ml_collections

from stepopsd_jax.run.config import base_config, parse_arg

DATA_ENV_VAR = "ALFWORLD_DATA"


def data_dir(arg_value: str) -> str:
  """`:data_dir=DIR`, else `$ALFWORLD_DATA`; a clear error when neither is set."""
  value = arg_value or os.environ.get(DATA_ENV_VAR, "")
  if not value:
    raise ValueError(
        f"configs/alfworld_stepopsd.py needs the ALFWorld data: set {DATA_ENV_VAR} to the "
        "directory that holds json_2.1.1/ (or pass --config=configs/alfworld_stepopsd.py:"
        "data_dir=DIR). Offline games: python -m stepopsd_jax.envs.alfworld.generate --out DIR "
        "--split train --per-type 2 --seed 0 (and --split valid_unseen).")
  return value


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, estimator="stepopsd", runlocal=False, data_dir="",
                eval_split="valid_unseen")
  c = base_config()
  c.model.update(preset="qwen3_1p7b",  # shapes only; set model.path to the HF checkpoint
                 dtype="bfloat16", remat_policy="full")
  c.tokenizer.train_vocab_size = 4000  # only without tokenizer.path (the checkpoint's)
  c.env.name = "alfworld"
  c.env.kwargs = ml_collections.ConfigDict(dict(
      data_dir=data_dir(a["data_dir"]),
      eval_split=a["eval_split"],  # the "eval" split: valid_unseen (OOD) or valid_seen
      won_reward=10.0,  # verl-agent: 10 x won
      max_steps=50,
      short_subsets=True,  # subsets named as the paper's columns: Pick, Look, ...
      fast=True))  # the memoised engine (same transcripts as textworld's, ~40x faster)
  c.env.num_train_tasks = -1  # every solvable train game (3553 in the official data)
  c.env.num_eval_tasks = -1  # every solvable valid_unseen game (134)
  c.rollout.update(
      batch_size=128,  # 16 games x 8 rollouts
      group_size=8, max_new_tokens=512,
      history_window=2,  # verl-agent's history_length
      batch_buckets=(1024, 2048, 4096, 8192),  # rows = agent steps: <= 128 x 50
      prompt_buckets=(1024, 2048, 4096))
  c.algo.update(estimator=a["estimator"], kl_coef=0.01, entropy_coef=0.001,
                micro_batches=32)  # <= 256 rows of <= 4096 + 512 tokens at a time
  c.optim.update(lr=1e-6, warmup_steps=10, weight_decay=0.01, b2=0.999, critic_lr=1e-5)
  c.train.update(num_steps=150, sft_lr=1e-5,  # no warm-up: Qwen3 follows the format already
                 eval_every=10, checkpoint_every=10)
  c.mesh.update(data=1, fsdp=-1)

  if a["runlocal"]:  # tiny CPU smoke test on generated games
    c.model.update(preset="qwen3_tiny", dtype="float32", remat_policy="none")
    c.tokenizer.train_vocab_size = 1000
    c.env.kwargs.max_steps = 10  # short episodes, still room for the expert (<= 9 steps here)
    c.rollout.update(batch_size=8, group_size=4, max_new_tokens=32,
                     batch_buckets=(8, 16, 32, 64, 128, 256),  # eval: 12 games x 10 steps
                     prompt_buckets=(256, 512, 1024, 2048))
    c.algo.update(micro_batches=8, kl_coef=0.0, entropy_coef=0.0)  # 16 rows at a time: <4 GB
    c.optim.update(lr=3e-4, warmup_steps=1, critic_lr=1e-3)
    c.train.update(num_steps=2, sft_steps=4, sft_lr=3e-3, sft_batch_size=16, eval_every=2,
                   checkpoint_every=2)
    c.mesh.update(data=-1, fsdp=1)
  return c
