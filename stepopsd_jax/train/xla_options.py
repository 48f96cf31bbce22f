"""XLA compile options for the training steps (`compiler_options` of their `jax.jit`).

On the CPU backend the steps compile with YNNPACK fusions off, so their dots run through XLA's
Eigen kernels. Measured side by side on the 2-vCPU VM (`python bench/step.py --compare-xla`):
the main job's StepOPSD step ran ~25% faster and the small config's GRPO step ~30% faster,
losses equal to float rounding. The sampler keeps XLA's default: its one-token decode steps
were ~25% slower without YNNPACK (`bench/sampler.py`, same VM).

A user's own `XLA_FLAGS` setting of the option wins, and a jax whose XLA no longer knows the
option compiles the steps with its defaults.
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
  """`compiler_options` for a training step on `mesh`'s devices (None: XLA's defaults)."""
  if mesh.devices.flat[0].platform != "cpu":
    return None
  options = {name: value for name, value in CPU_TRAIN_STEP.items()
             if name not in os.environ.get("XLA_FLAGS", "") and _known(name, value)}
  return options or None
