"""The reading corpus: it never contains the envs' texts, and held-out words never reach it."""

import json
import pathlib
import re

import numpy as np
import pytest

from stepopsd_jax import envs
from stepopsd_jax.envs.credit_lab.layout import COLOURS, ROOMS
from stepopsd_jax.pretrain import corpus, transfer, vocab
from stepopsd_jax.rollout import prompts
from stepopsd_jax.rollout.random_policy import random_policy_texts


def _corpus_texts(v: vocab.Vocab, n: int, seed: int = 0) -> list[str]:
  rng = np.random.default_rng(seed)
  return [corpus.render(corpus.sample(rng, v)[1]) for _ in range(n)]


def _credit_lab_sentences() -> set[str]:
  """Every sentence the credit lab shows (task, rooms, doors, outcomes), from the env itself."""
  tasks = envs.make_tasks("credit_lab/critical_step", "train", 30, seed=0, horizon=4,
                          num_choices=4)
  cfg = prompts.PromptConfig(history_window=1)
  sentences = set()
  for user, _ in random_policy_texts("credit_lab/critical_step", tasks, cfg, 0):
    for s in re.split(r"(?<=[.!:])\s+|\n+", user):
      if "Observation" not in s and "Admissible" not in s and "Think briefly" not in s:
        sentences.add(s.strip())
  return {s for s in sentences if len(s) > 12}


def _hindsight_wording() -> list[str]:
  """The fixed parts of the hindsight block, cut out of a block the rollout code wrote."""
  won = transfer.hindsight_text(True, 1.0, ["zzz"], "qqq")
  lost = transfer.hindsight_text(False, 0.0, ["zzz"])
  parts = re.split(r"\d+\. zzz|qqq|\(return [\d.]+\)", won + "\n" + lost)
  return [p.strip() for piece in parts for p in piece.split("\n") if len(p.strip()) > 6]


@pytest.fixture(scope="module")
def texts() -> list[str]:
  lexicon = vocab.lexicon(0, banned=set())
  return _corpus_texts(lexicon, 3000)


def test_corpus_has_no_credit_lab_sentence(texts):
  sentences = _credit_lab_sentences()
  assert len(sentences) > 20
  joined = "\n".join(texts)
  assert [s for s in sentences if s in joined] == []


def test_corpus_has_no_hindsight_wording(texts):
  wording = _hindsight_wording()
  assert "A successful attempt at this task took these actions:" in wording
  joined = "\n".join(texts)
  assert [w for w in wording if w in joined] == []


def test_corpus_has_no_env_actions_or_tags(texts):
  joined = "\n".join(texts)
  for pattern in (r"\bopen \w+ door\b", r"\bgo to \w+ \d+", r"<search>", r"<information>",
                  r"<answer>", r"You arrive at", r"Your task is to", r"ALFRED", r"Doc \d \(Title"):
    assert not re.search(pattern, joined), pattern


def _built_pools(built: pathlib.Path) -> tuple[vocab.Vocab, vocab.Vocab]:
  pools = json.loads((built / "manifest.json").read_text())["pools"]
  verbs, train = tuple(pools["verbs"]), tuple(pools["train_words"])
  return vocab.Vocab(verbs, train, train), vocab.Vocab(verbs, tuple(pools["heldout_words"]), train)


def test_built_pools_leave_out_every_credit_lab_word(built):
  """No colour, room or door word is an item, so the corpus can teach no credit-lab answer."""
  credit_lab = {w for s in COLOURS + ROOMS for w in s.split()} | {"open", "door", "treasure"}
  for v in _built_pools(built):
    assert not (set(v.verbs) | set(v.words)) & credit_lab
  rng = np.random.default_rng(1)
  joined = "\n".join(corpus.render(corpus.sample(rng, _built_pools(built)[0])[1])
                     for _ in range(1000))
  for colour in COLOURS:
    assert not re.search(rf"\b{colour}\b", joined), colour
