"""Action parsing and control masks on hand-made token texts."""

import numpy as np
import pytest

from stepopsd_jax.rollout import control_mask, parse_action


@pytest.mark.parametrize("text,action,reason", [
    ("<think>x</think><action> open red door </action>", "open red door", "ok"),
    ("<action>a</action><action>b</action>", "a", "ok"),
    ("no tags at all", "", "no_tags"),
    ("<action>open red", "", "unclosed"),
    ("<action>   </action>", "", "empty"),
    ("<action>" + "x" * 500 + "</action>", "", "overlong"),
    ("<action>op\ufffden</action>", "", "bad_utf8"),
])
def test_parse_action(text, action, reason):
  parsed = parse_action(text)
  assert (parsed.action, parsed.reason, parsed.valid) == (action, reason, reason == "ok")


def test_action_only_mask_marks_tokens_between_the_tags():
  tokens = ["<think>", "hm", "</think>", "<act", "ion>", "open", " red", " door", "</action>", "!"]
  np.testing.assert_array_equal(control_mask(tokens, "action_only"),
                                [0, 0, 0, 0, 0, 1, 1, 1, 0, 0])
  straddling = ["<action>op", "en", "</action>"]
  np.testing.assert_array_equal(control_mask(straddling, "action_only"), [1, 1, 0])
  assert not control_mask(["no", " tags"], "action_only").any()


def test_no_observation_mask_drops_copied_information():
  tokens = ["<search>", "q", "</search>", "<information>", "doc", "</information>", "<answer>"]
  np.testing.assert_array_equal(control_mask(tokens, "no_observation"), [1, 1, 1, 0, 0, 0, 1])
  assert control_mask(tokens, "all").all()
  with pytest.raises(ValueError, match="action_only"):
    control_mask(tokens, "actions")
