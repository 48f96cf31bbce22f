"""StepBatch padding: `repad` to larger shapes equals building at those shapes directly."""

import numpy as np
import pytest

from stepopsd_jax.rollout.stepbatch import StepRow, build_step_batch, repad
from stepopsd_jax.sampling import Buckets


def _rows():
  rng = np.random.default_rng(0)
  rows = []
  for i in range(5):
    n = int(rng.integers(1, 6))
    rows.append(StepRow(prompt=list(rng.integers(1, 50, 3 + 2 * i)),
                        teacher_prompt=list(rng.integers(1, 50, 7 + i)),
                        response=list(rng.integers(1, 50, n)), logprobs=list(-rng.random(n)),
                        control=[True] * n, traj_id=i // 2, step_idx=i % 2, group_id=i // 4,
                        step_reward=float(i % 2), anchor_id=i, traj_return=1.0,
                        traj_success=True))
  return rows


def test_repad_equals_building_at_the_larger_buckets():
  rows = _rows()
  small = build_step_batch(rows, pad_id=99, response_len=6,
                           buckets=Buckets(batch=(8,), prompt=(16,))).arrays()
  large = build_step_batch(rows, pad_id=99, response_len=6,
                           buckets=Buckets(batch=(16,), prompt=(32,))).arrays()
  grown = repad(small, 16, 32, 32, pad_id=99)
  assert grown.keys() == large.keys()
  for k in large:
    assert grown[k].dtype == large[k].dtype, k
    np.testing.assert_array_equal(grown[k], large[k], err_msg=k)


def test_repad_refuses_to_shrink():
  small = build_step_batch(_rows(), pad_id=0, response_len=6,
                           buckets=Buckets(batch=(8,), prompt=(16,))).arrays()
  with pytest.raises(ValueError, match="only grow"):
    repad(small, 8, 8, 16)
