"""Metrics out of the loop: tensorboardX scalars, a JSONL copy, eval.json and a learning curve.

Files under `workdir` (written by process 0 only unless `enabled` says otherwise):
  tb/events.out.tfevents.*  every scalar, NaN included
  metrics.jsonl             one line per `write`: {"step": 7, "rollout/success": 0.25, ...}
                            (non-finite values become null: JSON has no NaN)
  eval.json                 a list of {"step": .., metric: value, ...}, rewritten atomically
  plots/learning_curve.png  `plot()`
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
from tensorboardX import SummaryWriter

Number = float | int | np.ndarray | jax.Array


class MetricsWriter:
  """Writes scalar metrics to TensorBoard, metrics.jsonl and eval.json under `workdir`.

  `resume_step`: when a run resumes from a checkpoint at that step, the lines and eval entries
  logged after it by the interrupted run are dropped (and TensorBoard is told to purge them),
  so the files show one history.
  """

  def __init__(self, workdir: str, *, enabled: bool | None = None,
               resume_step: int | None = None):
    self.workdir = workdir
    self.enabled = jax.process_index() == 0 if enabled is None else enabled
    self.jsonl_path = os.path.join(workdir, "metrics.jsonl")
    self.eval_path = os.path.join(workdir, "eval.json")
    self._evals: list[dict[str, Any]] = []
    self._tb = self._jsonl = None
    if not self.enabled:
      return
    os.makedirs(workdir, exist_ok=True)
    self._evals = _read_json_list(self.eval_path)
    if resume_step is not None:
      self._evals = [e for e in self._evals if e["step"] <= resume_step]
      _atomic_write_json(self.eval_path, self._evals)
      _truncate_jsonl(self.jsonl_path, resume_step)
    purge = None if resume_step is None else resume_step + 1
    self._tb = SummaryWriter(logdir=os.path.join(workdir, "tb"), purge_step=purge)
    self._jsonl = open(self.jsonl_path, "a", encoding="utf-8")  # noqa: SIM115 - kept open

  def write(self, step: int, metrics: Mapping[str, Number], prefix: str = ""
            ) -> dict[str, float]:
    """Logs scalar `metrics` at `step` under `prefix/`; returns them as Python floats."""
    values = scalars(metrics, prefix)
    if not self.enabled:
      return values
    for key, value in values.items():
      self._tb.add_scalar(key, value, step)
    self._tb.flush()
    self._jsonl.write(json.dumps({"step": int(step), **_json_safe(values)}) + "\n")
    self._jsonl.flush()
    return values

  def write_eval(self, step: int, table: Mapping[str, Number]) -> None:
    """Adds `table` at `step` to eval.json (merged into an entry of the same step) and TB."""
    values = scalars(table)
    if not self.enabled:
      return
    for key, value in values.items():
      self._tb.add_scalar(f"eval/{key}", value, step)
    self._tb.flush()
    entry = next((e for e in self._evals if e["step"] == step), None)
    if entry is None:
      entry = {"step": int(step)}
      self._evals.append(entry)
      self._evals.sort(key=lambda e: e["step"])
    entry.update(_json_safe(values))
    _atomic_write_json(self.eval_path, self._evals)

  def plot(self, path: str | None = None,
           keys: Sequence[str] = ("rollout/success", "eval/success")) -> str | None:
    """Draws `keys` against step from metrics.jsonl and eval.json into a PNG; returns its path."""
    if not self.enabled:
      return None
    path = path or os.path.join(self.workdir, "plots", "learning_curve.png")
    if self._jsonl is not None:
      self._jsonl.flush()
    curves = learning_curves(read_jsonl(self.jsonl_path), _read_json_list(self.eval_path), keys)
    save_plot(curves, path)
    return path

  def close(self) -> None:
    """Flushes and closes the files (idempotent)."""
    if self._tb is not None:
      self._tb.close()
      self._tb = None
    if self._jsonl is not None:
      self._jsonl.close()
      self._jsonl = None

  def __enter__(self) -> MetricsWriter:
    return self

  def __exit__(self, *exc) -> None:
    self.close()


# Values.


def scalars(metrics: Mapping[str, Number], prefix: str = "") -> dict[str, float]:
  """`{prefix/key: float}`, fetching all device values in one transfer; non-scalars raise."""
  host = jax.device_get(dict(metrics))
  out = {}
  for key, value in host.items():
    array = np.asarray(value)
    if array.size != 1:
      raise ValueError(f"metric {key!r} has shape {array.shape}: log a scalar (reduce it first).")
    out[f"{prefix}/{key}" if prefix else key] = float(array.reshape(()))
  return out


def expand_by_step(metrics: Mapping[str, Any]) -> dict[str, Any]:
  """The step's per-step-index vectors as scalars, for the step indices some control token
  reached: `weight_won_by_step` [K] -> `weight_won_step{k}`, counted by
  `control_tokens_won_by_step` (the count of the same suffix; `control_tokens_by_step` for
  the unsplit ones)."""
  out = {k: v for k, v in metrics.items() if not k.endswith("_by_step")}
  for key in (k for k in metrics if k.endswith("_by_step") and not k.startswith("control_")):
    name = key.removesuffix("_by_step")
    split = next((s for s in ("_won", "_lost") if name.endswith(s)), "")
    counts = np.asarray(metrics[f"control_tokens{split}_by_step"])
    out.update({f"{name}_step{k}": np.asarray(metrics[key])[k]
                for k in np.flatnonzero(counts > 0)})
  return out


def _json_safe(values: Mapping[str, float]) -> dict[str, float | None]:
  return {k: v if math.isfinite(v) else None for k, v in values.items()}


# Files.


def read_jsonl(path: str) -> list[dict[str, Any]]:
  """The rows of a JSONL file ([] if absent); a torn last line (a crash mid-write) is skipped."""
  if not os.path.exists(path):
    return []
  rows = []
  with open(path, encoding="utf-8") as f:
    for line in f:
      try:
        rows.append(json.loads(line))
      except json.JSONDecodeError:
        continue
  return rows


def _read_json_list(path: str) -> list[dict[str, Any]]:
  if not os.path.exists(path):
    return []
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def _atomic_write_json(path: str, obj: Any) -> None:
  """Writes via a temp file and os.replace, so readers never see half a file."""
  tmp = f"{path}.tmp.{os.getpid()}"
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump(obj, f, indent=1)
  os.replace(tmp, path)


def _truncate_jsonl(path: str, last_step: int) -> None:
  # The format warm-up's lines (sft/...) count warm-up steps, not the RL steps a resume redoes.
  rows = [r for r in read_jsonl(path) if r.get("step", 0) <= last_step
          or all(k == "step" or k.startswith("sft/") for k in r)]
  tmp = f"{path}.tmp.{os.getpid()}"
  with open(tmp, "w", encoding="utf-8") as f:
    f.writelines(json.dumps(r) + "\n" for r in rows)
  os.replace(tmp, path)


# Plots and tables.


def learning_curves(rows: list[dict[str, Any]], evals: list[dict[str, Any]],
                    keys: Sequence[str]) -> dict[str, tuple[list[int], list[float]]]:
  """{key: (steps, values)} from JSONL rows, with "eval/x" also looked up as eval.json's "x"."""
  curves = {}
  for key in keys:
    points = {r["step"]: r[key] for r in rows if r.get(key) is not None}
    if key.startswith("eval/"):
      name = key.removeprefix("eval/")
      points.update({e["step"]: e[name] for e in evals if e.get(name) is not None})
    if points:
      steps = sorted(points)
      curves[key] = (steps, [points[s] for s in steps])
  return curves


