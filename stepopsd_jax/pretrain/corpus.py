"""The reading corpus: chat conversations whose answer must be read from the context.

Every example is one ChatML conversation (system?, user, assistant) rendered with the project's
chat template, the answer in the rollout's response format `<think>...</think><action>...
</action>`. Items are random: a verb and one or two words drawn from a `vocab.Vocab`, so no fixed
answer can be learned, only where to read it. Four families:

- plan:   a task line, the current step's marker ("Turn 3: ..."), the options, and (mostly) a
          plan block that lists one item per step; the answer is the item of the current step.
          Without a block the answer is a uniformly random option (so the model stays at chance
          when nothing tells it more). Other steps' plan items are often current options too,
          so only the step number tells which one to copy.
- index:  a numbered list and a question naming a number; the answer is that entry.
- lookup: key -> item records and a question naming one key; the answer is its item.
- echo:   an item to repeat.

What it excludes (`EXCLUDED`, tested): the credit lab's texts (task, rooms, doors, clue, "open X
door") and the hindsight block's wording, ALFWorld's and Search-QA's prompts and tags. Words of
the credit lab are not in the item pools at all (`vocab.py`), so its colours are never answers.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable

import numpy as np

from stepopsd_jax import text
from stepopsd_jax.pretrain import templates as T
from stepopsd_jax.pretrain.vocab import Vocab


@dataclasses.dataclass(frozen=True)
class Example:
  """One conversation: its messages, the think text, the answer and the candidates it is one of."""
  messages: list[dict]
  think: str
  answer: str
  choices: tuple[str, ...]

  @property
  def response(self) -> str:
    return f"<think>{self.think}</think><action>{self.answer}</action>"


# Substrings and patterns that must never occur in a corpus text (test_corpus.py checks them).
EXCLUDED_STRINGS = (
    "Find the treasure", "You are in room", "Doors:", "The treasure is behind",
    "You open the", "The search is over", "[Hindsight]", "This attempt succeeded",
    "This attempt failed", "A successful attempt at this task took these actions", "Reference:",
    "ALFRED", "You arrive at", "Your task is to", "middle of a room", "admissible actions of the",
    "<search>", "<information>", "<answer>", "(Title:", "Answer the question below")
EXCLUDED_PATTERNS = (r"\bopen \w+ door\b", r"\bgo to \w+ \d", r"\broom \d+ of \d+\b")


def _pick(rng: np.random.Generator, seq):
  return seq[int(rng.integers(len(seq)))]


def item(rng: np.random.Generator, vocab: Vocab, num_words: int | None = None) -> str:
  """A verb and one or two item words, e.g. "zib mork"."""
  n = num_words or int(rng.integers(1, 3))
  return " ".join([_pick(rng, vocab.verbs)] + [_pick(rng, vocab.words) for _ in range(n)])


def options(rng: np.random.Generator, vocab: Vocab, n: int) -> list[str]:
  """n distinct items: sharing verb and last word (one word differs), sharing the verb, or free."""
  style = int(rng.integers(3))
  verb, tail = _pick(rng, vocab.verbs), _pick(rng, vocab.words)
  words = [vocab.words[i] for i in rng.choice(len(vocab.words), min(n, len(vocab.words)),
                                              replace=False)]
  if style == 0:
    return [f"{verb} {w} {tail}" for w in words]
  if style == 1:
    return [f"{verb} {w}" for w in words]
  out = []
  while len(out) < len(words):
    candidate = item(rng, vocab)
    if candidate not in out:
      out.append(candidate)
  return out


def sentence(rng: np.random.Generator, vocab: Vocab, lo: int = 4, hi: int = 14) -> str:
  """Random filler words (and sometimes a number): an observation or a task's words."""
  n = int(rng.integers(lo, hi + 1))
  words = [str(rng.integers(1, 10)) if rng.random() < 0.08 else
           _pick(rng, T.FILLER) if rng.random() < 0.4 else _pick(rng, vocab.filler)
           for _ in range(n)]
  return " ".join(words)


def numbered(rng: np.random.Generator, entries: list[str]) -> str:
  fmt, sep = _pick(rng, T.NUMBERINGS), _pick(rng, T.LIST_SEPARATORS)
  return sep.join(fmt.format(i=i + 1, item=e) for i, e in enumerate(entries))


def _system(rng: np.random.Generator) -> list[dict]:
  system = _pick(rng, T.SYSTEM_PROMPTS)
  return [{"role": "system", "content": system}] if system else []


def _chat(rng: np.random.Generator, parts: list[str], answer: str, choices: list[str],
          appendix: str = "") -> Example:
  """The user message (parts, an instruction, then `appendix`) and a random think text."""
  instruction = _pick(rng, T.INSTRUCTIONS)
  user = "\n\n".join(parts + ([instruction] if instruction else [])) + appendix
  return Example(_system(rng) + [{"role": "user", "content": user}], _pick(rng, T.THINKS),
                 answer, tuple(dict.fromkeys(choices)))


