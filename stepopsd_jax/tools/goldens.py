"""Sharding goldens: every parameter's PartitionSpec and per-device bytes for a run on a topology.

    python -m stepopsd_jax.tools.goldens --write   # regenerates tests/tools/goldens/*.json

Computed on an `AbstractMesh` of the shape `tools/aot.topology_mesh` would build (no libtpu, no
devices), so a change to the logical-axis rules, the model's parameter tree or a config's mesh
shows up in `tests/tools/test_goldens.py` as a reviewable diff of these tables.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec

from stepopsd_jax import models, sharding
from stepopsd_jax.tools import aot, memory
from stepopsd_jax.run import config as config_lib

REPO = pathlib.Path(__file__).resolve().parents[2]
GOLDEN_DIR = REPO / "tests" / "tools" / "goldens"
# golden name -> config spec (relative to the repo root); ALFWorld's data dir is never read here.
CONFIGS = {
    "alfworld_qwen3_1p7b": "configs/alfworld_stepopsd.py:data_dir=unused",
    "search_qwen2p5_3b": "configs/search_stepopsd.py",
}
TOPOLOGIES = ("v5p-8", "v5p-64")
REGENERATE = "python -m stepopsd_jax.tools.goldens --write"


def _spec_list(spec: PartitionSpec) -> list:
  """JSON form of a PartitionSpec: None, an axis name, or a list of axis names per dimension."""
  return [list(p) if isinstance(p, tuple) else p for p in spec]


def sharding_table(config, topology: str) -> dict:
  """{mesh, params: {path: {spec, shape, dtype, bytes_per_device}}, total_bytes_per_device}."""
  mesh = memory.abstract_mesh(aot.config_mesh_shape(config, aot.topology_devices(topology)))
  c = memory.model_config(config)
  shapes, logical = models.param_shapes(c), models.param_logical_axes(c)
  logical_leaves = jax.tree.leaves(logical, is_leaf=lambda x: isinstance(x, PartitionSpec))
  params = {}
  for (path, s), spec in zip(jax.tree_util.tree_flatten_with_path(shapes)[0], logical_leaves):
    name = "/".join(str(k.key) for k in path)
    params[name] = {
        "spec": _spec_list(sharding.logical_to_spec(tuple(spec), s.shape, mesh)),
        "shape": list(s.shape), "dtype": jnp.dtype(s.dtype).name,
        "bytes_per_device": memory.sharded_bytes(s, spec, mesh)}
  return {"topology": topology, "preset": config.model.preset, "mesh": dict(mesh.shape),
          "params": params,
          "total_bytes_per_device": sum(p["bytes_per_device"] for p in params.values())}


def load(name: str):
  """The config of golden `name` (a key of CONFIGS), its path taken from the repo root."""
  path, sep, arg = CONFIGS[name].partition(":")
  return config_lib.load(str(REPO / path) + sep + arg)


def golden_path(name: str, topology: str) -> pathlib.Path:
  return GOLDEN_DIR / f"{name}_{topology}.json"


def to_json(table: dict) -> str:
  return json.dumps(table, sort_keys=True, indent=1) + "\n"


def diff(expected: dict, actual: dict) -> list[str]:
  """One line per parameter (or top-level field) whose entry differs."""
  lines = [f"{k}: {expected.get(k)} -> {actual.get(k)}" for k in sorted(set(expected) | set(actual))
           if k != "params" and expected.get(k) != actual.get(k)]
  old, new = expected.get("params", {}), actual.get("params", {})
  lines += [f"params/{k}: {old.get(k)} -> {new.get(k)}" for k in sorted(set(old) | set(new))
            if old.get(k) != new.get(k)]
  return lines


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m stepopsd_jax.tools.goldens")
  parser.add_argument("--write", action="store_true", help=f"rewrite the JSON in {GOLDEN_DIR}")
  args = parser.parse_args(sys.argv[1:] if argv is None else argv)
  stale = 0
  for name in CONFIGS:
    config = load(name)
    for topology in TOPOLOGIES:
      path, table = golden_path(name, topology), sharding_table(config, topology)
      if args.write:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(to_json(table))
        print(f"wrote {path}")
        continue
      old = json.loads(path.read_text()) if path.exists() else {}
      changes = diff(old, json.loads(to_json(table)))
      stale += bool(changes)
      print(f"{path.name}: " + ("differs:\n  " + "\n  ".join(changes) if changes else "ok"))
  if stale:
    print(f"if the change is intended, regenerate with {REGENERATE}")
  return 1 if stale else 0


if __name__ == "__main__":
  sys.exit(main())
