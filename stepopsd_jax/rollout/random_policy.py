"""Episodes of an env's random format policy: the format warm-up's data and the texts a
from-scratch tokenizer is trained on. Format only: the choices are random, never the expert's
(uniform-random admissible actions by default; the env protocol's `random_policy` otherwise)."""

from __future__ import annotations

from collections.abc import Sequence

from stepopsd_jax import envs as envs_lib
from stepopsd_jax import text
from stepopsd_jax.rollout import loop, prompts, protocol

CHUNK = 64  # envs alive at once (an ALFWorld env holds a whole game)


def random_policy_texts(env_name: str, tasks: Sequence[envs_lib.Task],
                        prompt_cfg: prompts.PromptConfig, seed: int) -> list[tuple[str, str]]:
  """(user message, response text) of every step of one random-policy episode per task."""
  result = loop.play(env_name, tasks, protocol.for_env(env_name).random_policy, prompt_cfg,
                     env_seed=seed, policy_seed=seed, chunk=CHUNK)
  return [step for traj in result.trajectories for step in traj.steps]


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
