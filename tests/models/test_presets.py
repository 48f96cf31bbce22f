"""Full-size presets: shapes via jax.eval_shape (no memory), counts equal transformers'."""

import jax
import pytest
import torch
import transformers

from stepopsd_jax import models

FULL_SIZE = sorted(name for name in models.PRESETS if "tiny" not in name)


def _hf_param_count(config) -> int:
  hf_config = transformers.AutoConfig.for_model(**models.to_hf_config(config))
  with torch.device("meta"):
    model = transformers.AutoModelForCausalLM.from_config(hf_config)
  return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", FULL_SIZE)
def test_preset_param_count_equals_transformers(name):
  config = models.get_preset(name)
  ours = models.count_params(config)
  print(f"{name}: {ours:,} parameters")
  assert ours == _hf_param_count(config)


def test_eval_shape_allocates_nothing():
  shapes = models.param_shapes(models.get_preset("qwen3_8b", param_dtype="bfloat16"))
  leaves = jax.tree.leaves(shapes)
  assert all(isinstance(x, jax.ShapeDtypeStruct) for x in leaves)
  assert shapes["layers"]["self_attn"]["q_kernel"].shape == (36, 4096, 32, 128)
  assert shapes["lm_head"].dtype == jax.numpy.bfloat16


def test_published_shapes_spot_checks():
  q3 = models.get_preset("qwen3_1p7b")
  assert (q3.hidden_size, q3.num_layers, q3.num_heads, q3.num_kv_heads, q3.head_dim) == (
      2048, 28, 16, 8, 128)
  assert q3.tie_embeddings and q3.qk_norm and not q3.qkv_bias
  q25 = models.get_preset("qwen2p5_3b_instruct")
  assert (q25.hidden_size, q25.intermediate_size, q25.num_layers, q25.num_kv_heads) == (
      2048, 11008, 36, 2)
  assert q25.qkv_bias and q25.eos_token_id == 151645


def test_every_parameter_has_logical_axes_of_its_rank():
  config = models.get_preset("qwen3_tiny")
  shapes, axes = models.param_shapes(config), models.param_logical_axes(config)
  for shape, spec in zip(jax.tree.leaves(shapes), jax.tree.leaves(
      axes, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))):
    assert len(spec) == len(shape.shape) and all(isinstance(a, str) for a in spec)


def test_unknown_preset_lists_known_ones():
  with pytest.raises(KeyError, match="qwen3_1p7b"):
    models.get_preset("qwen3_1b")
