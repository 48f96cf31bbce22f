"""GRPO / Dr.GRPO advantages (DESIGN 4.1) and StepOPSD shaping (DESIGN 4.8, steps 4-6).

Every expected number below is computed by hand (the arithmetic is in the comments); the code
under test is never re-implemented in numpy.
"""

import math

import hypothesis
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stepopsd_jax.algorithms.grpo import grpo_advantages
from stepopsd_jax.algorithms.stepopsd import (CREDIT_BUDGETS, apply_credit_budget,
                                              stepopsd_shape, token_weights)

EPS = 1e-6
LN3 = math.log(3.0)          # 2*sigmoid(+ln 3) = 2*0.75 = 1.5; 2*sigmoid(-ln 3) = 0.5
LN11_9 = math.log(11 / 9)    # 2*sigmoid(+ln(11/9)) = 2*0.55 = 1.1; 2*sigmoid(-ln(11/9)) = 0.9
NAN, INF = float("nan"), float("inf")


# ------------------------------------------------------------------------------------------
# 1. GRPO / Dr.GRPO fixture
# ------------------------------------------------------------------------------------------
# Trajectory slots and group ids are deliberately non-contiguous and rows are interleaved.
#   group 5  ("G0"): traj 9 (1 step, R=1.0), traj 2 (3 steps, R=0.0), traj 14 (2 steps, R=0.5)
#   group 11 ("G1"): traj 0 (2 steps, R=2.0), traj 7 (1 step, R=2.0)        -> all equal
#   group 0  ("G2"): traj 4 (2 steps, R=7.0)                                -> single trajectory
#   group 3  ("G3"): traj 1 (1 step, R=3.0), traj 5 (3 steps, R=1.0)
#   group 8  ("G4"): traj 3 (2 steps, R=1e-6), traj 6 (1 step, R=0.0)   -> std comparable to eps
#   padding rows (row_valid False) carry garbage: NaN / 1e30 returns, traj ids pointing at real
#   trajectories (2, 9) and at an empty slot (17) whose group id is G2's (0): if padding
#   counted, G2 would get a second trajectory and stop being a single-trajectory group.
GRPO_ROWS = [
    # traj, group, return, valid
    (2, 5, 0.0, True),       # 0
    (9, 5, 1.0, True),       # 1
    (0, 11, 2.0, True),      # 2
    (2, 3, NAN, False),      # 3  padding
    (14, 5, 0.5, True),      # 4
    (1, 3, 3.0, True),       # 5
    (4, 0, 7.0, True),       # 6
    (2, 5, 0.0, True),       # 7
    (5, 3, 1.0, True),       # 8
    (7, 11, 2.0, True),      # 9
    (17, 0, -4.0, False),    # 10 padding
    (14, 5, 0.5, True),      # 11
    (0, 11, 2.0, True),      # 12
    (5, 3, 1.0, True),       # 13
    (2, 5, 0.0, True),       # 14
    (9, 5, 1e30, False),     # 15 padding
    (4, 0, 7.0, True),       # 16
    (5, 3, 1.0, True),       # 17
    (3, 8, 1e-6, True),      # 18
    (6, 8, 0.0, True),       # 19
    (3, 8, 1e-6, True),      # 20
]
B_GRPO = len(GRPO_ROWS)  # 21: every traj / group id lies in [0, 21)


def _grpo_inputs():
  traj, group, ret, valid = zip(*GRPO_ROWS)
  return (np.array(ret, np.float32), np.array(group, np.int32), np.array(traj, np.int32),
          np.array(valid, bool))


