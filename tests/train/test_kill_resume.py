"""kill -9 between two checkpoints, then resume: the same metrics.jsonl as an uninterrupted run.

Three runs of the real CLI in subprocesses, sharing a persistent XLA compilation cache (the first
one compiles, the others load): an uninterrupted reference, a run SIGKILLed once checkpoint 3 is
committed and a line of step 4 is logged (the next checkpoint is at 6), and its resumption.
Every field of every line is compared bitwise except the host timers, which are not
deterministic: `time/rollout_s`, `time/train_s`, `time/tokens_per_s` and `rollout/time/*`.
"""

import json
import os
import signal
import subprocess
import sys
import time

from tests.run import test_trainer as trainer_tests  # its TINY config: one definition

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STEPS, EVERY, KILL_AFTER = 6, 3, 3  # steps, checkpoint interval, kill after this checkpoint
TINY = {**trainer_tests.TINY, "train.num_steps": str(STEPS), "train.checkpoint_every": str(EVERY)}


def _train(workdir, cache_dir) -> subprocess.Popen:
  """The CLI on TINY in the background, its output in `workdir`.log."""
  env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=str(cache_dir),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
             JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="-1",
             PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
  env.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
  argv = [sys.executable, "-m", "stepopsd_jax.train", "--config=configs/default.py",
          f"--workdir={workdir}"] + [f"--config.{k}={v}" for k, v in TINY.items()]
  with open(f"{workdir}.log", "a", encoding="utf-8") as log:
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
  proc.log_path = f"{workdir}.log"
  return proc


def _output(proc) -> str:
  with open(proc.log_path, encoding="utf-8") as f:
    return f.read()[-3000:]


def _finish(proc, timeout_s=300) -> None:
  try:
    proc.wait(timeout=timeout_s)
  finally:
    if proc.poll() is None:
      proc.kill()
      proc.wait()
  assert proc.returncode == 0, _output(proc)


def _lines(workdir):
  """The complete lines of metrics.jsonl (a kill may leave a torn last one)."""
  try:
    with open(workdir / "metrics.jsonl", encoding="utf-8") as f:
      return [json.loads(line) for line in f if line.endswith("\n")]
  except FileNotFoundError:
    return []


def _committed_steps(workdir):
  directory = workdir / "checkpoints"
  return sorted(int(n) for n in os.listdir(directory) if n.isdigit()) if directory.exists() else []


def _kill_between_checkpoints(workdir, cache_dir, timeout_s=300):
  """Starts a run and SIGKILLs it once checkpoint KILL_AFTER is committed and a later step
  logged a line."""
  proc = _train(workdir, cache_dir)
  deadline = time.monotonic() + timeout_s
  try:
    while not (KILL_AFTER in _committed_steps(workdir)
               and any(l["step"] > KILL_AFTER for l in _lines(workdir))):
      assert proc.poll() is None, _output(proc)
      assert time.monotonic() < deadline, f"the run did not get past step {KILL_AFTER}"
      time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
  finally:
    proc.kill()
    proc.wait()
  assert proc.returncode == -signal.SIGKILL


def _deterministic(line):
  return {k: v for k, v in line.items()
          if not (k.startswith("time/") or k.startswith("rollout/time/"))}


def test_kill_9_between_checkpoints_then_resume_matches_an_uninterrupted_run(tmp_path):
  straight, killed, cache = tmp_path / "straight", tmp_path / "killed", tmp_path / "xla_cache"
  _finish(_train(straight, cache))
  _kill_between_checkpoints(killed, cache)
  restored = _committed_steps(killed)[-1]
  before_resume = _lines(killed)
  lost = [l["step"] for l in before_resume if l["step"] > restored]
  assert restored == KILL_AFTER and lost, (restored, lost)  # logged, unsaved progress was lost

  _finish(_train(killed, cache))
  reference, resumed = _lines(straight), _lines(killed)
  assert [l["step"] for l in resumed] == [l["step"] for l in reference]
  assert max(l["step"] for l in reference) == STEPS
  for want, have in zip(reference, resumed):
    assert _deterministic(have) == _deterministic(want), have["step"]
  # The lines up to the restored step are the killed run's own (timers included): the resumed
  # run restored step `restored` and did not redo the steps before it.
  kept = [l for l in before_resume if l["step"] <= restored]
  assert resumed[:len(kept)] == kept
  assert resumed[len(kept)]["step"] == restored + 1
  with open(straight / "eval.json", encoding="utf-8") as a, \
       open(killed / "eval.json", encoding="utf-8") as b:
    assert json.load(a) == json.load(b)
  assert _committed_steps(killed)[-1] == STEPS
  assert not [n for n in os.listdir(killed / "checkpoints") if "tmp" in n]
