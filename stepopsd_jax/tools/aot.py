"""Compiles the train step for a real TPU topology on this CPU machine (libtpu, nothing runs).

    pip install -e '.[tpu]'   # libtpu: the TPU compiler, used here only to compile
    python -m stepopsd_jax.tools.aot --config=configs/default.py --topology=v5p:2x2x1 \
        --config.model.preset=qwen3_1p7b --config.mesh.data=1 --config.mesh.fsdp=-1 \
        --rows=128 --prompt_len=2048 --response_len=512

Prints the memory plan (tools/memory.py), then the compiler's `memory_analysis` per device, the
`cost_analysis` FLOPs, and a roofline step time and MFU from the chip's published peak; if the
step does not fit in HBM it says so and suggests what to change.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags
from jax.sharding import Mesh

from stepopsd_jax import models, sampling, sharding
from stepopsd_jax.batch import StepBatch
from stepopsd_jax.models import qwen
from stepopsd_jax.run.config import step_config
from stepopsd_jax.run.setup import optimizers
from stepopsd_jax.tools import memory
from stepopsd_jax.train import abstract_state, jit_train_step

GiB = memory.GiB


@dataclasses.dataclass(frozen=True)
class Chip:
  """Published per-chip figures (one JAX device per chip on v4 / v5p megacore)."""
  bf16_flops: float  # peak dense bf16 FLOP/s
  hbm_bytes: float
  hbm_bw: float  # bytes/s


# cloud.google.com/tpu/docs/{v4,v5p,v5e,v6e} ("System architecture" tables).
CHIPS = {
    "v4": Chip(275e12, 32 * GiB, 1228e9),
    "v5p": Chip(459e12, 95e9, 2765e9),
    "v5e": Chip(197e12, 16 * GiB, 819e9),
    "v6e": Chip(918e12, 32 * GiB, 1640e9),
}

CORES_PER_CHIP = {"v4": 2, "v5p": 2}  # 'v5p-N' counts TensorCores; one JAX device per chip


def topology_devices(topology: str) -> int:
  """JAX devices of a TPU topology, without libtpu: 'v5p:2x2x1' -> 4, 'v5p-8' -> 4 (8 cores)."""
  chip, sep, dims = topology.partition(":")
  if sep:
    return math.prod(int(d) for d in dims.split("x"))
  chip, _, cores = topology.rpartition("-")
  return int(cores) // CORES_PER_CHIP.get(chip, 1)


def config_mesh_shape(config, num_devices: int) -> tuple[int, int, int]:
  """The config's mesh.{data,fsdp,tensor} (one may be -1) resolved over `num_devices`."""
  return sharding.mesh_shape(config.mesh.data, config.mesh.fsdp, config.mesh.tensor, num_devices)


def topology_mesh(topology: str, config) -> Mesh:
  """A mesh of the config's (data, fsdp, tensor) over the TPU topology's devices."""
  os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")  # other local libtpu users
  from jax.experimental import topologies  # needs libtpu
  devices = topologies.get_topology_desc(platform="tpu", topology_name=topology).devices
  shape = config_mesh_shape(config, len(devices))
  return Mesh(np.asarray(devices).reshape(shape), sharding.AXES)


def compile_train_step(config, shapes: memory.Shapes, mesh):
  """The jitted step of `train/step.py`, lowered on abstract sharded inputs and compiled."""
  model_config = memory.model_config(config)
  cfg = step_config(config)
  tx, critic_tx = optimizers(config, cfg)
  state = abstract_state(model_config, tx, mesh, keep_reference=cfg.keep_reference,
                         keep_ema=cfg.keep_ema, critic_tx=critic_tx)
  batch = StepBatch.abstract(shapes.rows, shapes.prompt_len, shapes.teacher_len,
                             shapes.response_len, mesh)
  rng = jax.ShapeDtypeStruct((), jax.eval_shape(lambda: jax.random.key(0)).dtype,
                             sharding=sharding.replicated(mesh))
  fn = jit_train_step(model_config, cfg, tx, mesh, critic_tx)
  return fn.lower(state, batch, rng).compile()


def compile_generate(config, shapes: memory.Shapes, mesh):
  """The sampler's prefill + while_loop decode (`generate_padded`) on sharded abstract inputs:
  weights by the logical rules, prompt rows over data x fsdp, the KV cache placed by the rules,
  a 16-state stop automaton."""
  c = memory.model_config(config)
  r = config.rollout
  params = sampling.SamplingParams(max_new_tokens=shapes.response_len, temperature=r.temperature,
                                   top_p=r.top_p, top_k=r.top_k, stop_token_ids=(0,))
  weights = jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                         models.param_shapes(c),
                         sharding.tree_shardings(models.param_logical_axes(c),
                                                 models.param_shapes(c), mesh))
  rows = lambda dtype: jax.ShapeDtypeStruct((shapes.sample_rows, shapes.prompt_len), dtype,
                                            sharding=sharding.batch_sharding(mesh, 2))
  rng = jax.ShapeDtypeStruct((), jax.eval_shape(lambda: jax.random.key(0)).dtype,
                             sharding=sharding.replicated(mesh))
  table = jax.ShapeDtypeStruct((16, c.vocab_size), jnp.int32, sharding=sharding.replicated(mesh))
  return sampling.generate_padded.lower(c, params, 0, weights, rows(jnp.int32), rows(bool), rng,
                                        table, mesh).compile()