# Per-trajectory expected advantages, by hand.
# G0: returns over TRAJECTORIES (1.0, 0.0, 0.5) -> mean = 1.5/3 = 0.5
#     centred (+0.5, -0.5, 0.0); unbiased var = (0.25 + 0.25 + 0) / (3-1) = 0.25; std = 0.5
#     GRPO: +0.5/(0.5+1e-6), -0.5/(0.5+1e-6), 0          Dr.GRPO: +0.5, -0.5, 0
# G1: returns (2.0, 2.0) -> centred (0, 0), std 0 -> 0/(0+1e-6) = 0 exactly (no NaN)
# G2: a single trajectory -> 0
# G3: returns (3.0, 1.0) -> mean 2; centred (+1, -1); unbiased var = (1+1)/(2-1) = 2; std = sqrt 2
#     GRPO: +1/(sqrt2+1e-6), -1/(sqrt2+1e-6)            Dr.GRPO: +1, -1
# G4: returns (1e-6, 0) -> mean 0.5e-6; centred (+0.5e-6, -0.5e-6);
#     unbiased var = 2*(0.5e-6)^2/(2-1) = 0.5e-12; std = 1e-6/sqrt2
#     GRPO: +0.5e-6/(1e-6/sqrt2 + 1e-6) = 0.5/(1/sqrt2 + 1) = 1 - 1/sqrt2 ~ 0.2929 (and -that);
#     eps is added to the std, not the variance (sqrt(var + eps) would give ~5e-4)
#     Dr.GRPO: +0.5e-6, -0.5e-6
GRPO_EXPECTED = {9: 0.5 / (0.5 + EPS), 2: -0.5 / (0.5 + EPS), 14: 0.0,
                 0: 0.0, 7: 0.0,
                 4: 0.0,
                 1: 1.0 / (math.sqrt(2.0) + EPS), 5: -1.0 / (math.sqrt(2.0) + EPS),
                 3: 1 - 1 / math.sqrt(2.0), 6: -(1 - 1 / math.sqrt(2.0))}
DR_GRPO_EXPECTED = {9: 0.5, 2: -0.5, 14: 0.0, 0: 0.0, 7: 0.0, 4: 0.0, 1: 1.0, 5: -1.0,
                    3: 0.5e-6, 6: -0.5e-6}

# What ROW-weighting (a 3-step trajectory weighing 3x) would give instead -- must NOT happen:
# G0 row mean = (1.0 + 3*0.0 + 2*0.5)/6 = 1/3 -> Dr.GRPO traj 9: 1 - 1/3 = 2/3, traj 2: -1/3
# G3 row mean = (3.0 + 3*1.0)/4 = 1.5      -> Dr.GRPO traj 1: 1.5, traj 5: -0.5
DR_ROW_WEIGHTED = {9: 2 / 3, 2: -1 / 3, 14: 0.5 - 1 / 3, 1: 1.5, 5: -0.5}
# and a population (biased) std would give G0 std = sqrt(0.5/3) ~ 0.408 -> A(9) ~ 1.22,
# G3 std = 1 -> A(1) = 1; the unbiased values above are 1.0 and 0.707.


def _expected_rows(per_traj):
  ret, group, traj, valid = _grpo_inputs()
  return np.array([per_traj[t] if v else 0.0 for t, v in zip(traj, valid)], np.float64)


@pytest.mark.parametrize("norm_by_std,per_traj", [(True, GRPO_EXPECTED),
                                                   (False, DR_GRPO_EXPECTED)])
def test_grpo_hand_fixture(norm_by_std, per_traj):
  ret, group, traj, valid = _grpo_inputs()
  adv = np.asarray(grpo_advantages(ret, group, traj, valid, norm_by_std=norm_by_std))
  assert adv.shape == (B_GRPO,) and adv.dtype == np.float32
  assert np.all(np.isfinite(adv))
  np.testing.assert_allclose(adv, _expected_rows(per_traj), rtol=1e-6, atol=1e-7)
  # padding rows are exactly 0; all-equal group and single-trajectory group exactly 0
  for row, (t, g, _, v) in enumerate(GRPO_ROWS):
    if not v or g in (11, 0):
      assert adv[row] == 0.0, row


def test_grpo_one_value_per_trajectory():
  ret, group, traj, valid = _grpo_inputs()
  for norm_by_std in (True, False):
    adv = np.asarray(grpo_advantages(ret, group, traj, valid, norm_by_std=norm_by_std))
    for t in set(traj[valid].tolist()):
      rows = adv[(traj == t) & valid]
      assert np.all(rows == rows[0]), (t, rows)


