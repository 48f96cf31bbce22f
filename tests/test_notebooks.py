"""The notebooks run top to bottom in a real Jupyter kernel with their offline defaults (no network,
no download), their outputs show what they promise, and the committed copies carry outputs."""

import importlib.util
import pathlib
import re

import pytest

nbformat = pytest.importorskip("nbformat")
pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

from stepopsd_jax import viz  # noqa: E402

NOTEBOOKS = sorted((pathlib.Path(__file__).parents[1] / "notebooks").glob("*.ipynb"))
MAX_CELL_LINES = 15  # STYLE.md 14: notebooks are thin
MAX_BYTES = 400_000  # committed with outputs, kept small


def texts(nb) -> str:
  """Every output's text: streams, plain text, HTML and markdown."""
  out = []
  for cell in nb.cells:
    for o in cell.get("outputs", []):
      out.append(o.get("text", ""))
      out += [o.get("data", {}).get(k, "") for k in ("text/plain", "text/html", "text/markdown")]
  return "\n".join(out)


def images(nb) -> int:
  return sum("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", []))


def check_port(nb):
  out = texts(nb)
  diffs = re.findall(r"max \|logit difference\|[^\n]*?(\d\.\d+e[+-]\d+)", out)
  # ours vs transformers, and transformers on our export (there when transformers was installed)
  assert len(diffs) == 2 or not importlib.util.find_spec("transformers"), out
  assert all(float(d) < 1e-4 for d in diffs), diffs
  assert "config equal: True | params equal: True" in out
  assert out.count("assistant: ") == 2  # two chat turns, text out


def check_agent(nb):
  out = texts(nb)
  assert "door" in out and re.search(r"=> (SUCCESS|failure), return", out)  # the transcript
  assert "| teacher_prompt_tokens | BT |" in out  # the StepBatch table
  assert "'step': 3" in out and images(nb) >= 1  # three jitted steps and their curve


def check_credit(nb):
  html = next(o["data"]["text/html"] for c in nb.cells for o in c.get("outputs", [])
              if "data-outcome" in o.get("data", {}).get("text/html", ""))
  for outcome in ("won", "lost"):  # coloured action tokens in a won and in a lost trajectory
    rows = html.split(f'<tr data-outcome="{outcome}">')[1:]
    assert any('<span style="background:rgb(' in r.split("</tr>")[0] for r in rows), outcome
  assert images(nb) >= 2 and "| step | outcome |" in texts(nb)


CHECKS = {"port_qwen_checkpoint": check_port, "agent_episode_stepopsd": check_agent,
          "where_the_credit_goes": check_credit}


def test_every_notebook_has_checks():
  assert sorted(p.stem for p in NOTEBOOKS) == sorted(CHECKS)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_in_a_kernel(path, monkeypatch):
  for var in ("XLA_FLAGS", "CKPT"):  # one CPU device and the offline defaults, as a user has
    monkeypatch.delenv(var, raising=False)
  monkeypatch.setenv("HF_HUB_OFFLINE", "1")
  monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
  nb = viz.execute(str(path), write=False)  # raises CellExecutionError on any error
  CHECKS[path.stem](nb)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_notebook_is_thin_small_and_shows_its_outputs(path):
  nb = nbformat.read(path, as_version=4)
  code = [c for c in nb.cells if c.cell_type == "code"]
  assert max(len(c.source.splitlines()) for c in code) <= MAX_CELL_LINES
  assert path.stat().st_size < MAX_BYTES
  assert all(c.execution_count is not None for c in code), "commit the executed notebook"
  CHECKS[path.stem](nb)
