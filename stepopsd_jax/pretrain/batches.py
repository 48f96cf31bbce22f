"""Fixed-shape token batches: copy rows that cover every id, and rendered reading examples.

Every row is [T] int32 tokens with a [T] weight per position (0 on padding); the loss is the
next-token loss on every weighted position, answer tokens optionally weighted up. Copy rows are
random id sequences followed by themselves, the ids drawn from successive permutations of the
whole vocabulary, so each id is seen as an input and as an answer within a batch or two (an id
never seen as input keeps its random embedding and cannot be copied later).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from stepopsd_jax.pretrain import corpus
from stepopsd_jax.pretrain.vocab import Vocab


@dataclasses.dataclass
class Rows:
  tokens: np.ndarray  # int32 [B, T]
  weights: np.ndarray  # f32 [B, T]: loss weight of predicting token t from tokens < t; 0: pad
  answer: np.ndarray  # bool [B, T]: response tokens of reading rows


class IdStream:
  """Ids from successive random permutations of [0, vocab_size): full coverage, no bias."""

  def __init__(self, vocab_size: int, rng: np.random.Generator):
    self.vocab_size, self.rng, self.buffer = vocab_size, rng, np.zeros(0, np.int32)

  def take(self, n: int) -> np.ndarray:
    while len(self.buffer) < n:
      self.buffer = np.concatenate([self.buffer,
                                    self.rng.permutation(self.vocab_size).astype(np.int32)])
    out, self.buffer = self.buffer[:n], self.buffer[n:]
    return out


def copy_rows(stream: IdStream, rng: np.random.Generator, batch: int, seq_len: int,
              span: tuple[int, int] = (8, 48), p_span2: float = 0.0) -> Rows:
  """Rows of [s, s] segments, the last one cut at seq_len; |s| is 2 with probability `p_span2`
  (keeps the previous-token head in use), else drawn from `span`."""
  tokens = np.zeros((batch, seq_len), np.int32)
  for b in range(batch):
    row, used = [], 0
    while used < seq_len:
      n = 2 if rng.random() < p_span2 else int(rng.integers(span[0], span[1] + 1))
      s = stream.take(n)
      row += [s, s]
      used += 2 * len(s)
    tokens[b] = np.concatenate(row)[:seq_len]
  return Rows(tokens, np.ones((batch, seq_len), np.float32), np.zeros((batch, seq_len), bool))


def encode(tokenizer, example: corpus.Example) -> tuple[list[int], list[int]]:
  """(prompt ids, response ids + EOS), tokenized apart as the rollout and the warm-up do."""
  prompt = tokenizer.encode(corpus.render_prompt(example.messages))
  return prompt, tokenizer.encode(example.response) + [tokenizer.eos_token_id]


def reading_rows(tokenizer, vocab: Vocab, rng: np.random.Generator, batch: int, seq_len: int,
                 mix: dict[str, float] = corpus.DEFAULT_MIX, pack: bool = True) -> Rows:
  """Examples packed into right-padded rows (one per row without `pack`), each starting at a
  row's end; an example that does not fit starts the next row, one longer than seq_len is
  redrawn. Packing about doubles the examples per step (most are ~100-200 tokens)."""
  tokens = np.full((batch, seq_len), tokenizer.pad_token_id, np.int32)
  weights = np.zeros((batch, seq_len), np.float32)
  answer = np.zeros((batch, seq_len), bool)
  b, used = 0, 0
  while b < batch:
    prompt, response = encode(tokenizer, corpus.sample(rng, vocab, mix)[1])
    n = len(prompt) + len(response)
    if n > seq_len:
      continue
    if used + n > seq_len:
      b, used = b + 1, 0
      if b == batch:
        break
    tokens[b, used:used + n] = prompt + response
    weights[b, used:used + n] = 1.0  # a row's position 0 is never a target: its weight marks it
    answer[b, used + len(prompt):used + n] = True
    used += n
    if not pack:
      b, used = b + 1, 0
  return Rows(tokens, weights, answer)


def concat(*parts: Rows) -> Rows:
  return Rows(*(np.concatenate([getattr(p, f.name) for p in parts])
                for f in dataclasses.fields(Rows)))
