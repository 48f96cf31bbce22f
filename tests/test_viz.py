"""The notebooks' helpers on hand-made arrays; every expected value is worked out by hand."""

import jax
import matplotlib
import numpy as np
import pytest

from stepopsd_jax import pretrain, viz
from stepopsd_jax.algorithms import Targets
from stepopsd_jax.batch import StepBatch
from stepopsd_jax.rollout import Trajectory

matplotlib.use("Agg")


def row(**kw):
  base = dict(row=0, traj=0, group=0, step=0, won=True, adv=0.3, hindsight=True,
              pieces=["<a>", "open", " red"], delta=np.array([0.5, 0.2, -0.6]),
              weight=np.array([1.0, 1.04, 0.9]), control=np.array([False, True, True]))
  return viz.Row(**{**base, **kw})


@pytest.mark.parametrize("value, scale, expected", [
    (0.0, 1.0, (255, 255, 255)),
    (0.2, 1.0, (255, 204, 204)),  # 255 * (1 - 0.2) = 204
    (-0.6, 1.0, (102, 102, 255)),  # 255 * 0.4 = 102
    (-0.05, 0.2, (191, 191, 255)),  # t = -0.25: 255 * 0.75 = 191.25
    (5.0, 1.0, (255, 0, 0)),  # clipped at full red
    (-3.0, 0.5, (0, 0, 255)),
])
def test_rgb(value, scale, expected):
  assert viz.rgb(value, scale) == expected


def test_tokens_html_colours_only_control_tokens():
  html = viz.tokens_html(row(), row().delta, 0.0, 1.0, "delta")
  assert html == ('<span style="color:#999">&lt;a&gt;</span>'
                  '<span style="background:rgb(255, 204, 204)" title="delta=+0.2000">open</span>'
                  '<span style="background:rgb(102, 102, 255)" title="delta=-0.6000"> red</span>')


def test_credit_html_weight_column_is_centred_on_one():
  html = viz.credit_html([row(), row(traj=1, won=False, adv=-0.3)], weight_scale=0.2,
                         adv_scale=1.5)
  won, lost = html.split('<tr data-outcome="won">')[1], html.split('<tr data-outcome="lost">')[1]
  assert '<td style="background:rgb(255, 204, 204)">+0.30</td>' in won  # 0.3 / 1.5 = 0.2
  assert '<td style="background:rgb(204, 204, 255)">-0.30</td>' in lost
  # w = 1.04: (1.04 - 1) / 0.2 = 0.2 -> 204; w = 0.9: -0.5 -> round(127.5) = 128
  assert 'style="background:rgb(255, 204, 204)" title="w=+1.0400">open' in won
  assert 'style="background:rgb(128, 128, 255)" title="w=+0.9000"> red' in won


class BytesTokenizer:
  """Token i is the byte string VOCAB[i]; decoding replaces broken UTF-8 like real tokenizers."""
  VOCAB = [b"a", b"\xc3", b"\xa9", b" b"]
  vocab_size = len(VOCAB)

  def decode(self, ids):
    return b"".join(self.VOCAB[i] for i in ids).decode("utf-8", errors="replace")


def test_token_pieces_shows_a_split_character_at_the_token_completing_it():
  # "a" + (first byte of e-acute) + (second byte) + " b"; id 9 is padded vocab: dropped
  assert viz.token_pieces(BytesTokenizer(), [0, 1, 2, 3, 9]) == ["a", "", "\u00e9", " b"]


def test_step_means_over_control_tokens_by_outcome():
  rows = [row(step=0, delta=np.array([1.0, 2.0, 3.0]), weight=np.array([1.1, 1.1, 1.0]),
              control=np.array([True, True, False])),
          row(step=0, won=False, delta=np.array([-1.0, 0.0, 0.0]),
              weight=np.array([0.9, 1.0, 1.0]), control=np.array([True, False, False])),
          row(step=1, control=np.zeros(3, bool))]  # no control tokens: not counted
  means = viz.step_means(rows)
  assert [(m["step"], m["outcome"], m["rows"], m["tokens"]) for m in means] == [
      (1, "won", 1, 2), (1, "lost", 1, 1)]
  assert means[0]["delta"] == pytest.approx(1.5) and means[0]["w"] == pytest.approx(1.1)
  assert means[1]["delta"] == pytest.approx(-1.0) and means[1]["w"] == pytest.approx(0.9)