def test_grpo_statistics_are_over_trajectories_not_rows():
  ret, group, traj, valid = _grpo_inputs()
  adv = np.asarray(grpo_advantages(ret, group, traj, valid, norm_by_std=False))
  for t, row_weighted in DR_ROW_WEIGHTED.items():
    got = adv[np.flatnonzero((traj == t) & valid)[0]]
    assert got == pytest.approx(DR_GRPO_EXPECTED[t], abs=1e-6)
    assert abs(got - row_weighted) > 0.1, (t, got, row_weighted)


def test_grpo_row_order_and_slot_ids_do_not_matter():
  """Same trajectories, rows permuted and slots renamed: each row keeps its advantage."""
  ret, group, traj, valid = _grpo_inputs()
  perm = np.random.default_rng(0).permutation(B_GRPO)
  rename = np.random.default_rng(1).permutation(B_GRPO).astype(np.int32)
  for norm_by_std, per_traj in ((True, GRPO_EXPECTED), (False, DR_GRPO_EXPECTED)):
    adv = np.asarray(grpo_advantages(ret[perm], rename[group[perm]], rename[traj[perm]],
                                     valid[perm], norm_by_std=norm_by_std))
    np.testing.assert_allclose(adv, _expected_rows(per_traj)[perm], rtol=1e-6, atol=1e-7)


# Regression: equal but non-dyadic returns (0.9) once gave |A| ~ 0.06 through float32 ulps.
@pytest.mark.parametrize("traj_id", [[0, 1, 2], [0, 1, 1, 1]])
def test_grpo_equal_non_dyadic_returns_give_zero(traj_id):
  # group of trajectories that all returned 0.9: mean 0.9, centred 0, std 0 -> A = 0 exactly.
  # (Padded with invalid rows to the fixture's length, only to reuse its compiled shapes.)
  n = len(traj_id)
  valid = np.arange(B_GRPO) < n
  traj = np.zeros(B_GRPO, np.int32)
  traj[:n] = traj_id
  adv = grpo_advantages(np.full(B_GRPO, 0.9, np.float32), np.zeros(B_GRPO, np.int32), traj, valid)
  np.testing.assert_array_equal(np.asarray(adv), np.zeros(B_GRPO, np.float32))


# ------------------------------------------------------------------------------------------
# 2. StepOPSD fixture  (B = 6 rows, R = 4 tokens)
# ------------------------------------------------------------------------------------------
# traj slot 4 = rows 0, 2, 4 (A = +2); row 3 is padding that also claims slot 4 (garbage A = 3
# and deltas that would drag slot 4's mean if it counted); traj 0 = row 1 (A = -1, one step);
# traj 2 = row 5 (A = 0). NaN/inf deltas sit only where they must be ignored.
SH_ADV = np.array([2.0, -1.0, 2.0, 3.0, 2.0, 0.0], np.float32)
SH_TRAJ = np.array([4, 0, 4, 4, 4, 2], np.int32)
SH_VALID = np.array([True, True, True, False, True, True])
SH_DELTA = np.array([
    [LN3, -LN3, LN11_9, NAN],        # row 0: last token is not a control token
    [LN3, -LN3, LN11_9, 0.0],        # row 1 (A < 0)
    [LN11_9, LN3, 5.0, -7.0],        # row 2: token 2 non-control, token 3 outside response
    [-50.0, NAN, -INF, INF],         # row 3: padding
    [100.0, -100.0, NAN, 3.0],       # row 4: no control token at all
    [LN3, -LN3, 0.0, 0.0],           # row 5 (A = 0)
], np.float32)
T, F = True, False
SH_CONTROL = np.array([
    [T, T, T, F],
    [T, T, T, T],
    [T, T, F, T],     # token 3 is "control" but outside response_mask -> not a real token
    [T, T, T, T],
    [F, F, F, F],
    [T, T, F, F],
])
SH_RESPONSE = np.array([
    [T, T, T, T],
    [T, T, T, T],
    [T, T, T, F],
    [T, T, T, T],
    [T, T, F, F],
    [T, T, T, F],
])
SH_LIVE = SH_RESPONSE & SH_VALID[:, None]       # where the output may be non-zero
SH_EFFECTIVE_CONTROL = SH_CONTROL & SH_LIVE     # the control tokens that really count
X = 1.0  # placeholder weight at positions where the output is forced to 0 anyway

