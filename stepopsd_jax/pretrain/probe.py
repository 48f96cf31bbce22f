"""Scoring continuations, and the held-out reading gate (items never seen in the reading corpus).

`continuation_logprobs` scores `prefix + continuation` rows in fixed-size padded batches (a few
compiles, whatever the rows). The gate generates fresh corpus examples whose item words are the
held-out words and checks that the model ranks the right answer first among the example's
candidates (the options of a plan step, the entries of a list, the values of the records).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from stepopsd_jax import models
from stepopsd_jax.algorithms.losses import token_logprobs_and_entropy
from stepopsd_jax.models import QwenConfig
from stepopsd_jax.pretrain import batches, corpus
from stepopsd_jax.pretrain.vocab import Vocab

SCORE_BATCH = 32
LENGTH_MULTIPLE = 64


@functools.partial(jax.jit, static_argnames=("config",))
def _next_token_logps(config: QwenConfig, params, tokens_BxT, mask_BxT):
  logits_BxSxV = models.logits(config, params, tokens_BxT[:, :-1], mask_BxT[:, :-1])
  return token_logprobs_and_entropy(logits_BxSxV, tokens_BxT[:, 1:])[0]


def continuation_logprobs(config: QwenConfig, params, rows: Sequence[tuple[list[int], list[int]]],
                          pad_id: int = 0) -> list[np.ndarray]:
  """Per-token log p of each row's continuation given its prefix: a [len(continuation)] array."""
  out = []
  for start in range(0, len(rows), SCORE_BATCH):
    chunk = rows[start:start + SCORE_BATCH]
    longest = max(len(p) + len(c) for p, c in chunk)
    length = -(-longest // LENGTH_MULTIPLE) * LENGTH_MULTIPLE
    tokens = np.full((SCORE_BATCH, length), pad_id, np.int32)
    mask = np.zeros((SCORE_BATCH, length), bool)
    for b, (p, c) in enumerate(chunk):
      tokens[b, :len(p) + len(c)] = p + c
      mask[b, :len(p) + len(c)] = True
    logp = np.asarray(_next_token_logps(config, params, jnp.asarray(tokens), jnp.asarray(mask)))
    out += [logp[b, len(p) - 1:len(p) - 1 + len(c)] for b, (p, c) in enumerate(chunk)]
  return out


def choice_logprobs(config: QwenConfig, params, tokenizer, examples: Sequence[corpus.Example]
                    ) -> list[np.ndarray]:
  """Per example, the summed log p of `choice</action>` for each of its choices."""
  rows, sizes = [], []
  for ex in examples:
    prompt, _ = batches.encode(tokenizer, ex)
    prefix = prompt + tokenizer.encode(f"<think>{ex.think}</think><action>")
    rows += [(prefix, tokenizer.encode(c + "</action>")) for c in ex.choices]
    sizes.append(len(ex.choices))
  sums = [float(x.sum()) for x in continuation_logprobs(config, params, rows,
                                                        tokenizer.pad_token_id)]
  return [np.array(s) for s in np.split(np.array(sums), np.cumsum(sizes)[:-1])]


def _normalised(logps: np.ndarray) -> np.ndarray:
  return np.exp(logps - logps.max()) / np.exp(logps - logps.max()).sum()


def family_scores(config: QwenConfig, params, tokenizer, examples: Sequence[corpus.Example]
                  ) -> dict[str, float]:
  """Accuracy (answer ranked first) and the answer's probability among the choices."""
  scores = choice_logprobs(config, params, tokenizer, examples)
  right = [ex.choices.index(ex.answer) for ex in examples]
  acc = np.mean([int(np.argmax(s)) == r for s, r in zip(scores, right)])
  p = np.mean([_normalised(s)[r] for s, r in zip(scores, right)])
  chance = np.mean([1.0 / len(ex.choices) for ex in examples])
  return {"accuracy": float(acc), "p_answer": float(p), "chance": float(chance),
          "n": len(examples)}


def heldout_gate(config: QwenConfig, params, tokenizer, vocab: Vocab, num: int = 200,
                 seed: int = 7) -> dict[str, dict[str, float]]:
  """Scores per family on fresh examples built from `vocab` (the held-out words).

  `plan` always shows the plan block (its accuracy is the gate); `plan_no_block` never does, so
  its p_answer should sit at chance.
  """
  rng = np.random.default_rng([seed, 505])
  make = {"plan": lambda: corpus.plan_example(rng, vocab, p_plan=1.0),
          "plan_no_block": lambda: corpus.plan_example(rng, vocab, p_plan=0.0),
          "index": lambda: corpus.index_example(rng, vocab),
          "lookup": lambda: corpus.lookup_example(rng, vocab)}
  return {name: family_scores(config, params, tokenizer, [f() for _ in range(num)])
          for name, f in make.items()}