def test_pick_group_wants_two_winners_and_a_loser():
  one_winner = [row(traj=0, group=0), row(traj=1, group=0, won=False)]
  two_winners = [row(traj=2, group=1), row(traj=3, group=1), row(traj=4, group=1, won=False)]
  assert viz.pick_group(one_winner) is None
  assert viz.pick_group(one_winner + two_winners) == 1


def test_credit_rows_reads_valid_rows_of_a_batch():
  empty = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), StepBatch.abstract(2, 2, 2, 3))
  batch = empty.replace(response_tokens=np.array([[0, 3, 0], [0, 0, 0]], np.int32),
                        response_mask=np.array([[True, True, False], [False] * 3]),
                        control_mask=np.array([[False, True, False], [False] * 3]),
                        step_idx=np.array([1, 0], np.int32), traj_success=np.array([True, False]),
                        has_hindsight=np.array([True, False]), row_valid=np.array([True, False]))
  targets = Targets(adv_tokens=np.zeros((2, 3)), adv_rows=np.array([0.7, 0.0]),
                    delta=np.array([[0.1, -0.2, 0.0], [0.0] * 3]),
                    weights=np.array([[1.0, 0.95, 1.0], [1.0] * 3]))
  (r,) = viz.credit_rows(batch, targets, BytesTokenizer())
  assert (r.row, r.traj, r.step, r.won, r.adv, r.hindsight) == (0, 0, 1, True, 0.7, True)
  assert r.pieces == ["a", " b"]
  np.testing.assert_array_equal(r.delta, [0.1, -0.2])
  np.testing.assert_array_equal(r.weight, [1.0, 0.95])
  np.testing.assert_array_equal(r.control, [False, True])


def test_credit_figure_draws_one_cell_per_shown_token():
  long = row(pieces=["x"] * 30, delta=np.zeros(30), weight=np.ones(30),
             control=np.arange(30) == 20)
  fig = viz.credit_figure([row(), long], width=16)
  # row(): 3 tokens; long: 16 of 30, ending 3 past its last control token (20): 7..22
  assert [len(ax.patches) for ax in fig.axes] == [3 + 16, 3 + 16]
  assert viz._window(long, 16) == range(7, 23)  # pylint: disable=protected-access


def test_transcript():
  traj = Trajectory(task=None, group_id=0, responses=["<action>open red door</action>", "??"],
                    actions=["open red door", ""], rewards=[0.0, 0.9],
                    history=[("Room 1.", "open red door"), ("Room 2.", "??")],
                    description="Find it.", won=True)
  assert viz.transcript(traj) == "\n".join([
      "TASK: Find it.",
      "[step 1] observation: Room 1.",
      "  model:  '<action>open red door</action>'",
      "  action: open red door   reward: +0.00",
      "[step 2] observation: Room 2.",
      "  model:  '??'",
      "  action: (invalid: no parsable action)   reward: +0.90",
      "=> SUCCESS, return +0.90"])


def test_choose_checkpoint_offline_never_downloads(tmp_path, monkeypatch):
  import huggingface_hub  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(huggingface_hub, "snapshot_download",
                      lambda *a, **k: pytest.fail("offline must not download"))
  base = tmp_path / "base"
  base.mkdir()
  monkeypatch.setattr(pretrain, "base_model_dir", lambda: str(base))
  path, about = viz.choose_checkpoint(False, "Qwen/Qwen3-0.6B")
  assert path == "" and "random tiny Qwen3" in about  # no base model built yet
  (base / "config.json").write_text("{}")
  assert viz.choose_checkpoint(False, "Qwen/Qwen3-0.6B")[0] == str(base)
  assert viz.choose_checkpoint(False, "Qwen/Qwen3-0.6B", local=str(tmp_path)) == (
      str(tmp_path), f"the checkpoint in {tmp_path}")


def test_choose_checkpoint_online_downloads_the_hub_id(monkeypatch):
  import huggingface_hub  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda repo, **k: f"/cache/{repo}")
  assert viz.choose_checkpoint(True, "Qwen/Qwen3-0.6B") == (
      "/cache/Qwen/Qwen3-0.6B", "Qwen/Qwen3-0.6B from the Hugging Face hub")


def test_tokenizer_path(tmp_path):
  assert viz.tokenizer_path(str(tmp_path)) == str(tmp_path / "tokenizer.model")
  (tmp_path / "tokenizer.json").write_text("{}")
  assert viz.tokenizer_path(str(tmp_path)) == str(tmp_path)