# Clipped token weights, alpha_clip = 0.2 (range [0.8, 1.2]):
#   row 0 (A>0): 2s(ln3)=1.5 -> 1.2, 2s(-ln3)=0.5 -> 0.8, 2s(ln(11/9))=1.1 ; token 3 non-control
#   row 1 (A<0): sign flips delta: 2s(-ln3)=0.5 -> 0.8, 2s(ln3)=1.5 -> 1.2, 2s(-ln(11/9))=0.9,
#                2s(0) = 1.0
#   row 2 (A>0): 1.1, 1.2 ; token 2 non-control -> 1
#   row 4: no control tokens -> 1
W_NONE = np.array([
    [1.2, 0.8, 1.1, 1.0],
    [0.8, 1.2, 0.9, 1.0],
    [1.1, 1.2, 1.0, X],
    [X, X, X, X],
    [1.0, 1.0, X, X],
    [1.0, 1.0, 1.0, X],   # A = 0: 2s(0) = 1 (output is 0 anyway)
])
# "step": each step's control weights rescaled to mean 1
#   row 0: mean(1.2, 0.8, 1.1) = 3.1/3 = 31/30 -> 1.2*30/31 = 36/31, 0.8*30/31 = 24/31, 33/31
#   row 1: mean(0.8, 1.2, 0.9, 1.0) = 3.9/4 = 39/40 -> 32/39, 48/39, 36/39, 40/39
#   row 2: mean(1.1, 1.2) = 2.3/2 = 23/20 -> 22/23, 24/23
W_STEP = np.array([
    [36 / 31, 24 / 31, 33 / 31, 1.0],
    [32 / 39, 48 / 39, 36 / 39, 40 / 39],
    [22 / 23, 24 / 23, 1.0, X],
    [X, X, X, X],
    [1.0, 1.0, X, X],
    [1.0, 1.0, 1.0, X],
])
# "trajectory": W_t = mean of w over the step's control tokens
#   traj 4: W(row 0) = 31/30, W(row 2) = 23/20; row 4 has no control token (keeps 1, not in the
#           mean); row 3 is padding (not in the mean).
#           mean = (31/30 + 23/20)/2 = (62/60 + 69/60)/2 = 131/120
#           -> W(row 0) = (31/30)/(131/120) = 124/131, W(row 2) = (23/20)/(131/120) = 138/131
#           (check: (124 + 138)/2 = 131 -> mean 1)
#   traj 0: a single step, W = (39/40)/(39/40) = 1
W_TRAJ = np.array([
    [124 / 131, 124 / 131, 124 / 131, 1.0],
    [1.0, 1.0, 1.0, 1.0],
    [138 / 131, 138 / 131, 1.0, X],
    [X, X, X, X],
    [1.0, 1.0, X, X],
    [1.0, 1.0, 1.0, X],
])
HAND_W = {"none": W_NONE, "step": W_STEP, "trajectory": W_TRAJ}

# Fully written-out shaped advantages for the default budget, lambda_mix = 0.5:
#   A_hat = A * (0.5 + 0.5 w):  row 0 control: 2*(0.5 + 0.5*124/131) = 1 + 124/131 = 255/131
#                               row 2 control: 1 + 138/131 = 269/131
#                               non-control tokens of A = 2 rows: 2*(0.5+0.5) = 2
#                               row 1: -1 * (0.5 + 0.5*1) = -1
SHAPED_TRAJ_HALF = np.array([
    [255 / 131, 255 / 131, 255 / 131, 2.0],
    [-1.0, -1.0, -1.0, -1.0],
    [269 / 131, 269 / 131, 2.0, 0.0],
    [0.0, 0.0, 0.0, 0.0],
    [2.0, 2.0, 0.0, 0.0],
    [0.0, 0.0, 0.0, 0.0],
])


