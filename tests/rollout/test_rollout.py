"""The rollout loop: StepBatch alignment, control masks, hindsight prompts, compiles, fuzzing."""

import jax
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stepopsd_jax import algorithms, envs, sampling
from stepopsd_jax.envs import base
from stepopsd_jax import rollout
from stepopsd_jax.rollout import RolloutConfig, collect, stepbatch
from tests.rollout.conftest import ENV, ScriptedSampler, random_policy, tiny_policy


def _real(tokens, mask):
  return [int(t) for t, m in zip(tokens, mask) if m]


@pytest.fixture(scope="module")
def random_rollout(tokenizer):
  sampler = ScriptedSampler(tokenizer, random_policy)
  tasks = envs.make_tasks(ENV, "train", 6, seed=1)
  return collect(sampler, None, tokenizer, ENV, tasks, jax.random.key(0),
                 RolloutConfig(group_size=4))


def test_student_and_teacher_rows_hold_the_same_response(random_rollout):
  b = random_rollout.batch
  student = np.concatenate([b.prompt_tokens, b.response_tokens], axis=1)
  teacher = np.concatenate([b.teacher_prompt_tokens, b.response_tokens], axis=1)
  r = b.response_tokens.shape[1]
  np.testing.assert_array_equal(student[:, -r:], teacher[:, -r:])
  valid = b.row_valid
  # Left padding: every real prompt ends in the column just before the response.
  assert b.prompt_mask[valid, -1].all() and b.teacher_prompt_mask[valid, -1].all()
  assert not b.response_mask[~valid].any() and not b.prompt_mask[~valid].any()
  assert (b.control_mask <= b.response_mask).all()


def test_control_mask_covers_exactly_the_action_tokens(random_rollout, tokenizer):
  b = random_rollout.batch
  for row in np.flatnonzero(b.row_valid):
    traj = random_rollout.trajectories[b.traj_id[row]]
    action = traj.actions[b.step_idx[row]]
    control = tokenizer.decode(_real(b.response_tokens[row], b.control_mask[row]))
    outside = _real(b.response_tokens[row], b.response_mask[row] & ~b.control_mask[row])
    assert action and action in control
    # Tokens of the action may share a token with a tag; nothing else is in the mask.
    assert len(control) - len(action) < len("<action>") + len("</action>")
    assert action not in tokenizer.decode(outside)


