"""The hindsight block: whose actions it shows, what it leaves out, how it is shortened to fit."""

from stepopsd_jax.rollout import hindsight
from stepopsd_jax.rollout.hindsight import Hindsight


def test_the_demo_is_another_winner_never_oneself():
  wins, lengths = [True, False, True, True, False], [3, 2, 2, 1, 4]
  group = [0, 1, 2, 4]  # trajectory 3 won but is in another group
  assert hindsight.demo_source(wins, lengths, group, 0) == 2  # the other winner
  assert hindsight.demo_source(wins, lengths, group, 2) == 0  # not itself, though shorter
  assert hindsight.demo_source(wins, lengths, group, 1) == 2  # the shortest winner
  assert hindsight.demo_source(wins, lengths, [3, 4], 3) is None  # a lone winner: nobody
  assert hindsight.demo_source(wins, lengths, [1, 4], 1) is None  # no winner at all
  assert hindsight.demo_source([True, True, True], [2, 2, 2], [0, 1, 2], 0) == 1  # ties: lowest


def test_the_block_skips_failed_steps_and_keeps_their_numbers():
  h = Hindsight(False, -0.1, ("go north", "", "take key"), None)
  assert hindsight.block(h, step=0) == (
      "[Hindsight] This attempt failed (return -0.1).\n"
      "A successful attempt at this task took these actions: 1. go north; 3. take key")
  assert hindsight.block(Hindsight(True, 1.0, None, None), step=0) is None  # nothing privileged
  assert hindsight.block(Hindsight(True, 1.0, None, "Paris"), step=2) == (
      "[Hindsight] This attempt succeeded (return 1).\nReference: Paris")


def test_a_radius_keeps_the_actions_around_the_current_step():
  h = Hindsight(True, 1.0, tuple("abcdefg"), None)
  text = hindsight.block(h, step=3, radius=1)
  assert text.endswith("took these actions: ...; 3. c; 4. d; 5. e; ...")
  assert hindsight.block(h, step=0, radius=0).endswith("actions: 1. a; ...")


def _chars(text):  # one token per character: lengths are easy to compute by hand
  return [ord(c) for c in text]


def test_a_block_too_long_for_the_bucket_is_shortened_and_the_student_text_stays_whole():
  user = "U" * 20
  student = _chars(user)
  h = Hindsight(False, 0.0, ("aaaa", "bbbb", "cccc", "dddd"), "the reference text")
  full = user + "\n\n" + hindsight.block(h, step=1)
  fitted = hindsight.teacher_prompt(_chars, user, h, step=1, limit=len(full), student=student)
  assert fitted.tokens == _chars(full) and fitted.has_hindsight and not fitted.shortened
  # One character short: the farthest step (4) goes first.
  fitted = hindsight.teacher_prompt(_chars, user, h, step=1, limit=len(full) - 1,
                                    student=student)
  text = "".join(map(chr, fitted.tokens))
  assert fitted.shortened and fitted.has_hindsight and text.startswith(user + "\n\n")
  assert "1. aaaa; 2. bbbb; 3. cccc; ...\nReference: the reference text" in text
  # Room for the outcome line and step 2's action only: the reference is cut to nothing.
  outcome = "[Hindsight] This attempt failed (return 0).\n"
  tight = len(user) + 2 + len(outcome) + len("A successful attempt at this task took these "
                                             "actions: ...; 2. bbbb; ...\nReference: ...")
  text = "".join(map(chr, hindsight.teacher_prompt(_chars, user, h, 1, tight, student).tokens))
  assert text.endswith("...; 2. bbbb; ...\nReference: ...") and len(text) == tight
  # No room at all: the student prompt, no block, counted as shortened (dropped).
  fitted = hindsight.teacher_prompt(_chars, user, h, step=1, limit=len(user) + 5,
                                    student=student)
  assert fitted.tokens == student and not fitted.has_hindsight and fitted.shortened


def test_a_student_prompt_at_the_limit_gets_no_block():
  h = Hindsight(True, 1.0, ("a",), None)
  student = list(range(8))
  fitted = hindsight.teacher_prompt(_chars, "x" * 8, h, 0, limit=8, student=student)
  assert fitted.tokens == student and not fitted.has_hindsight and fitted.shortened
