"""Clipped value loss and explained variance (critic estimators); the per-token KL estimators."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stepopsd_jax.algorithms import (KL_ESTIMATORS, explained_variance, kl, value_loss,
                                     value_loss_terms)
from stepopsd_jax.algorithms.opsd import distillation_terms

T, F = True, False

# ------------------------------------------------------------------------------------------
# Value loss, clip 0.2:  V_clip = old + clip(V - old, -0.2, 0.2);  0.5 * max((V-G)^2, (V_clip-G)^2)
# ------------------------------------------------------------------------------------------
#   0: V 1.0, old 0.5, G 2.0: V - old = 0.5 -> 0.2, V_clip 0.7; (1-2)^2 = 1, (0.7-2)^2 = 1.69
#      -> 0.5*1.69 = 0.845, clipped branch larger
#   1: V 1.0, old 0.9, G 0.0: inside the clip, V_clip = V: 1 vs 1 -> 0.5, not clipped
#   2: V 0.0, old 1.0, G 0.5: -1 -> -0.2, V_clip 0.8; 0.25 vs 0.09 -> 0.125, not clipped
#   3: V 0.3, old 0.0, G 0.0: 0.3 -> 0.2, V_clip 0.2; 0.09 vs 0.04 -> 0.045, not clipped
#   4: masked out (garbage 1e6)
VALUES = np.array([1.0, 1.0, 0.0, 0.3, 1e6], np.float32)
OLD = np.array([0.5, 0.9, 1.0, 0.0, -1e6], np.float32)
RETURNS = np.array([2.0, 0.0, 0.5, 0.0, 0.0], np.float32)
MASK = np.array([T, T, T, T, F])
TERMS = [0.845, 0.5, 0.125, 0.045]
CLIPPED = [T, F, F, F]


def test_value_loss_terms_hand_values():
  terms, clipped = value_loss_terms(VALUES, OLD, RETURNS, 0.2)
  np.testing.assert_allclose(np.asarray(terms)[:4], TERMS, rtol=1e-6)
  np.testing.assert_array_equal(np.asarray(clipped)[:4], CLIPPED)
  # no clip: plain 0.5 (V - G)^2 = 0.5, 0.5, 0.125, 0.045
  terms, clipped = value_loss_terms(VALUES, OLD, RETURNS, None)
  np.testing.assert_allclose(np.asarray(terms)[:4], [0.5, 0.5, 0.125, 0.045], rtol=1e-6)
  assert not np.asarray(clipped).any()


def test_value_loss_masked_mean_and_metrics():
  # (0.845 + 0.5 + 0.125 + 0.045)/4 = 1.515/4 = 0.37875; clip fraction 1/4
  loss, metrics = value_loss(VALUES, OLD, RETURNS, MASK, 0.2)
  assert float(loss) == pytest.approx(0.37875, rel=1e-6)
  assert float(metrics["value_loss"]) == pytest.approx(0.37875, rel=1e-6)
  assert float(metrics["value_clip_frac"]) == pytest.approx(0.25)
  # a micro-batch divides by the batch-wide count: 1.515/10
  loss, _ = value_loss(VALUES, OLD, RETURNS, MASK, 0.2, num_elements=jnp.asarray(10))
  assert float(loss) == pytest.approx(0.1515, rel=1e-6)
  # [B, R] token values work the same; an empty mask gives 0, not NaN
  loss, _ = value_loss(VALUES.reshape(1, 5), OLD.reshape(1, 5), RETURNS.reshape(1, 5),
                       MASK.reshape(1, 5), 0.2)
  assert float(loss) == pytest.approx(0.37875, rel=1e-6)
  loss, metrics = value_loss(VALUES, OLD, RETURNS, np.zeros(5, bool), 0.2)
  assert float(loss) == 0.0 and float(metrics["value_clip_frac"]) == 0.0


def test_value_loss_gradient_stops_at_the_clip():
  # element 0 is clipped (the clipped branch is larger): its gradient w.r.t. V is 0;
  # element 2 is not: d/dV 0.5 (V - G)^2 / 4 = (0 - 0.5)/4 = -0.125
  grad = jax.grad(lambda v: value_loss(v, OLD, RETURNS, MASK, 0.2)[0])(VALUES)
  np.testing.assert_allclose(np.asarray(grad), [0.0, 0.25, -0.125, 0.075, 0.0], atol=1e-7)


# ------------------------------------------------------------------------------------------
# Explained variance: 1 - Var(G - V) / Var(G)
# ------------------------------------------------------------------------------------------
def test_explained_variance_hand_values():
  # G = (1, 2, 3, 4), V = (1, 2, 3, 5): Var(G) = (2.25 + 0.25 + 0.25 + 2.25)/4 = 1.25;
  # G - V = (0, 0, 0, -1), mean -0.25, Var = (3*0.0625 + 0.5625)/4 = 0.1875
  # -> 1 - 0.1875/1.25 = 0.85. The fifth element is masked garbage.
  g = np.array([1, 2, 3, 4, 1e9], np.float32)
  v = np.array([1, 2, 3, 5, -1e9], np.float32)
  mask = np.array([T, T, T, T, F])
  assert float(explained_variance(v, g, mask)) == pytest.approx(0.85, rel=1e-6)
  assert float(explained_variance(g, g, mask)) == pytest.approx(1.0)           # perfect critic
  assert float(explained_variance(np.full(5, 2.5, np.float32), g, mask)) == pytest.approx(0.0)
  # constant returns (0.9, not exact in float32) or an empty mask: 0, not NaN / inf
  const = np.full(5, 0.9, np.float32)
  assert float(explained_variance(v, const, mask)) == 0.0
  assert float(explained_variance(v, g, np.zeros(5, bool))) == 0.0


# ------------------------------------------------------------------------------------------
# OPSD per-token reverse KL, l = log pi_student - log pi_teacher on the sampled token
# ------------------------------------------------------------------------------------------
#   token 0: student -1, teacher -2 -> l = 1;  token 1: -2 vs -1 -> l = -1;  token 2: l = 0
#   token 3: outside the response, teacher log-prob -inf (would be inf - inf = NaN)
#   k1 = l: 1, -1, 0
#   k2 = l^2/2: 0.5, 0.5, 0
#   k3 = e^{-l} - 1 + l: e^{-1} = 0.3678794, e - 2 = 0.7182818, 0
STUDENT = np.array([[-1.0, -2.0, -0.5, -3.0]], np.float32)
TEACHER = np.array([[-2.0, -1.0, -0.5, -np.inf]], np.float32)
RESPONSE = np.array([[T, T, T, F]])
KL_HAND = {"k1": [1.0, -1.0, 0.0, 0.0], "k2": [0.5, 0.5, 0.0, 0.0],
           "k3": [math.exp(-1), math.e - 2, 0.0, 0.0]}


@pytest.mark.parametrize("estimator", KL_ESTIMATORS)
def test_kl_terms_hand_values(estimator):
  terms = np.asarray(kl(STUDENT, TEACHER, RESPONSE, estimator))
  assert np.all(np.isfinite(terms))
  np.testing.assert_allclose(terms[0], KL_HAND[estimator], rtol=1e-6, atol=1e-7)
  for has in (True, False):  # OPSD distils only rows whose teacher saw a hindsight block
    got = np.asarray(distillation_terms(STUDENT, TEACHER, RESPONSE, np.array([has]), estimator))
    np.testing.assert_allclose(got[0], KL_HAND[estimator] if has else 0.0, rtol=1e-6, atol=1e-7)


def test_opsd_kl_gradients():
  # the teacher never gets gradient (self-distillation shares its parameters);
  # k2's gradient w.r.t. the student log-prob is l: 1, -1, 0 (0 off the response)
  def loss(s, t):
    return jnp.sum(kl(s, t, RESPONSE, "k2"))
  g_student, g_teacher = jax.grad(loss, argnums=(0, 1))(STUDENT, np.where(RESPONSE, TEACHER, 0.0))
  np.testing.assert_allclose(np.asarray(g_student), [[1.0, -1.0, 0.0, 0.0]], atol=1e-7)
  np.testing.assert_array_equal(np.asarray(g_teacher), 0.0)


def test_opsd_kl_unknown_estimator():
  with pytest.raises(ValueError, match="k2"):
    kl(STUDENT, TEACHER, RESPONSE, "k4")
