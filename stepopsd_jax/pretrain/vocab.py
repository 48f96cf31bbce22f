"""The random vocabulary of the reading corpus: made-up words, and item pools cut from a tokenizer.

Two stages. Before the tokenizer exists, the corpus is rendered with a made-up lexicon (seeded
syllable words), so the tokenizer learns pieces for them. Afterwards, items are built from the
tokenizer's own word pieces (" zib": a leading space and lowercase letters, one token):

- verbs: pieces that are one token with and without the space ("zib" after `<action>`);
- words: the other pieces, split at random into train words and held-out words; held-out words
  never appear in the reading corpus (only in the copy phase, which covers every id), so the
  held-out gate measures reading, not memory;
- excluded from both: every word of the templates (a word is either scaffolding or an item) and
  every word of the credit lab's texts (colours, "door", "room", the hindsight wording...), so
  no credit-lab action can be spelled by the corpus and its colours are read, never learned.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable

import numpy as np

from stepopsd_jax import text
from stepopsd_jax.pretrain import templates

_ONSETS = ("b", "c", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "qu", "s", "t", "v", "w",
           "z", "sh", "ch", "pl", "gr", "fl", "sn")
_VOWELS = ("a", "e", "i", "o", "u", "oo", "ee", "y")
_CODAS = ("", "b", "d", "g", "k", "m", "n", "p", "rt", "sk", "x", "zz")
_WORD = re.compile(r"[a-z]+")
_SLOT = re.compile(r"\{[a-z]+\}")


@dataclasses.dataclass(frozen=True)
class Vocab:
  """Words a corpus draws from: item verbs, item words, and filler for observations."""
  verbs: tuple[str, ...]
  words: tuple[str, ...]
  filler: tuple[str, ...]


def made_up_words(rng: np.random.Generator, num: int, syllables: tuple[int, int],
                  banned: Iterable[str] = ()) -> list[str]:
  """`num` distinct pronounceable made-up words (onset+vowel syllables plus a coda)."""
  banned, out = set(banned), []
  while len(out) < num:
    n = int(rng.integers(syllables[0], syllables[1] + 1))
    w = "".join(_ONSETS[rng.integers(len(_ONSETS))] + _VOWELS[rng.integers(len(_VOWELS))]
                for _ in range(n)) + _CODAS[rng.integers(len(_CODAS))]
    if w not in banned and w not in out:
      out.append(w)
  return out


def template_words() -> set[str]:
  """Every lowercase word of every template string: scaffolding, never an item."""
  words = set()
  for name in dir(templates):
    value = getattr(templates, name)
    strings = value if isinstance(value, tuple) else (value,)
    for s in strings:
      if isinstance(s, str):
        words.update(_WORD.findall(s.lower()))
  return words


def lexicon(seed: int, banned: Iterable[str], num_verbs: int = 64,
            num_words: int = 600) -> Vocab:
  """The made-up lexicon the tokenizer is trained on (stage one)."""
  rng = np.random.default_rng([seed, 101])
  banned = set(banned) | template_words()
  verbs = made_up_words(rng, num_verbs, (1, 2), banned)
  words = made_up_words(rng, num_words, (1, 3), banned | set(verbs))
  return Vocab(tuple(verbs), tuple(words), tuple(words))


def words_of(texts: Iterable[str]) -> set[str]:
  """Lowercase words of `texts` (to ban a set of texts' words from the pools)."""
  out = set()
  for t in texts:
    out.update(_WORD.findall(t.lower()))
  return out


def scaffold_ids(tokenizer) -> set[int]:
  """Ids of every template string and of the chat template's own text (with its default system
  prompt): a template word may split into pieces (" sugg" "ested"), none of which is an item."""
  strings = [s for name in dir(templates) for s in
             (getattr(templates, name) if isinstance(getattr(templates, name), tuple)
              else (getattr(templates, name),)) if isinstance(s, str)]
  strings.append(text.render_chat_template(text.QWEN2P5_CHAT_TEMPLATE,
                                           [{"role": "user", "content": "x"}],
                                           add_generation_prompt=True))
  ids = set()
  for s in strings:
    ids.update(tokenizer.encode(_SLOT.sub("", s)))
    ids.update(tokenizer.encode(" " + s))
  return ids


def piece_pools(tokenizer, banned: Iterable[str]) -> tuple[list[str], list[str]]:
  """(verbs, words) from the tokenizer's word pieces, sorted; `banned` words, template words and
  pieces of the scaffolding left out."""
  banned = set(banned) | template_words()
  scaffold = scaffold_ids(tokenizer)
  verbs, words = [], []
  for token_id in range(tokenizer.vocab_size):
    piece = tokenizer.decode([token_id])
    w = piece[1:]
    if not (piece.startswith(" ") and len(w) >= 2 and _WORD.fullmatch(w)) or w in banned:
      continue
    if token_id in scaffold:
      continue
    if len(tokenizer.encode(piece)) != 1:
      continue
    (verbs if len(tokenizer.encode(w)) == 1 else words).append(w)
  return sorted(verbs), sorted(words)


def split_pools(tokenizer, banned: Iterable[str], seed: int,
                heldout_fraction: float) -> tuple[Vocab, Vocab]:
  """(train vocab, held-out vocab): held-out items use held-out words, filler stays train."""
  verbs, words = piece_pools(tokenizer, banned)
  rng = np.random.default_rng([seed, 202])
  order = rng.permutation(len(words))
  num_heldout = int(round(heldout_fraction * len(words)))
  heldout = tuple(sorted(words[i] for i in order[:num_heldout]))
  train = tuple(sorted(words[i] for i in order[num_heldout:]))
  return Vocab(tuple(verbs), train, train), Vocab(tuple(verbs), heldout, train)
