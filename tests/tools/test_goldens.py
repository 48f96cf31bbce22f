"""Checked-in sharding tables (tests/tools/goldens/*.json) match the rules, models and configs."""

import importlib.util
import json

import pytest

from stepopsd_jax.tools import aot, goldens


@pytest.fixture(scope="module", params=sorted(goldens.CONFIGS))
def named_config(request):
  return request.param, goldens.load(request.param)


@pytest.mark.parametrize("topology", goldens.TOPOLOGIES)
def test_sharding_table_matches_golden(named_config, topology):
  name, config = named_config
  path = goldens.golden_path(name, topology)
  assert path.exists(), f"{path} is missing; generate it with {goldens.REGENERATE}"
  actual = json.loads(goldens.to_json(goldens.sharding_table(config, topology)))
  changes = goldens.diff(json.loads(path.read_text()), actual)
  assert not changes, (f"{path.name}: the sharding of {len(changes)} entries changed:\n  "
                       + "\n  ".join(changes) + "\nif the change is intended, regenerate with "
                       + goldens.REGENERATE)


def test_table_totals_and_mesh_are_consistent(named_config):
  _, config = named_config
  table = goldens.sharding_table(config, "v5p-8")
  assert table["mesh"] == {"data": 1, "fsdp": 4, "tensor": 1}  # configs: fsdp=-1 over 4 chips
  assert table["total_bytes_per_device"] == sum(
      p["bytes_per_device"] for p in table["params"].values())
  assert "embed_tokens" in table["params"]


@pytest.mark.parametrize("topology,devices", [("v5p-8", 4), ("v5p-64", 32), ("v5p:2x2x1", 4),
                                              ("v5p:4x4x2", 32), ("v5e-8", 8), ("v6e:2x2", 4)])
def test_topology_devices_without_libtpu(topology, devices):
  assert aot.topology_devices(topology) == devices


def test_diff_names_the_changed_parameter():
  old = {"mesh": {"fsdp": 4}, "params": {"a": {"spec": ["fsdp"]}, "b": {"spec": [None]}}}
  new = {"mesh": {"fsdp": 4}, "params": {"a": {"spec": [None]}, "b": {"spec": [None]}}}
  assert goldens.diff(old, new) == ["params/a: {'spec': ['fsdp']} -> {'spec': [None]}"]


@pytest.mark.skipif(importlib.util.find_spec("libtpu") is None, reason="libtpu not installed")
@pytest.mark.parametrize("golden,topology", [("v5p-8", "v5p:2x2x1"), ("v5p-64", "v5p:4x4x2")])
def test_golden_mesh_is_the_aot_mesh(named_config, golden, topology):
  _, config = named_config
  mesh = aot.topology_mesh(topology, config)
  assert dict(mesh.shape) == goldens.sharding_table(config, golden)["mesh"]
