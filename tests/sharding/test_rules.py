"""The logical-axis rules cover every preset's parameters and split every large one."""

import math

import jax
import pytest
from jax.sharding import PartitionSpec

from stepopsd_jax import models, sharding
from stepopsd_jax.sharding.mesh import RULE_TABLE
from stepopsd_jax.tools import memory

FULL_SIZE = sorted(name for name in models.PRESETS if "tiny" not in name)
LARGE = 2 ** 20  # elements: a parameter this big must not be replicated on every device


def _leaves(config):
  """(path, shape struct, logical spec) per parameter."""
  shapes, _ = jax.tree_util.tree_flatten_with_path(models.param_shapes(config))
  logical = jax.tree.leaves(models.param_logical_axes(config),
                            is_leaf=lambda x: isinstance(x, PartitionSpec))
  assert len(shapes) == len(logical)
  return [(jax.tree_util.keystr(path), s, spec) for (path, s), spec in zip(shapes, logical)]


@pytest.mark.parametrize("preset", sorted(models.PRESETS))
def test_every_logical_axis_has_a_rule(preset):
  for path, s, spec in _leaves(models.PRESETS[preset]):
    assert len(spec) == s.ndim, f"{preset} {path}: logical axes {spec} for shape {s.shape}"
    unknown = [name for name in spec if name is not None and name not in RULE_TABLE]
    assert not unknown, f"{preset} {path}: logical axes {unknown} have no rule in RULES"


@pytest.mark.parametrize("mesh_shape", [(1, 8, 4), (1, 4, 1)])  # (data, fsdp, tensor)
@pytest.mark.parametrize("preset", FULL_SIZE)
def test_no_large_parameter_is_replicated(preset, mesh_shape):
  mesh = memory.abstract_mesh(mesh_shape)
  replicated = []
  for path, s, spec in _leaves(models.PRESETS[preset]):
    pspec = sharding.logical_to_spec(tuple(spec), s.shape, mesh)
    if math.prod(s.shape) > LARGE and all(p is None for p in pspec):
      replicated.append(f"{path} {s.shape} logical {tuple(spec)}")
  assert not replicated, f"{preset} on mesh {mesh_shape}: replicated on every device: {replicated}"