def save_plot(curves: Mapping[str, tuple[list[int], list[float]]], path: str) -> None:
  """One axis, one line per curve (markers for sparse ones), written with the Agg canvas."""
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top

  fig = Figure(figsize=(7, 4), dpi=100)
  ax = fig.add_subplot()
  for key, (steps, values) in curves.items():
    ax.plot(steps, values, label=key, marker="o" if len(steps) < 30 else None)
  if not curves:
    ax.text(0.5, 0.5, "no data yet", ha="center", va="center", transform=ax.transAxes)
  else:
    ax.legend()
  ax.set_xlabel("step")
  ax.grid(alpha=0.3)
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  fig.savefig(path, bbox_inches="tight")


def markdown_table(rows: Mapping[str, Mapping[str, Any]] | Sequence[Mapping[str, Any]],
                   columns: Sequence[str] | None = None, *, index: str = "subset",
                   digits: int = 3) -> str:
  """A GitHub markdown table: one row per subset (dict of dicts) or per dict (list).

  Columns default to every key in first-seen order; numbers are right-aligned and floats
  shown with `digits` decimals; a missing value is "-".
  """
  if isinstance(rows, Mapping):
    rows = [{index: name, **row} for name, row in rows.items()]
  if columns is None:
    columns = list(dict.fromkeys(k for row in rows for k in row))
  numeric = [all(isinstance(r.get(c), (int, float, np.number)) or r.get(c) is None for r in rows)
             for c in columns]
  lines = ["| " + " | ".join(columns) + " |",
           "|" + "|".join(" ---: " if n else " --- " for n in numeric) + "|"]
  for row in rows:
    lines.append("| " + " | ".join(_cell(row.get(c), digits) for c in columns) + " |")
  return "\n".join(lines)


def _cell(value: Any, digits: int) -> str:
  if value is None:
    return "-"
  if isinstance(value, (float, np.floating)):
    return f"{value:.{digits}f}"
  return str(value)
