"""Tokenizers behind one small protocol: HF `tokenizer.json` dirs (Qwen) and SentencePiece.

Both render chat templates with `chat_template.render_chat_template`, so the rollout's prompt
building is the same for a pretrained Qwen and for a tiny from-scratch policy.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import sentencepiece as spm
import tokenizers

from stepopsd_jax.text import chat_template as chat_template_lib

IM_START, IM_END, ENDOFTEXT = "<|im_start|>", "<|im_end|>", "<|endoftext|>"
CHATML_SPECIAL_TOKENS = (IM_START, IM_END, ENDOFTEXT)
TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
CHAT_TEMPLATE_FILE = "chat_template.jinja"  # where transformers >= 4.50 saves the template
# The 256 byte-fallback pieces, specials and unk count toward the vocab: at 300 the model came out
# character-level, with no room for merges.
MIN_SENTENCEPIECE_VOCAB = 400


@runtime_checkable
class Tokenizer(Protocol):
  """What rollouts and training need from a tokenizer; ids lie in [0, vocab_size)."""

  vocab_size: int
  eos_token_id: int
  pad_token_id: int

  def encode(self, text: str) -> list[int]:
    """Token ids of `text`; no BOS/EOS or other special tokens are added."""

  def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
    """Text of `ids`."""

  def token_to_id(self, token: str) -> int | None:
    """Id of the single token `token`, or None if it is not one token."""

  def apply_chat_template(self, messages: list[dict], add_generation_prompt: bool = False,
                          tokenize: bool = True, **kwargs: Any) -> list[int] | str:
    """Renders `messages` (`tools=`, `documents=`, template variables) and tokenizes the text."""


class _ChatTemplateMixin:
  """`apply_chat_template` for classes with `_templates`, `_special_tokens` and `encode`."""

  _templates: dict[str, str]
  _special_tokens: dict[str, str]

  @property
  def chat_template(self) -> str | None:
    return self._templates.get("default")

  def _select_template(self, chat_template: str | None, tools: Any) -> str:
    """As transformers: a name or Jinja text, else "tool_use" when tools are given, else default."""
    if chat_template is not None:
      return self._templates.get(chat_template, chat_template)
    if tools is not None and "tool_use" in self._templates:
      return self._templates["tool_use"]
    if "default" not in self._templates:
      raise ValueError(f"No default chat template (named ones: {sorted(self._templates)}); "
                       "pass chat_template=<name or Jinja text>.")
    return self._templates["default"]

  def apply_chat_template(self, messages: list[dict], add_generation_prompt: bool = False,
                          tokenize: bool = True, *, chat_template: str | None = None,
                          **kwargs: Any) -> list[int] | str:
    """transformers' `apply_chat_template(..., return_dict=False)`: the ids, or the text."""
    template = self._select_template(chat_template, kwargs.get("tools"))
    text = chat_template_lib.render_chat_template(
        template, messages, add_generation_prompt=add_generation_prompt,
        special_tokens=self._special_tokens, **kwargs)
    return self.encode(text) if tokenize else text


def _token_content(value: Any) -> str | None:
  """A special-token entry of tokenizer_config.json: a string, or an AddedToken dict."""
  if isinstance(value, Mapping):
    value = value.get("content")
  return value if isinstance(value, str) else None


def _read_chat_templates(path: Path, config: Mapping[str, Any]) -> dict[str, str]:
  """Named templates; `chat_template.jinja` wins over the config's entry, as in transformers."""
  if (path / CHAT_TEMPLATE_FILE).is_file():
    return {"default": (path / CHAT_TEMPLATE_FILE).read_text(encoding="utf-8")}
  template = config.get("chat_template")
  if template is None:
    return {}
  if isinstance(template, str):
    return {"default": template}
  if isinstance(template, list):
    return {entry["name"]: entry["template"] for entry in template}
  raise ValueError(f"{path / TOKENIZER_CONFIG_FILE}: chat_template must be a string or a list of "
                   f"{{name, template}} dicts, got {type(template).__name__}.")


def _add_missing_tokens(tok: tokenizers.Tokenizer, added_tokens: Mapping[str, Any]) -> None:
  """Adds the config's `added_tokens_decoder` entries tokenizer.json lacks (Qwen's has them all)."""
  for entry in added_tokens.values():
    if tok.token_to_id(entry["content"]) is not None:
      continue
    options = {k: entry[k] for k in ("single_word", "lstrip", "rstrip", "normalized") if k in entry}
    special = entry.get("special", False)
    token = tokenizers.AddedToken(entry["content"], special=special, **options)
    (tok.add_special_tokens if special else tok.add_tokens)([token])


