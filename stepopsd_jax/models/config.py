"""Qwen-family model configs: one frozen dataclass, named presets, HF `config.json` conversion."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp

SUPPORTED_MODEL_TYPES = ("qwen2", "qwen3")
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}
REMAT_POLICIES = ("none", "full", "dots", "dots_with_no_batch_dims")


@dataclasses.dataclass(frozen=True)
class QwenConfig:
  """Shapes and numerics of a dense Qwen2/2.5/3 decoder. Hashable, so it can be a jit static arg."""

  family: str  # "qwen2" (Qwen2/Qwen2.5: q/k/v biases) or "qwen3" (per-head q/k RMSNorm)
  vocab_size: int
  hidden_size: int
  intermediate_size: int
  num_layers: int
  num_heads: int
  num_kv_heads: int
  head_dim: int  # independent of hidden_size / num_heads (Qwen3-0.6B: 1024 / 16 != 128)
  rope_theta: float = 1_000_000.0
  rms_norm_eps: float = 1e-6
  tie_embeddings: bool = True
  qkv_bias: bool = False
  qk_norm: bool = False
  max_position_embeddings: int = 32768
  bos_token_id: int | None = None
  eos_token_id: int | None = None
  param_dtype: str = "float32"
  dtype: str = "float32"  # activations; logits and softmax are always f32
  remat_policy: str = "none"
  # Layers per iteration of the layer scan; 0: all of them when num_layers <= 8, else 1. The
  # parameters keep their stacked [L, ...] layout either way. Unrolled, the step keeps each
  # layer's residuals as their own buffers instead of writing them into and slicing them out of
  # stacked [L, ...] arrays (`bench/step.py --size main --compare unroll`: the base model's step
  # 1.15x / 1.13x faster, GRPO / StepOPSD), at the price of compile time that grows with depth,
  # hence the cut-off.
  layer_unroll: int = 0
  # Queries per block of causal self-attention from position 0 (the train step's forwards, the
  # sampler's prefill); a block attends to the keys up to its own last query, so the scores
  # above the diagonal blocks are never computed. On the 2-vCPU VM: prefill of 32 x 1024
  # tokens 2.2 -> 0.9 s (a one-off timing); the base model's step at 32 x 1048 tokens 1.43x /
  # 1.51x faster (GRPO / StepOPSD, `bench/step.py --compare attention`), unchanged at the main
  # job's 152 tokens.
  # 0: one block (full T x T scores).
  attention_block: int = 128

  def __post_init__(self):
    if self.family not in SUPPORTED_MODEL_TYPES:
      raise ValueError(f"family={self.family!r}: supported families are {SUPPORTED_MODEL_TYPES}.")
    for name in ("param_dtype", "dtype"):
      if getattr(self, name) not in DTYPES:
        raise ValueError(f"{name}={getattr(self, name)!r}: choose one of {sorted(DTYPES)}.")
    if self.remat_policy not in REMAT_POLICIES:
      raise ValueError(f"remat_policy={self.remat_policy!r}: choose one of {REMAT_POLICIES}.")
    if self.attention_block < 0:
      raise ValueError(f"attention_block={self.attention_block}: use 0 (one block) or a positive "
                       "number of queries per block.")
    if self.layer_unroll < 0:
      raise ValueError(f"layer_unroll={self.layer_unroll}: use 0 (automatic) or a positive "
                       "number of layers per scan iteration.")
    if self.num_heads % self.num_kv_heads:
      raise ValueError(
          f"num_heads={self.num_heads} is not a multiple of num_kv_heads={self.num_kv_heads}.")

  @property
  def o_bias(self) -> bool:
    """Qwen3's `attention_bias` covers o_proj too; Qwen2's q/k/v biases do not."""
    return self.qkv_bias and self.family == "qwen3"

  @property
  def scan_unroll(self) -> int:
    """Layers per layer-scan iteration (`layer_unroll`, resolved)."""
    if self.layer_unroll:
      return min(self.layer_unroll, self.num_layers)
    return self.num_layers if self.num_layers <= 8 else 1

  @property
  def jnp_param_dtype(self):
    return DTYPES[self.param_dtype]

  @property
  def jnp_dtype(self):
    return DTYPES[self.dtype]

  def replace(self, **changes: Any) -> "QwenConfig":
    return dataclasses.replace(self, **changes)


def _qwen3(**kw) -> QwenConfig:
  base = dict(family="qwen3", vocab_size=151936, head_dim=128, qk_norm=True,
              max_position_embeddings=40960, bos_token_id=151643, eos_token_id=151645)
  return QwenConfig(**{**base, **kw})


def _qwen2p5(instruct: bool, **kw) -> QwenConfig:
  base = dict(family="qwen2", vocab_size=151936, head_dim=128, qkv_bias=True,
              max_position_embeddings=32768, bos_token_id=151643,
              eos_token_id=151645 if instruct else 151643)
  return QwenConfig(**{**base, **kw})


def _qwen2p5_sizes(instruct: bool) -> dict[str, QwenConfig]:
  suffix = "_instruct" if instruct else ""
  return {
      f"qwen2p5_0p5b{suffix}": _qwen2p5(instruct, hidden_size=896, intermediate_size=4864,
                                        num_layers=24, num_heads=14, num_kv_heads=2, head_dim=64),
      f"qwen2p5_1p5b{suffix}": _qwen2p5(instruct, hidden_size=1536, intermediate_size=8960,
                                        num_layers=28, num_heads=12, num_kv_heads=2),
      f"qwen2p5_3b{suffix}": _qwen2p5(instruct, hidden_size=2048, intermediate_size=11008,
                                      num_layers=36, num_heads=16, num_kv_heads=2),
      f"qwen2p5_7b{suffix}": _qwen2p5(instruct, vocab_size=152064, hidden_size=3584,
                                      intermediate_size=18944, num_layers=28, num_heads=28,
                                      num_kv_heads=4, tie_embeddings=False),
  }


# Published shapes (the `config.json` of each Hugging Face checkpoint).
PRESETS: dict[str, QwenConfig] = {
    "qwen3_0p6b": _qwen3(hidden_size=1024, intermediate_size=3072, num_layers=28, num_heads=16,
                         num_kv_heads=8),
    "qwen3_1p7b": _qwen3(hidden_size=2048, intermediate_size=6144, num_layers=28, num_heads=16,
                         num_kv_heads=8),
    "qwen3_4b": _qwen3(hidden_size=2560, intermediate_size=9728, num_layers=36, num_heads=32,
                       num_kv_heads=8),
    "qwen3_8b": _qwen3(hidden_size=4096, intermediate_size=12288, num_layers=36, num_heads=32,
                       num_kv_heads=8, tie_embeddings=False),
    **_qwen2p5_sizes(instruct=False),
    **_qwen2p5_sizes(instruct=True),
    # Tiny configs for tests and CPU demos: GQA with 2 query heads per KV head, head_dim != D/H.
    "qwen3_tiny": QwenConfig(family="qwen3", vocab_size=512, hidden_size=64, intermediate_size=128,
                             num_layers=2, num_heads=4, num_kv_heads=2, head_dim=32, qk_norm=True,
                             rope_theta=10000.0, max_position_embeddings=2048),
    "qwen2_tiny": QwenConfig(family="qwen2", vocab_size=512, hidden_size=64, intermediate_size=128,
                             num_layers=2, num_heads=4, num_kv_heads=2, head_dim=16, qkv_bias=True,
                             rope_theta=10000.0, tie_embeddings=False,
                             max_position_embeddings=2048),
}


def padded_vocab(tokenizer_vocab: int, multiple: int = 64) -> int:
  """Embedding rows for a tokenizer: rounded up to a multiple of 64, as Qwen's checkpoints do."""
  return -(-tokenizer_vocab // multiple) * multiple


def get_preset(name: str, **overrides: Any) -> QwenConfig:
  """A named preset (e.g. `qwen3_1p7b`), optionally with fields replaced (vocab_size, ...)."""
  if name not in PRESETS:
    raise KeyError(f"Unknown model preset {name!r}. Known presets: {', '.join(sorted(PRESETS))}.")
  return PRESETS[name].replace(**overrides)


_REQUIRED_HF_KEYS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                     "num_attention_heads")


