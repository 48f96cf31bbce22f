"""Texts of the project's three envs, for training the tokenizer (never the model).

Random-policy episodes rendered exactly as the rollout renders them (chat template, generation
prompt, response), teacher prompts with a hindsight block, and for the credit lab several knob
settings up to 4 rooms, 4 doors and all 12 colours. ALFWorld needs the optional `alfworld`
package: games are generated offline into a scratch dir; without the package its texts are left
out (the manifest records how many texts each env gave).
"""

from __future__ import annotations

import logging
import tempfile

import numpy as np

from stepopsd_jax import envs, text
from stepopsd_jax.pretrain import transfer
from stepopsd_jax.rollout import prompts
from stepopsd_jax.rollout.random_policy import random_policy_texts

log = logging.getLogger(__name__)

CREDIT_LAB_SETTINGS = (  # (env name, knobs, history window)
    ("credit_lab/critical_step", dict(horizon=3, num_choices=3, critical_step=2, num_colours=3,
                                      treasure_colours=1), 0),
    ("credit_lab/critical_step", dict(horizon=4, num_choices=4, critical_step=3), 0),
    ("credit_lab/critical_step", dict(horizon=2, num_choices=2, critical_step=1), 2),
    ("credit_lab/critical_step_memory", dict(horizon=4, num_choices=3, critical_step=2), 2),
    ("credit_lab/null_causal", dict(horizon=3, num_choices=4, critical_step=2), 1),
)


def _render(user: str, cfg: prompts.PromptConfig) -> str:
  return text.render_chat_template(text.QWEN2P5_CHAT_TEMPLATE, prompts.messages(user, cfg),
                                   add_generation_prompt=True)


def _admissible(user: str) -> list[str]:
  for line in user.splitlines():
    if line.startswith("Admissible actions: "):
      return line[len("Admissible actions: "):].split(", ")
  return []


def episode_texts(env_name: str, tasks, cfg: prompts.PromptConfig, seed: int,
                  hindsight_every: int = 2) -> list[str]:
  """Rendered (prompt + response) of random-policy steps; every `hindsight_every`-th step's
  prompt also gets a hindsight block listing random admissible actions."""
  rng = np.random.default_rng([seed, 303])
  out = []
  for i, (user, response) in enumerate(random_policy_texts(env_name, tasks, cfg, seed)):
    adm = _admissible(user)
    if adm and i % hindsight_every == 0:
      demo = [adm[int(rng.integers(len(adm)))] for _ in range(int(rng.integers(1, 5)))]
      user += "\n\n" + transfer.hindsight_text(bool(rng.random() < 0.5), float(rng.random() < 0.5),
                                               demo, None)
    out.append(_render(user, cfg) + response + "<|im_end|>")
  return out


def credit_lab_texts(seed: int, tasks_per_setting: int) -> list[str]:
  out = []
  for k, (name, knobs, window) in enumerate(CREDIT_LAB_SETTINGS):
    tasks = envs.make_tasks(name, "train", tasks_per_setting, seed=seed + k, **knobs)
    cfg = prompts.PromptConfig(history_window=window,
                               system_prompt="You are an agent." if k % 2 == 0 else None)
    out += episode_texts(name, tasks, cfg, seed + k)
  return out


def search_qa_texts(seed: int, num_tasks: int) -> list[str]:
  """Random-format episodes on a generated multi-hop world (BM25 over its own corpus)."""
  from stepopsd_jax.envs.search_qa import generate  # pylint: disable=g-import-not-at-top
  with tempfile.TemporaryDirectory() as d:
    paths = generate.generate(d, num_people=150, num_train=num_tasks, num_test=10, seed=seed)
    tasks = envs.make_tasks("search_qa", "train", num_tasks, seed=seed, files=[paths["train"]],
                            corpus=paths["corpus"])
    cfg = prompts.PromptConfig(history_window=2)
    return [_render(u, cfg) + r + "<|im_end|>" for u, r in
            random_policy_texts("search_qa", tasks, cfg, seed)]


def alfworld_texts(seed: int, per_type: int, max_steps: int = 15) -> list[str]:
  """Random-admissible episodes on offline-generated games; [] without the alfworld package."""
  try:
    from stepopsd_jax.envs.alfworld import generate  # pylint: disable=g-import-not-at-top
    generate.wheel.package_dir()
  except ImportError as e:
    log.warning("ALFWorld texts left out of the tokenizer corpus: %s", e)
    return []
  with tempfile.TemporaryDirectory() as d:
    generate.generate(d, "train", per_type, seed=seed)
    tasks = envs.make_tasks("alfworld", "train", 6 * per_type, seed=seed, data_dir=d,
                            max_steps=max_steps)
    cfg = prompts.PromptConfig(history_window=2)
    return [_render(u, cfg) + r + "<|im_end|>" for u, r in
            random_policy_texts("alfworld", tasks, cfg, seed)]


def all_env_texts(seed: int, quick: bool = False) -> dict[str, list[str]]:
  """{env: texts}: the credit lab, Search-QA and (when installed) ALFWorld."""
  return {"credit_lab": credit_lab_texts(seed, 40 if quick else 300),
          "search_qa": search_qa_texts(seed, 20 if quick else 150),
          "alfworld": [] if quick else alfworld_texts(seed, per_type=2)}