class HFTokenizer(_ChatTemplateMixin):
  """A HF fast tokenizer (`tokenizer.json`) with the specials and template of its config."""

  def __init__(self, tokenizer: tokenizers.Tokenizer, special_tokens: Mapping[str, str],
               chat_templates: Mapping[str, str] | None = None):
    """`special_tokens` maps names (eos_token, pad_token, ...) to tokens; eos_token is required."""
    self._tok = tokenizer
    self._special_tokens = dict(special_tokens)
    self._templates = dict(chat_templates or {})
    if "eos_token" not in self._special_tokens:
      raise ValueError("No eos_token: set it in tokenizer_config.json (Qwen instruct: <|im_end|>).")
    self.eos_token_id = self._special_id("eos_token")
    # Without a pad token, pad with EOS (the usual fallback); padded positions are masked anyway.
    self.pad_token_id = self._special_id("pad_token", default=self.eos_token_id)
    self.bos_token_id = self._special_id("bos_token", default=None)
    self.vocab_size = max(tokenizer.get_vocab(with_added_tokens=True).values()) + 1

  def _special_id(self, name: str, default: int | None = None) -> int | None:
    if name not in self._special_tokens:
      return default
    token_id = self._tok.token_to_id(self._special_tokens[name])
    if token_id is None:
      raise ValueError(f"{name}={self._special_tokens[name]!r} is not a token of this tokenizer.")
    return token_id

  @classmethod
  def from_dir(cls, path: str | os.PathLike[str]) -> HFTokenizer:
    """Loads `<path>/tokenizer.json`, plus tokenizer_config.json and chat_template.jinja if any."""
    path = Path(path)
    if not (path / TOKENIZER_FILE).is_file():
      raise FileNotFoundError(
          f"{path / TOKENIZER_FILE} not found: expected a HF tokenizer dir holding tokenizer.json "
          "(and tokenizer_config.json with eos_token and chat_template), e.g. a Qwen checkpoint.")
    tok = tokenizers.Tokenizer.from_file(str(path / TOKENIZER_FILE))
    config_file = path / TOKENIZER_CONFIG_FILE
    config = json.loads(config_file.read_text(encoding="utf-8")) if config_file.is_file() else {}
    _add_missing_tokens(tok, config.get("added_tokens_decoder", {}))
    # transformers passes every `*_token` entry (bos, eos, pad, unk, model-specific) to templates.
    special_tokens = {k: _token_content(v) for k, v in config.items() if k.endswith("_token")}
    special_tokens = {k: v for k, v in special_tokens.items() if v is not None}
    return cls(tok, special_tokens, _read_chat_templates(path, config))

  def encode(self, text: str) -> list[int]:
    return self._tok.encode(text, add_special_tokens=False).ids

  def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
    return self._tok.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

  def token_to_id(self, token: str) -> int | None:
    return self._tok.token_to_id(token)


