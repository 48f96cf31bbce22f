"""Hugging Face checkpoints <-> our params pytree (`config.json` + `*.safetensors`, sharded too).

Nothing here downloads unless the caller passes a hub id (`org/name`) that is not a local path.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

from stepopsd_jax.models.api import Params, param_shapes
from stepopsd_jax.models.config import DTYPES, QwenConfig, from_hf_config, to_hf_config

# (our path, HF name with {i} for the layer, kind, input dims of our kernel).
#   linear: HF weight [out, in] = ours.reshape(in, out).T;  vector: reshape;  embed: identity.
_LAYER = "model.layers.{i}."
_TABLE = (
    (("embed_tokens",), "model.embed_tokens.weight", "embed", 0),
    (("norm", "scale"), "model.norm.weight", "vector", 0),
    (("lm_head",), "lm_head.weight", "linear", 1),
    (("layers", "input_layernorm", "scale"), _LAYER + "input_layernorm.weight", "vector", 0),
    (("layers", "post_attention_layernorm", "scale"), _LAYER + "post_attention_layernorm.weight",
     "vector", 0),
    (("layers", "self_attn", "q_kernel"), _LAYER + "self_attn.q_proj.weight", "linear", 1),
    (("layers", "self_attn", "k_kernel"), _LAYER + "self_attn.k_proj.weight", "linear", 1),
    (("layers", "self_attn", "v_kernel"), _LAYER + "self_attn.v_proj.weight", "linear", 1),
    (("layers", "self_attn", "o_kernel"), _LAYER + "self_attn.o_proj.weight", "linear", 2),
    (("layers", "self_attn", "q_bias"), _LAYER + "self_attn.q_proj.bias", "vector", 0),
    (("layers", "self_attn", "k_bias"), _LAYER + "self_attn.k_proj.bias", "vector", 0),
    (("layers", "self_attn", "v_bias"), _LAYER + "self_attn.v_proj.bias", "vector", 0),
    (("layers", "self_attn", "o_bias"), _LAYER + "self_attn.o_proj.bias", "vector", 0),
    (("layers", "self_attn", "q_norm", "scale"), _LAYER + "self_attn.q_norm.weight", "vector", 0),
    (("layers", "self_attn", "k_norm", "scale"), _LAYER + "self_attn.k_norm.weight", "vector", 0),
    (("layers", "mlp", "gate_kernel"), _LAYER + "mlp.gate_proj.weight", "linear", 1),
    (("layers", "mlp", "up_kernel"), _LAYER + "mlp.up_proj.weight", "linear", 1),
    (("layers", "mlp", "down_kernel"), _LAYER + "mlp.down_proj.weight", "linear", 1),
)
_IGNORED = re.compile(r".*rotary_emb\.inv_freq$")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def _hf_shape(kind: str, in_dims: int, shape: tuple[int, ...]) -> tuple[int, ...]:
  if kind == "linear":
    return (math.prod(shape[in_dims:]), math.prod(shape[:in_dims]))
  return shape if kind == "embed" else (math.prod(shape),)


def _to_ours(kind: str, array: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
  return array.T.reshape(shape) if kind == "linear" else array.reshape(shape)


def _to_hf(kind: str, in_dims: int, array: np.ndarray) -> np.ndarray:
  if kind == "linear":
    return np.ascontiguousarray(array.reshape(math.prod(array.shape[:in_dims]), -1).T)
  return array if kind == "embed" else array.reshape(-1)


def _entries(config: QwenConfig) -> Iterator[tuple[tuple[str, ...], str, str, int, Any]]:
  """Table rows present in this config, with our expected ShapeDtypeStruct."""
  shapes = param_shapes(config)
  for path, hf_name, kind, in_dims in _TABLE:
    node = shapes
    for key in path:
      node = node.get(key) if isinstance(node, dict) else None
    if node is not None:
      yield path, hf_name, kind, in_dims, node


def _set(tree: dict, path: tuple[str, ...], value) -> None:
  for key in path[:-1]:
    tree = tree.setdefault(key, {})
  tree[path[-1]] = value


def _resolve(path: str) -> str:
  if os.path.isdir(path):
    return path
  if _HUB_ID.match(path) and not os.path.exists(path):
    try:
      from huggingface_hub import snapshot_download  # only on an explicit hub id
    except ImportError as e:
      raise FileNotFoundError(f"{path!r} is not a local directory; to download it as a hub id "
                              "install huggingface_hub (pip install huggingface_hub).") from e
    return snapshot_download(path, allow_patterns=["*.json", "*.safetensors", "*.model"])
  raise FileNotFoundError(f"{path!r} is not a directory holding config.json and *.safetensors "
                          "(or a hub id of the form org/name).")


def _tensor_files(directory: str) -> dict[str, str]:
  """HF tensor name -> safetensors file, from the index when the checkpoint is sharded."""
  index = os.path.join(directory, "model.safetensors.index.json")
  if os.path.exists(index):
    with open(index) as f:
      weight_map = json.load(f)["weight_map"]
    return {name: os.path.join(directory, file) for name, file in weight_map.items()}
  single = os.path.join(directory, "model.safetensors")
  if not os.path.exists(single):
    raise FileNotFoundError(f"{directory}: neither model.safetensors nor "
                            "model.safetensors.index.json found (PyTorch .bin checkpoints are not "
                            "read; convert them with transformers' save_pretrained).")
  with safe_open(single, framework="numpy") as f:
    return {name: single for name in f.keys()}


class _Reader:
  """Opens each safetensors file once and reads tensors by name."""

  def __init__(self, files: dict[str, str]):
    self.files, self._handles = files, {}

  def get(self, name: str) -> np.ndarray:
    file = self.files[name]
    if file not in self._handles:
      self._handles[file] = safe_open(file, framework="numpy")
    return self._handles[file].get_tensor(name)


def read_hf_config(path: str) -> dict[str, Any]:
  config_path = os.path.join(path, "config.json")
  if not os.path.exists(config_path):
    raise FileNotFoundError(
        f"{config_path} not found: a HF checkpoint directory needs config.json.")
  with open(config_path) as f:
    return json.load(f)


def load_hf(path: str, dtype: str | None = None,
            place: Callable[[tuple[str, ...], np.ndarray], jax.Array] | None = None
            ) -> tuple[QwenConfig, Params]:
  """Reads a HF Qwen2/2.5/3 checkpoint into `(config, params)`.

  dtype: parameter and activation dtype ("float32", "bfloat16"); default: the checkpoint's own.
  place: optional `(our_path, array) -> jax.Array` that puts each tensor on its device(s) as it
    is read (sharded loading); default `jnp.asarray` on the default device.
  """
  directory = _resolve(path)
  hf = read_hf_config(directory)
  dtype = dtype or hf.get("dtype") or hf.get("torch_dtype") or "float32"
  if dtype not in DTYPES:
    raise ValueError(f"dtype={dtype!r}: choose one of {sorted(DTYPES)}.")
  config = from_hf_config(hf, param_dtype=dtype, source=os.path.join(directory, "config.json"))
  reader = _Reader(_tensor_files(directory))
  place = place or (lambda _, array: jnp.asarray(array))
  params, used = {}, set()
  for our_path, hf_name, kind, in_dims, spec in _entries(config):
    per_layer = spec.shape[1:] if our_path[0] == "layers" else spec.shape
    names = ([hf_name.format(i=i) for i in range(config.num_layers)] if "{i}" in hf_name
             else [hf_name])
    arrays = [_read_checked(reader, n, kind, in_dims, per_layer, directory) for n in names]
    array = np.stack(arrays) if "{i}" in hf_name else arrays[0]
    _set(params, our_path, place(our_path, array.astype(DTYPES[dtype])))
    used.update(names)
  _check_unused(set(reader.files) - used, config, directory)
  return config, params


def _read_checked(reader: _Reader, name: str, kind: str, in_dims: int,
                  shape: tuple[int, ...], directory: str) -> np.ndarray:
  if name not in reader.files:
    raise KeyError(f"{directory}: tensor {name!r} is missing from the checkpoint; config.json "
                   "describes a model that needs it (wrong config, or a truncated download?).")
  array = reader.get(name)
  expected = _hf_shape(kind, in_dims, shape)
  if tuple(array.shape) != expected:
    raise ValueError(f"{reader.files[name]}: tensor {name!r} has shape {tuple(array.shape)} but "
                     f"config.json implies {expected}; the weights and config.json disagree.")
  return _to_ours(kind, array, shape)


def _check_unused(unused: set[str], config: QwenConfig, directory: str) -> None:
  unused = {n for n in unused if not _IGNORED.match(n)}
  if config.tie_embeddings:
    unused.discard("lm_head.weight")  # some tied checkpoints carry a copy; transformers ignores it
  if unused:
    raise ValueError(f"{directory}: {len(unused)} tensors are not part of a dense "
                     f"{config.family} decoder, e.g. {sorted(unused)[:5]}; this checkpoint's "
                     "architecture is not supported.")


def save_hf(config: QwenConfig, params: Params, path: str,
            max_shard_bytes: int = 5 * 1024**3) -> None:
  """Writes `config.json` and safetensors (sharded with an index above `max_shard_bytes`)."""
  os.makedirs(path, exist_ok=True)
  tensors = {}
  for our_path, hf_name, kind, in_dims, _ in _entries(config):
    array = params
    for key in our_path:
      array = array[key]
    array = np.asarray(jax.device_get(array))
    if "{i}" in hf_name:
      for i in range(config.num_layers):
        tensors[hf_name.format(i=i)] = _to_hf(kind, in_dims, array[i])
    else:
      tensors[hf_name] = _to_hf(kind, in_dims, array)
  with open(os.path.join(path, "config.json"), "w") as f:
    json.dump(to_hf_config(config), f, indent=2)
  _write_shards(tensors, path, max_shard_bytes)


def _write_shards(tensors: dict[str, np.ndarray], path: str, max_shard_bytes: int) -> None:
  shards, current, size = [], {}, 0
  for name, array in tensors.items():
    if current and size + array.nbytes > max_shard_bytes:
      shards.append(current)
      current, size = {}, 0
    current[name], size = array, size + array.nbytes
  shards.append(current)
  if len(shards) == 1:
    save_file(shards[0], os.path.join(path, "model.safetensors"), metadata={"format": "pt"})
    return
  weight_map = {}
  for k, shard in enumerate(shards):
    file = f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors"
    save_file(shard, os.path.join(path, file), metadata={"format": "pt"})
    weight_map.update({name: file for name in shard})
  total = sum(a.nbytes for a in tensors.values())
  with open(os.path.join(path, "model.safetensors.index.json"), "w") as f:
    json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