def memory_line(compiled, chip: Chip, what: str) -> tuple[str, bool]:
  m = compiled.memory_analysis()
  peak = m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes + \
      m.temp_size_in_bytes
  return (f"  {what} memory_analysis per device: arguments {m.argument_size_in_bytes / GiB:.2f} "
          f"GiB, outputs {m.output_size_in_bytes / GiB:.2f} GiB (aliased "
          f"{m.alias_size_in_bytes / GiB:.2f}), temp {m.temp_size_in_bytes / GiB:.2f} GiB -> peak "
          f"{peak / GiB:.2f} GiB of {chip.hbm_bytes / GiB:.1f} GiB HBM"), peak <= chip.hbm_bytes


def compile_or_oom(compile_fn, *args):
  """(compiled, None), or (None, the compiler's message) when it runs out of HBM at compile time."""
  try:
    return compile_fn(*args), None
  except jax.errors.JaxRuntimeError as e:
    if "RESOURCE_EXHAUSTED" not in str(e):
      raise
    return None, str(e).splitlines()[0]


SUGGEST = ("  suggest: more fsdp (--config.mesh.fsdp=-1 --config.mesh.data=1), "
           "--config.model.remat_policy=full, more --config.algo.micro_batches (or fewer "
           "--rows / rollout.batch_size for the sampler), bfloat16 params "
           "(--config.model.dtype=bfloat16), or a larger topology")


def step_flops(c: models.QwenConfig, cfg, shapes: memory.Shapes,
               split_trajectories: bool = False) -> tuple[float, float]:
  """(executed, model) FLOPs of one step over all devices, counted by hand.

  Per token and forward: 2 x the layer weights (embeddings excluded) + 4 N H L per attended key
  (as executed: a query block of `attention_block` queries attends to every key up to its last
  query, `qwen.attended_keys`) + 2 D V for response tokens only (logits). Training costs 3
  forwards (4 with remat), forward-only passes 1: the teacher (stepopsd / opsd), the reference
  (kl_coef > 0), the critic (ppo / steppo: 1 + 3 more for its update). `model` counts what MFU
  conventionally credits: no recompute, causal attention (half the scores).
  `split_trajectories`: StepOPSD with several micro-batches on a batch where a trajectory spans
  micro-batches, so the step runs one more (gradient-free) student forward for the budget.
  """
  embed = c.vocab_size * c.hidden_size * (1 if c.tie_embeddings else 2)
  body = models.count_params(c) - embed
  per_pair = 4 * c.num_heads * c.head_dim * c.num_layers  # one query-key pair, all layers
  logits = 2 * c.hidden_size * c.vocab_size * shapes.response_len
  t, tt = shapes.prompt_len + shapes.response_len, shapes.teacher_len + shapes.response_len
  fwd = lambda t, causal=None: (t * 2 * body + logits + per_pair * (
      qwen.attended_keys(t, c.attention_block) if causal is None else causal * t * t))
  passes = 3 + (c.remat_policy != "none") + (split_trajectories and cfg.shapes_credit
                                              and cfg.micro_batches > 1)
  executed = passes * fwd(t) + cfg.needs_teacher * fwd(tt) + (cfg.kl_coef > 0) * fwd(t) + \
      cfg.needs_critic * 4 * fwd(t)
  useful = 3 * fwd(t, 0.5) + cfg.needs_teacher * fwd(tt, 0.5) + (cfg.kl_coef > 0) * fwd(t, 0.5) \
      + cfg.needs_critic * 4 * fwd(t, 0.5)
  return float(shapes.rows * executed), float(shapes.rows * useful)


