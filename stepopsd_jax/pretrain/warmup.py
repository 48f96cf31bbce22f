"""Does reading survive the main job's format warm-up? And does the model emit the format?

The main job behaviour-clones the uniform-random admissible policy before RL
(`run.warmup.warm_up` on `run.warmup.random_policy_examples`, 150 steps at lr 3e-3, batch 32). That
teaches the format, and on prompts *without* a hindsight block, so it may also teach the model
to stop looking past the admissible actions. `survival` runs the warm-up with given settings
and repeats the transfer check; `format_rates` samples responses to credit-lab prompts and
counts the well-formed and admissible actions.
"""

from __future__ import annotations

import jax
import numpy as np

from stepopsd_jax import envs, sampling
from stepopsd_jax.models import QwenConfig
from stepopsd_jax.pretrain import transfer
from stepopsd_jax.rollout import parse, prompts, responders
from stepopsd_jax.run import warmup as sft

MAIN_JOB = dict(steps=150, lr=3e-3)  # configs/default.py train.sft_steps / sft_lr
BATCH_SIZE, RESPONSE_LEN, NUM_TASKS = 32, 24, 2048
PROMPT_BUCKETS = (96, 128, 192, 256, 512, 1024)


def warm_up(config: QwenConfig, params, tokenizer, *, steps: int, lr: float, seed: int = 0,
            knobs: dict | None = None, num_tasks: int = NUM_TASKS):
  """The main job's format warm-up (its data, batch, response length and buckets)."""
  if steps == 0:
    return params
  tasks = envs.make_tasks(transfer.ENV, "train", num_tasks, seed=seed, **(knobs or transfer.KNOBS))
  examples = sft.random_policy_examples(transfer.ENV, tasks, tokenizer, transfer.PROMPT_CFG, seed)
  params, _ = sft.warm_up(config, params, examples, steps=steps, lr=lr, batch_size=BATCH_SIZE,
                          response_len=RESPONSE_LEN, pad_id=tokenizer.pad_token_id,
                          buckets=sampling.Buckets(prompt=PROMPT_BUCKETS), seed=seed)
  return params


def format_rates(config: QwenConfig, params, tokenizer, *, num_tasks: int = 32, seed: int = 3,
                 temperature: float = 1.0) -> dict[str, float]:
  """Fractions of sampled responses to student prompts that parse, and that are admissible."""
  all_cases = transfer.cases(num_tasks, seed)
  prompts_ids = [list(tokenizer.apply_chat_template(
      prompts.messages(c.user, transfer.PROMPT_CFG), add_generation_prompt=True))
      for c in all_cases]
  sampler = responders.agent_sampler(config, tokenizer, max_new_tokens=RESPONSE_LEN,
                               temperature=temperature,
                               buckets=sampling.Buckets(prompt=PROMPT_BUCKETS))
  out = sampler.generate(params, prompts_ids, jax.random.key(seed))
  parsed = [parse.parse_action(responders.safe_decode(tokenizer, t[:n]))
            for t, n in zip(out.tokens, out.lengths)]
  return {"valid": float(np.mean([p.valid for p in parsed])),
          "admissible": float(np.mean([p.action in c.admissible
                                       for p, c in zip(parsed, all_cases)]))}


def headline(report: dict) -> dict[str, float]:
  """The transfer numbers that matter, flat: p(named) per prompt kind and block wording."""
  return {f"{clue}/{wording}": round(e["p_named"], 3)
          for clue, table in report.items() for wording, e in table.items()}


def survival(config: QwenConfig, params, tokenizer, settings: list[tuple[int, float]], *,
             num_tasks: int = 48, warm_up_tasks: int = NUM_TASKS, seed: int = 0
             ) -> dict[str, dict]:
  """{"steps@lr": transfer headline + format rates} for each warm-up setting."""
  out = {}
  for steps, lr in settings:
    warmed = warm_up(config, params, tokenizer, steps=steps, lr=lr, seed=seed,
                     num_tasks=warm_up_tasks)
    report = transfer.transfer_check(config, warmed, tokenizer, num_tasks, seed=seed + 2)
    out[f"{steps}@{lr:g}"] = headline(report) | format_rates(config, warmed, tokenizer)
  return out
