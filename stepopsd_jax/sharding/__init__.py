"""Mesh, logical-axis rules and shardings."""

from stepopsd_jax.sharding.mesh import (
    AXES, RULES, batch_sharding, data_parallel_size, logical_to_spec, make_mesh, mesh_shape,
    replicated, tree_shardings)

__all__ = ["AXES", "RULES", "batch_sharding", "data_parallel_size", "logical_to_spec",
           "make_mesh", "mesh_shape", "replicated", "tree_shardings"]