def decode_cost(c: models.QwenConfig, batch: int, prompt_len: int, new_tokens: int,
                attended: int | None = None) -> dict[str, float]:
  """FLOPs and bytes of one decode step (one new token for each of `batch` rows), by hand,
  averaged over the `new_tokens` steps of a call.

  FLOPs per row: 2 x the layer weights + 2 D V (the logits) + 4 N H L S for attention over S
  cached slots. Bytes: every weight read once per step (the embedding only for the rows' tokens)
  plus the K and V cache read over S slots. `useful` takes S = the filled prefix (prompt +
  tokens so far, on average P + (R + 1) / 2); `executed` takes S = `attended` (default P + R,
  the whole cache, which is what a loop attending over every slot does).
  """
  width = jnp.dtype(c.jnp_dtype).itemsize
  embed = c.vocab_size * c.hidden_size
  body = models.count_params(c) - embed * (1 if c.tie_embeddings else 2)
  filled = prompt_len + (new_tokens + 1) / 2
  attended = prompt_len + new_tokens if attended is None else attended

  def cost(s: float) -> tuple[float, float]:
    flops = batch * (2 * body + 2 * c.hidden_size * c.vocab_size
                     + 4 * c.num_heads * c.head_dim * c.num_layers * s)
    kv = batch * c.num_layers * 2 * c.num_kv_heads * c.head_dim * s * width
    weights = (body + embed) * width + batch * c.hidden_size * width  # head + gathered rows
    return float(flops), float(weights + kv)
  (executed, executed_bytes), (useful, useful_bytes) = cost(attended), cost(filled)
  return {"flops_executed": executed, "flops_useful": useful, "bytes_executed": executed_bytes,
          "bytes_useful": useful_bytes}


def _cost(compiled) -> dict:
  cost = compiled.cost_analysis()
  return (cost[0] if isinstance(cost, (list, tuple)) else cost) or {}


def report(compiled, config, shapes, mesh, topology: str) -> tuple[str, bool]:
  """The verdict text and whether it fits."""
  chip = CHIPS[topology.split(":")[0]]
  mem, fits = memory_line(compiled, chip, "train step")
  cost = _cost(compiled)
  n_dev = mesh.devices.size
  c = memory.model_config(config)
  executed, useful = (f / n_dev for f in step_flops(c, step_config(config), shapes))
  t_step = executed / chip.bf16_flops
  lines = [
      f"compiled train step on {topology} ({n_dev} devices, mesh {dict(mesh.shape)}):", mem,
      f"  cost_analysis per device: {cost.get('flops', 0.0):.3e} FLOPs, "
      f"{cost.get('bytes accessed', 0.0):.3e} bytes accessed (XLA counts the layer scan's loop "
      f"body once: about 1/{c.num_layers} of the layers' work)",
      f"  hand count per device: {executed:.3e} FLOPs executed, {useful:.3e} model FLOPs",
      f"  predicted step time {t_step * 1e3:.1f} ms at 100% of peak, {t_step / 0.5 * 1e3:.1f} ms "
      f"at 50% (peak {chip.bf16_flops / 1e12:.0f} TFLOP/s bf16 per chip); MFU at most "
      f"{useful / executed:.0%} (recompute and full attention scores are not credited)",
      f"  verdict: {'FITS' if fits else 'DOES NOT FIT'}"]
  if not fits:
    lines.append(SUGGEST)
  return "\n".join(lines), fits


def main(argv: list[str] | None = None) -> int:
  def define(fv):
    memory.define_shape_flags(fv)
    flags.DEFINE_string("topology", "v5p:2x2x1", "e.g. v5p:2x2x1, v5e:4x4, v6e:2x2",
                        flag_values=fv)
    flags.DEFINE_bool("sampler", False, "also compile the sampler's prefill + decode "
                      "(rollout.batch_size rows)", flag_values=fv)
    flags.DEFINE_bool("sampler_only", False, "compile only the sampler (skips the train "
                      "step's long compile)", flag_values=fv)

  fv = memory.load(sys.argv[1:] if argv is None else argv, define)
  if fv is None:
    return 2
  config, topology = fv.config, fv.topology
  if topology.split(":")[0] not in CHIPS:
    print(f"--topology={topology}: known chips {sorted(CHIPS)}", file=sys.stderr)
    return 2
  shapes = memory.shapes_from_flags(fv)
  mesh = topology_mesh(topology, config)
  _, rows = memory.plan_from_config(config, mesh.devices.size, shapes)
  print(memory.format_table(rows, f"memory plan per device (estimate), {shapes}:"), flush=True)
  if fv.sampler_only:
    return 0 if _sampler(config, shapes, mesh, topology) else 1
  compiled, oom = compile_or_oom(compile_train_step, config, shapes, mesh)
  if oom:
    print(f"train step on {topology}: DOES NOT FIT ({oom})\n{SUGGEST}")
    return 1
  text, fits = report(compiled, config, shapes, mesh, topology)
  print(text, flush=True)
  if fv.sampler:
    fits = _sampler(config, shapes, mesh, topology) and fits
  return 0 if fits else 1


def _sampler(config, shapes, mesh, topology: str) -> bool:
  compiled, oom = compile_or_oom(compile_generate, config, shapes, mesh)
  if oom:
    print(f"sampler generate on {topology}: DOES NOT FIT ({oom})\n{SUGGEST}")
    return False
  line, fits = memory_line(compiled, CHIPS[topology.split(":")[0]], "sampler generate")
  print(line + f"\n  verdict: {'FITS' if fits else 'DOES NOT FIT'}")
  return fits


if __name__ == "__main__":
  sys.exit(main())
