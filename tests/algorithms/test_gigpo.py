"""GiGPO (DESIGN 4.4): episode advantage + omega * step advantage from anchor groups."""

import inspect
import math

import hypothesis
from hypothesis import strategies as st
import jax
import numpy as np
import pytest

from stepopsd_jax.algorithms import (anchor_groups, discounted_return_to_go, gigpo_advantages,
                                     gigpo_step_advantages, grpo_advantages)
from tests.algorithms import step_fixture as fx

EPS = fx.EPS
GAMMA = 0.5


# Jitted once per static variant (gamma and omega are traced): compiles dominate test time.
_gigpo_jit = jax.jit(gigpo_advantages, static_argnames="norm_by_std")
_step_jit = jax.jit(gigpo_step_advantages, static_argnames="norm_by_std")


def _gigpo(inputs=None, gamma=0.95, step_weight=1.0, norm_by_std=True):
  a = inputs or fx.arrays()
  return _gigpo_jit(a["traj_return"], a["step_reward"], a["group_id"], a["traj_id"],
                    a["step_idx"], a["anchor_id"], a["row_valid"], gamma, step_weight,
                    norm_by_std=norm_by_std)


def _step(inputs=None, gamma=0.95, norm_by_std=True):
  a = inputs or fx.arrays()
  return _step_jit(a["step_reward"], a["group_id"], a["traj_id"], a["step_idx"], a["anchor_id"],
                   a["row_valid"], gamma, norm_by_std=norm_by_std)


# Discounted return from each step, gamma = 0.5:
#   traj 5 (rewards 0, 0, 1): G2 = 1, G1 = 0 + 0.5*1 = 0.5, G0 = 0 + 0.5*0.5 = 0.25
#   traj 1 (0): G0 = 0       traj 7 (0, 0.5): G1 = 0.5, G0 = 0.25
#   traj 2 (0, 1): G1 = 1, G0 = 0.5       traj 0 (1): G0 = 1        traj 4 (2.5): G0 = 2.5
RETURN_TO_GO = {(5, 0): 0.25, (5, 1): 0.5, (5, 2): 1.0, (1, 0): 0.0, (7, 0): 0.25, (7, 1): 0.5,
                (2, 0): 0.5, (2, 1): 1.0, (0, 0): 1.0, (4, 0): 2.5}

# Anchor groups = (group, anchor):
#   (3, 7): traj 5 s0, traj 1 s0, traj 7 s0 -> G (0.25, 0, 0.25): mean 1/6,
#           centred (1/12, -1/6, 1/12), sum sq 1/144 + 4/144 + 1/144 = 1/24, var 1/48,
#           std 1/sqrt(48) -> (1/12) sqrt(48) = 1/sqrt(3), -(1/6) sqrt(48) = -2/sqrt(3)
#   (3, 11): traj 5 s1, traj 7 s1 -> G (0.5, 0.5) all equal -> 0
#   (3, 5): traj 5 s2 alone -> 0
#   (0, 7): traj 2 s0, traj 0 s0 -> G (0.5, 1): mean 0.75, centred (-0.25, +0.25),
#           var (0.0625 * 2)/1 = 0.125 -> -+0.25/sqrt(0.125) = -+1/sqrt(2)
#   (0, 11): traj 2 s1 alone -> 0       (6, 7): traj 4 alone -> 0
S48, S0125 = 1 / math.sqrt(48) + EPS, math.sqrt(0.125) + EPS
STEP_ADV = {(5, 0): (1 / 12) / S48, (1, 0): -(1 / 6) / S48, (7, 0): (1 / 12) / S48,
            (5, 1): 0.0, (7, 1): 0.0, (5, 2): 0.0,
            (2, 0): -0.25 / S0125, (0, 0): 0.25 / S0125, (2, 1): 0.0, (4, 0): 0.0}
STEP_ADV_MEAN_NORM = {(5, 0): 1 / 12, (1, 0): -1 / 6, (7, 0): 1 / 12, (5, 1): 0.0, (7, 1): 0.0,
                      (5, 2): 0.0, (2, 0): -0.25, (0, 0): 0.25, (2, 1): 0.0, (4, 0): 0.0}
# Episode advantage (GRPO): group 3 returns (1, 0, 0.5): mean 0.5, std 0.5 -> +-0.5/(0.5+eps),
# 0; group 0 all equal -> 0; group 6 alone -> 0.   Mean-norm: +-0.5, 0.
EPISODE = {5: 0.5 / (0.5 + EPS), 1: -0.5 / (0.5 + EPS), 7: 0.0, 2: 0.0, 0: 0.0, 4: 0.0}
EPISODE_MEAN_NORM = {5: 0.5, 1: -0.5, 7: 0.0, 2: 0.0, 0: 0.0, 4: 0.0}
# Anchor-group size of each row (3 + 2 + 1 + 3 + 3 + 2 + 2 + 1 + 2 + 1 = 20 over 10 rows):
SIZES = {(5, 0): 3, (5, 1): 2, (5, 2): 1, (1, 0): 3, (7, 0): 3, (7, 1): 2, (2, 0): 2, (2, 1): 1,
         (0, 0): 2, (4, 0): 1}


def test_discounted_return_to_go_hand_values():
  a = fx.arrays()
  g = discounted_return_to_go(a["step_reward"], GAMMA, a["traj_id"], a["step_idx"],
                              a["row_valid"])
  np.testing.assert_allclose(np.asarray(g), fx.per_step(RETURN_TO_GO), rtol=1e-6)


