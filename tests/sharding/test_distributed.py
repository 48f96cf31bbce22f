"""Multi-host start-up: the environment gating, and 2 CPU processes training in lock-step."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from stepopsd_jax import models, sharding, train
from stepopsd_jax.sharding import distributed
from stepopsd_jax.train import checkpoint, state as train_state

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("env,source", [
    ({}, None),
    ({"STEPOPSD_COORDINATOR": "h:1", "STEPOPSD_NUM_PROCESSES": "1", "STEPOPSD_PROCESS_ID": "0"},
     None),
    ({"STEPOPSD_COORDINATOR": "h:1", "STEPOPSD_NUM_PROCESSES": "4", "SLURM_PROCID": "3"},
     "explicit"),
    ({"SLURM_STEP_ID": "0", "SLURM_NTASKS": "16"}, "slurm"),
    ({"SLURM_STEP_ID": "0", "SLURM_NTASKS": "1"}, None),
    ({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "16"}, None),  # the batch script itself, not srun
    ({"TPU_WORKER_HOSTNAMES": "t0"}, None),
    ({"TPU_WORKER_HOSTNAMES": "t0,t1"}, "tpu"),
    ({"TPU_WORKER_HOSTNAMES": "WARNING: could not determine hosts, please set it"}, None),
    ({"STEPOPSD_DISTRIBUTED": "1"}, "tpu"),
])
def test_plan_follows_the_environment(env, source):
  p = distributed.plan(env)
  assert (p.source if p else None) == source
  if source == "explicit":
    assert p.kwargs == {"coordinator_address": "h:1", "num_processes": 4, "process_id": 3}


def test_explicit_plan_errors_name_the_variable():
  with pytest.raises(ValueError, match="STEPOPSD_PROCESS_ID"):
    distributed.plan({"STEPOPSD_COORDINATOR": "h:1", "STEPOPSD_NUM_PROCESSES": "2"})
  with pytest.raises(ValueError, match=r"\[0, STEPOPSD_NUM_PROCESSES=2\)"):
    distributed.plan({"STEPOPSD_COORDINATOR": "h:1", "STEPOPSD_NUM_PROCESSES": "2",
                      "STEPOPSD_PROCESS_ID": "2"})


def test_single_host_is_a_no_op():
  assert distributed.maybe_initialize({}) is False


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _worker(local_devices: int, extra_env: dict, checkpoint_dir: Path) -> subprocess.Popen:
  env = {k: v for k, v in os.environ.items()
         if not k.startswith(("STEPOPSD_", "SLURM_", "TPU_", "XLA_FLAGS"))}
  env.update(extra_env, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
  return subprocess.Popen([sys.executable, "-m", "tests.sharding.multiprocess_worker",
                           str(local_devices), str(checkpoint_dir)], cwd=ROOT, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _result(proc: subprocess.Popen) -> dict:
  out, _ = proc.communicate(timeout=240)
  lines = [line for line in out.splitlines() if line.startswith("RESULT ")]
  assert proc.returncode == 0 and lines, out[-3000:]
  return json.loads(lines[-1].removeprefix("RESULT "))


def test_two_processes_train_to_identical_parameters(tmp_path):
  """2 processes x 2 CPU devices, mesh data=2 x fsdp=2 across them; and 1 process x 4 devices:
  the same parameters after 2 steps, and the same greedy samples for the same prompts; the
  processes' joint orbax checkpoint restores (there, on another mesh, and here) to those params."""
  port = _free_port()
  procs = [_worker(2, {"STEPOPSD_COORDINATOR": f"localhost:{port}",
                       "STEPOPSD_NUM_PROCESSES": "2", "STEPOPSD_PROCESS_ID": str(i)},
                   tmp_path / "two")
           for i in range(2)]
  reference = _worker(4, {}, tmp_path / "one")  # concurrently: the three compile at once
  results = [_result(p) for p in procs]
  assert [r["process"] for r in results] == [0, 1]
  assert all(r["processes"] == 2 and r["devices"] == 4 for r in results)
  assert results[0]["sha256"] == results[1]["sha256"]
  assert all(r["restored_sha256"] == r["sha256"] for r in results)
  assert results[0]["loss"] == results[1]["loss"]
  single = _result(reference)
  assert single["processes"] == 1 and single["devices"] == 4
  # Every process's rows get their advantage (they were 0 past process 0's when the joined ids
  # left [0, B)): by hand, each process brought trajectories of 2, 1, 3, 1 rows (and a padding
  # row) in groups (0, 1), (2, 3) with returns 1, 0, 0, 1; GRPO of a (1, 0) group is +-1/sqrt(2).
  a = 2 ** -0.5
  by_hand = [a, a, -a, -a, -a, -a, a, 0.0] * 2
  for r in results + [single]:
    np.testing.assert_allclose(r["advantages"], by_hand, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(results[0]["leaf_sums"], single["leaf_sums"], rtol=1e-5)
  np.testing.assert_allclose(results[0]["loss"], single["loss"], rtol=1e-5)
  # 2 micro-batches, rows arranged per process: whole trajectories, the one-batch loss
  for r in results + [single]:
    assert r["micro_whole"] == 1.0
    np.testing.assert_allclose(r["micro_loss"], single["first_loss"], rtol=1e-5)
  assert results[0]["weight_max"] <= 1.2 / 0.8 + 1e-6  # within StepOPSD's clip and budget
  # sampling: each process decodes its own prompts as part of one global batch
  assert results[0]["sample"] + results[1]["sample"] == single["sample"]
  # rollouts: 4 episodes per process of 1 turn (process 0) and 3 turns (process 1, reference)
  assert [r["episode_rows"] for r in results] == [4, 12] and single["episode_rows"] == 12
  # the logged rollout metrics count both processes' episodes: 4 x 1 step + 4 x 3 steps
  for r in results:
    assert r["rollout_metrics"] == {"num_trajectories": 8, "num_steps": 16, "turns": 3}
  assert single["rollout_metrics"] == {"num_trajectories": 4, "num_steps": 12, "turns": 3}
  assert single["restored_sha256"] == single["sha256"]
  _check_restores_here(tmp_path / "two", results[0]["leaf_sums"])


def _check_restores_here(directory: Path, leaf_sums: list[float]) -> None:
  """The 2-process checkpoint, restored by this (single) process onto all of its devices."""
  config = models.get_preset("qwen3_tiny", vocab_size=128, num_layers=1)
  tx = train.make_optimizer(1e-3, 0, 10)
  mesh = sharding.make_mesh(data=1, fsdp=-1, tensor=1)
  with checkpoint.Checkpointer(str(directory), every=1, keep=2) as ckpt:
    state, _, step = ckpt.restore_latest(train_state.abstract_state(config, tx, mesh))
  assert step == 2
  sums = [float(np.abs(np.asarray(x, np.float32)).sum()) for x in jax.tree.leaves(state.params)]
  np.testing.assert_allclose(sums, leaf_sums, rtol=1e-6)