def from_hf_config(hf: dict[str, Any], *, param_dtype: str = "float32", dtype: str | None = None,
                   source: str = "config.json") -> QwenConfig:
  """Reads a transformers `config.json` dict; rejects what this dense implementation cannot run."""
  model_type = hf.get("model_type")
  if model_type not in SUPPORTED_MODEL_TYPES:
    raise ValueError(
        f"{source}: model_type={model_type!r} (architectures={hf.get('architectures')}) is not "
        f"supported. Supported: dense {', '.join(SUPPORTED_MODEL_TYPES)} (Qwen2, Qwen2.5, Qwen3); "
        "MoE and multimodal Qwen variants are not.")
  missing = [k for k in _REQUIRED_HF_KEYS if k not in hf]
  if missing:
    raise ValueError(f"{source}: missing {missing}; a Qwen config.json needs {_REQUIRED_HF_KEYS}.")
  _check_supported_attention(hf, source)
  heads = hf["num_attention_heads"]
  rope_params = hf.get("rope_parameters") or {}
  return QwenConfig(
      family=model_type,
      vocab_size=hf["vocab_size"],
      hidden_size=hf["hidden_size"],
      intermediate_size=hf["intermediate_size"],
      num_layers=hf["num_hidden_layers"],
      num_heads=heads,
      num_kv_heads=hf.get("num_key_value_heads") or heads,
      head_dim=hf.get("head_dim") or hf["hidden_size"] // heads,
      rope_theta=float(rope_params.get("rope_theta", hf.get("rope_theta", 10000.0))),
      rms_norm_eps=hf.get("rms_norm_eps", 1e-6),
      tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
      qkv_bias=True if model_type == "qwen2" else bool(hf.get("attention_bias", False)),
      qk_norm=model_type == "qwen3",
      max_position_embeddings=hf.get("max_position_embeddings", 32768),
      bos_token_id=hf.get("bos_token_id"),
      eos_token_id=_first_id(hf.get("eos_token_id")),
      param_dtype=param_dtype,
      dtype=dtype or param_dtype,
  )