def plan_block(rng: np.random.Generator, plan: list[str]) -> str:
  """An optional outcome line (saying nothing about the items), an intro, the numbered plan."""
  lines = []
  if rng.random() < 0.5:
    lines.append(_pick(rng, T.OUTCOME_LINES).format(verdict=_pick(rng, T.VERDICTS),
                                                    score=_pick(rng, ("0", "1", "0.5", "2"))))
  lines.append(_pick(rng, T.PLAN_INTROS).format(items=numbered(rng, plan)))
  return "\n".join(lines)


def plan_example(rng: np.random.Generator, vocab: Vocab, p_plan: float = 0.8) -> Example:
  """The current step's item of a per-step plan (or a random option when there is no plan)."""
  horizon = int(rng.integers(2, 7))
  k = int(rng.integers(1, horizon + 1))
  opts = options(rng, vocab, int(rng.integers(2, 6)))
  answer = _pick(rng, opts)
  parts = [_pick(rng, T.TASK_LINES).format(words=sentence(rng, vocab, 2, 6), n=horizon)]
  if rng.random() < 0.3 and k > 1:
    parts.append("\n".join(_pick(rng, T.HISTORY_LINES).format(j=j, item=item(rng, vocab))
                           for j in range(1, k)))
  parts.append(_pick(rng, T.STEP_MARKERS).format(k=k, n=horizon, obs=sentence(rng, vocab) + "."))
  sep = _pick(rng, T.OPTION_SEPARATORS)
  parts.append(f"{_pick(rng, T.OPTION_LABELS)} {sep.join(opts)}")
  if rng.random() < p_plan:
    plan = [answer if j == k else _pick(rng, opts) if rng.random() < 0.6 else item(rng, vocab)
            for j in range(1, horizon + 1)]
    block = plan_block(rng, plan)
    if rng.random() < 0.85:  # appended last, like a teacher's block
      return _chat(rng, parts, answer, opts, appendix="\n\n" + block)
    parts.insert(1, block)
  return _chat(rng, parts, answer, opts)


def index_example(rng: np.random.Generator, vocab: Vocab) -> Example:
  entries = [item(rng, vocab) for _ in range(int(rng.integers(2, 9)))]
  k = int(rng.integers(1, len(entries) + 1))
  parts = [_pick(rng, T.LIST_INTROS).format(items=numbered(rng, entries)),
           _pick(rng, T.INDEX_QUESTIONS).format(k=k)]
  return _chat(rng, parts, entries[k - 1], entries)


def lookup_example(rng: np.random.Generator, vocab: Vocab) -> Example:
  n = int(rng.integers(2, 9))
  keys = [vocab.filler[i] for i in rng.choice(len(vocab.filler), n, replace=False)]
  values = [item(rng, vocab) for _ in keys]
  record = _pick(rng, T.RECORDS)
  records = "; ".join(record.format(key=k, item=v) for k, v in zip(keys, values))
  q = int(rng.integers(n))
  parts = [_pick(rng, T.RECORD_INTROS).format(records=records),
           _pick(rng, T.LOOKUP_QUESTIONS).format(key=keys[q])]
  return _chat(rng, parts, values[q], values)


def echo_example(rng: np.random.Generator, vocab: Vocab) -> Example:
  answer = item(rng, vocab, int(rng.integers(1, 4)))
  return _chat(rng, [_pick(rng, T.ECHO_PROMPTS).format(item=answer)], answer, [answer])


FAMILIES: dict[str, Callable[[np.random.Generator, Vocab], Example]] = {
    "plan": plan_example, "index": index_example, "lookup": lookup_example, "echo": echo_example}
DEFAULT_MIX = {"plan": 0.6, "index": 0.15, "lookup": 0.15, "echo": 0.1}


def sample(rng: np.random.Generator, vocab: Vocab, mix: dict[str, float] = DEFAULT_MIX
           ) -> tuple[str, Example]:
  """(family, example) with the family drawn from `mix`."""
  names = sorted(mix)
  p = np.array([mix[n] for n in names], np.float64)
  name = names[int(rng.choice(len(names), p=p / p.sum()))]
  return name, FAMILIES[name](rng, vocab)


def render_prompt(messages: list[dict]) -> str:
  """The conversation up to the assistant's generation prompt, as the rollout renders it."""
  return text.render_chat_template(text.QWEN2P5_CHAT_TEMPLATE, messages,
                                   add_generation_prompt=True)


def render(example: Example) -> str:
  """The whole training text: prompt, response and the end-of-turn token."""
  return render_prompt(example.messages) + example.response + "<|im_end|>"


def violations(corpus_text: str) -> list[str]:
  """The excluded strings and patterns found in `corpus_text` (empty for a clean corpus)."""
  found = [s for s in EXCLUDED_STRINGS if s in corpus_text]
  return found + [p for p in EXCLUDED_PATTERNS if re.search(p, corpus_text)]
