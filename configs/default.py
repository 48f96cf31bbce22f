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

from stepopsd_jax.run.config import base_config, parse_arg


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, estimator="stepopsd", runlocal=False)
  c = base_config()
  c.env.kwargs = ml_collections.ConfigDict(dict(horizon=3, num_choices=3, critical_step=2,
                                                num_colours=3, treasure_colours=1))
  c.rollout.update(
      group_size=8, max_new_tokens=24,
      history_window=0,  # the clue stays in the task text; the memory variant needs >= 1
      system_prompt="You are an agent.",
      batch_buckets=(8, 16, 32, 64, 128, 256, 512), prompt_buckets=(96, 128, 192, 256, 512, 1024))
  c.algo.estimator = a["estimator"]
  # opsd: 0.01, not StepConfig's 0.1: at 0.1 the KL over the format tokens (0.1-0.4 nats/token
  # to this tiny teacher) stops RL learning the choice (bench/results/estimators*.json; README).
  c.algo.opsd_beta = 0.01
  c.train.update(sft_steps=150)

  if a["runlocal"]:  # smoke-test size
    c.env.num_train_tasks, c.env.num_eval_tasks = 64, 16
    c.rollout.batch_size, c.rollout.group_size = 16, 4
    c.train.num_steps, c.train.sft_steps, c.train.eval_every = 4, 10, 2
  return c