def _shape(budget, alpha_clip=0.2, lambda_mix=0.5, adv=SH_ADV):
  return np.asarray(stepopsd_shape(adv, SH_DELTA, SH_CONTROL, SH_RESPONSE, SH_TRAJ, SH_VALID,
                                   alpha_clip, lambda_mix, credit_budget=budget).adv_tokens)


def test_token_weights_hand_values():
  adv = np.array([2.0, -1.0, 0.0], np.float32)
  delta = np.tile(np.array([LN3, -LN3, 0.0, 1e4, -1e4, LN11_9], np.float32), (3, 1))
  # alpha 0.2: 1.5 -> 1.2, 0.5 -> 0.8, 1 -> 1, 2 -> 1.2, 0 -> 0.8, 1.1 stays
  np.testing.assert_allclose(np.asarray(token_weights(adv, delta, 0.2)), [
      [1.2, 0.8, 1.0, 1.2, 0.8, 1.1],
      [0.8, 1.2, 1.0, 0.8, 1.2, 0.9],   # A < 0 flips the sign of delta
      [1.0, 1.0, 1.0, 1.0, 1.0, 1.0],   # A = 0: 2*sigmoid(0) = 1
  ], rtol=1e-6)
  # alpha 0.6 (range [0.4, 1.6]): 1.5 and 0.5 pass unclipped, +-1e4 clip to 1.6 / 0.4
  np.testing.assert_allclose(np.asarray(token_weights(adv, delta, 0.6)), [
      [1.5, 0.5, 1.0, 1.6, 0.4, 1.1],
      [0.5, 1.5, 1.0, 0.4, 1.6, 0.9],
      [1.0, 1.0, 1.0, 1.0, 1.0, 1.0],
  ], rtol=1e-6)


@pytest.mark.parametrize("budget", CREDIT_BUDGETS)
def test_apply_credit_budget_hand_values(budget):
  w = token_weights(SH_ADV, SH_DELTA, 0.2)
  got = np.asarray(apply_credit_budget(w, SH_EFFECTIVE_CONTROL, SH_TRAJ, SH_VALID, budget))
  live = SH_LIVE & (SH_ADV != 0)[:, None]
  np.testing.assert_allclose(got[live], HAND_W[budget][live], rtol=1e-6)
  # tokens outside the control mask get weight exactly 1
  assert np.all(got[~SH_EFFECTIVE_CONTROL] == 1.0)


def test_trajectory_budget_averages_one_over_controlled_steps():
  w = token_weights(SH_ADV, SH_DELTA, 0.2)
  got = np.asarray(apply_credit_budget(w, SH_EFFECTIVE_CONTROL, SH_TRAJ, SH_VALID, "trajectory"))
  # traj 4: steps with control tokens are rows 0 and 2 (row 4 has none, row 3 is padding)
  assert (got[0, 0] + got[2, 0]) / 2 == pytest.approx(1.0, abs=1e-6)
  # one weight per step on its control tokens
  assert np.all(got[0, :3] == got[0, 0]) and np.all(got[2, :2] == got[2, 0])


@pytest.mark.parametrize("budget", CREDIT_BUDGETS)
@pytest.mark.parametrize("lambda_mix", [0.25, 0.5, 1.0])
def test_stepopsd_shape_hand_values(budget, lambda_mix):
  shaped = _shape(budget, lambda_mix=lambda_mix)
  assert shaped.shape == SH_DELTA.shape and shaped.dtype == np.float32
  assert np.all(np.isfinite(shaped))
  # A_hat = (1 - lambda) A + lambda w A with the hand weights above; 0 off the live tokens
  expected = np.where(SH_LIVE, SH_ADV[:, None] * ((1 - lambda_mix) + lambda_mix * HAND_W[budget]),
                      0.0)
  np.testing.assert_allclose(shaped, expected, rtol=1e-6, atol=1e-7)
  # padding rows and tokens outside response_mask are exactly 0
  assert np.all(shaped[~SH_LIVE] == 0.0)
  # tokens outside control_mask keep weight 1: shaped == A there, exactly
  keep = SH_LIVE & ~SH_EFFECTIVE_CONTROL
  np.testing.assert_array_equal(shaped[keep], np.broadcast_to(SH_ADV[:, None], keep.shape)[keep])
  # A = 0 row: everything 0
  assert np.all(shaped[5] == 0.0)


