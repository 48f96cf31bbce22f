"""Episodes of the uniform-random admissible policy: the format warm-up's data and the texts a
from-scratch tokenizer is trained on. Format only: the choice is random, never the expert's."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from stepopsd_jax import envs as envs_lib
from stepopsd_jax import text
from stepopsd_jax.rollout import loop, prompts

RESPONSE_TEMPLATE = "<think>I pick one of the admissible actions.</think><action>{}</action>"


def random_policy_texts(env_name: str, tasks: Sequence[envs_lib.Task],
                        prompt_cfg: prompts.PromptConfig, seed: int) -> list[tuple[str, str]]:
  """(user message, response text) of every step of one random-policy episode per task."""
  rng = np.random.default_rng(seed)
  texts = []
  for k, task in enumerate(tasks):
    env = envs_lib.make_env(env_name, seed=seed + k)
    result, history = env.reset(task), []
    while not result.done and len(history) < env.max_steps:
      action = str(rng.choice(result.info["admissible_actions"]))
      texts.append((loop.user_text(env.task_description, history, result, prompt_cfg),
                    RESPONSE_TEMPLATE.format(action)))
      history.append((result.observation, action))
      result = env.step(action)
  return texts


def train_env_tokenizer(env_name: str, tasks: Sequence[envs_lib.Task],
                        prompt_cfg: prompts.PromptConfig, vocab_size: int,
                        seed: int = 0) -> text.SentencePieceTokenizer:
  """A SentencePiece tokenizer trained on chat-rendered random-policy episodes of `env_name`.

  Pieces are whole words: a colour is then the same token in the clue, the door list and the
  action, and prompts stay short enough for a CPU run.
  """
  corpus = [text.render_chat_template(text.QWEN2P5_CHAT_TEMPLATE,
                                      prompts.messages(user, prompt_cfg),
                                      add_generation_prompt=True) + response
            for user, response in random_policy_texts(env_name, tasks, prompt_cfg, seed)]
  return text.train_sentencepiece(corpus, vocab_size=vocab_size)
