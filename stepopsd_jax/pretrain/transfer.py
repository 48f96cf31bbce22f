"""The env transfer check: does the model follow a hindsight block in the credit lab's prompts?

Student prompts are built exactly as the rollout builds them (random-policy episodes of
`credit_lab/critical_step`, history window 0, "You are an agent."), with the clue sentence and
without it (what `clue_mode="none"` shows). Each episode gets a block naming a *uniformly random
admissible action per step* (so it says nothing about the right door), in the hindsight block's
exact wording (`hindsight_text`) or in a paraphrase. For each step we score the
response `<think>I pick one of the admissible actions.</think><action>open X door</action>`
(teacher-forced) for every admissible X:

- p_named: the probability of the named door's colour token after `<action>open`, normalised
  over the admissible colours (chance 1/N); `follow`: the named colour ranks first;
- delta_named / delta_other: mean over the action tokens (`open`, ` X`, ` door`) of
  log p(token | prompt + block) - log p(token | prompt), for the named door and the others.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence

import numpy as np

from stepopsd_jax import envs
from stepopsd_jax.models import QwenConfig
from stepopsd_jax.pretrain.probe import continuation_logprobs
from stepopsd_jax.rollout import hindsight, prompts
from stepopsd_jax.rollout.random_policy import random_policy_texts

ENV = "credit_lab/critical_step"
KNOBS = dict(horizon=3, num_choices=3, critical_step=2, num_colours=3, treasure_colours=1)
PROMPT_CFG = prompts.PromptConfig(history_window=0, system_prompt="You are an agent.")
THINK = "<think>I pick one of the admissible actions.</think><action>"
CLUE = re.compile(r" The treasure is behind the (\w+) door of room \d+\.")
_STEP = re.compile(r"\[Step (\d+)\] Observation:")
_ADMISSIBLE = re.compile(r"^Admissible actions: (.*)$", re.M)


def paraphrase_block(won: bool, traj_return: float, demo_actions: Sequence[str]) -> str:
  """Our own rewording of the hindsight block (same facts, other words and numbering)."""
  verdict = "worked" if won else "did not work"
  steps = " | ".join(f"step {i + 1}: {a}" for i, a in enumerate(demo_actions))
  return (f"Looking back: this try {verdict} (score {traj_return:g}).\n"
          f"Moves of a run that reached the goal, in order: {steps}")


def hindsight_text(won: bool, traj_return: float, demo_actions: Sequence[str] | None,
                   reference: str | None = None) -> str:
  """The rollout's hindsight block (`rollout.hindsight.block`) with every step's action shown."""
  demo = tuple(demo_actions) if demo_actions is not None else None
  return hindsight.block(hindsight.Hindsight(won, traj_return, demo, reference), step=0)


@dataclasses.dataclass(frozen=True)
class Case:
  user: str  # the student's user message (clue sentence included)
  step: int  # 0-based
  admissible: tuple[str, ...]
  won: bool  # the outcome line the block shows (drawn at random)
  demo: tuple[str, ...]  # the block's actions, one uniformly random admissible action per step


def cases(num_tasks: int, seed: int, knobs: dict | None = None, split: str = "eval"
          ) -> list[Case]:
  """One random-policy episode per task of `split`, each step a case, with a random block."""
  tasks = envs.make_tasks(ENV, split, num_tasks, seed=seed, **(knobs or KNOBS))
  steps = random_policy_texts(ENV, tasks, PROMPT_CFG, seed)
  rng = np.random.default_rng([seed, 606])
  parsed = [(u, int(_STEP.search(u).group(1)) - 1,
             tuple(_ADMISSIBLE.search(u).group(1).split(", "))) for u, _ in steps]
  out, episode = [], []
  for user, step, adm in parsed + [("", 0, ())]:  # a sentinel closes the last episode
    if step == 0 and episode:
      demo = tuple(a[int(rng.integers(len(a)))] for _, _, a in episode)
      won = bool(rng.random() < 0.5)
      out += [Case(u, k, a, won, demo) for u, k, a in episode]
      episode = []
    episode.append((user, step, adm))
  return out


def _block(case: Case, wording: str) -> str:
  if wording == "exact":
    return "\n\n" + hindsight_text(case.won, float(case.won), case.demo)
  return "\n\n" + paraphrase_block(case.won, float(case.won), case.demo)


def prompt_rows(tokenizer, case: Case, clue: bool, wording: str | None):
  """(prefix ids, continuation ids) per admissible action: the prompt (with the clue sentence
  or not, with a block in `wording` or none), the think text and `<action>`, then the action."""
  user = case.user if clue else CLUE.sub("", case.user)
  if wording is not None:
    user += _block(case, wording)
  prompt = list(tokenizer.apply_chat_template(prompts.messages(user, PROMPT_CFG),
                                              add_generation_prompt=True))
  prefix = prompt + tokenizer.encode(THINK)
  return [(prefix, tokenizer.encode(a + "</action>")) for a in case.admissible]


def _colour_p(logps: list[np.ndarray], named: int) -> float:
  """p of the named colour token (index 1: after "open") among the admissible colours."""
  colour = np.array([lp[1] for lp in logps])
  p = np.exp(colour - colour.max())
  return float(p[named] / p.sum())


def case_logps(config: QwenConfig, params, tokenizer, all_cases: Sequence[Case], clue: bool,
               wording: str | None) -> list[list[np.ndarray]]:
  """Per case, per admissible action, the per-token log p of `action</action>`."""
  rows = [r for c in all_cases for r in prompt_rows(tokenizer, c, clue, wording)]
  flat = continuation_logprobs(config, params, rows, tokenizer.pad_token_id)
  out, i = [], 0
  for c in all_cases:
    out.append(flat[i:i + len(c.admissible)])
    i += len(c.admissible)
  return out


def transfer_check(config: QwenConfig, params, tokenizer, num_tasks: int = 48,
                   seed: int = 11) -> dict:
  """{clue|no_clue: {none|exact|paraphrase: numbers}} plus per-step p_named; see the docstring."""
  all_cases = cases(num_tasks, seed)
  n_action = len(tokenizer.encode("open red door"))
  report = {}
  for clue in (True, False):
    logps = {w: case_logps(config, params, tokenizer, all_cases, clue, w)
             for w in (None, "exact", "paraphrase")}
    report["clue" if clue else "no_clue"] = _summary(all_cases, logps, n_action)
  return report


def _summary(all_cases: list[Case], logps: dict, n_action: int) -> dict:
  out = {}
  for wording in (None, "exact", "paraphrase"):
    p, follow, d_named, d_other, by_step = [], [], [], [], {}
    for c, lps, base in zip(all_cases, logps[wording], logps[None]):
      named = c.admissible.index(c.demo[c.step])
      p.append(_colour_p(lps, named))
      follow.append(int(np.argmax([lp[1] for lp in lps])) == named)
      by_step.setdefault(c.step + 1, []).append(p[-1])
      for j, (lp, lb) in enumerate(zip(lps, base)):
        (d_named if j == named else d_other).append(float(np.mean(lp[:n_action] - lb[:n_action])))
    entry = {"p_named": float(np.mean(p)), "follow": float(np.mean(follow)), "n": len(p),
             "p_named_by_step": {k: float(np.mean(v)) for k, v in sorted(by_step.items())}}
    if wording is not None:
      entry |= {"delta_named": float(np.mean(d_named)), "delta_other": float(np.mean(d_other))}
    out[wording or "none"] = entry
  return out


def format_report(report: dict) -> str:
  """A markdown table of the transfer check."""
  lines = ["| prompt | block | p(named) | follow | by step | delta named | delta other |",
           "|---|---|---|---|---|---|---|"]
  for clue, table in report.items():
    for wording, e in table.items():
      steps = " ".join(f"{v:.2f}" for v in e["p_named_by_step"].values())
      lines.append(f"| {clue} | {wording} | {e['p_named']:.3f} | {e['follow']:.3f} | {steps} | "
                   f"{e.get('delta_named', 0.0):+.3f} | {e.get('delta_other', 0.0):+.3f} |")
  return "\n".join(lines)