def test_stepopsd_shape_default_budget_written_out():
  np.testing.assert_allclose(
      np.asarray(stepopsd_shape(SH_ADV, SH_DELTA, SH_CONTROL, SH_RESPONSE, SH_TRAJ, SH_VALID,
                                0.2, 0.5).adv_tokens),  # default credit_budget = "trajectory"
      SHAPED_TRAJ_HALF, rtol=1e-6, atol=1e-7)


def test_stepopsd_shape_wide_clip_keeps_raw_weights():
  # alpha_clip 0.6: nothing in rows 0-2 clips; "none" budget, lambda 1 -> A_hat = w A
  #   row 0: 2*1.5 = 3, 2*0.5 = 1, 2*1.1 = 2.2, non-control 2
  #   row 1: -1*0.5, -1*1.5, -1*0.9, -1*1.0
  #   row 2: 2*1.1 = 2.2, 2*1.5 = 3, non-control 2, outside response 0
  shaped = _shape("none", alpha_clip=0.6, lambda_mix=1.0)
  np.testing.assert_allclose(shaped[:3], [[3.0, 1.0, 2.2, 2.0],
                                          [-0.5, -1.5, -0.9, -1.0],
                                          [2.2, 3.0, 2.0, 0.0]], rtol=1e-6)


# ------------------------------------------------------------------------------------------
# 3. lambda_mix = 0 reproduces GRPO bit for bit
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("budget", CREDIT_BUDGETS)
@pytest.mark.parametrize("seed", range(3))
def test_lambda_zero_is_grpo_bit_for_bit(budget, seed):
  rng = np.random.default_rng(seed)
  b, r = 6, 5
  adv = rng.normal(size=b).astype(np.float32) * 3
  delta = (rng.normal(size=(b, r)) * 10).astype(np.float32)
  control = rng.random((b, r)) < 0.6
  response = rng.random((b, r)) < 0.8
  traj = rng.integers(0, b, b).astype(np.int32)
  valid = rng.random(b) < 0.8
  shaped = stepopsd_shape(adv, delta, control, response, traj, valid, 0.3, 0.0,
                          credit_budget=budget).adv_tokens
  expected = np.where(response & valid[:, None], adv[:, None], np.float32(0.0))
  np.testing.assert_array_equal(np.asarray(shaped), expected)


# ------------------------------------------------------------------------------------------
# 4. Property: the sign of A never flips
# ------------------------------------------------------------------------------------------
_finite_f32 = st.floats(allow_nan=False, allow_infinity=False, width=32)
_delta_el = st.one_of(_finite_f32, st.sampled_from([1e4, -1e4, 0.0, LN3, -LN3]))
# Advantages bounded away from float32 underflow (|A| >= ~1e-3 or exactly 0): A * (1 - alpha)
# with alpha -> 1 is still far above the smallest normal float32.
_A_MIN = float(np.float32(1e-3))
_adv_el = st.one_of(st.just(0.0), st.floats(_A_MIN, 10.0, width=32),
                    st.floats(-10.0, -_A_MIN, width=32))
B_MAX, R_MAX = 6, 5


