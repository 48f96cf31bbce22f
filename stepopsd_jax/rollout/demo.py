"""A batched multi-turn rollout of a tiny random Qwen3 on the credit lab, printed as StepBatch rows.

    python -m stepopsd_jax.rollout.demo [--tasks 2] [--group 4] [--env credit_lab/critical_step]

Everything is made here: a SentencePiece tokenizer trained on the env's own texts and a random
tiny Qwen3-architecture policy; nothing is downloaded.
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np

from stepopsd_jax import envs, models, sampling
from stepopsd_jax.rollout import loop, prompts, protocol, random_policy


def tiny_policy(tokenizer, seed: int = 0):
  """A random tiny Qwen3 whose vocabulary covers `tokenizer`."""
  config = models.get_preset("qwen3_tiny", vocab_size=models.padded_vocab(tokenizer.vocab_size))
  return config, models.init_params(config, jax.random.key(seed))


def show_row(batch, row: int, tokenizer) -> str:
  real = lambda tokens, mask: [int(t) for t, m in zip(tokens, mask) if m]
  prompt = loop.safe_decode(tokenizer, real(batch.prompt_tokens[row], batch.prompt_mask[row]))
  teacher = loop.safe_decode(tokenizer, real(batch.teacher_prompt_tokens[row],
                                             batch.teacher_prompt_mask[row]))
  response = real(batch.response_tokens[row], batch.response_mask[row])
  control = real(batch.response_tokens[row], batch.control_mask[row])
  extra = teacher[len(prompt.split("<|im_start|>assistant")[0]):] if teacher != prompt else ""
  return "\n".join([
      f"--- row {row}: traj {batch.traj_id[row]} step {batch.step_idx[row]} group "
      f"{batch.group_id[row]} reward {batch.step_reward[row]:+.2f} return "
      f"{batch.traj_return[row]:+.2f} success {bool(batch.traj_success[row])}",
      "prompt (last 240 chars): " + repr(prompt[-240:]),
      "response: " + repr(loop.safe_decode(tokenizer, response)),
      "control-mask tokens: " + repr(loop.safe_decode(tokenizer, control)),
      "teacher hindsight: " + (repr(extra[:300]) if extra else "(same as student prompt)"),
  ])


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--env", default="credit_lab/critical_step")
  parser.add_argument("--tasks", type=int, default=2)
  parser.add_argument("--group", type=int, default=4)
  parser.add_argument("--rows", type=int, default=3)
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args(argv)
  t0 = time.perf_counter()
  tasks = envs.make_tasks(args.env, "train", args.tasks, seed=args.seed)
  tokenizer = random_policy.train_env_tokenizer(
      args.env, envs.make_tasks(args.env, "train", 64, seed=args.seed), prompts.PromptConfig(),
      vocab_size=1000, seed=args.seed)
  config, weights = tiny_policy(tokenizer, args.seed)
  sampler = loop.agent_sampler(config, tokenizer, max_new_tokens=32,
                               buckets=sampling.Buckets(batch=(8, 16, 32, 64),
                                                        prompt=(128, 256, 512)),
                               stop_strings=protocol.for_env(args.env).stop_strings)
  cfg = loop.RolloutConfig(group_size=args.group)
  result = loop.collect(sampler, weights, tokenizer, args.env, tasks, jax.random.key(args.seed),
                        cfg)
  batch = result.batch
  print(f"StepBatch: {batch.num_rows} rows (padded to {batch.row_valid.shape[0]}), prompt "
        f"{batch.prompt_tokens.shape[1]}, teacher prompt {batch.teacher_prompt_tokens.shape[1]}, "
        f"response {batch.response_tokens.shape[1]} tokens")
  for row in np.linspace(0, batch.num_rows - 1, min(args.rows, batch.num_rows)).astype(int):
    print(show_row(batch, int(row), tokenizer))
  print("metrics: " + ", ".join(f"{k}={v:.3g}" for k, v in sorted(result.metrics.items())))
  print(f"wall time {time.perf_counter() - t0:.1f}s")


if __name__ == "__main__":
  main()
