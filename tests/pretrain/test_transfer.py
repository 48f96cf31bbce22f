"""The transfer check's prompts are the rollout's, its blocks name random admissible doors."""

import collections

from stepopsd_jax import text
from stepopsd_jax.pretrain import fallback, transfer


def test_cases_follow_the_episodes_and_blocks_name_admissible_doors():
  cases = transfer.cases(20, seed=3)
  assert [c.step for c in cases] == [0, 1, 2] * 20
  for c in cases:
    assert len(c.admissible) == 3 and all(a.startswith("open ") for a in c.admissible)
    assert c.demo[c.step] in c.admissible and f"[Step {c.step + 1}] Observation:" in c.user
  # The block's door at the deciding room is uniform, not the clue's (always red here).
  named = collections.Counter(c.demo[1] for c in transfer.cases(150, seed=4) if c.step == 1)
  assert set(named) == {"open red door", "open green door", "open blue door"}
  assert max(named.values()) < 75


def test_prompt_rows_exact_block_paraphrase_and_no_clue(built):
  tokenizer = text.load_tokenizer(built)
  case = transfer.cases(2, seed=5)[1]
  block = transfer.hindsight_text(case.won, float(case.won), case.demo)
  decode = lambda rows: tokenizer.decode(rows[0][0])
  exact = decode(transfer.prompt_rows(tokenizer, case, True, "exact"))
  para = decode(transfer.prompt_rows(tokenizer, case, False, "paraphrase"))
  bare = decode(transfer.prompt_rows(tokenizer, case, False, None))
  assert block in exact and "The treasure is behind the red door of room 2." in exact
  assert "[Hindsight]" not in para and "successful attempt" not in para
  assert all(a in para for a in case.demo)
  assert "treasure is behind" not in para and "treasure is behind" not in bare
  assert exact.endswith("<|im_start|>assistant\n<think>I pick one of the admissible "
                        "actions.</think><action>")
  rows = transfer.prompt_rows(tokenizer, case, True, None)
  assert [tokenizer.decode(c) for _, c in rows] == [a + "</action>" for a in case.admissible]


def test_wilson_interval_matches_the_formula_by_hand():
  low, high = fallback.wilson_interval(30, 100)  # p=0.3, n=100, z=1.96
  assert abs(low - 0.2189) < 1e-3 and abs(high - 0.3958) < 1e-3
