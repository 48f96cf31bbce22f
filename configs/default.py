"""The main job: StepOPSD on the credit lab's critical-step task with a tiny Qwen3, on a CPU.

    python -m stepopsd_jax.train --config=configs/default.py --workdir=/tmp/stepopsd
    python -m stepopsd_jax.train --config=configs/default.py:estimator=grpo --workdir=/tmp/grpo

A from-scratch policy first learns the output format by behaviour cloning on trajectories of the
uniform-random admissible policy (format only, never the expert's choices), then RL has to learn
the one decision that matters from the end-of-episode reward alone: the red door at room 2.
`treasure_colours=1` fixes the treasure's colour, because a 64-wide policy trained from scratch
cannot learn to read a clue (issue 4's notes); `--config.env.kwargs.treasure_colours=0` restores
the clue-carrying task for a real checkpoint (`--config.model.path`).
"""

import ml_collections

from stepopsd_jax.train.config import parse_arg


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, estimator="stepopsd", runlocal=False)
  c = ml_collections.ConfigDict()
  c.seed = 0

  c.model = ml_collections.ConfigDict(dict(
      preset="qwen3_tiny",  # random init with the tokenizer's vocab, or...
      path="",  # ...a HF checkpoint dir (or hub id) to load instead
      dtype="float32", remat_policy="none"))
  c.tokenizer = ml_collections.ConfigDict(dict(
      path="",  # HF tokenizer dir or .model file; empty: SentencePiece trained on the env's texts
      train_vocab_size=2000))

  c.env = ml_collections.ConfigDict(dict(
      name="credit_lab/critical_step",
      kwargs=ml_collections.ConfigDict(dict(horizon=3, num_choices=3, critical_step=2,
                                            num_colours=3, treasure_colours=1)),
      num_train_tasks=2048, num_eval_tasks=96))

  c.rollout = ml_collections.ConfigDict(dict(
      batch_size=32,  # trajectories per step = tasks per step x group_size
      group_size=8, max_new_tokens=24, temperature=1.0, top_p=1.0, top_k=0,
      history_window=0,  # the clue stays in the task text; the memory variant needs >= 1
      system_prompt="You are an agent.",  # "" keeps the chat template's default
      control_mode="action_only", invalid_penalty=0.1,
      hindsight_sibling=True, hindsight_reference=False,
      batch_buckets=(8, 16, 32, 64, 128, 256, 512), prompt_buckets=(96, 128, 192, 256, 512, 1024)))

  c.algo = ml_collections.ConfigDict(dict(
      estimator=a["estimator"],  # grpo stepopsd dr_grpo rloo reinforce_pp gigpo ppo steppo opsd
      alpha_clip=0.2, lambda_mix=0.5, credit_budget="trajectory",
      norm_by_std=True, clip_low=0.2, clip_high=0.28, loss_agg="token_mean", kl_coef=0.0,
      kl_estimator="k3", entropy_coef=0.0, teacher="policy", ema_decay=0.99,
      micro_batches=1,
      gamma=0.95,  # gigpo: discount of step returns in anchor groups (ppo/steppo: gae_gamma)
      gigpo_step_weight=1.0,  # gigpo: omega in A = A^E + omega A^S
      gae_gamma=1.0, gae_lambda=1.0,  # ppo / steppo GAE (verl's defaults)
      value_clip=0.2,  # ppo / steppo clipped value loss; 0 disables the clip
      reinforce_group_baseline=False,  # reinforce_pp: subtract the group mean before whitening
      # opsd: beta x per-token KL(student || teacher) estimator. 0.01 here: with 0.1 the KL over
      # the format tokens (0.1-0.4 nats/token to this tiny teacher) stops RL learning the choice
      # (bench/results/estimators*.json; README "Training").
      opsd_beta=0.01, opsd_kl="k2"))

  c.optim = ml_collections.ConfigDict(dict(
      lr=3e-4, warmup_steps=5, weight_decay=0.0, grad_clip=1.0, b1=0.9, b2=0.99,
      critic_lr=1e-3))  # ppo / steppo: the critic's own AdamW (same warm-up, clip and betas)

  c.train = ml_collections.ConfigDict(dict(
      num_steps=60, sft_steps=150, sft_lr=3e-3, sft_batch_size=32,
      eval_every=20, checkpoint_every=20, keep_checkpoints=2, resume=True))

  c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))

  if a["runlocal"]:  # smoke-test size
    c.env.num_train_tasks, c.env.num_eval_tasks = 64, 16
    c.rollout.batch_size, c.rollout.group_size = 16, 4
    c.train.num_steps, c.train.sft_steps, c.train.eval_every = 4, 10, 2
  return c
