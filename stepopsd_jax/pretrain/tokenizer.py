"""A byte-level BPE tokenizer for the base model, saved as a HF tokenizer dir.

GPT-2's byte-level pre-tokenizer splits " red" (a space and letters) into one chunk wherever it
stands, so a colour is the same token in "Doors: red, blue" and in "open red door"; `check`
asserts that every credit-lab colour is one such token. The dir holds `tokenizer.json`,
`tokenizer_config.json` (eos `<|im_end|>`, pad `<|endoftext|>`, ChatML specials) and
`chat_template.jinja` (Qwen2.5's ChatML template), so `text.load_tokenizer(dir)` reads it like a
Qwen checkpoint's.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import tokenizers
from tokenizers import decoders, models, pre_tokenizers, trainers

from stepopsd_jax import text
from stepopsd_jax.envs.credit_lab.layout import COLOURS

SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")  # ids 0, 1, 2


def train(texts: Sequence[str], vocab_size: int) -> tokenizers.Tokenizer:
  """Byte-level BPE on `texts` (deterministic for the same texts in the same order)."""
  tok = tokenizers.Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIALS),
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                show_progress=False)
  tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
  return tok


def _config() -> dict:
  added = {str(i): {"content": s, "lstrip": False, "normalized": False, "rstrip": False,
                    "single_word": False, "special": True} for i, s in enumerate(SPECIALS)}
  return {"added_tokens_decoder": added, "additional_special_tokens": list(SPECIALS[1:]),
          "bos_token": None, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
          "unk_token": None, "clean_up_tokenization_spaces": False, "model_max_length": 32768,
          "split_special_tokens": False, "tokenizer_class": "PreTrainedTokenizerFast",
          "errors": "replace"}


def save(tok: tokenizers.Tokenizer, out_dir: str) -> None:
  """Writes tokenizer.json, tokenizer_config.json and chat_template.jinja."""
  os.makedirs(out_dir, exist_ok=True)
  tok.save(os.path.join(out_dir, "tokenizer.json"))
  with open(os.path.join(out_dir, "tokenizer_config.json"), "w") as f:
    json.dump(_config(), f, indent=2)
  with open(os.path.join(out_dir, "chat_template.jinja"), "w") as f:
    f.write(text.QWEN2P5_CHAT_TEMPLATE)


def check(tokenizer) -> None:
  """Raises unless each colour is one token, the same in a door list and in an action."""
  for colour in COLOURS:
    ids = tokenizer.encode(" " + colour)
    in_list = tokenizer.encode(f"Doors: {colour}, blue.")
    in_action = tokenizer.encode(f"<action>open {colour} door</action>")
    if len(ids) != 1 or ids[0] not in in_list or ids[0] not in in_action:
      raise ValueError(f"colour {colour!r} is not one token in both contexts: {ids}, {in_list}, "
                       f"{in_action}; train the tokenizer on more credit-lab texts.")
