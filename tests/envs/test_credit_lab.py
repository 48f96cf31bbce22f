"""Credit lab: the expert always wins, chance is 1/N or coin_p, episodes are fixed by the task."""

import math

import numpy as np
import pytest

from stepopsd_jax.envs import make_env, make_tasks
from stepopsd_jax.envs.credit_lab import CreditLabEnv
from stepopsd_jax.envs.credit_lab.layout import INVALID_ACTION

CRITICAL = "credit_lab/critical_step"
MEMORY = "credit_lab/critical_step_memory"
NULL = "credit_lab/null_causal"
NUM = 1000  # episodes per statistical test: 4 sigma is within 0.06 of the expected rate


def run_episode(env, task, policy):
  """Plays one episode; `policy(env, result)` returns the action. Gives (results, actions)."""
  results, actions = [env.reset(task)], []
  while not results[-1].done:
    actions.append(policy(env, results[-1]))
    results.append(env.step(actions[-1]))
  return results, actions


def expert(env, _):
  return env.expert_action()


def random_policy(seed):
  rng = np.random.default_rng(seed)

  def policy(env, result):
    admissible = result.info["admissible_actions"]
    return admissible[rng.integers(len(admissible))]

  return policy


def win_rate(name, policy, num, **knobs):
  env = make_env(name)
  tasks = make_tasks(name, "train", num, seed=1, **knobs)
  return np.mean([run_episode(env, task, policy)[0][-1].info["won"] for task in tasks])


def assert_binomial(rate, num, p):
  """Within 4 binomial standard deviations of p (the seeds are fixed, so this cannot flake)."""
  assert abs(rate - p) <= 4 * math.sqrt(p * (1 - p) / num), (rate, p)


@pytest.mark.parametrize("name,knobs", [
    (CRITICAL, {}), (MEMORY, {}), (CRITICAL, dict(horizon=6, num_choices=5, critical_step=6)),
    (MEMORY, dict(horizon=3, num_choices=2, critical_step=1)),
    (CRITICAL, dict(horizon=1, critical_step=1))])
def test_expert_always_wins(name, knobs):
  assert win_rate(name, expert, 200, **knobs) == 1.0


@pytest.mark.parametrize("num_choices", [2, 4, 7])
def test_random_policy_wins_one_in_n(num_choices):
  rate = win_rate(CRITICAL, random_policy(0), NUM, num_choices=num_choices)
  assert_binomial(rate, NUM, 1 / num_choices)


@pytest.mark.parametrize("policy", [expert, random_policy(0)], ids=["expert", "random"])
@pytest.mark.parametrize("coin_p", [0.5, 0.2])
def test_null_causal_success_is_the_coin(policy, coin_p):
  assert_binomial(win_rate(NULL, policy, NUM, coin_p=coin_p), NUM, coin_p)


def test_null_causal_outcomes_ignore_the_actions():
  """Same tasks, same env seed: expert, random and garbage policies get the very same coins."""
  tasks = make_tasks(NULL, "train", 200, coin_p=0.5)
  policies = [expert, random_policy(1), lambda env, result: "dance"]
  outcomes = [[run_episode(make_env(NULL), t, p)[0][-1].info["won"] for t in tasks]
              for p in policies]
  assert outcomes[0] == outcomes[1] == outcomes[2]


def test_episode_lasts_horizon_and_rewards_only_at_the_end():
  task = make_tasks(CRITICAL, "train", 1, horizon=5)[0]
  results, _ = run_episode(make_env(CRITICAL), task, expert)
  assert len(results) == 6
  assert [r.done for r in results] == [False] * 5 + [True]
  assert [r.reward for r in results] == [0.0] * 5 + [1.0]
  assert all(r.info["valid_action"] for r in results)


@pytest.mark.parametrize("name", [CRITICAL, MEMORY, NULL])
def test_same_task_and_actions_give_the_same_episode(name):
  for task in make_tasks(name, "eval", 20, seed=3, reward_noise=0.3):
    rng = np.random.default_rng(0)
    actions = [str(rng.choice(["open red door", "open blue door", "fly", ""]))
               for _ in range(task.payload["horizon"])]
    envs = [CreditLabEnv(), CreditLabEnv()]
    runs = [[env.reset(task)] + [env.step(a) for a in actions] for env in envs]
    assert runs[0] == runs[1]