def test_rows_follow_trajectories_and_rewards(random_rollout):
  b, trajs = random_rollout.batch, random_rollout.trajectories
  n = b.num_rows
  assert n == sum(len(t.rows) for t in trajs) == 6 * 4 * 4  # 4 rooms per episode
  for i, traj in enumerate(trajs):
    rows = np.flatnonzero((b.traj_id == i) & b.row_valid)
    assert list(b.step_idx[rows]) == list(range(len(traj.rows)))
    assert np.all(b.group_id[rows] == i // 4)
    assert np.allclose(b.traj_return[rows], b.step_reward[rows].sum())
    assert np.all(b.traj_success[rows] == traj.won)
    assert b.step_reward[rows][-1] == float(traj.won) and not b.step_reward[rows][:-1].any()
  assert 0 < random_rollout.metrics["success"] < 1
  assert random_rollout.metrics["invalid_actions"] == 0


def test_hindsight_shows_the_shortest_other_winner_never_oneself(random_rollout, tokenizer):
  """A row's teacher sees the shortest *other* winner of its group; a lone winner, or a group
  with no winner, gets no block (teacher prompt == student prompt, has_hindsight false)."""
  b, trajs = random_rollout.batch, random_rollout.trajectories
  seen = {"block": 0, "plain": 0, "lone_winner": 0}
  for row in np.flatnonzero(b.row_valid):
    traj = trajs[b.traj_id[row]]
    student = tokenizer.decode(_real(b.prompt_tokens[row], b.prompt_mask[row]))
    teacher = tokenizer.decode(_real(b.teacher_prompt_tokens[row], b.teacher_prompt_mask[row]))
    others = [t for t in trajs if t.group_id == traj.group_id and t is not traj and t.won]
    if not others:
      assert teacher == student and not b.has_hindsight[row]
      seen["plain"] += 1
      seen["lone_winner"] += traj.won
      continue
    seen["block"] += 1
    assert b.has_hindsight[row]
    assert ("succeeded" if traj.won else "failed") in teacher
    demo_actions = min(others, key=lambda t: (len(t.rows), trajs.index(t))).actions
    assert "; ".join(f"{k + 1}. {a}" for k, a in enumerate(demo_actions)) in teacher
    head = student.split("<|im_end|>\n<|im_start|>assistant")[0]
    assert teacher.startswith(head) and teacher.endswith("<|im_start|>assistant\n")
  assert seen["block"] and seen["plain"] and seen["lone_winner"], seen
  assert random_rollout.metrics["hindsight_rows"] == seen["block"]


def test_five_turn_rollout_compiles_once_per_bucket_pair(tokenizer):
  config, weights = tiny_policy(tokenizer)
  sampler = rollout.agent_sampler(config, tokenizer, max_new_tokens=8,
                               buckets=sampling.Buckets(batch=(8, 16, 32), prompt=(128, 256, 512)),
                               pack_prompts=False)  # prefill slots = the padded shapes recorded
  used, calls = set(), []
  pad = sampler.pad

  def recording_pad(prompts):
    tokens, mask, truncated = pad(prompts)
    used.add(tokens.shape)
    calls.append((tokens.shape, sum(min(len(p), tokens.shape[1]) for p in prompts)))
    return tokens, mask, truncated

  sampler.pad = recording_pad
  tasks = envs.make_tasks(ENV, "train", 2, seed=0, horizon=5)
  before = sampling.TRACE_COUNT["generate"]
  result = collect(sampler, weights, tokenizer, ENV, tasks, jax.random.key(0),
                   RolloutConfig(group_size=2))
  assert result.metrics["turns"] == 5
  assert sampling.TRACE_COUNT["generate"] - before <= len(used) <= 2
  # every second and slot of the sampler calls is accounted for in the rollout's tally
  seconds, values = result.tally.seconds, result.tally.values
  parts = [seconds[f"generate/{p}"] for p in ("pad", "to_device", "prefill", "decode", "to_host")]
  assert all(x > 0 for x in parts) and sum(parts) <= seconds["generate"] <= seconds["total"]
  assert values["prompt_slots"] == sum(b * p for (b, p), _ in calls)
  assert values["prompt_tokens"] == sum(n for _, n in calls)
  assert values["decode_tokens"] == values["generated_tokens"]  # counted from the responses
  assert values["decode_slots"] == (values["decode_tokens"] + values["decode_after_stop_slots"]
                                    + values["decode_padding_row_slots"])
  assert "time/generate/decode_s" in result.metrics and "time/parse_s" in result.metrics


tag_soup = st.lists(st.sampled_from(["<action>", "</action>", "<think>", "</think>", "open",
                                     " red door", "\n", "<information>", "é", "", "x" * 300]),
                    max_size=12).map("".join)
raw_ids = st.lists(st.integers(0, 639), max_size=48)  # the model vocab is padded to 640


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(outputs=st.lists(st.one_of(tag_soup, raw_ids), min_size=1, max_size=8),
       mode=st.sampled_from(["action_only", "no_observation", "all"]))
def test_fuzzed_model_outputs_never_raise(tokenizer, outputs, mode):
  script = iter(outputs * 50)
  sampler = ScriptedSampler(tokenizer, lambda prompt, rng: next(script), vocab_size=640)
  tasks = envs.make_tasks(ENV, "train", 1, seed=0)
  result = collect(sampler, None, tokenizer, ENV, tasks, jax.random.key(0),
                   RolloutConfig(group_size=2, control_mode=mode))
  m = result.metrics
  assert m["num_steps"] == 8 and 0 <= m["invalid_actions"] <= 8
  assert (result.batch.control_mask <= result.batch.response_mask).all()


def test_tallies_of_two_processes_merge_into_the_joint_metrics():
  """Means and rates are recomputed over all episodes, counters add up, seconds and turns are the
  slowest process's (hand-computed)."""
  a = rollout.RolloutTally(["pick", "pick"], [True, False], [1.0, 0.0], [1, 3],
                        {"invalid_actions": 1, "generated_tokens": 10}, {"env": 1.0, "total": 2.0},
                        turns=3)
  b = rollout.RolloutTally(["heat"], [True], [0.5], [2],
                        {"generated_tokens": 5, "invalid/no_tags": 2}, {"env": 3.0, "total": 1.5},
                        turns=2)
  m = rollout.merge_tallies([a, b]).metrics()
  expected = {"success": 2 / 3, "success/pick": 0.5, "success/heat": 1.0, "return": 0.5,
              "episode_steps": 2.0, "num_trajectories": 3.0, "num_steps": 6.0, "turns": 3.0,
              "invalid_actions": 1.0, "generated_tokens": 15.0, "invalid/no_tags": 2.0,
              "env_invalid_actions": 0.0, "invalid_action_rate": 1 / 6, "env_invalid_rate": 0.0,
              "time/env_s": 3.0, "time/total_s": 2.0, "truncated_prompts": 0.0, "env_errors": 0.0,
              "hindsight_rows": 0.0, "hindsight_shortened": 0.0, "hindsight_dropped": 0.0}
  assert m == pytest.approx(expected) and set(m) == set(expected)
  assert rollout.merge_tallies([a]).metrics() == a.metrics()


def test_rollout_metrics_come_from_its_tally(random_rollout):
  result = random_rollout
  assert result.metrics == result.tally.metrics()
  assert result.metrics["num_trajectories"] == len(result.trajectories)
  assert result.metrics["num_steps"] == result.batch.num_rows


def _with_prompt_buckets(sampler, prompt_buckets):
  sampler.buckets = sampling.Buckets(batch=sampler.buckets.batch, prompt=prompt_buckets)
  return sampler


def test_a_hindsight_block_too_long_for_the_buckets_is_shortened_not_fatal(tokenizer):
  """Buckets that hold every student prompt but not the teacher's: the run goes on, each
  teacher prompt fits, keeps the student's message whole and still holds a block."""
  tasks = envs.make_tasks(ENV, "train", 6, seed=1)
  cfg = RolloutConfig(group_size=4)
  first = collect(ScriptedSampler(tokenizer, random_policy), None, tokenizer, ENV, tasks,
                  jax.random.key(0), cfg)
  widest_student = int(first.batch.prompt_mask.sum(1).max())
  widest_teacher = int(first.batch.teacher_prompt_mask.sum(1).max())
  assert widest_teacher > widest_student + 40
  limit = widest_teacher - 4  # the longest blocks lose the sibling's actions farthest away
  sampler = _with_prompt_buckets(ScriptedSampler(tokenizer, random_policy), (limit,))
  result = collect(sampler, None, tokenizer, ENV, tasks, jax.random.key(0), cfg)
  b = result.batch
  assert b.teacher_prompt_tokens.shape[1] == limit and result.metrics["truncated_prompts"] == 0
  assert result.metrics["hindsight_shortened"] > 0
  assert result.metrics["hindsight_rows"] == b.has_hindsight.sum() > 0
  for row in np.flatnonzero(b.has_hindsight):
    student = tokenizer.decode(_real(b.prompt_tokens[row], b.prompt_mask[row]))
    teacher = tokenizer.decode(_real(b.teacher_prompt_tokens[row], b.teacher_prompt_mask[row]))
    assert teacher.startswith(student.split("<|im_end|>\n<|im_start|>assistant")[0])
    assert "[Hindsight]" in teacher


def test_a_student_prompt_past_the_largest_bucket_is_cut_as_the_sampler_cut_it(tokenizer):
  tasks = envs.make_tasks(ENV, "train", 2, seed=1)
  sampler = _with_prompt_buckets(ScriptedSampler(tokenizer, random_policy), (48,))
  result = collect(sampler, None, tokenizer, ENV, tasks, jax.random.key(0),
                   RolloutConfig(group_size=2))
  b = result.batch
  assert b.prompt_tokens.shape[1] == b.teacher_prompt_tokens.shape[1] == 48
  assert b.prompt_mask[b.row_valid].all()  # every prompt kept its last 48 tokens (the sampler's)
  assert not b.has_hindsight.any()  # no room for a block beside a prompt that fills the bucket


def test_no_teacher_prompts_for_estimators_that_do_not_read_them(tokenizer):
  tasks = envs.make_tasks(ENV, "train", 2, seed=1)
  sampler = ScriptedSampler(tokenizer, random_policy)
  result = collect(sampler, None, tokenizer, ENV, tasks, jax.random.key(0),
                   RolloutConfig(group_size=4, teacher_prompts=False))
  b = result.batch
  assert b.teacher_prompt_tokens.shape[1] == 0  # none built: width 0
  assert not b.teacher_prompt_mask.any() and not b.has_hindsight.any()
  assert result.metrics["hindsight_rows"] == 0


class _FlakyEnv:
  """One-step episodes; reset raises for every task but the last; won when the action is yes."""

  task_description, max_steps = "Say yes.", 1

  def __init__(self, seed=0):
    del seed

  def reset(self, task):
    if task.task_id != "flaky-3":
      raise RuntimeError("simulator crashed")
    return base.StepResult("Go.", 0.0, False, dict(won=False, admissible_actions=["yes", "no"],
                                                   subset="s", valid_action=True))

  def step(self, action):
    won = action == "yes"
    return base.StepResult("Done.", float(won), True, dict(
        won=won, admissible_actions=None, subset="s", valid_action=True))


@pytest.fixture
def flaky_env(monkeypatch):
  monkeypatch.setattr(base, "_REGISTRY", dict(base._REGISTRY))
  envs.register_env("toy/flaky", _FlakyEnv, lambda split, num, seed: [
      base.Task(f"flaky-{i}", "s", {}) for i in range(num)])
  return "toy/flaky"


def test_trajectories_without_rows_leave_no_gaps_in_the_ids(flaky_env, tokenizer):
  """4 tasks x 4 rollouts, the first 3 tasks fail at reset: 4 rows in a batch bucket of 8, ids
  dense in [0, 4). Numbered by trajectory, the survivors had ids 12-15, past the 8 slots of
  the estimators' segment sums. GRPO of returns (1, 0, 1, 0): +-0.5 / sqrt(1/3) (by hand)."""
  answers = iter(["yes", "no"] * 2)
  sampler = ScriptedSampler(tokenizer, lambda prompt, rng: f"<action>{next(answers)}</action>")
  result = collect(sampler, None, tokenizer, flaky_env, envs.make_tasks(flaky_env, "train", 4),
                   jax.random.key(0), RolloutConfig(group_size=4))
  b = result.batch
  assert len(b.row_valid) == 8 and b.num_rows == 4 and result.metrics["env_errors"] == 12
  np.testing.assert_array_equal(b.traj_id[b.row_valid], [0, 1, 2, 3])
  np.testing.assert_array_equal(b.group_id[b.row_valid], [0, 0, 0, 0])
  adv = algorithms.grpo_advantages(b.traj_return, b.group_id, b.traj_id, b.row_valid)
  np.testing.assert_allclose(np.asarray(adv)[:4], np.array([1, -1, 1, -1]) * 0.5 * 3 ** 0.5,
                             rtol=1e-5)


def test_step_batches_refuse_ids_outside_the_rows():
  row = stepbatch.StepRow(prompt=[1], teacher_prompt=[], response=[2], logprobs=[0.0],
                          control=[True], traj_id=9, step_idx=0, group_id=0, step_reward=0.0,
                          anchor_id=0)
  with pytest.raises(ValueError, match=r"traj_id \[9\] outside \[0, 8\)"):
    stepbatch.build_step_batch([row], pad_id=0, response_len=2,
                               buckets=sampling.Buckets(batch=(8,), prompt=(8,)))