def test_anchor_groups_hand_sizes():
  a = fx.arrays()
  seg, size = anchor_groups(a["group_id"], a["anchor_id"], a["row_valid"])
  np.testing.assert_array_equal(np.asarray(size), fx.per_step(SIZES))
  seg = np.asarray(seg)
  row = fx.ROW_OF
  assert seg[row[5, 0]] == seg[row[1, 0]] == seg[row[7, 0]]
  assert seg[row[2, 0]] == seg[row[0, 0]] != seg[row[5, 0]]  # same anchor id, other group
  assert seg[row[4, 0]] != seg[row[5, 0]] and seg[row[2, 1]] != seg[row[5, 1]]
  assert seg[3] not in seg[a["row_valid"]] and seg[10] not in seg[a["row_valid"]]  # padding


@pytest.mark.parametrize("norm_by_std,step,episode", [
    (True, STEP_ADV, EPISODE), (False, STEP_ADV_MEAN_NORM, EPISODE_MEAN_NORM)])
@pytest.mark.parametrize("omega", [1.0, 0.5])
def test_gigpo_hand_fixture(norm_by_std, step, episode, omega):
  adv, metrics = _gigpo(gamma=GAMMA, step_weight=omega, norm_by_std=norm_by_std)
  adv = np.asarray(adv)
  assert adv.shape == (fx.B,) and adv.dtype == np.float32 and np.all(np.isfinite(adv))
  expected = fx.per_traj(episode) + omega * fx.per_step(step)
  np.testing.assert_allclose(adv, expected, rtol=1e-5, atol=1e-6)
  assert np.all(adv[~fx.arrays()["row_valid"]] == 0.0)
  # group 0 has all-equal returns: no episode credit, but its steps still get step credit
  assert adv[fx.ROW_OF[2, 1]] == 0.0 and adv[fx.ROW_OF[2, 0]] < 0 < adv[fx.ROW_OF[0, 0]]
  # 6 anchor groups over 10 rows; row-weighted mean size 20/10; 3 singleton rows
  assert float(metrics["gigpo/anchor_groups"]) == pytest.approx(6.0)
  assert float(metrics["gigpo/anchor_group_size_mean"]) == pytest.approx(10 / 6)
  assert float(metrics["gigpo/anchor_group_size_row_mean"]) == pytest.approx(2.0)
  assert float(metrics["gigpo/anchor_group_size_max"]) == 3.0
  assert float(metrics["gigpo/anchor_singleton_row_frac"]) == pytest.approx(0.3)


def test_step_advantages_hand_values():
  adv_s, size = _step(gamma=GAMMA)
  np.testing.assert_allclose(np.asarray(adv_s), fx.per_step(STEP_ADV), rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(np.asarray(size), fx.per_step(SIZES))


def test_default_gamma_is_0p95():
  # traj 5 (rewards 0, 0, 1): G0 = 0.95^2 = 0.9025 and traj 7 (0, 0.5): G0 = 0.95 * 0.5 = 0.475,
  # traj 1: 0. Mean-norm step advantage of traj 1's first step: 0 - (0.9025 + 0 + 0.475)/3
  # = -1.3775/3
  for fn in (gigpo_advantages, gigpo_step_advantages):
    assert inspect.signature(fn).parameters["gamma"].default == 0.95
  adv_s, _ = _step(gamma=0.95, norm_by_std=False)
  assert float(adv_s[fx.ROW_OF[1, 0]]) == pytest.approx(-1.3775 / 3, rel=1e-6)


@pytest.mark.parametrize("norm_by_std", [True, False])
def test_all_singleton_anchor_groups_equal_grpo(norm_by_std):
  a = fx.arrays()
  a["anchor_id"] = np.arange(fx.B, dtype=np.int32)  # every step's observation is unique
  adv, metrics = _gigpo(a, gamma=GAMMA, norm_by_std=norm_by_std)
  grpo = grpo_advantages(a["traj_return"], a["group_id"], a["traj_id"], a["row_valid"],
                         norm_by_std)
  np.testing.assert_array_equal(np.asarray(adv), np.asarray(grpo))
  assert float(metrics["gigpo/anchor_singleton_row_frac"]) == 1.0


def test_all_padding_gives_zero():
  a = fx.arrays()
  a["row_valid"] = np.zeros(fx.B, bool)
  adv, metrics = _gigpo(a)
  np.testing.assert_array_equal(np.asarray(adv), 0.0)
  assert all(np.isfinite(float(v)) for v in metrics.values())


@hypothesis.settings(max_examples=25, deadline=None)
@hypothesis.given(seed=st.integers(0, 2**16), anchors=st.lists(st.integers(0, 2), min_size=fx.B,
                                                                  max_size=fx.B))
def test_rows_permuted_and_renamed_give_the_same_row_values(seed, anchors):
  a = fx.arrays()
  a["anchor_id"] = np.array(anchors, np.int32)  # small alphabet: many shared anchors
  base = np.asarray(_gigpo(a, gamma=GAMMA)[0])
  inputs, perm = fx.permuted(a, seed)
  np.testing.assert_allclose(np.asarray(_gigpo(inputs, gamma=GAMMA)[0]), base[perm], rtol=1e-5,
                             atol=1e-6)
