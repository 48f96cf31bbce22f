"""Builds the base model that reads: tokenizer, pretraining, the gate, the transfer check, files.

    tokenizer  <- env texts (credit lab, Search-QA, ALFWorld) + the corpus in a made-up lexicon
    pools      <- the tokenizer's word pieces, minus template and credit-lab words, split
                  into train words and held-out words
    params     <- copy phase, then the mixed reading corpus (train.py)
    gate       <- held-out items (probe.py);  transfer <- credit-lab prompts (transfer.py)
    out_dir    <- config.json + model.safetensors + tokenizer files + manifest.json
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time

import jax
import numpy as np

from stepopsd_jax import models, text
from stepopsd_jax.pretrain import corpus, env_texts, probe, templates, transfer, vocab, warmup
from stepopsd_jax.pretrain import tokenizer as tokenizer_lib
from stepopsd_jax.pretrain import train as train_lib

log = logging.getLogger(__name__)
MANIFEST = "manifest.json"


@dataclasses.dataclass(frozen=True)
class BuildConfig:
  seed: int = 0
  vocab_size: int = 2000  # BPE target, specials and the 256 bytes included
  scaffold_texts: int = 6000  # corpus examples in the made-up lexicon, for the tokenizer
  heldout_fraction: float = 0.15
  width: int = 128
  layers: int = 4
  heads: int = 4
  mlp: int = 256
  param_dtype: str = "float32"
  train: train_lib.TrainConfig = train_lib.TrainConfig()
  quick: bool = False  # few env texts, no ALFWorld: for tests and smoke runs
  gate_examples: int = 200
  transfer_tasks: int = 48
  # Format warm-up settings (steps@lr) whose survival of reading is measured; "" = none.
  survival: str = ""
  survival_tasks: int = 2048  # the main job's env.num_train_tasks

  def model_config(self, tokenizer) -> models.QwenConfig:
    return models.QwenConfig(
        family="qwen3", vocab_size=models.padded_vocab(tokenizer.vocab_size),
        hidden_size=self.width, intermediate_size=self.mlp, num_layers=self.layers,
        num_heads=self.heads, num_kv_heads=self.heads, head_dim=self.width // self.heads,
        qk_norm=True, rope_theta=10000.0, max_position_embeddings=2048,
        eos_token_id=tokenizer.eos_token_id, param_dtype=self.param_dtype,
        dtype=self.param_dtype)


def make_tokenizer(cfg: BuildConfig, out_dir: str) -> tuple[object, set[str], dict]:
  """Trains and saves the tokenizer; returns it, the banned (credit-lab) words, text counts."""
  texts = env_texts.all_env_texts(cfg.seed, quick=cfg.quick)
  banned = vocab.words_of(texts["credit_lab"])
  lexicon = vocab.lexicon(cfg.seed, banned)
  rng = np.random.default_rng([cfg.seed, 707])
  scaffold = [corpus.render(corpus.sample(rng, lexicon)[1]) for _ in range(cfg.scaffold_texts)]
  everything = texts["credit_lab"] + texts["search_qa"] + texts["alfworld"] + scaffold
  tokenizer_lib.save(tokenizer_lib.train(everything, cfg.vocab_size), out_dir)
  tokenizer = text.load_tokenizer(out_dir)
  tokenizer_lib.check(tokenizer)
  counts = {k: len(v) for k, v in texts.items()} | {"scaffold": len(scaffold)}
  return tokenizer, banned, counts


def heldout_checker(cfg: BuildConfig, heldout_ids: np.ndarray):
  """Raises if a held-out word's id shows up in a reading row (copy rows may hold any id)."""
  reading = cfg.train.batch_size - cfg.train.copy_rows

  def check(step: int, rows) -> None:
    first_mixed = cfg.train.prev_token_steps + cfg.train.copy_steps
    if step >= first_mixed and np.isin(rows.tokens[:reading], heldout_ids).any():
      raise AssertionError(f"step {step}: a held-out word is in the reading corpus")

  return check


def pretrain(cfg: BuildConfig, tokenizer, train_vocab, heldout_ids, model_config):
  """Trains from the seed; returns params, corpus sha256 and minutes."""
  params = models.init_params(model_config, jax.random.key(cfg.seed))
  stream = train_lib.batch_stream(cfg.train, tokenizer, train_vocab, cfg.seed)
  on_log = lambda step, m: log.info("step %d %s", step, {k: round(v, 4) for k, v in m.items()})
  params, digest, seconds = train_lib.train(model_config, params, cfg.train, stream, on_log,
                                            check_rows=heldout_checker(cfg, heldout_ids))
  return params, digest, seconds / 60