@st.composite
def _shaping_inputs(draw):
  """A batch of B <= 6 rows and R <= 5 tokens, embedded in a fixed [6, 5] buffer whose extra
  rows are padding (row_valid False) and extra columns are outside response_mask, all filled
  with garbage. One fixed shape keeps eager dispatch cached (each new shape recompiles)."""
  b = draw(st.integers(1, B_MAX))
  r = draw(st.integers(1, R_MAX))
  traj = np.concatenate([draw(hnp.arrays(np.int32, b, elements=st.integers(0, b - 1))),
                         draw(hnp.arrays(np.int32, B_MAX - b, elements=st.integers(0, B_MAX - 1)))])
  adv_traj = draw(hnp.arrays(np.float32, B_MAX, elements=_adv_el))
  adv = adv_traj[traj]  # one advantage per trajectory, as GRPO gives
  adv[b:] = draw(hnp.arrays(np.float32, B_MAX - b, elements=_adv_el))  # garbage on padding
  row_valid = draw(hnp.arrays(bool, B_MAX))
  row_valid[b:] = False
  response_mask = draw(hnp.arrays(bool, (B_MAX, R_MAX)))
  response_mask[:, r:] = False
  return dict(
      adv=adv,
      delta=draw(hnp.arrays(np.float32, (B_MAX, R_MAX), elements=_delta_el)),
      control_mask=draw(hnp.arrays(bool, (B_MAX, R_MAX))),
      response_mask=response_mask,
      traj_id=traj,
      row_valid=row_valid,
      alpha_clip=draw(st.floats(0.0, 1.0, exclude_min=True, exclude_max=True)),
      lambda_mix=draw(st.floats(0.0, 1.0)),
  )


@hypothesis.settings(max_examples=50, deadline=None)
@hypothesis.given(inputs=_shaping_inputs())
def test_sign_of_advantage_never_flips(inputs):
  live = inputs["response_mask"] & inputs["row_valid"][:, None]
  want = np.broadcast_to(np.sign(inputs["adv"])[:, None], live.shape)[live]
  for budget in CREDIT_BUDGETS:
    shaped = np.asarray(stepopsd_shape(**inputs, credit_budget=budget).adv_tokens)
    assert np.all(np.isfinite(shaped)), budget
    np.testing.assert_array_equal(np.sign(shaped[live]), want, err_msg=budget)
    assert np.all(shaped[~live] == 0.0), budget


# ------------------------------------------------------------------------------------------
# 5. jit == eager
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("norm_by_std", [True, False])
def test_grpo_jit_matches_eager(norm_by_std):
  args = _grpo_inputs()
  eager = np.asarray(grpo_advantages(*args, norm_by_std=norm_by_std))
  jitted = np.asarray(jax.jit(grpo_advantages, static_argnames="norm_by_std")(
      *args, norm_by_std=norm_by_std))
  np.testing.assert_allclose(jitted, eager, rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(jitted, _expected_rows(
      GRPO_EXPECTED if norm_by_std else DR_GRPO_EXPECTED), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("budget", CREDIT_BUDGETS)
def test_stepopsd_jit_matches_eager(budget):
  jitted_fn = jax.jit(stepopsd_shape, static_argnames="credit_budget")
  for alpha_clip, lambda_mix in ((0.2, 0.5), (0.6, 1.0), (0.2, 0.0)):
    eager = _shape(budget, alpha_clip, lambda_mix)
    jitted = np.asarray(jitted_fn(jnp.asarray(SH_ADV), SH_DELTA, SH_CONTROL, SH_RESPONSE,
                                  SH_TRAJ, SH_VALID, alpha_clip, lambda_mix,
                                  credit_budget=budget).adv_tokens)
    np.testing.assert_allclose(jitted, eager, rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(
      np.asarray(jitted_fn(SH_ADV, SH_DELTA, SH_CONTROL, SH_RESPONSE, SH_TRAJ, SH_VALID, 0.2, 0.5,
                           credit_budget=budget).adv_tokens),
      np.where(SH_LIVE, SH_ADV[:, None] * (0.5 + 0.5 * HAND_W[budget]), 0.0),
      rtol=1e-6, atol=1e-7)


# ------------------------------------------------------------------------------------------
# 6. invalid credit budget
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", ["traj", "Trajectory", "", "tokens"])
def test_invalid_credit_budget_raises(bad):
  with pytest.raises(ValueError) as err:
    _shape(bad)
  for choice in ("trajectory", "step", "none"):
    assert choice in str(err.value)
  with pytest.raises(ValueError, match="trajectory"):
    jax.jit(stepopsd_shape, static_argnames="credit_budget")(
        SH_ADV, SH_DELTA, SH_CONTROL, SH_RESPONSE, SH_TRAJ, SH_VALID, 0.2, 0.5,
        credit_budget=bad)
