"""The monolithic OPSD baseline (DESIGN 4.7): token-level self-distillation towards the hindsight
teacher, added to the GRPO loss.

The student pi_s samples the response; the teacher is the same model given the hindsight block,
pi_t. On every response token of a row that has a block, the loss adds

    beta * KL(pi_s || pi_t)     estimated per sampled token by `losses.kl` (k2 by default: its
                                gradient is the reverse KL's), no step segmentation.

Rows without a block contribute nothing (their teacher saw the student's own prompt). The
teacher log-probs are stop-gradient, so a self-distillation teacher that shares the student's
parameters never receives gradient.
"""

from __future__ import annotations

from jaxtyping import Array, Bool, Float

from stepopsd_jax.algorithms import losses


def distillation_terms(student_logp: Float[Array, "B R"], teacher_logp: Float[Array, "B R"],
                       response_mask: Bool[Array, "B R"], has_hindsight: Bool[Array, "B"],
                       estimator: str = "k2") -> Float[Array, "B R"]:
  """Per-token KL(student || teacher) estimate on rows with a hindsight block; 0 elsewhere."""
  return losses.kl(student_logp, teacher_logp, response_mask & has_hindsight[:, None], estimator)
