"""Agent protocols: `<think>/<action>` defaults, partial overrides, scripted episodes."""

import jax
import numpy as np
import pytest

from stepopsd_jax import envs
from stepopsd_jax.envs import base
from stepopsd_jax.envs.base import AgentProtocol
from stepopsd_jax.rollout import RolloutConfig, collect, parse, play, prompts, protocol
from tests.rollout.conftest import ENV, ScriptedSampler


def test_credit_lab_takes_the_action_defaults():
  p = protocol.for_env(ENV)
  assert p == protocol.DEFAULT and p.stop_strings == ("</action>",)
  assert p.parse_response is parse.parse_action and p.prefetch is None
  task = envs.make_tasks(ENV, "train", 1)[0]
  env = envs.make_env(ENV)
  first = env.reset(task)
  text = protocol.user_text(p, env.task_description, [], first, prompts.PromptConfig())
  assert text.endswith(prompts.FORMAT_INSTRUCTION) and "Admissible actions: " in text
  explicit = prompts.PromptConfig(format_instruction="Act now.")
  assert protocol.user_text(p, "t", [], first, explicit).endswith("Act now.")


class _ShoutEnv:
  """Ends after one step; won when the response shouts."""

  task_description, max_steps = "Shout something.", 1

  def __init__(self, seed=0):
    del seed

  def reset(self, task):
    return base.StepResult("Go.", 0.0, False, dict(won=False, admissible_actions=None,
                                                   subset=task.subset, valid_action=True))

  def step(self, action):
    won = action.isupper()
    return base.StepResult("Done.", float(won), True, dict(
        won=won, admissible_actions=None, subset="s", valid_action=True))


def _shout(text):
  inner = text.split("<shout>")[-1].split("</shout>")[0] if "</shout>" in text else ""
  return parse.ParsedAction(inner, bool(inner), "ok" if inner else "no_tags")


@pytest.fixture
def shout_env(monkeypatch):
  monkeypatch.setattr(base, "_REGISTRY", dict(base._REGISTRY))
  proto = AgentProtocol(parse_response=_shout, action_tags=(("<shout>", "</shout>"),),
                        format_instruction="Shout inside <shout> </shout>.",
                        oracle_policy=lambda env, result, rng: "<shout>HEY</shout>",
                        random_policy=lambda env, result, rng: "<shout>hey</shout>")
  envs.register_env("toy/shout", _ShoutEnv, lambda split, num, seed: [
      base.Task(f"shout-{i}", "s", {}) for i in range(num)], protocol=proto)
  return "toy/shout"


def test_a_partial_protocol_keeps_the_other_defaults(shout_env):
  p = protocol.for_env(shout_env)
  assert p.stop_strings == ("</shout>",) and p.user_text is protocol.default_user_text
  tasks = envs.make_tasks(shout_env, "train", 3)
  oracle = play(shout_env, tasks, p.oracle_policy, prompts.PromptConfig()).metrics
  assert oracle["success"] == 1.0 and oracle["num_trajectories"] == 3
  random = play(shout_env, tasks, p.random_policy, prompts.PromptConfig(), chunk=1)
  assert [t.steps[0][0].endswith("Shout inside <shout> </shout>.")
          for t in random.trajectories] == [True] * 3
  assert random.metrics["success"] == 0.0


def test_collect_parses_and_masks_with_the_env_protocol(shout_env, tokenizer):
  sampler = ScriptedSampler(tokenizer, lambda prompt, rng: "<think>x</think><shout>HI</shout>")
  result = collect(sampler, None, tokenizer, shout_env, envs.make_tasks(shout_env, "train", 2),
                   jax.random.key(0), RolloutConfig(group_size=2))
  assert result.metrics["success"] == 1.0 and result.metrics["invalid_actions"] == 0
  b = result.batch
  kept = tokenizer.decode([int(t) for t, m in zip(b.response_tokens[0], b.control_mask[0]) if m])
  assert "HI" in kept and "x" not in kept.replace("HI", "")


def test_the_default_random_policy_needs_admissible_actions():
  with pytest.raises(ValueError, match="random_policy"):
    protocol.random_admissible_policy(None, base.StepResult(
        "o", 0.0, False, dict(admissible_actions=None)), np.random.default_rng(0))


def _chosen_positions(trajectory) -> list[int]:
  """The listed position of the door the random policy opened at each step of an episode."""
  out = []
  for user, response in trajectory.steps:
    listed = [a.strip() for a in user.split("Admissible actions: ")[1].split("\n")[0].split(",")]
    out.append(listed.index(parse.parse_action(response).action))
  return out


def test_random_labels_do_not_repeat_across_separate_calls():
  """Warm-up data built task by task (one call each, the same seed) must not replay one draw
  sequence (it used to: step 1 always took the same listed position). Over 300 tasks with 3
  doors, each position's share at step 1 and the share of episodes that take the same position
  at steps 1 and 2 are ~1/3 (binomial sd 0.027: the bounds are > 3 sd away)."""
  tasks = envs.make_tasks(ENV, "train", 300, seed=0, horizon=2, num_choices=3)
  policy = protocol.for_env(ENV).random_policy
  cfg = prompts.PromptConfig()
  positions = np.array([
      _chosen_positions(play(ENV, [t], policy, cfg, policy_seed=7).trajectories[0]) for t in tasks])
  shares = np.bincount(positions[:, 0], minlength=3) / len(tasks)
  assert np.all((0.22 < shares) & (shares < 0.45)), shares
  assert 0.22 < np.mean(positions[:, 0] == positions[:, 1]) < 0.45
  again = play(ENV, tasks[:20], policy, cfg, policy_seed=7).trajectories  # one call, all tasks
  assert [_chosen_positions(e) for e in again] == positions[:20].tolist()  # keyed by task
  other = play(ENV, tasks[:20], policy, cfg, policy_seed=7, episode=1).trajectories
  assert [_chosen_positions(e) for e in other] != positions[:20].tolist()  # ... and episode
