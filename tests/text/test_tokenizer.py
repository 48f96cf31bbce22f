"""Tokenizers: chat-template parity with transformers, round trips, SentencePiece, load errors."""

import enum
import inspect
import json
import pathlib
import textwrap

import jinja2
import numpy as np
import pytest
import tokenizers
from tokenizers import decoders, models, normalizers, pre_tokenizers, trainers

from stepopsd_jax import text

FIXTURES = pathlib.Path(__file__).parent.parent / "fixtures"
QWEN_TEMPLATE = (FIXTURES / "qwen2p5_chat_template.jinja").read_text(encoding="utf-8")
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# Qwen2's pre-tokenizer regex: transformers' Qwen2Tokenizer rebuilds the pipeline with it, so the
# test tokenizer must use it too for both sides to tokenize alike.
QWEN_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
              r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
NON_ASCII = ["héllo 世界 🚀", "ça va? 👍 naïve café", "Ünïcödé — «quotes» ½ ∑ 𝔘",
             "  leading\n\n\ttabs  "]

SEARCH_TOOL = {"type": "function", "function": {
    "name": "search", "description": "Search für «Wörter» in <b>pages</b> & notes",
    "parameters": {"type": "object", "required": ["query"], "properties": {
        "query": {"type": "string", "description": "what to find"},
        "k": {"type": "integer", "description": "how many"}}}}}
CONVERSATIONS = {
    "system": ([{"role": "system", "content": "You are terse."},
                {"role": "user", "content": "Hi!"}], {}),
    "no_system": ([{"role": "user", "content": "Hi!"}], {}),
    "multi_turn": ([
        {"role": "system", "content": "You play a text game."},
        {"role": "user", "content": "You are in a kitchen. Goal: heat the egg."},
        {"role": "assistant", "content": "go to microwave 1"},
        {"role": "user", "content": "The microwave 1 is closed."},
        {"role": "assistant", "content": "open microwave 1"}], {}),
    "non_ascii": ([{"role": "user", "content": NON_ASCII[0]},
                   {"role": "assistant", "content": NON_ASCII[1]}], {}),
    "tools": ([{"role": "system", "content": "Use tools."},
               {"role": "user", "content": "Find 世界"}], {"tools": [SEARCH_TOOL]}),
    "tool_calls": ([
        {"role": "user", "content": "Find 世界"},
        {"role": "assistant", "content": None, "tool_calls": [{"type": "function", "function": {
            "name": "search", "arguments": {"query": "世界 <x>", "k": 3}}}]},
        {"role": "tool", "content": "result one"},
        {"role": "tool", "content": "result two"},
        {"role": "assistant", "content": "Found it."}], {"tools": [SEARCH_TOOL]}),
}


def _corpus() -> list[str]:
  return [inspect.getsource(textwrap), inspect.getsource(json), QWEN_TEMPLATE, *NON_ASCII]


