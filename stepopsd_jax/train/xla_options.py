"""XLA compile options for the train and SFT steps (`compiler_options` of their `jax.jit`).

On the CPU backend the steps compile with YNNPACK fusions off, so their dots run in XLA's Eigen
kernels. Side by side on the 2-vCPU VM (`python bench/step.py [--size main] --compare xla`, the
step compiled with XLA's defaults over the shipped one, GRPO / StepOPSD; bench/results): base
model at the main job's 128 rows x 152 tokens 1.02x / 1.05x, at 32 rows x 1048 tokens 1.16x /
1.10x, small config 1.00x / 1.02x. The gap was larger before the dense layers were 2-D matmuls
(`models.qwen.dense`; base model 1.01x / 1.21x) and before attention ran in blocks
(`QwenConfig.attention_block`; 1048 tokens 2.10x / 1.58x): YNNPACK was slowest on the big
transposed and attention products those changes removed. The main job's SFT warm-up step (32
rows; a one-off timing, 10 steps of each in turn): 1.12x at 192 + 24 tokens, 1.07x at 128 + 24.
Losses equal to float rounding.

The sampler keeps XLA's defaults, under which its forwards were faster: decode step 2.2 / 3.8
ms at batch 32 / 64 against 3.0 / 5.3 ms without YNNPACK (`bench/sampler.py` with XLA_FLAGS),
prefill of 64 x 512 tokens 0.92-0.97 s against 1.25-1.27 s, of 32 x 1024 2.19 s against 3.88 s
(one-off timings, same VM). YNNPACK is the faster choice for those forward-only calls and the
slower one for the steps' backward passes.

A user's own `XLA_FLAGS` setting of the option wins, and a jax whose XLA no longer knows the
option compiles the steps with their defaults.
"""

from __future__ import annotations

import functools
import os

import jax
import numpy as np

YNN_FUSION = "xla_cpu_experimental_ynn_fusion_type"
CPU_TRAIN_STEP = {YNN_FUSION: ""}  # "": no YNNPACK fusion kinds


@functools.cache
def _known(name: str, value: str) -> bool:
  """Whether this jax's XLA accepts the option (it rejects unknown names at compile time)."""
  x = jax.device_put(np.zeros((), np.float32), jax.devices("cpu")[0])
  try:
    jax.jit(lambda v: v + 1, compiler_options={name: value}).lower(x).compile()
  except Exception:  # noqa: BLE001 - XLA reports an unknown option as INVALID_ARGUMENT
    return False
  return True


def train_step_options(mesh) -> dict[str, str] | None:
  """`compiler_options` for a train or SFT step on `mesh`'s devices (None: XLA's defaults)."""
  if mesh.devices.flat[0].platform != "cpu":
    return None
  options = {name: value for name, value in CPU_TRAIN_STEP.items()
             if name not in os.environ.get("XLA_FLAGS", "") and _known(name, value)}
  return options or None
