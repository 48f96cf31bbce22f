"""StepBatch padding: `repad` to larger shapes equals building at those shapes directly."""

import dataclasses

import numpy as np
import pytest

from stepopsd_jax.batch import StepBatch
from stepopsd_jax.rollout.stepbatch import StepRow, build_step_batch
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
                           buckets=Buckets(batch=(8,), prompt=(16,)))
  large = build_step_batch(rows, pad_id=99, response_len=6,
                           buckets=Buckets(batch=(16,), prompt=(32,)))
  grown = small.repad(16, 32, 32, pad_id=99)
  for f in dataclasses.fields(StepBatch):
    got, want = getattr(grown, f.name), getattr(large, f.name)
    assert got.dtype == want.dtype, f.name
    np.testing.assert_array_equal(got, want, err_msg=f.name)


def test_repad_refuses_to_shrink():
  small = build_step_batch(_rows(), pad_id=0, response_len=6,
                           buckets=Buckets(batch=(8,), prompt=(16,)))
  with pytest.raises(ValueError, match="only grow"):
    small.repad(8, 8, 16)


def test_abstract_shapes_follow_the_field_declarations():
  """`StepBatch.abstract` (the AOT compile's input) has a built batch's shapes and dtypes."""
  built = build_step_batch(_rows(), pad_id=0, response_len=6,
                           buckets=Buckets(batch=(8,), prompt=(16,)))
  abstract = StepBatch.abstract(8, 16, 16, 6)
  for f in dataclasses.fields(StepBatch):
    got, want = getattr(abstract, f.name), getattr(built, f.name)
    assert (got.shape, got.dtype) == (want.shape, want.dtype), f.name


def test_rows_bucket_apart_from_the_samplers_batch():
  """A StepBatch's rows (agent steps) take `Buckets.rows` when given, not the sampler's batch."""
  rows = _rows()  # 8 rows
  built = build_step_batch(rows, pad_id=0, response_len=6,
                           buckets=Buckets(batch=(2, 4), prompt=(16,), rows=(64,)))
  assert built.prompt_tokens.shape[0] == 64
  assert build_step_batch(rows, pad_id=0, response_len=6,
                          buckets=Buckets(batch=(8, 16), prompt=(16,))).prompt_tokens.shape[0] == 8
