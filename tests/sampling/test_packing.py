"""Packing prompts into prefill rows, against layouts worked by hand."""

import numpy as np
import pytest

from stepopsd_jax.sampling import packing


def test_pack_places_the_longest_first_into_the_first_row_with_room():
  p0, p1, p2 = [11, 12, 13, 14, 15], [21, 22, 23], [31, 32, 33, 34]
  packed = packing.pack([p0, p1, p2], width=8, rows_multiple=1)
  # by hand: p0 (5) -> row 0; p2 (4) does not fit after it -> row 1; p1 (3) -> row 0 at 5
  np.testing.assert_array_equal(packed.tokens, [p0 + p1, p2 + [0] * 4])
  np.testing.assert_array_equal(packed.positions,
                                [[0, 1, 2, 3, 4, 0, 1, 2], [0, 1, 2, 3] + [0] * 4])
  np.testing.assert_array_equal(packed.segments, [[1] * 5 + [2] * 3, [3] * 4 + [0] * 4])
  np.testing.assert_array_equal(packed.starts, [0, 5, 8])
  assert packing.pack([p0, p1, p2], width=8, rows_multiple=4).tokens.shape == (4, 8)
  assert packing.pack([p0] * 3, width=8).tokens.shape == (4, 8)  # 3 rows -> 4
  with pytest.raises(ValueError, match="more than the packing width"):
    packing.pack([p0], width=4)


def test_unpack_index_puts_each_rows_prompt_at_the_right_of_its_slots():
  index, mask = packing.unpack_index(
      np.array([5, 3, 4]), np.array([0, 5, 8]), np.array([1, 0, 2, 0]),
      np.array([True, True, True, False]), width=8)
  np.testing.assert_array_equal(mask, [[0] * 5 + [1] * 3, [0] * 3 + [1] * 5, [0] * 4 + [1] * 4,
                                       [0] * 8])
  np.testing.assert_array_equal(index, [[0] * 5 + [5, 6, 7], [0] * 3 + [0, 1, 2, 3, 4],
                                        [0] * 4 + [8, 9, 10, 11], [0] * 8])
