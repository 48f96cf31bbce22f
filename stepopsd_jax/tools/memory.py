"""Per-device memory plan of a run, from its config and mesh shape, without allocating anything.

    python -m stepopsd_jax.tools.memory --config=configs/default.py --devices=8 \
        --config.model.preset=qwen3_1p7b [--rows=128 --prompt_len=2048 --response_len=512]

Exact (from `jax.eval_shape` and the logical-axis rules): policy params, gradients, optimizer
state, separate teacher/reference/EMA weights, critic and its optimizer, KV cache.
Estimated: activations (`activation_bytes` documents the count; XLA fuses some of it away and the
AOT compile in tools/aot.py gives the compiler's own figure).
"""

from __future__ import annotations

import dataclasses
import math
import sys

import jax
import jax.numpy as jnp
from absl import flags
from jax.sharding import AbstractMesh

from stepopsd_jax import models, sharding
from stepopsd_jax.models import QwenConfig, qwen
from stepopsd_jax.run import config as config_lib
from stepopsd_jax.run.setup import optimizers
from stepopsd_jax.train import StepConfig, value_model

GiB = 2 ** 30


@dataclasses.dataclass(frozen=True)
class Shapes:
  """The step's batch per process group: rows (steps) and token lengths; the sampler's batch."""
  rows: int  # StepBatch rows of one update
  prompt_len: int
  teacher_len: int  # the hindsight teacher's prompt (stepopsd / opsd)
  response_len: int
  sample_rows: int  # trajectories decoded together (KV cache batch)


def abstract_mesh(mesh_shape: tuple[int, int, int]) -> AbstractMesh:
  return AbstractMesh(tuple(mesh_shape), sharding.AXES)


def sharded_bytes(shapes, logical, mesh) -> int:
  """Bytes one device holds of a pytree sharded by the logical-axis rules."""
  total = 0
  for s, spec in zip(jax.tree.leaves(shapes), jax.tree.leaves(
      logical, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))):
    pspec = sharding.logical_to_spec(tuple(spec), s.shape, mesh)
    split = math.prod(mesh.shape[a] for part in pspec if part
                      for a in ((part,) if isinstance(part, str) else part))
    total += s.size * jnp.dtype(s.dtype).itemsize // split
  return total


def _opt_bytes(tx, shapes, logical, mesh) -> int:
  """Optimizer state: each moment tree like its params (optax keeps the params' dtype)."""
  opt = jax.eval_shape(tx.init, shapes)
  moments = [x for x in jax.tree.leaves(opt) if x.ndim > 0]
  n_trees = len(moments) // max(len(jax.tree.leaves(shapes)), 1)
  return n_trees * sharded_bytes(shapes, logical, mesh)


def _split(dim: int, mesh, axes) -> int:
  size = math.prod(mesh.shape[a] for a in axes)
  return size if dim % size == 0 else 1


def layer_activation_elems(c: QwenConfig, t: int, tp: int, remat: str) -> tuple[float, float]:
  """(compute-dtype elements, f32 elements) one layer keeps per token for the backward pass.

  Counted from the DecoderLayer: x, 2 norms, q/k/v (+ rope'd q/k), attention output, o-proj,
  gate/up/silu/product, down; attention scores [N, keys] are f32, keys the mean number a query
  attends to (`qwen.attended_keys` / T: T in one block). Heads and mlp split over tensor.
  'full' keeps the layer input only; 'dots' keeps matmul outputs (incl. scores);
  'dots_with_no_batch_dims' keeps the weight matmuls (q/k/v/o, gate/up/down), not attention.
  """
  d, f, nh, kh = c.hidden_size, c.intermediate_size / tp, c.num_heads / tp, c.num_kv_heads / tp
  nh_h, kh_h = nh * c.head_dim, kh * c.head_dim
  if remat == "full":
    return d, 0.0
  weights = nh_h + 2 * kh_h + nh_h + d + 2 * f + d  # q k v, attn out, o, gate up, down
  if remat == "dots_with_no_batch_dims":
    return d + weights - nh_h, 0.0
  keys = qwen.attended_keys(t, c.attention_block) / t
  if remat == "dots":
    return d + weights, nh * keys
  return 4 * d + weights + nh_h + kh_h + 2 * f + nh * keys, nh * keys  # + probs, scores f32


