"""The copy phase shows every id as an input and as an answer; rows have static shapes."""

import numpy as np

from stepopsd_jax.pretrain import batches, vocab
from stepopsd_jax.pretrain import train as train_lib
from stepopsd_jax.text import load_tokenizer


def test_copy_phase_covers_every_id_as_input_and_as_target(built):
  tokenizer = load_tokenizer(built)
  train_v, _ = vocab.split_pools(tokenizer, set(), 0, 0.15)
  cfg = train_lib.TrainConfig(copy_steps=2, mixed_steps=0, batch_size=32, seq_len=256)
  rows = list(train_lib.batch_stream(cfg, tokenizer, train_v, seed=0))
  tokens = np.concatenate([r.tokens for r in rows])
  everything = np.arange(tokenizer.vocab_size)
  assert np.setdiff1d(everything, np.unique(tokens[:, :-1])).size == 0  # inputs
  assert np.setdiff1d(everything, np.unique(tokens[:, 1:])).size == 0  # targets
  assert all(np.all(r.weights == 1.0) for r in rows)


def test_copy_rows_repeat_each_segment():
  """Each row starts with a sequence followed by itself (the copy target)."""
  rng = np.random.default_rng(0)
  rows = batches.copy_rows(batches.IdStream(500, rng), rng, 8, 64, span=(5, 5))
  assert rows.tokens.shape == (8, 64)
  np.testing.assert_array_equal(rows.tokens[:, :5], rows.tokens[:, 5:10])
  np.testing.assert_array_equal(rows.tokens[:, 10:15], rows.tokens[:, 15:20])


def test_reading_rows_mark_the_response_and_padding(built):
  tokenizer = load_tokenizer(built)
  train_v, _ = vocab.split_pools(tokenizer, set(), 0, 0.15)
  rows = batches.reading_rows(tokenizer, train_v, np.random.default_rng(0), 4, 256)
  for tokens, weights, answer in zip(rows.tokens, rows.weights, rows.answer):
    n = int(weights.sum())
    assert np.all(weights[:n] == 1) and np.all(weights[n:] == 0)
    response = tokenizer.decode(tokens[answer])
    assert response.startswith("<think>") and response.endswith("</action><|im_end|>")
    assert "<|im_start|>assistant\n" in tokenizer.decode(tokens[:n][~answer[:n]])
