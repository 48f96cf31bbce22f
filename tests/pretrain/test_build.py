"""`make_base --quick` builds end to end into a tmp dir, and the result loads like a Qwen dir."""

import json

import jax.numpy as jnp
import numpy as np
from stepopsd_jax import models, text
from stepopsd_jax.envs.credit_lab.layout import COLOURS


def test_quick_build_loads_with_load_hf_and_load_tokenizer(built):
  config, params = models.load_hf(str(built))
  tokenizer = text.load_tokenizer(built)
  assert config.family == "qwen3" and config.vocab_size % 64 == 0
  assert tokenizer.vocab_size <= config.vocab_size < tokenizer.vocab_size + 64
  assert tokenizer.decode([tokenizer.eos_token_id]) == "<|im_end|>"
  assert tokenizer.decode([tokenizer.pad_token_id]) == "<|endoftext|>"
  ids = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}],
                                      add_generation_prompt=True)
  out = models.logits(config, params, jnp.asarray([ids], jnp.int32))
  assert out.shape == (1, len(ids), config.vocab_size) and bool(jnp.all(jnp.isfinite(out)))


def test_quick_build_colours_are_single_tokens(built):
  tokenizer = text.load_tokenizer(built)
  for colour in COLOURS:
    (piece,) = tokenizer.encode(" " + colour)
    assert piece in tokenizer.encode(f"Doors: blue, {colour}, red.")
    assert piece in tokenizer.encode(f"<action>open {colour} door</action>")


def test_quick_build_manifest(built):
  manifest = json.loads((built / "manifest.json").read_text())
  assert manifest["recipe"]["quick"] and manifest["seed"] == 0
  assert set(manifest["files_sha256"]) == {"config.json", "model.safetensors", "tokenizer.json",
                                           "tokenizer_config.json", "chat_template.jinja",
                                           "CORPUS.md"}
  assert {"clue", "no_clue"} == set(manifest["transfer"])
  assert 0.0 <= manifest["heldout_gate"]["plan"]["accuracy"] <= 1.0
  assert np.isfinite(manifest["build_minutes"])
