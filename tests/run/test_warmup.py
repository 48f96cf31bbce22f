"""The reading warm-up's data: a share of the episodes carries a hindsight block in the rollout's
wording listing the episode's own actions, and every step's target is the block's action."""

import collections
import re

from stepopsd_jax import envs
from stepopsd_jax.rollout import prompts
from stepopsd_jax.rollout.protocol import RESPONSE_TEMPLATE
from stepopsd_jax.rollout.random_policy import train_env_tokenizer
from stepopsd_jax.run import warmup

ENV = "credit_lab/critical_step"
KNOBS = dict(horizon=3, num_choices=3, critical_step=2, num_colours=3, treasure_colours=1,
             clue_mode="none")
CFG = prompts.PromptConfig(history_window=0, system_prompt="You are an agent.")


def _examples(hint_fraction, n=60):
  tasks = envs.make_tasks(ENV, "train", n, seed=0, **KNOBS)
  tokenizer = train_env_tokenizer(ENV, tasks, CFG, vocab_size=400)
  data = warmup.reading_examples(ENV, tasks, tokenizer, CFG, seed=0, hint_fraction=hint_fraction)
  return [(tokenizer.decode(p), tokenizer.decode(r)) for p, r in data]


def test_blocks_list_the_episode_and_name_each_steps_target():
  data = _examples(0.5)
  assert len(data) == 60 * 3  # every step of one episode per task
  hinted, by_step_door = 0, collections.Counter()
  for i in range(0, len(data), 3):  # one episode = three consecutive steps
    episode = data[i:i + 3]
    actions = [re.search(r"<action>(.*)</action>", r).group(1) for _, r in episode]
    blocks = ["[Hindsight]" in p for p, _ in episode]
    assert len(set(blocks)) == 1  # the whole episode has a block, or none of it
    for k, (prompt, response) in enumerate(episode):
      assert response == RESPONSE_TEMPLATE.format(actions[k]) + "<|im_end|>"
      assert re.search(rf"Admissible actions: .*\b{actions[k]}\b", prompt)
      assert f"[Step {k + 1}] Observation:" in prompt
    if blocks[0]:
      hinted += 1
      listed = "; ".join(f"{k + 1}. {a}" for k, a in enumerate(actions))
      assert all("A successful attempt at this task took these actions: " + listed in p
                 for p, _ in episode)
      by_step_door[actions[1]] += 1
  assert 15 <= hinted <= 45  # about half of 60 episodes (binomial, p = 0.5)
  assert len(by_step_door) == 3  # the block's door at the deciding room is not fixed


def test_no_block_at_zero_fraction_and_same_episodes():
  plain, hinted = _examples(0.0, 20), _examples(1.0, 20)
  assert not any("[Hindsight]" in p for p, _ in plain)
  assert all("[Hindsight]" in p for p, _ in hinted)
  assert [r for _, r in plain] == [r for _, r in hinted]  # the same random actions
  strip = lambda p: re.sub(r"\n\n\[Hindsight\].*?(?=<\|im_end\|>)", "", p, flags=re.S)
  assert [strip(h) for h, _ in hinted] == [p for p, _ in plain]  # the block is only appended
