"""What the notebooks import: their checkpoint, transcripts, the credit picture (tokens coloured by
the teacher gap Delta and the weight w). `python -m stepopsd_jax.viz --execute NB...` re-runs
notebooks in place through a Jupyter kernel (nbclient: requirements-test.txt), outputs kept."""

from __future__ import annotations

import argparse
import dataclasses
import html
import os
import pathlib
import time

import jax
import numpy as np


def runtime() -> str:
  """The accelerator JAX runs on, e.g. "TPU: 8 x TPU v2" or "CPU: 1 x cpu (2 host cores)"."""
  devices = jax.devices()
  return (f"{jax.default_backend().upper()}: {len(devices)} x {devices[0].device_kind} "
          f"({os.cpu_count()} host cores)")


def choose_checkpoint(online: bool, hub_id: str, local: str = "") -> tuple[str, str]:
  """(checkpoint dir or "", which model): online `hub_id`; offline `local` (a dir or hub id), else
  the shipped base model, else "" (the random model `configs/default.py:runlocal` builds)."""
  from stepopsd_jax.pretrain import base_model_dir  # pylint: disable=g-import-not-at-top
  wanted = local or (hub_id if online else "")
  if wanted and not os.path.isdir(wanted):
    from huggingface_hub import snapshot_download  # pylint: disable=g-import-not-at-top
    return snapshot_download(wanted, allow_patterns=["*.json", "*.safetensors", "*.jinja"]), (
        f"{wanted} from the Hugging Face hub")
  if wanted:
    return wanted, f"the checkpoint in {wanted}"
  if (pathlib.Path(base_model_dir()) / "config.json").is_file():
    return base_model_dir(), "the shipped base model that reads (stepopsd_jax/assets/base_model)"
  return "", ("no checkpoint: a random tiny Qwen3 + a SentencePiece tokenizer trained on the env "
              "texts (configs/default.py:runlocal); it cannot read its hindsight block.")


def fallback_checkpoint(config, out_dir: str) -> str:
  """What `config` builds without a checkpoint (tokenizer, random preset) as a HF dir."""
  from stepopsd_jax import models  # pylint: disable=g-import-not-at-top
  from stepopsd_jax.run import setup  # pylint: disable=g-import-not-at-top
  tokenizer = setup.make_tokenizer(config, setup.make_task_set(config, "train"))
  model_config, params = setup.initial_params(config, tokenizer, jax.random.key(config.seed))
  models.save_hf(model_config, params, out_dir)
  tokenizer.save(os.path.join(out_dir, "tokenizer.model"))
  return out_dir


def tokenizer_path(ckpt: str) -> str:
  """A checkpoint's tokenizer: its dir (tokenizer.json) or its SentencePiece tokenizer.model."""
  has_json = os.path.isfile(os.path.join(ckpt, "tokenizer.json"))
  return ckpt if has_json else os.path.join(ckpt, "tokenizer.model")


def transcript(traj) -> str:
  """One trajectory as text: the task, then each step's observation, response, action, reward."""
  lines = [f"TASK: {traj.description}"]
  for k, ((observation, _), response, action, reward) in enumerate(
      zip(traj.history, traj.responses, traj.actions, traj.rewards)):
    lines += [f"[step {k + 1}] observation: {observation}", f"  model:  {response!r}",
              f"  action: {action or '(invalid: no parsable action)'}   reward: {reward:+.2f}"]
  lines.append(f"=> {'SUCCESS' if traj.won else 'failure'}, return {traj.ret:+.2f}")
  return "\n".join(lines)


@dataclasses.dataclass
class Row:
  """One agent step of a StepBatch, with the credit of each generated token."""
  row: int  # index in the batch
  traj: int
  group: int
  step: int
  won: bool
  adv: float  # the GRPO advantage of the trajectory
  hindsight: bool  # the teacher was shown a hindsight block
  pieces: list[str]  # the text of each generated token
  delta: np.ndarray  # teacher gap log pi_T - log pi_S per token (0 without a block)
  weight: np.ndarray  # StepOPSD weight per token (1 off the control tokens)
  control: np.ndarray  # the tokens StepOPSD may reweight (the action)


