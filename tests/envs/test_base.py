"""BatchedEnv and the registry: step limits, env errors contained, fuzzed actions never raise."""

import hypothesis
from hypothesis import strategies as st
import pytest

from stepopsd_jax.envs import BatchedEnv, StepResult, Task, known_envs, make_env, make_tasks
from stepopsd_jax.envs import base, register_env

TASK = Task("toy-train-00000", "toy", {})


class EndlessEnv:
  """Never ends by itself; optionally raises at step `fail_at` or returns garbage."""

  def __init__(self, max_steps=3, fail_at=None, garbage=False):
    self.max_steps, self.fail_at, self.garbage = max_steps, fail_at, garbage
    self.steps = 0

  task_description = "Say anything."

  def reset(self, task):
    self.steps = 0
    return StepResult("start", 0.0, False, self._info(True))

  def step(self, action):
    self.steps += 1
    if self.steps == self.fail_at:
      raise ValueError("boom")
    if self.garbage:
      return "not a StepResult"
    return StepResult(f"step {self.steps}", 0.5, False, self._info(action == "ok"))

  def expert_action(self):
    return "ok"

  def _info(self, valid):
    return dict(won=True, admissible_actions=["ok"], subset="toy", valid_action=valid)


def test_max_steps_ends_the_episode_as_a_loss():
  batch = BatchedEnv(lambda i: EndlessEnv(max_steps=2 + i), 2)
  batch.reset([TASK, TASK])
  first, second = batch.step(["ok", "ok"]), batch.step(["ok", "ok"])
  assert not any(r.done for r in first)
  assert second[0].done and second[0].info["truncated"] and not second[0].info["won"]
  assert not second[1].done and batch.done == [True, False]
  third = batch.step(["ok", "ok"])
  assert third[0] is None and third[1].done and batch.all_done
  assert batch.num_steps == [2, 3]


def test_max_steps_override():
  batch = BatchedEnv(lambda i: EndlessEnv(max_steps=10), 1, max_steps=1)
  batch.reset([TASK])
  assert batch.step(["ok"])[0].done


def test_a_raising_env_ends_only_its_own_episode():
  batch = BatchedEnv(lambda i: EndlessEnv(max_steps=5, fail_at=2 if i == 1 else None), 3,
                     error_reward=-1.0)
  batch.reset([TASK] * 3)
  batch.step(["ok"] * 3)
  results = batch.step(["ok"] * 3)
  failed = results[1]
  assert failed.done and failed.reward == -1.0 and not failed.info["won"]
  assert failed.info["error"] == repr(ValueError("boom")) and failed.info["subset"] == "toy"
  assert batch.num_env_errors == 1 and batch.done == [False, True, False]
  later = batch.step(["ok"] * 3)
  assert later[1] is None and later[0].observation == "step 3"


def test_malformed_returns_and_failed_resets_are_env_errors():
  class BrokenReset(EndlessEnv):
    def reset(self, task):
      raise KeyError(task.task_id)

  batch = BatchedEnv(lambda i: [EndlessEnv(garbage=True), BrokenReset(), EndlessEnv()][i], 3)
  starts = batch.reset([TASK] * 3)
  assert starts[1].done and "KeyError" in starts[1].info["error"]
  results = batch.step(["ok"] * 3)
  assert results[0].done and "TypeError" in results[0].info["error"] and results[1] is None
  assert batch.num_env_errors == 2 and not results[2].done
  batch.reset([TASK] * 3)
  assert batch.num_env_errors == 1  # counters cover the episodes since the last reset


def test_none_actions_are_skipped():
  batch = BatchedEnv(lambda i: EndlessEnv(), 2)
  batch.reset([TASK, TASK])
  results = batch.step([None, "ok"])
  assert results[0] is None and batch.num_steps == [0, 1]
  assert batch.envs[0].steps == 0


def test_invalid_actions_pass_through_unpenalised():
  """The env says an action was invalid; the rollout loop counts and penalises it (once)."""
  batch = BatchedEnv(lambda i: EndlessEnv(), 2)
  batch.reset([TASK, TASK])
  results = batch.step(["ok", "garbage"])
  assert results[0].reward == results[1].reward == 0.5
  assert [r.info["valid_action"] for r in results] == [True, False]
  assert batch.env_step_seconds > 0 and batch.env_reset_seconds > 0


def test_wrong_lengths_are_caller_errors():
  batch = BatchedEnv(lambda i: EndlessEnv(), 2)
  with pytest.raises(ValueError, match="2 envs"):
    batch.reset([TASK])
  batch.reset([TASK, TASK])
  with pytest.raises(ValueError, match="2 envs"):
    batch.step(["ok"])


def test_registry_lists_known_names_for_an_unknown_one():
  with pytest.raises(KeyError, match="credit_lab/critical_step"):
    make_env("credit_lab/nope")
  with pytest.raises(KeyError, match="Known envs"):
    make_tasks("alfwrld", "train", 1)
  assert "credit_lab/null_causal" in known_envs()


def test_register_env(monkeypatch):
  monkeypatch.setattr(base, "_REGISTRY", dict(base._REGISTRY))
  register_env("toy/endless", EndlessEnv, lambda split, num, seed: [TASK] * num)
  assert isinstance(make_env("toy/endless", max_steps=7), EndlessEnv)
  assert make_tasks("toy/endless", "train", 2) == [TASK, TASK]
  with pytest.raises(ValueError, match="already registered"):
    register_env("toy/endless", EndlessEnv, lambda **kw: [])


NAMES = ["credit_lab/critical_step", "credit_lab/critical_step_memory", "credit_lab/null_causal"]
TASKS = [t for name in NAMES for t in make_tasks(name, "train", 2, horizon=3, critical_step=2)]
ACTION = st.one_of(st.none(), st.text(max_size=20), st.sampled_from(
    ["open red door", "OPEN BLUE DOOR ", "", " ", "\x00", "open\u200bred door", "🚪"]))


@hypothesis.settings(max_examples=40, deadline=None)
@hypothesis.given(st.lists(st.lists(ACTION, min_size=6, max_size=6), min_size=1, max_size=3))
def test_fuzzed_actions_never_raise(turns):
  batch = BatchedEnv(lambda i: make_env(NAMES[i % 3], seed=i), len(TASKS))
  batch.reset(TASKS)
  for actions in turns:
    for action, result in zip(actions, batch.step(actions)):
      assert result is None or isinstance(result.observation, str)
      assert result is None or action is not None
  assert batch.num_env_errors == 0
  played = [sum(actions[i] is not None for actions in turns) for i in range(len(TASKS))]
  assert batch.all_done == all(n >= 3 for n in played)