def test_null_coin_differs_across_env_seeds_and_episodes():
  """The G rollouts of a group see independent coins: distinct env seeds, or later episodes."""
  task = make_tasks(NULL, "train", 1)[0]
  across_envs = [run_episode(CreditLabEnv(seed=i), task, expert)[0][-1].info["won"]
                 for i in range(64)]
  env = CreditLabEnv(seed=0)
  across_episodes = [run_episode(env, task, expert)[0][-1].info["won"] for _ in range(64)]
  assert 0 < sum(across_envs) < 64 and 0 < sum(across_episodes) < 64


def test_critical_step_outcome_does_not_depend_on_env_seed():
  task = make_tasks(CRITICAL, "train", 1)[0]
  assert all(run_episode(CreditLabEnv(seed=i), task, expert)[0][-1].info["won"]
             for i in range(16))


def test_reward_noise_is_gaussian_around_the_outcome():
  env = make_env(CRITICAL)
  finals = [run_episode(env, t, expert)[0][-1] for t in make_tasks(CRITICAL, "train", 500,
                                                                   reward_noise=0.5)]
  noise = np.array([r.reward - 1.0 for r in finals])
  assert all(r.info["won"] for r in finals)
  assert abs(noise.mean()) < 0.1 and 0.4 < noise.std() < 0.6


def test_invalid_action_is_a_wasted_step_and_loses_at_the_critical_step():
  env = make_env(CRITICAL)
  task = make_tasks(CRITICAL, "train", 1, critical_step=2)[0]
  first = env.reset(task)
  wasted = env.step("  OPEN   the moon  ")
  assert wasted.observation.startswith(INVALID_ACTION) and "room 2 of 4" in wasted.observation
  assert not wasted.info["valid_action"] and not wasted.done and wasted.reward == 0.0
  assert env.step("").info["valid_action"] is False  # the critical room: a wrong choice
  results = [env.step(env.expert_action()) for _ in range(2)]
  assert results[-1].done and not results[-1].info["won"]
  assert first.info["valid_action"]


def test_invalid_action_outside_the_critical_step_does_not_matter():
  env = make_env(CRITICAL)
  env.reset(make_tasks(CRITICAL, "train", 1, critical_step=2)[0])
  env.step(None)  # not even a string
  results = [env.step(env.expert_action().upper() + " ") for _ in range(3)]
  assert results[-1].info["won"] and results[-1].info["valid_action"]


def test_memory_mode_shows_the_clue_only_in_the_first_observation():
  task = make_tasks(MEMORY, "train", 1)[0]
  env = make_env(MEMORY)
  results, _ = run_episode(env, task, expert)
  door = task.reference.split(" open the ")[1].split()[0]
  clue = f"The treasure is behind the {door} door of room 2."
  assert task.subset == "critical_step_memory"
  assert clue in results[0].observation and clue not in env.task_description
  assert not any(clue in r.observation for r in results[1:])
  plain = make_env(CRITICAL)
  plain.reset(make_tasks(CRITICAL, "train", 1)[0])
  assert clue in plain.task_description


def test_null_causal_has_the_same_surface_as_critical_step():
  critical, null = make_tasks(CRITICAL, "train", 5), make_tasks(NULL, "train", 5)
  for task_c, task_n in zip(critical, null):
    run_c, _ = run_episode(make_env(CRITICAL), task_c, expert)
    run_n, _ = run_episode(make_env(NULL), task_n, expert)
    assert [r.observation for r in run_c[:-1]] == [r.observation for r in run_n[:-1]]
    assert [r.info["admissible_actions"] for r in run_c] == [
        r.info["admissible_actions"] for r in run_n]
    assert task_c.reference == task_n.reference and task_n.subset == "null_causal"


def test_door_order_and_treasure_vary_across_tasks():
  env = make_env(CRITICAL)
  positions, doors = set(), set()
  for task in make_tasks(CRITICAL, "train", 100):
    env.reset(task)
    admissible = env.step("open red door").info["admissible_actions"]
    positions.add(admissible.index(env.expert_action()))
    doors.add(env.expert_action())
  assert len(positions) == 4 and len(doors) > 4