def token_pieces(tokenizer, ids) -> list[str]:
  """The text each token adds; a character split over tokens shows at the one completing it."""
  ids = [int(i) for i in ids if 0 <= i < tokenizer.vocab_size]
  texts = [tokenizer.decode(ids[:k]) for k in range(len(ids) + 1)]
  texts = [t.rstrip("\ufffd") for t in texts[:-1]] + texts[-1:]  # drop half-decoded characters
  return [b[len(a):] if b.startswith(a) else tokenizer.decode([i])
          for a, b, i in zip(texts, texts[1:], ids)]


def credit_rows(batch, targets, tokenizer) -> list[Row]:
  """The valid rows of `batch` with the credit `train.step.credit` gave their tokens."""
  b, t = jax.device_get((batch, targets))
  zeros = np.zeros_like(b.behavior_logprobs)
  delta = zeros if t.delta is None else t.delta
  weights = zeros + 1 if t.weights is None else t.weights
  rows = []
  for r in np.flatnonzero(b.row_valid):
    n = int(b.response_mask[r].sum())
    rows.append(Row(int(r), int(b.traj_id[r]), int(b.group_id[r]), int(b.step_idx[r]),
                    bool(b.traj_success[r]), float(t.adv_rows[r]), bool(b.has_hindsight[r]),
                    token_pieces(tokenizer, b.response_tokens[r, :n]), delta[r, :n],
                    weights[r, :n], b.control_mask[r, :n]))
  return rows


def pick_group(rows: list[Row]) -> int | None:
  """A group with a failure and >= 2 successes (a lone winner's teacher sees no sibling)."""
  for g in sorted({r.group for r in rows}):
    won = {r.traj for r in rows if r.group == g and r.won}
    if len(won) >= 2 and any(r.group == g and not r.won for r in rows):
      return g
  return None


def rgb(value: float, scale: float) -> tuple[int, int, int]:
  """Diverging colour: white at 0, red at +scale and above, blue at -scale and below."""
  t = float(np.clip(value / scale, -1.0, 1.0))
  fade = round(255 * (1.0 - abs(t)))
  return (255, fade, fade) if t >= 0 else (fade, fade, 255)


def tokens_html(row: Row, values: np.ndarray, centre: float, scale: float, name: str) -> str:
  """The row's tokens; control tokens on the colour of `value - centre`, the rest grey text."""
  spans = []
  for piece, value, control in zip(row.pieces, values, row.control):
    text = html.escape(piece.replace("\n", "\u21b5"))
    spans.append(f'<span style="background:rgb{rgb(value - centre, scale)}" title="{name}='
                 f'{value:+.4f}">{text}</span>' if control
                 else f'<span style="color:#999">{text}</span>')
  return "".join(spans)


def credit_html(rows: list[Row], delta_scale: float = 1.0, weight_scale: float = 0.2,
                adv_scale: float = 1.5) -> str:
  """One line per agent step: its trajectory's GRPO advantage, its tokens by Delta and by w."""
  head = ("<tr><th>trajectory</th><th>step</th><th>GRPO A</th><th>tokens by &Delta; (scale "
          f"&plusmn;{delta_scale})</th><th>tokens by w (1 &plusmn; {weight_scale})</th></tr>")
  lines = [f'<table style="font-family:monospace;font-size:12px">{head}']
  for r in rows:
    outcome = "won" if r.won else "lost"
    lines.append(
        f'<tr data-outcome="{outcome}"><td>#{r.traj} {outcome}</td><td>{r.step + 1}'
        f'{"" if r.hindsight else " (no block)"}</td><td style="background:rgb'
        f'{rgb(r.adv, adv_scale)}">{r.adv:+.2f}</td><td style="text-align:left">'
        f'{tokens_html(r, r.delta, 0.0, delta_scale, "delta")}</td><td style="text-align:left">'
        f'{tokens_html(r, r.weight, 1.0, weight_scale, "w")}</td></tr>')
  return "\n".join(lines + ["</table>"])