def _train_byte_level_bpe() -> tokenizers.Tokenizer:
  tok = tokenizers.Tokenizer(models.BPE())
  tok.normalizer = normalizers.NFC()
  tok.pre_tokenizer = pre_tokenizers.Sequence([
      pre_tokenizers.Split(tokenizers.Regex(QWEN_SPLIT), behavior="isolated"),
      pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(  # the full byte alphabet, so any text (emoji) encodes
      vocab_size=800, special_tokens=SPECIALS, show_progress=False,
      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
  tok.train_from_iterator(_corpus(), trainer)
  return tok


def _qwen_config(**overrides) -> dict:
  """A tokenizer_config.json shaped like Qwen2.5-Instruct's."""
  config = {"add_prefix_space": False, "bos_token": None, "chat_template": QWEN_TEMPLATE,
            "clean_up_tokenization_spaces": False, "eos_token": "<|im_end|>",
            "errors": "replace", "model_max_length": 131072, "pad_token": "<|endoftext|>",
            "split_special_tokens": False, "tokenizer_class": "Qwen2Tokenizer",
            "unk_token": None}
  config.update(overrides)
  return config


def _write_hf_dir(path: pathlib.Path, tok: tokenizers.Tokenizer, config: dict) -> pathlib.Path:
  path.mkdir(parents=True, exist_ok=True)
  tok.save(str(path / "tokenizer.json"))
  (path / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
  return path


@pytest.fixture(scope="module")
def bpe():
  return _train_byte_level_bpe()


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory, bpe):
  return _write_hf_dir(tmp_path_factory.mktemp("qwen_tok"), bpe, _qwen_config())


@pytest.fixture(scope="module")
def hf_pair(hf_dir):
  """(transformers tokenizer, ours) loaded from the same directory."""
  transformers = pytest.importorskip("transformers")
  reference = transformers.AutoTokenizer.from_pretrained(str(hf_dir))
  return reference, text.HFTokenizer.from_dir(hf_dir)


@pytest.fixture(scope="module")
def sp_tok():
  return text.train_sentencepiece(_corpus(), vocab_size=512)


def test_fixture_is_the_builtin_default_template():
  assert text.QWEN2P5_CHAT_TEMPLATE == QWEN_TEMPLATE


@pytest.mark.parametrize("add_generation_prompt", [False, True])
@pytest.mark.parametrize("name", sorted(CONVERSATIONS))
def test_chat_template_parity_with_transformers(hf_pair, name, add_generation_prompt):
  reference, ours = hf_pair
  messages, kwargs = CONVERSATIONS[name]
  want_text = reference.apply_chat_template(
      messages, add_generation_prompt=add_generation_prompt, tokenize=False, **kwargs)
  want_ids = reference.apply_chat_template(
      messages, add_generation_prompt=add_generation_prompt, return_dict=False, **kwargs)
  got_text = ours.apply_chat_template(
      messages, add_generation_prompt=add_generation_prompt, tokenize=False, **kwargs)
  got_ids = ours.apply_chat_template(
      messages, add_generation_prompt=add_generation_prompt, **kwargs)
  assert got_text == want_text
  assert got_ids == want_ids
  assert got_text.endswith("<|im_start|>assistant\n") == add_generation_prompt


def test_rendering_details(hf_pair):
  _, ours = hf_pair
  no_system = ours.apply_chat_template(CONVERSATIONS["no_system"][0], tokenize=False)
  assert no_system.startswith("<|im_start|>system\nYou are Qwen, created by Alibaba Cloud.")
  messages, kwargs = CONVERSATIONS["tool_calls"]
  rendered = ours.apply_chat_template(messages, tokenize=False, **kwargs)
  # transformers' tojson keeps key order and non-ASCII and does not HTML-escape; Jinja's does.
  assert '"description": "Search für «Wörter» in <b>pages</b> & notes"' in rendered
  assert '{"name": "search", "arguments": {"query": "世界 <x>", "k": 3}}' in rendered
  assert "None" not in rendered  # content=None is dropped, not rendered


def test_input_normalisation_matches_transformers(hf_pair):
  """None values dropped, enums and numpy scalars made plain, reasoning fields aliased."""
  reference, ours = hf_pair

  class Role(str, enum.Enum):
    USER = "user"

  messages = [{"role": Role.USER, "content": "x", "name": None},
              {"role": "assistant", "reasoning": "hmm", "content": np.float32(0.5)}]
  tools = [{"k": np.int64(3), "flag": np.bool_(False), "t": (1, 2)}]
  template = "{{ messages }}|{{ tools }}|{{ eos_token }}|{{ flag }}"
  want = reference.apply_chat_template(messages, tokenize=False, chat_template=template,
                                       tools=tools, flag=Role.USER)
  got = ours.apply_chat_template(messages, tokenize=False, chat_template=template, tools=tools,
                                 flag=Role.USER)
  assert got == want


def test_special_ids_match_transformers(hf_pair):
  reference, ours = hf_pair
  assert (ours.eos_token_id, ours.pad_token_id) == (reference.eos_token_id, reference.pad_token_id)
  assert ours.vocab_size == len(reference)
  for token in SPECIALS:
    want = [reference.convert_tokens_to_ids(token)]
    assert ours.encode(token) == [ours.token_to_id(token)] == want
  assert ours.token_to_id("<|not a token|>") is None


@pytest.mark.parametrize("sample", NON_ASCII)
def test_hf_round_trip_matches_transformers(hf_pair, sample):
  reference, ours = hf_pair
  ids = ours.encode(sample)
  assert ids == reference.encode(sample, add_special_tokens=False)
  assert ours.decode(ids) == sample == reference.decode(ids)


def test_hf_decode_skips_special_tokens(hf_pair):
  _, ours = hf_pair
  ids = ours.encode("<|im_start|>user\nhéllo<|im_end|>")
  assert ours.decode(ids, skip_special_tokens=True) == "user\nhéllo"


@pytest.mark.parametrize("layout", ["jinja_file", "named_list"])
def test_template_files_match_transformers(hf_pair, tmp_path, bpe, layout):
  """transformers >= 4.50 saves `chat_template.jinja` (it wins over the config); old configs may
  list named templates, where passing tools selects "tool_use"."""
  reference_cls = type(hf_pair[0])
  tiny = "{% for m in messages %}{{ m.role }}: {{ m.content }}{{ eos_token }}\n{% endfor %}"
  if layout == "jinja_file":
    path = _write_hf_dir(tmp_path, bpe, _qwen_config())
    (path / "chat_template.jinja").write_text(tiny, encoding="utf-8")
  else:
    named = [{"name": "tool_use", "template": QWEN_TEMPLATE}, {"name": "default", "template": tiny}]
    path = _write_hf_dir(tmp_path, bpe, _qwen_config(chat_template=named))
  reference, ours = reference_cls.from_pretrained(str(path)), text.HFTokenizer.from_dir(path)
  messages = [{"role": "user", "content": "hi"}]
  assert ours.apply_chat_template(messages, tokenize=False) == "user: hi<|im_end|>\n"
  for kwargs in ({}, {"tools": [SEARCH_TOOL]}):
    want = reference.apply_chat_template(messages, tokenize=False, **kwargs)
    assert ours.apply_chat_template(messages, tokenize=False, **kwargs) == want


def test_config_special_tokens_may_be_dicts(tmp_path, bpe):
  config = _qwen_config(eos_token={"content": "<|im_end|>", "special": True}, pad_token=None)
  tok = text.HFTokenizer.from_dir(_write_hf_dir(tmp_path, bpe, config))
  assert tok.eos_token_id == tok.pad_token_id == bpe.token_to_id("<|im_end|>")  # pad with EOS


@pytest.mark.parametrize("sample", [*NON_ASCII, "<|im_start|>user\n two  spaces\n\n<|im_end|>\n"])
def test_sentencepiece_round_trip(sp_tok, sample):
  assert sp_tok.decode(sp_tok.encode(sample)) == sample


def test_sentencepiece_specials_are_single_pieces(sp_tok):
  ids = {token: sp_tok.token_to_id(token) for token in text.CHATML_SPECIAL_TOKENS}
  for token, token_id in ids.items():
    assert token_id is not None and sp_tok.encode(token) == [token_id]
  assert sp_tok.eos_token_id == ids["<|im_end|>"]
  assert sp_tok.pad_token_id == ids["<|endoftext|>"]
  assert sp_tok.vocab_size == 512 and sp_tok.token_to_id("<|not a token|>") is None
  assert isinstance(sp_tok, text.Tokenizer)


def test_sentencepiece_chat_template(sp_tok):
  messages, _ = CONVERSATIONS["multi_turn"]
  ids = sp_tok.apply_chat_template(messages, add_generation_prompt=True)
  rendered = sp_tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
  assert rendered == text.render_chat_template(QWEN_TEMPLATE, messages, add_generation_prompt=True)
  assert sp_tok.decode(ids) == rendered
  assert ids.count(sp_tok.token_to_id("<|im_start|>")) == 6  # default system + 5 + generation
  assert ids.count(sp_tok.eos_token_id) == 5
  assert "<|im_start|>" not in sp_tok.decode(ids, skip_special_tokens=True)


def test_sentencepiece_save_load_and_determinism(sp_tok, tmp_path):
  path = tmp_path / "tiny.model"
  sp_tok.save(path)
  sample = NON_ASCII[0] + "\n" + inspect.getsource(textwrap)[:500]
  from_bytes = text.SentencePieceTokenizer.from_bytes(path.read_bytes())
  for loaded in (text.load_tokenizer(path), from_bytes):
    assert isinstance(loaded, text.SentencePieceTokenizer)
    assert loaded.encode(sample) == sp_tok.encode(sample)
  retrained = text.train_sentencepiece(_corpus(), vocab_size=512)
  assert retrained.model_proto == sp_tok.model_proto


def test_sentencepiece_too_small_vocab_is_refused():
  with pytest.raises(ValueError, match="vocab_size >= 400"):
    text.train_sentencepiece(_corpus(), vocab_size=300)


def test_load_tokenizer_dispatch_and_errors(hf_dir, tmp_path):
  assert isinstance(text.load_tokenizer(hf_dir), text.HFTokenizer)
  assert isinstance(text.load_tokenizer(hf_dir / "tokenizer.json"), text.HFTokenizer)
  with pytest.raises(FileNotFoundError, match="tokenizer.json"):
    text.HFTokenizer.from_dir(tmp_path)
  with pytest.raises(FileNotFoundError, match="tokenizer.json"):
    text.load_tokenizer(tmp_path)
  with pytest.raises(FileNotFoundError, match="does not exist"):
    text.load_tokenizer(tmp_path / "nowhere")
  (tmp_path / "vocab.txt").write_text("a\nb\n")
  with pytest.raises(ValueError, match="SentencePiece .model"):
    text.load_tokenizer(tmp_path / "vocab.txt")


def test_renderer_refuses_what_it_cannot_do():
  messages = [{"role": "user", "content": "x"}]
  with pytest.raises(ValueError, match="empty conversation"):
    text.render_chat_template(QWEN_TEMPLATE, [])
  with pytest.raises(ValueError, match="continue_final_message"):
    text.render_chat_template(QWEN_TEMPLATE, messages, continue_final_message=True)
  with pytest.raises(TypeError, match="tools"):
    text.render_chat_template(QWEN_TEMPLATE, messages, tools=[len])


def test_renderer_sandbox_and_extensions():
  """namespace, loopcontrols' continue, `{% generation %}` and special tokens as variables."""
  template = ("{% set ns = namespace(n=0) %}{% for m in messages %}"
              "{% if m.role == 'skip' %}{% continue %}{% endif %}"
              "{% generation %}{{ m.content }}{% endgeneration %}{% set ns.n = ns.n + 1 %}"
              "{% endfor %}|{{ ns.n }}|{{ bos_token }}")
  messages = [{"role": "user", "content": "a"}, {"role": "skip", "content": "b"},
              {"role": "x", "content": "c"}]
  rendered = text.render_chat_template(template, messages, special_tokens={"bos_token": "<s>"})
  assert rendered == "ac|2|<s>"
  with pytest.raises(jinja2.TemplateError, match="boom"):
    text.render_chat_template("{{ raise_exception('boom') }}", messages)