def activation_bytes(c: QwenConfig, cfg: StepConfig, shapes: Shapes, mesh) -> int:
  """Estimated peak activations of one micro-batch's forward+backward on one device.

  rows/(data*fsdp*micro_batches) rows of T = max(prompt, teacher prompt) + response tokens (the
  teacher's gradient-free forward is bounded by the student's saved set): L layers x the saved set
  (layer_activation_elems), plus one layer recomputed in full during the backward (remat), plus
  the f32 logits and log-softmax of the response positions [b, R, V/tensor].
  """
  b = shapes.rows / (sharding.data_parallel_size(mesh) * cfg.micro_batches)
  t = max(shapes.prompt_len, shapes.teacher_len) + shapes.response_len
  tp = mesh.shape["tensor"]
  dt = jnp.dtype(c.jnp_dtype).itemsize
  saved, saved32 = layer_activation_elems(c, t, tp, c.remat_policy)
  full, full32 = layer_activation_elems(c, t, tp, "none")
  per_token = c.num_layers * (saved * dt + saved32 * 4)
  if c.remat_policy != "none":
    per_token += full * dt + full32 * 4
  vocab = c.vocab_size / _split(c.vocab_size, mesh, ("tensor",))
  logits = 2 * b * shapes.response_len * vocab * 4
  return int(b * t * per_token + logits)


def kv_cache_bytes(c: QwenConfig, shapes: Shapes, mesh) -> int:
  """k and v [L, B, K, S, H] in the compute dtype; B over data x fsdp, K over tensor."""
  s = shapes.prompt_len + shapes.response_len
  b = shapes.sample_rows / _split(shapes.sample_rows, mesh, ("data", "fsdp"))
  k = c.num_kv_heads / _split(c.num_kv_heads, mesh, ("tensor",))
  return int(2 * c.num_layers * b * k * s * c.head_dim * jnp.dtype(c.jnp_dtype).itemsize)


def prefill_bytes(c: QwenConfig, shapes: Shapes, mesh) -> int:
  """The rollout prefill's transient buffers on one device: one layer's dense attention over the
  prompt — scores [B, N, P, P] in f32, probabilities in the compute dtype, the mask [B, P, P]
  (bool) — and the prefill's own cache of the P prompt slots [L, B, K, P, H], copied into the
  decode cache (P + R slots) when it ends. B over data x fsdp, N and K over tensor."""
  p, dt = shapes.prompt_len, jnp.dtype(c.jnp_dtype).itemsize
  b = shapes.sample_rows / _split(shapes.sample_rows, mesh, ("data", "fsdp"))
  n = c.num_heads / _split(c.num_heads, mesh, ("tensor",))
  k = c.num_kv_heads / _split(c.num_kv_heads, mesh, ("tensor",))
  attention = b * n * p * p * (4 + dt) + b * p * p
  return int(attention + 2 * c.num_layers * b * k * p * c.head_dim * dt)


def plan(c: QwenConfig, cfg: StepConfig, tx, critic_tx, shapes: Shapes, mesh) -> dict[str, int]:
  """Per-device bytes of every resident and transient buffer of a train step and of rollouts."""
  shp, logical = models.param_shapes(c), models.param_logical_axes(c)
  params = sharded_bytes(shp, logical, mesh)
  rows = {"policy params": params, "gradients": params,
          "optimizer state": _opt_bytes(tx, shp, logical, mesh),
          "teacher/reference/ema": params * (cfg.keep_reference + cfg.keep_ema),
          "critic + its optimizer": 0,
          "activations (estimate)": activation_bytes(c, cfg, shapes, mesh),
          "kv cache (rollout)": kv_cache_bytes(c, shapes, mesh),
          "prefill transient (rollout, estimate)": prefill_bytes(c, shapes, mesh)}
  if cfg.needs_critic:
    cc = value_model.critic_config(c)
    cs, cl = models.param_shapes(cc), models.param_logical_axes(cc)
    rows["critic + its optimizer"] = 2 * sharded_bytes(cs, cl, mesh) + _opt_bytes(
        critic_tx, cs, cl, mesh)  # weights + grads + moments (the head is negligible)
  rows["train step total"] = sum(v for k, v in rows.items() if "(rollout" not in k)
  rows["rollout total"] = (params + rows["teacher/reference/ema"] + rows["kv cache (rollout)"] +
                           rows["prefill transient (rollout, estimate)"])
  rows["peak"] = max(rows["train step total"], rows["rollout total"])
  return rows


