"""Mesh, logical-axis rules, shardings and multi-host start-up."""

from stepopsd_jax.sharding.distributed import is_chief, maybe_initialize
from stepopsd_jax.sharding.mesh import (
    AXES, RULES, batch_sharding, data_parallel_size, logical_to_spec, make_mesh, mesh_shape,
    replicated, tree_shardings)
from stepopsd_jax.sharding.rows import to_global, to_local, widest

__all__ = ["AXES", "RULES", "batch_sharding", "data_parallel_size", "logical_to_spec",
           "is_chief", "make_mesh", "maybe_initialize", "mesh_shape", "replicated",
           "to_global", "to_local", "tree_shardings", "widest"]
