"""Our Flax Qwen against transformers on random small configs: logits, round trip, shapes."""

import json

import jax.numpy as jnp
import numpy as np
import torch
import transformers

from stepopsd_jax import models
from tests.models.hf_reference import hf_logits

TOL = 1e-4


def _tokens(vocab, shape, seed=0):
  return np.random.RandomState(seed).randint(0, vocab, shape).astype(np.int32)


def test_load_hf_logits_match_transformers(hf_checkpoint):
  hf_model, path = hf_checkpoint
  config, params = models.load_hf(path)
  tokens = _tokens(config.vocab_size, (3, 17))
  ours = np.asarray(models.logits(config, params, jnp.asarray(tokens)))
  assert ours.dtype == np.float32
  err = np.abs(ours - hf_logits(hf_model, tokens)).max()
  print(f"max |dlogits| vs transformers: {err:.2e}")
  assert err <= TOL


def test_save_hf_round_trip_through_transformers(hf_checkpoint, tmp_path):
  hf_model, path = hf_checkpoint
  config, params = models.load_hf(path)
  models.save_hf(config, params, str(tmp_path / "ours"))
  reloaded = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "ours"),
                                                               dtype=torch.float32)
  tokens = _tokens(config.vocab_size, (2, 9), seed=1)
  np.testing.assert_allclose(hf_logits(reloaded, tokens), hf_logits(hf_model, tokens), atol=1e-6)


def test_sharded_checkpoint_round_trip(hf_checkpoint, tmp_path):
  _, path = hf_checkpoint
  config, params = models.load_hf(path)
  models.save_hf(config, params, str(tmp_path / "sharded"), max_shard_bytes=20_000)
  index = json.loads((tmp_path / "sharded" / "model.safetensors.index.json").read_text())
  assert len(set(index["weight_map"].values())) > 1
  config2, params2 = models.load_hf(str(tmp_path / "sharded"))
  assert config2 == config
  for a, b in zip(jax_leaves(params), jax_leaves(params2)):
    np.testing.assert_array_equal(a, b)


def jax_leaves(tree):
  import jax
  return [np.asarray(x) for x in jax.tree.leaves(tree)]


def test_left_padding_matches_unpadded_rows(hf_checkpoint):
  _, path = hf_checkpoint
  config, params = models.load_hf(path)
  lengths, width = [5, 11, 8], 11
  rows = [_tokens(config.vocab_size, (n,), seed=n) for n in lengths]
  tokens = np.zeros((len(rows), width), np.int32)
  mask = np.zeros((len(rows), width), bool)
  for i, row in enumerate(rows):
    tokens[i, width - len(row):], mask[i, width - len(row):] = row, True
  padded = np.asarray(models.logits(config, params, jnp.asarray(tokens), jnp.asarray(mask)))
  for i, row in enumerate(rows):
    alone = np.asarray(models.logits(config, params, jnp.asarray(row[None])))[0]
    np.testing.assert_allclose(padded[i, width - len(row):], alone, atol=TOL)


def test_left_padding_matches_transformers_with_position_ids(hf_checkpoint):
  hf_model, path = hf_checkpoint
  config, params = models.load_hf(path)
  tokens = _tokens(config.vocab_size, (2, 10), seed=3)
  mask = np.ones_like(tokens, bool)
  mask[0, :4] = False
  positions = np.asarray(models.default_positions(jnp.asarray(mask)))
  ours = np.asarray(models.logits(config, params, jnp.asarray(tokens), jnp.asarray(mask)))
  with torch.no_grad():
    ref = hf_model(torch.tensor(tokens), attention_mask=torch.tensor(mask.astype(np.int64)),
                   position_ids=torch.tensor(positions.astype(np.int64))).logits.numpy()
  np.testing.assert_allclose(ours[mask], ref[mask], atol=TOL)


def test_bf16_params_give_f32_logits_close_to_f32(hf_checkpoint):
  _, path = hf_checkpoint
  config32, params32 = models.load_hf(path, dtype="float32")
  config16, params16 = models.load_hf(path, dtype="bfloat16")
  assert params16["embed_tokens"].dtype == jnp.bfloat16
  tokens = jnp.asarray(_tokens(config32.vocab_size, (2, 8)))
  out16 = models.logits(config16, params16, tokens)
  assert out16.dtype == jnp.float32
  out32 = models.logits(config32, params32, tokens)
  assert float(jnp.abs(out16 - out32).max()) < 0.05 * float(jnp.abs(out32).max()) + 0.05
