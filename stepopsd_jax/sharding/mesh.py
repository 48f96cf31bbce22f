"""Device mesh (`data`, `fsdp`, `tensor`) and the logical-axis rules that place every tensor.

Modules name their axes logically ('embed', 'mlp', ...); `RULES` maps each logical name to mesh
axes. A dimension that a mesh axis does not divide is replicated along it instead (reported by
`undivided_dims`), so tiny test configs run on any mesh.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

AXES = ("data", "fsdp", "tensor")

# logical name -> mesh axes. Shapes: params [L, D, N, H] q/k/v, [L, N, H, D] o, [L, D, F] /
# [L, F, D] MLP, [V, D] embedding, [D, V] lm_head, [L, D] / [L, H] norms; activations [B, T, ...].
RULES: tuple[tuple[str, tuple[str, ...] | None], ...] = (
    ("batch", ("data", "fsdp")),  # StepBatch rows, activations' leading dim
    ("vocab", ("tensor",)),
    ("embed", ("fsdp",)),
    ("mlp", ("tensor",)),
    ("q_heads", ("tensor",)),
    ("kv_heads", ("tensor",)),
    ("head_dim", None),
    ("layers", None),
    ("norm", None),
)


def _check_rules(rules) -> dict[str, tuple[str, ...] | None]:
  table = {}
  for name, axes in rules:
    if name in table:
      raise ValueError(f"Logical axis {name!r} has two sharding rules; keep one.")
    for axis in axes or ():
      if axis not in AXES:
        raise ValueError(f"Rule {name!r} -> {axes}: unknown mesh axis {axis!r} (mesh: {AXES}).")
    table[name] = axes
  return table


RULE_TABLE = _check_rules(RULES)


def mesh_shape(data: int, fsdp: int, tensor: int, num_devices: int) -> tuple[int, int, int]:
  """Resolves one -1 entry to fill the devices; errors name the fix."""
  sizes = [data, fsdp, tensor]
  if sizes.count(-1) > 1:
    raise ValueError(f"mesh {dict(zip(AXES, sizes))}: at most one axis may be -1.")
  if any(s == 0 or s < -1 for s in sizes):
    raise ValueError(f"mesh {dict(zip(AXES, sizes))}: sizes must be positive or -1.")
  known = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if num_devices % known:
      raise ValueError(f"mesh {dict(zip(AXES, sizes))}: {num_devices} devices are not divisible "
                       f"by {known}; change mesh.* so their product divides {num_devices}.")
    sizes[sizes.index(-1)] = num_devices // known
  if math.prod(sizes) != num_devices:
    raise ValueError(f"mesh {dict(zip(AXES, sizes))} needs {math.prod(sizes)} devices but "
                     f"{num_devices} are available; set one of mesh.data/fsdp/tensor to -1.")
  return tuple(sizes)


def make_mesh(data: int = -1, fsdp: int = 1, tensor: int = 1,
              devices: Sequence[jax.Device] | None = None) -> Mesh:
  devices = list(devices if devices is not None else jax.devices())
  shape = mesh_shape(data, fsdp, tensor, len(devices))
  return Mesh(np.asarray(devices).reshape(shape), AXES)


def logical_to_spec(logical: Sequence[str | None], shape: Sequence[int], mesh: Mesh) -> P:
  """Mesh PartitionSpec for a tensor with these logical axes; undivisible dims stay replicated."""
  spec = []
  for name, dim in zip(logical, shape):
    axes = RULE_TABLE.get(name) if name is not None else None
    if name is not None and name not in RULE_TABLE:
      raise ValueError(f"Logical axis {name!r} has no sharding rule; add one to RULES.")
    if axes and dim % math.prod(mesh.shape[a] for a in axes) == 0:
      spec.append(axes if len(axes) > 1 else axes[0])
    else:
      spec.append(None)
  return P(*spec)


def tree_shardings(logical_tree, shape_tree, mesh: Mesh):
  """NamedShardings for a pytree, given matching trees of logical specs and shapes."""
  is_spec = lambda x: isinstance(x, P)
  return jax.tree.map(lambda spec, s: NamedSharding(mesh, logical_to_spec(tuple(spec), s.shape,
                                                                          mesh)),
                      logical_tree, shape_tree, is_leaf=is_spec)


def batch_sharding(mesh: Mesh, ndim: int) -> NamedSharding:
  """Rows over (data, fsdp), everything else replicated."""
  return NamedSharding(mesh, P(RULE_TABLE["batch"], *([None] * (ndim - 1))))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def data_parallel_size(mesh: Mesh) -> int:
  return math.prod(mesh.shape[a] for a in RULE_TABLE["batch"])
