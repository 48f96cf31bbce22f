"""The main job: StepOPSD on the credit lab's critical-step task, from the shipped base model.

    python -m stepopsd_jax.train --config=configs/default.py --workdir=/tmp/stepopsd
    python -m stepopsd_jax.train --config=configs/default.py:estimator=grpo --workdir=/tmp/grpo

The policy starts from the base model that reads (`stepopsd_jax/assets/base_model`, built by
`python -m stepopsd_jax.tools.make_base`: a 0.9M-parameter Qwen3 pretrained on a synthetic
reading corpus that holds no env text). A warm-up in the env's own format then teaches the
format and to follow a hindsight block: half of its random-policy episodes carry a block, in the
rollout's wording, listing their own uniformly random actions, and each step learns to answer
the block's action (so the block says nothing about the right door, and the policy without one
stays at chance). RL then has to find the one decision that matters from the end-of-episode
reward: the red door at room 2. `clue_mode="none"`: nothing in the student's prompt names the
door; only a hindsight teacher shown a winning sibling's actions knows it.

`runlocal` (smoke tests) uses a random tiny Qwen3 and a SentencePiece tokenizer instead.
"""

import ml_collections

from stepopsd_jax.pretrain import base_model_dir
from stepopsd_jax.run.config import base_config, parse_arg


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, estimator="stepopsd", runlocal=False)
  c = base_config()
  c.model.path = c.tokenizer.path = base_model_dir()
  c.env.kwargs = ml_collections.ConfigDict(dict(horizon=3, num_choices=3, critical_step=2,
                                                num_colours=3, treasure_colours=1,
                                                clue_mode="none"))
  c.rollout.update(
      group_size=8, max_new_tokens=24,
      history_window=0,  # each step's prompt: the task text and the current observation
      system_prompt="You are an agent.",
      batch_buckets=(8, 16, 32, 64, 128, 256, 512), prompt_buckets=(96, 128, 192, 256, 512, 1024))
  c.algo.estimator = a["estimator"]
  # opsd: 0.01, not StepConfig's 0.1: at 0.1 the KL over the format tokens (0.1-0.4 nats/token
  # to the tiny teacher) stopped RL learning the choice (bench/results/estimators*.json; README).
  c.algo.opsd_beta = 0.01
  # 20 RL steps: from this base model the sampled success saturates within ~10 (README).
  c.train.update(num_steps=20, eval_every=10, checkpoint_every=10,
                 sft_steps=200, sft_lr=1e-3, sft_hint_fraction=0.5)

  if a["runlocal"]:  # smoke-test size: a random tiny preset, the format warm-up only
    c.model.path = c.tokenizer.path = ""
    c.env.num_train_tasks, c.env.num_eval_tasks = 64, 16
    c.rollout.batch_size, c.rollout.group_size = 16, 4
    c.train.num_steps, c.train.sft_steps, c.train.eval_every = 4, 10, 2
    c.train.sft_lr, c.train.sft_hint_fraction = 3e-3, 0.0
  return c
