"""Qwen-family Flax models, HF weight import/export and the functional model API."""

from stepopsd_jax.models.api import (
    causal_mask, count_params, default_positions, forward_with_cache, hidden_states,
    hidden_with_cache, init_cache, init_params, logits, param_logical_axes, param_shapes, project)
from stepopsd_jax.models.config import (
    PRESETS, QwenConfig, from_hf_config, get_preset, padded_vocab, to_hf_config)
from stepopsd_jax.models.hf_io import load_hf, save_hf


__all__ = [
    "PRESETS", "QwenConfig", "causal_mask", "count_params", "default_positions",
    "forward_with_cache", "from_hf_config", "get_preset", "hidden_states", "hidden_with_cache",
    "init_cache", "init_params", "load_hf", "logits", "padded_vocab", "param_logical_axes",
    "param_shapes", "project", "save_hf", "to_hf_config",
]