def format_table(rows: dict[str, int], header: str = "") -> str:
  lines = [header] if header else []
  lines += [f"  {name:<26} {nbytes / GiB:10.3f} GiB" for name, nbytes in rows.items()]
  return "\n".join(lines)


# --- from a run config -----------------------------------------------------------------------

def model_config(config) -> QwenConfig:
  """The preset at its published vocab (tiny presets: the trained tokenizer's padded vocab)."""
  m = config.model
  kw = dict(param_dtype=m.get("param_dtype", m.dtype), dtype=m.dtype,
            **config_lib.model_options(config))
  if "tiny" in m.preset and not config.tokenizer.path:
    kw["vocab_size"] = models.padded_vocab(config.tokenizer.train_vocab_size)
  return models.get_preset(m.preset, **kw)


def default_shapes(config, rows=None, prompt_len=None, teacher_len=None, response_len=None):
  r = config.rollout
  prompt_len = prompt_len or max(r.prompt_buckets)
  return Shapes(rows=rows or r.batch_size, prompt_len=prompt_len,
                teacher_len=teacher_len or prompt_len,
                response_len=response_len or r.max_new_tokens, sample_rows=r.batch_size)


SHAPE_FLAGS = (("rows", "StepBatch rows per update (default rollout.batch_size)"),
               ("prompt_len", "prompt tokens (default max rollout.prompt_buckets)"),
               ("teacher_len", "teacher prompt tokens (default prompt_len)"),
               ("response_len", "response tokens (default rollout.max_new_tokens)"))


def define_shape_flags(fv: flags.FlagValues) -> None:
  for name, what in SHAPE_FLAGS:
    flags.DEFINE_integer(name, None, what, flag_values=fv)


def load(argv: list[str], define) -> flags.FlagValues | None:
  """Parsed flags (`--config=... --config.a.b=v` and the tool's own), or None after printing
  the one-line error."""
  try:
    return config_lib.parse_flags(argv, define, workdir_required=False)
  except config_lib.ConfigError as e:
    print(f"config error: {e}", file=sys.stderr)
    return None


def shapes_from_flags(fv: flags.FlagValues) -> Shapes:
  return default_shapes(fv.config, *(fv[name].value for name, _ in SHAPE_FLAGS))


def plan_from_config(config, num_devices: int, shapes: Shapes | None = None):
  """(mesh, rows) for a config on `num_devices` devices of the mesh it asks for."""
  mesh = abstract_mesh(sharding.mesh_shape(config.mesh.data, config.mesh.fsdp, config.mesh.tensor,
                                           num_devices))
  cfg = config_lib.step_config(config)
  tx, critic_tx = optimizers(config, cfg)
  return mesh, plan(model_config(config), cfg, tx, critic_tx, shapes or default_shapes(config),
                    mesh)


def main(argv: list[str] | None = None) -> int:
  def define(fv):
    define_shape_flags(fv)
    flags.DEFINE_integer("devices", 8, "devices the mesh spans", flag_values=fv)

  fv = load(sys.argv[1:] if argv is None else argv, define)
  if fv is None:
    return 2
  config, shapes = fv.config, shapes_from_flags(fv)
  mesh, rows = plan_from_config(config, fv.devices, shapes)
  print(format_table(rows, f"memory plan per device: {config.model.preset}, mesh "
                           f"{dict(mesh.shape)}, {shapes}, remat={config.model.remat_policy}"))
  return 0


if __name__ == "__main__":
  sys.exit(main())