def _first_id(token_id):
  return token_id[0] if isinstance(token_id, list) and token_id else token_id


def _check_supported_attention(hf: dict[str, Any], source: str) -> None:
  if hf.get("hidden_act", "silu") != "silu":
    raise ValueError(
        f"{source}: hidden_act={hf['hidden_act']!r}; only 'silu' (SwiGLU) is supported.")
  if hf.get("use_sliding_window"):
    raise ValueError(f"{source}: use_sliding_window=true is not supported; set it to false "
                     "(every published Qwen2.5/Qwen3 dense checkpoint uses full attention).")
  layer_types = set(hf.get("layer_types") or ["full_attention"])
  if layer_types != {"full_attention"}:
    raise ValueError(f"{source}: layer_types {sorted(layer_types)} include non-full attention; "
                     "only 'full_attention' is supported.")
  rope = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
  rope_type = rope.get("rope_type", rope.get("type", "default"))
  if rope_type != "default":
    raise ValueError(f"{source}: rope_type={rope_type!r} (RoPE scaling) is not supported; "
                     "remove rope_scaling to run at the native context length.")


def to_hf_config(config: QwenConfig) -> dict[str, Any]:
  """The transformers `config.json` for this config (Qwen2ForCausalLM or Qwen3ForCausalLM)."""
  hf = {
      "architectures": ["Qwen3ForCausalLM" if config.family == "qwen3" else "Qwen2ForCausalLM"],
      "model_type": config.family,
      "vocab_size": config.vocab_size,
      "hidden_size": config.hidden_size,
      "intermediate_size": config.intermediate_size,
      "num_hidden_layers": config.num_layers,
      "num_attention_heads": config.num_heads,
      "num_key_value_heads": config.num_kv_heads,
      "head_dim": config.head_dim,
      "hidden_act": "silu",
      "max_position_embeddings": config.max_position_embeddings,
      "rms_norm_eps": config.rms_norm_eps,
      "rope_theta": config.rope_theta,
      "rope_parameters": {"rope_theta": config.rope_theta, "rope_type": "default"},
      "tie_word_embeddings": config.tie_embeddings,
      "use_sliding_window": False,
      "attention_dropout": 0.0,
      "initializer_range": 0.02,
      "bos_token_id": config.bos_token_id,
      "eos_token_id": config.eos_token_id,
      "torch_dtype": config.param_dtype,
  }
  if config.family == "qwen3":
    hf["attention_bias"] = config.qkv_bias
  elif not config.qkv_bias:
    raise ValueError("Qwen2 checkpoints always carry q/k/v biases; qkv_bias=False cannot be "
                     "written in the Qwen2 HF layout.")
  return hf
