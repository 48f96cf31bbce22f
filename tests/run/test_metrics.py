"""MetricsWriter: JSONL rows, TensorBoard events, eval.json, the learning-curve PNG, tables."""

import glob
import json
import os
import struct

import jax.numpy as jnp
import numpy as np
import pytest
from tensorboardX.proto import event_pb2

from stepopsd_jax.run.metrics import MetricsWriter, markdown_table, read_jsonl


def _tb_scalars(workdir) -> dict[str, list[tuple[int, float]]]:
  """{tag: [(step, value)]} read back from the TFRecord event files under workdir/tb."""
  out = {}
  for path in sorted(glob.glob(os.path.join(workdir, "tb", "events.out.tfevents.*"))):
    with open(path, "rb") as f:
      data = f.read()
    i = 0
    while i < len(data):
      (length,) = struct.unpack("<Q", data[i:i + 8])
      event = event_pb2.Event.FromString(data[i + 12:i + 12 + length])
      i += 12 + length + 4
      for value in event.summary.value:
        out.setdefault(value.tag, []).append((event.step, value.simple_value))
  return out


def test_write_appends_json_lines_and_tensorboard_scalars(tmp_path):
  writer = MetricsWriter(str(tmp_path), enabled=True)
  row = writer.write(1, {"success": jnp.float32(0.25), "reward": np.float64(2.0), "n": 3},
                     prefix="rollout")
  assert row == {"rollout/success": 0.25, "rollout/reward": 2.0, "rollout/n": 3.0}
  writer.write(2, {"loss": jnp.array([float("nan")]), "grad_norm": float("inf")})
  with pytest.raises(ValueError, match="'v' has shape"):
    writer.write(3, {"v": np.ones(3)})
  writer.close()
  with open(tmp_path / "metrics.jsonl") as f:
    lines = [json.loads(line) for line in f]
  assert lines == [{"step": 1, "rollout/success": 0.25, "rollout/reward": 2.0, "rollout/n": 3.0},
                   {"step": 2, "loss": None, "grad_norm": None}]
  tb = _tb_scalars(tmp_path)
  assert tb["rollout/success"] == [(1, 0.25)] and tb["rollout/n"] == [(1, 3.0)]
  assert np.isnan(tb["loss"][0][1])  # non-finite values still reach TensorBoard


def test_write_eval_grows_the_list_and_merges_a_step(tmp_path):
  with MetricsWriter(str(tmp_path), enabled=True) as writer:
    writer.write_eval(10, {"success": 0.5})
    writer.write_eval(20, {"success": 0.75, "valid_seen/success": 1.0})
    writer.write_eval(10, {"valid_seen/success": 0.5})
  with open(tmp_path / "eval.json") as f:
    evals = json.load(f)
  assert evals == [{"step": 10, "success": 0.5, "valid_seen/success": 0.5},
                   {"step": 20, "success": 0.75, "valid_seen/success": 1.0}]
  assert not glob.glob(str(tmp_path / "*.tmp*"))
  assert _tb_scalars(tmp_path)["eval/success"] == [(10, 0.5), (20, 0.75)]
  with MetricsWriter(str(tmp_path), enabled=True) as writer:  # a later run appends
    writer.write_eval(30, {"success": 1.0})
  with open(tmp_path / "eval.json") as f:
    assert [e["step"] for e in json.load(f)] == [10, 20, 30]


def test_resume_step_drops_what_came_after_it(tmp_path):
  with MetricsWriter(str(tmp_path), enabled=True) as writer:
    for step in range(1, 6):
      writer.write(step, {"x": step})
      writer.write_eval(step, {"success": step / 10})
  with MetricsWriter(str(tmp_path), enabled=True, resume_step=3) as writer:
    writer.write(4, {"x": 40})
  assert [(r["step"], r["x"]) for r in read_jsonl(str(tmp_path / "metrics.jsonl"))] == [
      (1, 1.0), (2, 2.0), (3, 3.0), (4, 40.0)]
  with open(tmp_path / "eval.json") as f:
    assert [e["step"] for e in json.load(f)] == [1, 2, 3]


def test_plot_writes_a_png(tmp_path):
  with MetricsWriter(str(tmp_path), enabled=True) as writer:
    for step in range(5):
      writer.write(step, {"success": step / 4}, prefix="rollout")
    writer.write_eval(4, {"success": 0.5})
    path = writer.plot()
  assert path == str(tmp_path / "plots" / "learning_curve.png")
  with open(path, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_disabled_writer_writes_nothing(tmp_path):
  workdir = tmp_path / "run"
  with MetricsWriter(str(workdir), enabled=False) as writer:
    assert writer.write(1, {"a": 1.0}, prefix="p") == {"p/a": 1.0}
    writer.write_eval(1, {"success": 1.0})
    assert writer.plot() is None
  assert not workdir.exists()


def test_markdown_table():
  table = markdown_table({"valid_seen": {"success": 0.5, "n": 140},
                          "valid_unseen": {"success": 0.25, "reward": None}})
  assert table == ("| subset | success | n | reward |\n"
                   "| --- | ---: | ---: | ---: |\n"
                   "| valid_seen | 0.500 | 140 | - |\n"
                   "| valid_unseen | 0.250 | - | - |")
  rows = [{"task": "pick", "success": 1.0}, {"task": "clean", "success": 0.123456}]
  assert markdown_table(rows, digits=2).splitlines()[2:] == ["| pick | 1.00 |",
                                                            "| clean | 0.12 |"]


def test_per_step_vectors_become_scalars_where_tokens_were():
  from stepopsd_jax.run.metrics import expand_by_step  # pylint: disable=g-import-not-at-top
  got = expand_by_step({"loss": 1.5, "weight_by_step": np.array([1.1, 0.9, 0.0]),
                        "delta_by_step": np.array([0.2, -0.1, 0.0]),
                        "control_tokens_by_step": np.array([4, 2, 0]),
                        "weight_won_by_step": np.array([0.0, 1.3, 0.0]),
                        "control_tokens_won_by_step": np.array([0, 1, 0])})
  assert got == {"loss": 1.5, "weight_step0": 1.1, "weight_step1": 0.9, "delta_step0": 0.2,
                 "delta_step1": -0.1, "weight_won_step1": 1.3}