class SentencePieceTokenizer(_ChatTemplateMixin):
  """SentencePiece with ChatML specials as single pieces; eos=<|im_end|>, pad=<|endoftext|>."""

  def __init__(self, model_proto: bytes,
               chat_template: str = chat_template_lib.QWEN2P5_CHAT_TEMPLATE):
    self._proto = bytes(model_proto)
    self._sp = spm.SentencePieceProcessor(model_proto=self._proto)
    self._templates = {"default": chat_template}
    self.vocab_size = self._sp.get_piece_size()
    self.eos_token_id = self._first_id(IM_END, self._sp.eos_id(), "eos")
    self.pad_token_id = self._first_id(ENDOFTEXT, self._sp.pad_id(), "pad", self.eos_token_id)
    self._special_tokens = {"eos_token": self._sp.id_to_piece(self.eos_token_id),
                            "pad_token": self._sp.id_to_piece(self.pad_token_id)}
    self._special_ids = frozenset(
        i for i in range(self.vocab_size) if self._sp.is_control(i) or self._sp.is_unknown(i)
        or self._sp.id_to_piece(i) in CHATML_SPECIAL_TOKENS)

  def _first_id(self, token: str, builtin_id: int, name: str, fallback: int | None = None) -> int:
    """The ChatML piece's id, else the model's own `name` id (-1 when absent), else `fallback`."""
    for candidate in (self.token_to_id(token), builtin_id if builtin_id >= 0 else None, fallback):
      if candidate is not None:
        return candidate
    raise ValueError(f"SentencePiece model has no {token} piece and no {name} id; train it with "
                     "train_sentencepiece (ChatML specials as user_defined_symbols).")

  @classmethod
  def from_file(cls, path: str | os.PathLike[str], **kwargs: Any) -> SentencePieceTokenizer:
    path = Path(path)
    if not path.is_file():
      raise FileNotFoundError(f"{path} not found: expected a SentencePiece .model file.")
    return cls(path.read_bytes(), **kwargs)

  @classmethod
  def from_bytes(cls, model_proto: bytes, **kwargs: Any) -> SentencePieceTokenizer:
    return cls(model_proto, **kwargs)

  @property
  def model_proto(self) -> bytes:
    return self._proto

  def save(self, path: str | os.PathLike[str]) -> None:
    """Writes the .model file (the chat template is not part of it)."""
    Path(path).write_bytes(self._proto)

  def encode(self, text: str) -> list[int]:
    return self._sp.encode(text, out_type=int)

  def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
    ids = [int(i) for i in ids]
    if skip_special_tokens:
      ids = [i for i in ids if i not in self._special_ids]
    return self._sp.decode(ids)

  def token_to_id(self, token: str) -> int | None:
    token_id = self._sp.piece_to_id(token)  # unknown pieces map to unk_id: check the round trip
    return token_id if self._sp.id_to_piece(token_id) == token else None


def train_sentencepiece(
    texts: Iterable[str],
    vocab_size: int = 512,
    model_type: str = "bpe",
    *,
    special_tokens: Sequence[str] = CHATML_SPECIAL_TOKENS,
    seed: int = 0,
    chat_template: str = chat_template_lib.QWEN2P5_CHAT_TEMPLATE,
    **trainer_kwargs: Any,
) -> SentencePieceTokenizer:
  """Trains a byte-fallback SentencePiece model in memory, deterministically.

  Each text is one training "sentence", newlines included. Normalisation, whitespace collapsing
  and the dummy prefix are off, so decode(encode(s)) == s and rendered templates tokenize as the
  concatenation they are. `vocab_size` is a soft limit (a tiny corpus gives fewer pieces);
  `trainer_kwargs` override any SentencePieceTrainer option.
  """
  if vocab_size < MIN_SENTENCEPIECE_VOCAB:
    raise ValueError(
        f"vocab_size={vocab_size} is too small: the 256 byte-fallback pieces and the "
        f"{len(special_tokens)} special tokens count toward it, leaving (almost) no merges; "
        f"use vocab_size >= {MIN_SENTENCEPIECE_VOCAB}.")
  options = dict(
      vocab_size=vocab_size, model_type=model_type, byte_fallback=True,
      user_defined_symbols=list(special_tokens), normalization_rule_name="identity",
      remove_extra_whitespaces=False, add_dummy_prefix=False, allow_whitespace_only_pieces=True,
      split_digits=True, unk_id=0, bos_id=-1, eos_id=-1, pad_id=-1, hard_vocab_limit=False,
      num_threads=1, shuffle_input_sentence=False, max_sentence_length=1 << 20, minloglevel=2)
  options.update(trainer_kwargs)
  spm.set_random_generator_seed(seed)
  writer = io.BytesIO()
  spm.SentencePieceTrainer.train(sentence_iterator=iter(texts), model_writer=writer, **options)
  return SentencePieceTokenizer(writer.getvalue(), chat_template=chat_template)


def load_tokenizer(path: str | os.PathLike[str]) -> Tokenizer:
  """A HF dir (or its tokenizer.json) -> HFTokenizer; a `.model` file -> SentencePieceTokenizer."""
  path = Path(path)
  if path.is_dir():
    return HFTokenizer.from_dir(path)
  if path.is_file() and path.name == TOKENIZER_FILE:
    return HFTokenizer.from_dir(path.parent)
  if path.is_file() and path.suffix == ".model":
    return SentencePieceTokenizer.from_file(path)
  expected = f"a HF tokenizer dir (with {TOKENIZER_FILE}) or a SentencePiece .model file"
  if not path.exists():
    raise FileNotFoundError(f"{path} does not exist: expected {expected}.")
  raise ValueError(f"{path} is not {expected}.")
