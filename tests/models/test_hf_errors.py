"""Bad checkpoints fail with messages that name the file or tensor and what is supported."""

import json
import os

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from stepopsd_jax import models
from tests.models.hf_reference import make_hf_model


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
  path = tmp_path_factory.mktemp("ckpt") / "qwen3"
  make_hf_model("qwen3_qknorm_tied").save_pretrained(path)
  return path


def _copy(src, dst, edit_config=None, edit_tensors=None):
  os.makedirs(dst)
  config = json.loads((src / "config.json").read_text())
  tensors = load_file(str(src / "model.safetensors"))
  if edit_config:
    edit_config(config)
  if edit_tensors:
    edit_tensors(tensors)
  (dst / "config.json").write_text(json.dumps(config))
  save_file(tensors, str(dst / "model.safetensors"), metadata={"format": "pt"})
  return str(dst)


def test_missing_directory_and_files(tmp_path):
  with pytest.raises(FileNotFoundError, match="config.json"):
    models.load_hf(str(tmp_path / "nope"))
  os.makedirs(tmp_path / "empty")
  with pytest.raises(FileNotFoundError, match="config.json"):
    models.load_hf(str(tmp_path / "empty"))
  (tmp_path / "empty" / "config.json").write_text(json.dumps({"model_type": "qwen3"}))
  with pytest.raises(ValueError, match="missing.*vocab_size"):
    models.load_hf(str(tmp_path / "empty"))
  config = models.to_hf_config(models.get_preset("qwen3_tiny"))
  (tmp_path / "empty" / "config.json").write_text(json.dumps(config))
  with pytest.raises(FileNotFoundError, match="model.safetensors"):
    models.load_hf(str(tmp_path / "empty"))


def test_moe_and_other_architectures_are_rejected(checkpoint, tmp_path):
  def to_moe(c):
    c["model_type"], c["architectures"] = "qwen3_moe", ["Qwen3MoeForCausalLM"]
  with pytest.raises(ValueError, match="qwen3_moe.*Supported: dense qwen2, qwen3"):
    models.load_hf(_copy(checkpoint, tmp_path / "moe", edit_config=to_moe))
  def sliding(c):
    c["use_sliding_window"] = True
  with pytest.raises(ValueError, match="use_sliding_window"):
    models.load_hf(_copy(checkpoint, tmp_path / "swa", edit_config=sliding))
  def yarn(c):
    c["rope_parameters"] = {"rope_type": "yarn", "rope_theta": 1e6, "factor": 4.0}
  with pytest.raises(ValueError, match="yarn"):
    models.load_hf(_copy(checkpoint, tmp_path / "yarn", edit_config=yarn))


def test_tensor_shape_disagreeing_with_config_names_the_tensor(checkpoint, tmp_path):
  name = "model.layers.1.mlp.up_proj.weight"
  def shrink(t):
    t[name] = t[name][:-1]
  with pytest.raises(ValueError, match=f"{name}.*config.json implies"):
    models.load_hf(_copy(checkpoint, tmp_path / "bad", edit_tensors=shrink))


def test_missing_and_unexpected_tensors(checkpoint, tmp_path):
  name = "model.layers.0.self_attn.k_norm.weight"
  with pytest.raises(KeyError, match=name):
    models.load_hf(_copy(checkpoint, tmp_path / "missing",
                         edit_tensors=lambda t: t.pop(name)))
  def extra(t):
    t["model.layers.0.mlp.experts.0.up_proj.weight"] = np.zeros((2, 2), np.float32)
  with pytest.raises(ValueError, match="experts"):
    models.load_hf(_copy(checkpoint, tmp_path / "extra", edit_tensors=extra))


def test_bad_dtype_is_rejected(checkpoint):
  with pytest.raises(ValueError, match="bfloat16"):
    models.load_hf(str(checkpoint), dtype="float8")