def evaluate(cfg: BuildConfig, model_config, params, tokenizer, heldout_vocab) -> dict:
  """The held-out gate, the transfer check, the format rates, and (optionally) survival of
  the main job's format warm-up."""
  gate = probe.heldout_gate(model_config, params, tokenizer, heldout_vocab, cfg.gate_examples,
                            seed=cfg.seed + 1)
  report = transfer.transfer_check(model_config, params, tokenizer, cfg.transfer_tasks,
                                   seed=cfg.seed + 2)
  settings = [(int(s.split("@")[0]), float(s.split("@")[1]))
              for s in cfg.survival.split(",") if s]
  return {"heldout_gate": gate, "transfer": report,
          "format": None if cfg.quick else warmup.format_rates(model_config, params, tokenizer),
          "survival": warmup.survival(model_config, params, tokenizer, settings,
                                      num_tasks=cfg.transfer_tasks,
                                      warm_up_tasks=cfg.survival_tasks, seed=cfg.seed)}


def corpus_card(cfg: BuildConfig, train_vocab, heldout_vocab) -> str:
  """CORPUS.md: how the corpus is generated and what it excludes (from the modules' docs)."""
  sections = [("The reading corpus", corpus.__doc__), ("Random vocabulary", vocab.__doc__),
              ("Templates", templates.__doc__), ("Pretraining", train_lib.__doc__)]
  body = "\n\n".join(f"## {title}\n\n{doc.strip()}" for title, doc in sections)
  excluded = "\n".join(f"- `{s}`" for s in corpus.EXCLUDED_STRINGS + corpus.EXCLUDED_PATTERNS)
  return (f"# Corpus of the base model (seed {cfg.seed})\n\n{body}\n\n## Mix\n\n"
          f"{json.dumps(corpus.DEFAULT_MIX)}; {len(train_vocab.verbs)} verbs, "
          f"{len(train_vocab.words)} train words, {len(heldout_vocab.words)} held-out words.\n\n"
          f"## Never in a corpus text (checked by tests/pretrain/test_corpus.py)\n\n{excluded}\n")


def file_hashes(out_dir: str) -> dict[str, str]:
  out = {}
  for name in sorted(os.listdir(out_dir)):
    if name != MANIFEST and os.path.isfile(os.path.join(out_dir, name)):
      with open(os.path.join(out_dir, name), "rb") as f:
        out[name] = hashlib.sha256(f.read()).hexdigest()
  return out


def build(cfg: BuildConfig, out_dir: str) -> dict:
  """Everything above; writes out_dir and returns the manifest."""
  start = time.perf_counter()
  os.makedirs(out_dir, exist_ok=True)
  tokenizer, banned, text_counts = make_tokenizer(cfg, out_dir)
  train_vocab, heldout_vocab = vocab.split_pools(tokenizer, banned, cfg.seed, cfg.heldout_fraction)
  heldout_ids = np.array([tokenizer.encode(" " + w)[0] for w in heldout_vocab.words])
  model_config = cfg.model_config(tokenizer)
  log.info("vocab %d (model %d), %d verbs, %d train words, %d held-out words, %d params",
           tokenizer.vocab_size, model_config.vocab_size, len(train_vocab.verbs),
           len(train_vocab.words), len(heldout_vocab.words), models.count_params(model_config))
  params, digest, train_minutes = pretrain(cfg, tokenizer, train_vocab, heldout_ids, model_config)
  measured = evaluate(cfg, model_config, params, tokenizer, heldout_vocab)
  log.info("transfer check:\n%s", transfer.format_report(measured["transfer"]))
  models.save_hf(model_config, params, out_dir)
  with open(os.path.join(out_dir, "CORPUS.md"), "w") as f:
    f.write(corpus_card(cfg, train_vocab, heldout_vocab))
  manifest = {
      "recipe": dataclasses.asdict(cfg), "seed": cfg.seed, "corpus_sha256": digest,
      "num_params": models.count_params(model_config),
      "model": models.to_hf_config(model_config), "tokenizer_vocab": tokenizer.vocab_size,
      "pools": {"verbs": list(train_vocab.verbs), "train_words": list(train_vocab.words),
                "heldout_words": list(heldout_vocab.words)},
      "tokenizer_texts": text_counts, **measured,
      "train_minutes": train_minutes, "build_minutes": (time.perf_counter() - start) / 60,
      "files_sha256": file_hashes(out_dir)}
  with open(os.path.join(out_dir, MANIFEST), "w") as f:
    json.dump(manifest, f, indent=1)
  return manifest