def _window(row: Row, width: int) -> range:
  """At most `width` token positions, ending just after the last control token."""
  last = int(np.flatnonzero(row.control)[-1]) + 3 if row.control.any() else len(row.pieces)
  end = min(len(row.pieces), max(last, width))
  return range(max(0, end - width), end)


def credit_figure(rows: list[Row], delta_scale: float = 1.0, weight_scale: float = 0.2,
                  width: int = 16):
  """The same picture as `credit_html` as a matplotlib figure (shows on a repository page)."""
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, axes = plt.subplots(1, 2, figsize=(0.84 * width + 3, 0.3 * len(rows) + 1.2), dpi=72)
  panels = (("teacher gap \u0394 (nats)", "delta", 0.0, delta_scale),
            ("StepOPSD weight w", "weight", 1.0, weight_scale))
  for ax, (title, field, centre, scale) in zip(axes, panels):
    for i, r in enumerate(rows):
      for j, k in enumerate(_window(r, width)):
        value = getattr(r, field)[k]
        face = np.array(rgb(value - centre, scale) if r.control[k] else (245,) * 3) / 255
        ax.add_patch(plt.Rectangle((j, i), 1, 1, facecolor=face, edgecolor="white"))
        piece = r.pieces[k].replace("\n", "\u21b5")
        label = "".join(c if c.isprintable() else "?" for c in piece)
        ax.text(j + 0.5, i + 0.5, label[:7], ha="center", va="center", fontsize=5.5,
                color="black" if r.control[k] else "#888")
    ax.set(xlim=(0, width), ylim=(len(rows), 0), xticks=[], title=f"{title}, scale "
           f"{centre:g} \u00b1 {scale:g}", yticks=np.arange(len(rows)) + 0.5)
    ax.set_yticklabels([f"#{r.traj} {'won' if r.won else 'lost'} A={r.adv:+.2f} step {r.step + 1}"
                        for r in rows], fontsize=7)
  fig.tight_layout()
  return fig


def step_means(rows: list[Row]) -> list[dict]:
  """Per step index and outcome: mean Delta and mean w over the control tokens."""
  out = []
  for step in sorted({r.step for r in rows}):
    for outcome in (True, False):
      at = [r for r in rows if r.step == step and r.won == outcome and r.control.any()]
      if at:
        delta = np.concatenate([r.delta[r.control] for r in at])
        weight = np.concatenate([r.weight[r.control] for r in at])
        out.append(dict(step=step + 1, outcome="won" if outcome else "lost", rows=len(at),
                        tokens=delta.size, delta=float(delta.mean()), w=float(weight.mean())))
  return out


def execute(path: str, write: bool = True, timeout: int = 900):
  """Runs the notebook in a fresh kernel (cwd: its folder); drops progress bars and timings."""
  import nbclient  # pylint: disable=g-import-not-at-top
  import nbformat  # pylint: disable=g-import-not-at-top
  nb = nbformat.read(path, as_version=4)
  nbclient.NotebookClient(nb, timeout=timeout, kernel_name="python3", record_timing=False,
                          resources={"metadata": {"path": str(pathlib.Path(path).parent)}}
                          ).execute()
  for cell in nb.cells:
    cell.metadata.pop("execution", None)
    if cell.cell_type == "code":
      cell.outputs = [o for o in cell.outputs if not (o.output_type == "stream" and (
          o.text.isspace() or o.name == "stderr" and "\r" in o.text))]
  if write:
    nbformat.write(nb, path)
  return nb


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description="Re-run notebooks in place with their outputs.")
  p.add_argument("--execute", nargs="+", required=True, metavar="NOTEBOOK")
  for path in p.parse_args(argv).execute:
    start = time.perf_counter()
    execute(path)
    print(f"{path}: {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
  main()
