"""Tokenizers (HF `tokenizer.json`, SentencePiece) and chat templates rendered like transformers."""

from stepopsd_jax.text.chat_template import (
    QWEN2P5_CHAT_TEMPLATE, compile_chat_template, render_chat_template)
from stepopsd_jax.text.tokenizer import (
    CHATML_SPECIAL_TOKENS, MIN_SENTENCEPIECE_VOCAB, HFTokenizer, SentencePieceTokenizer, Tokenizer,
    load_tokenizer, train_sentencepiece)


__all__ = [
    "CHATML_SPECIAL_TOKENS", "HFTokenizer", "MIN_SENTENCEPIECE_VOCAB", "QWEN2P5_CHAT_TEMPLATE",
    "SentencePieceTokenizer", "Tokenizer", "compile_chat_template", "load_tokenizer",
    "render_chat_template", "train_sentencepiece",
]