def test_task_ids_are_stable_and_splits_disjoint():
  train = make_tasks(CRITICAL, "train", 300, seed=7)
  assert train[17].task_id == "critical_step-train-00017"
  assert train == make_tasks(CRITICAL, "train", 300, seed=7)
  eval_seeds = {t.payload["seed"] for t in make_tasks(CRITICAL, "eval", 300, seed=7)}
  train_seeds = {t.payload["seed"] for t in train}
  assert len(train_seeds) == 300 and len(eval_seeds) == 300 and not train_seeds & eval_seeds
  assert train != make_tasks(CRITICAL, "train", 300, seed=8)


@pytest.mark.parametrize("name,knobs", [
    (CRITICAL, dict(critical_step=0)), (CRITICAL, dict(critical_step=5)),
    (CRITICAL, dict(num_choices=1)), (CRITICAL, dict(num_choices=13)),
    (CRITICAL, dict(clue_mode="hint")), (NULL, dict(coin_p=1.5)),
    (CRITICAL, dict(reward_noise=-1.0)), (CRITICAL, dict(variant="null_causal")),
    (MEMORY, dict(clue_mode="task"))])
def test_bad_knobs_raise(name, knobs):
  with pytest.raises(ValueError):
    make_tasks(name, "train", 1, **knobs)


def test_unknown_split_raises():
  with pytest.raises(ValueError, match="train"):
    make_tasks(CRITICAL, "test", 1)


def test_env_misuse_raises_clearly():
  env = make_env(CRITICAL)
  with pytest.raises(RuntimeError, match="reset"):
    env.step("open red door")
  results, _ = run_episode(env, make_tasks(CRITICAL, "train", 1)[0], expert)
  assert results[-1].info["admissible_actions"] == []
  with pytest.raises(RuntimeError, match="over"):
    env.step("open red door")


def test_num_colours_limits_the_palette():
  tasks = make_tasks("credit_lab/critical_step", "train", 50, seed=3, horizon=2, num_choices=3,
                     num_colours=3)
  env = CreditLabEnv(seed=0)
  colours = set()
  for task in tasks:
    result = env.reset(task)
    colours.update(a.split()[1] for a in result.info["admissible_actions"])
  assert len(colours) == 3
  with pytest.raises(ValueError, match="num_colours"):
    make_tasks("credit_lab/critical_step", "train", 1, num_choices=4, num_colours=3)


@pytest.mark.parametrize("treasure_colours", [1, 2])
def test_treasure_colours_limits_the_clue(treasure_colours):
  tasks = make_tasks("credit_lab/critical_step", "train", 60, seed=1, horizon=3, num_choices=3,
                     num_colours=5, treasure_colours=treasure_colours)
  env = CreditLabEnv(seed=0)
  treasures = set()
  for task in tasks:
    result = env.reset(task)
    env.step(result.info["admissible_actions"][0])
    treasure = env.expert_action().split()[1]
    treasures.add(treasure)
    assert f"the {treasure} door of room 2" in env.task_description
    for room in range(3):  # the treasure's door is in every room, among the task's doors
      assert treasure in env._layout.doors[room]
  assert treasures == set(["red", "green"][:treasure_colours])
  with pytest.raises(ValueError, match="treasure_colours"):
    make_tasks("credit_lab/critical_step", "train", 1, num_choices=3, num_colours=3,
               treasure_colours=4)


def test_no_clue_mode_hides_the_door_everywhere_and_only_reward_reveals_it():
  """clue_mode="none" with one treasure colour: no text of the episode names the winning door
  (red, room 2 of 3), and opening it is what wins."""
  tasks = make_tasks(CRITICAL, "train", 20, seed=3, horizon=3, num_choices=3, num_colours=3,
                     treasure_colours=1, clue_mode="none")
  assert {t.subset for t in tasks} == {"critical_step_no_clue"}
  for task in tasks:
    env = make_env(CRITICAL)
    first = env.reset(task)
    texts = [env.task_description, first.observation]
    results = [env.step("open green door"), env.step("open red door"),
               env.step("open blue door")]
    texts += [r.observation for r in results[:-1]]
    assert not any("treasure is behind" in t or "clue" in t.lower() for t in texts), texts
    assert results[-1].info["won"]
    env.reset(task)
    lost = [env.step("open red door"), env.step("open green door"), env.step("open red door")]
    assert not lost[-1].info["won"]
