"""Random small transformers Qwen models as the reference (torch/transformers: tests only)."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

# Shapes nobody tuned to: GQA 2 or 3 query heads per KV head, head_dim != hidden/heads, biases,
# tied and untied embeddings, odd vocab sizes.
HF_CONFIGS = {
    "qwen2_bias_untied": (transformers.Qwen2Config, dict(
        vocab_size=301, hidden_size=48, intermediate_size=80, num_hidden_layers=3,
        num_attention_heads=6, num_key_value_heads=2, rope_theta=1e6,
        tie_word_embeddings=False)),
    "qwen2_tied_mha": (transformers.Qwen2Config, dict(
        vocab_size=257, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=4, rope_theta=10000.0,
        tie_word_embeddings=True)),
    "qwen3_qknorm_tied": (transformers.Qwen3Config, dict(
        vocab_size=311, hidden_size=64, intermediate_size=96, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2, head_dim=24, rope_theta=5000.0,
        tie_word_embeddings=True)),
    "qwen3_untied_bias_gqa3": (transformers.Qwen3Config, dict(
        vocab_size=263, hidden_size=40, intermediate_size=72, num_hidden_layers=2,
        num_attention_heads=6, num_key_value_heads=2, head_dim=16, rope_theta=1e6,
        attention_bias=True, tie_word_embeddings=False, rms_norm_eps=1e-5)),
}


def make_hf_model(name: str, seed: int = 0):
  """A transformers model of a HF_CONFIGS entry with every weight randomised (norms and biases too)."""
  cls, kwargs = HF_CONFIGS[name]
  torch.manual_seed(seed)
  model = transformers.AutoModelForCausalLM.from_config(cls(**kwargs)).eval()
  with torch.no_grad():
    for p in model.parameters():
      p.add_(torch.randn_like(p) * 0.05)
  return model


def hf_logits(model, tokens: np.ndarray, attention_mask: np.ndarray | None = None) -> np.ndarray:
  with torch.no_grad():
    kwargs = {} if attention_mask is None else {"attention_mask": torch.tensor(attention_mask)}
    return model(torch.tensor(tokens), **kwargs).logits.float().numpy()


