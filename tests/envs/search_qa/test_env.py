"""The Search-QA env: oracle wins, EM reward, turn limit, malformed responses, task sets."""

import hypothesis
import numpy as np
import pytest
from hypothesis import strategies as st

from stepopsd_jax.envs import BatchedEnv, known_envs, make_env, make_tasks
from stepopsd_jax.envs.search_qa import (
  SearchQAEnv,
  format_information,
  oracle_policy,
  parse_response,
  prefetch,
  random_format_policy,
  source_average,
)
from stepopsd_jax.envs.search_qa.env import INVALID_OBSERVATION
from stepopsd_jax.envs.search_qa.retrievers import CachedRetriever

ENV = "search_qa"


def run_episode(env, task, policy):
  results = [env.reset(task)]
  while not results[-1].done:
    results.append(env.step(policy(env, results[-1], None)))
  return results


def test_registered():
  assert ENV in known_envs()


@pytest.mark.parametrize("split", ["train", "eval"])
def test_oracle_gets_em_one_on_the_generated_data(world, split):
  tasks = make_tasks(ENV, split, -1, **world.task_kwargs())
  env = make_env(ENV, seed=0)
  outcomes = {}
  for task in tasks:
    results = run_episode(env, task, oracle_policy)
    assert len(results) == 3  # reset, one search, the answer
    assert results[1].observation.startswith("<information>Doc 1 (Title: ")
    assert results[1].observation.count("\nDoc ") == 2  # top-3
    outcomes.setdefault(task.subset, []).append(results[-1].info["won"])
    assert results[-1].reward == float(results[-1].info["won"])
  metrics = {f"success/{k}": float(np.mean(v)) for k, v in outcomes.items()}
  assert len(metrics) == 3 and source_average(metrics) == 1.0


def test_wrong_answer_scores_zero_and_aliases_count(world):
  task = make_tasks(ENV, "eval", -1, **world.task_kwargs())[0]
  env = SearchQAEnv()
  env.reset(task)
  wrong = env.step("<think>hmm</think><answer>Atlantis</answer>")
  assert (wrong.done, wrong.reward, wrong.info["won"], wrong.info["valid_action"]) == (
      True, 0.0, False, True)
  env.reset(task)
  golden = task.payload["golden_answers"][-1]
  right = env.step(f"<answer>  THE {golden.upper()}. </answer>")
  assert right.info["won"] and right.info["subset"] == task.subset


def test_turn_limit_ends_the_episode_unwon(world):
  task = make_tasks(ENV, "eval", 1, **world.task_kwargs(max_turns=2, topk=1))[0]
  env = SearchQAEnv()
  env.reset(task)
  assert env.max_steps == 2
  first = env.step("<search>anything</search>")
  assert not first.done and first.observation.count("Doc ") <= 1
  last = env.step("<search>more</search>")
  assert last.done and not last.info["won"] and last.info["truncated"]
  with pytest.raises(RuntimeError, match="episode is over"):
    env.step("<answer>x</answer>")


def test_invalid_response_is_a_wasted_turn(world):
  env = SearchQAEnv()
  env.reset(make_tasks(ENV, "eval", 1, **world.task_kwargs())[0])
  result = env.step("<search>a</search><answer>b</answer>")
  assert result.observation == INVALID_OBSERVATION
  assert (result.done, result.reward, result.info["valid_action"], result.info["parse_reason"]) \
      == (False, 0.0, False, "both_tags")


MALFORMED = ["", "I refuse.", "<search>a</search><search>b</search>", "<answer>unclosed",
             "<search>a</search><answer>b</answer>", "<answer> </answer>", "\ufffd<answer>x"]


def test_batched_episode_with_malformed_outputs(world):
  tasks = make_tasks(ENV, "eval", 8, seed=2, **world.task_kwargs())
  env = BatchedEnv(lambda i: make_env(ENV, seed=i), len(tasks))
  results = env.reset(tasks)
  rng, turns, invalid, rejected = np.random.default_rng(0), 0, 0, 0
  while not env.all_done:
    actions = []
    for i, e in enumerate(env.envs):
      if i % 2 == 0 and not env.done[i]:  # the even envs: the oracle
        actions.append(e.expert_action())
      else:  # the odd ones: garbage until the turn limit
        actions.append(MALFORMED[rng.integers(len(MALFORMED))])
        invalid += not env.done[i]
    stepped = env.step(actions)
    rejected += sum(r is not None and not r.info["valid_action"] for r in stepped)
    results = [r or old for r, old in zip(stepped, results)]
    turns += 1
  assert turns == 4 and env.num_env_errors == 0
  assert rejected == invalid == 4 * 4
  assert [r.info["won"] for r in results] == [True, False] * 4
  assert all(r.info.get("truncated") for r in results[1::2])
  assert all(r.reward == 0.0 for r in results[1::2])  # the rollout loop applies the penalty


class CountingRetriever:
  def __init__(self, inner):
    self.inner, self.calls = inner, []

  def search(self, queries, topk):
    self.calls.append(list(queries))
    return self.inner.search(queries, topk)


def test_prefetch_batches_the_searches_of_all_envs(world, bm25):
  counting = CountingRetriever(bm25)
  shared = CachedRetriever(counting)
  tasks = make_tasks(ENV, "eval", 4, **world.task_kwargs())
  env = BatchedEnv(lambda i: SearchQAEnv(retriever=shared), 4)
  env.reset(tasks)
  actions = ["<search>alpha</search>", "<answer>x</answer>", "<search>beta</search>", None]
  assert prefetch(env.envs, actions) == 2
  assert counting.calls == [["alpha", "beta"]]
  results = env.step(actions)
  assert counting.calls == [["alpha", "beta"]]  # the steps hit the cache
  assert results[0].observation == format_information(bm25.search(["alpha"], 3)[0])
  assert prefetch(env.envs, ["<search>gamma</search>"] * 4) == 3  # env 1 is done


def test_tasks_are_deterministic_and_carry_the_answer(world):
  a = make_tasks(ENV, "eval", 10, seed=4, **world.task_kwargs())
  b = make_tasks(ENV, "eval", 10, seed=4, **world.task_kwargs())
  c = make_tasks(ENV, "eval", 10, seed=5, **world.task_kwargs())
  assert a == b and [t.task_id for t in a] != [t.task_id for t in c]
  everything = make_tasks(ENV, "eval", 0, **world.task_kwargs())
  assert len(everything) == 30 == len({t.task_id for t in everything})
  rows = [t.payload["row"] for t in a]
  assert rows == sorted(rows)  # a sample, kept in file order
  for task in a:
    assert task.reference == task.payload["golden_answers"][0]
    assert task.subset == task.payload["data_source"] and task.task_id.startswith(task.subset)
    assert task.payload["question"] in task.payload["prompt"]


@pytest.mark.parametrize("split,kwargs,match", [
    ("eval", dict(eval_files=None), "set env.kwargs.eval_files"),
    ("dev", {}, "split='dev'"),
    ("eval", dict(retriever="bm25", corpus=""), "needs a JSONL corpus"),
    ("eval", dict(retriever="http", retriever_url=""), "needs env.kwargs.retriever_url"),
    ("eval", dict(retriever="dense"), "choose one of"),
    ("eval", dict(topk=0), "topk=0"),
])
def test_bad_task_knobs(world, split, kwargs, match):
  with pytest.raises(ValueError, match=match):
    make_tasks(ENV, split, 1, **world.task_kwargs(**kwargs))


def test_more_tasks_than_rows_says_how_to_take_all(world):
  with pytest.raises(ValueError, match="num=-1"):
    make_tasks(ENV, "eval", 31, **world.task_kwargs())


def test_random_format_policy_is_well_formed_and_blind_to_the_answer(world):
  tasks = make_tasks(ENV, "train", -1, **world.task_kwargs())
  env, rng = SearchQAEnv(), np.random.default_rng(0)
  kinds, wins = [], 0
  for task in tasks:
    results = [env.reset(task)]
    while not results[-1].done:
      response = random_format_policy(env, results[-1], rng)
      assert parse_response(response).valid
      kinds.append(parse_response(response).kind)
      results.append(env.step(response))
    assert not results[-1].info.get("truncated")  # it always answers by the last turn
    assert kinds[-1] == "answer" and kinds[-len(results) + 1] == "search"
    wins += results[-1].info["won"]
  assert wins / len(tasks) < 0.5 and 2 < len(kinds) / len(tasks) < 4


@hypothesis.settings(max_examples=150, deadline=None,
                     suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture])
@hypothesis.given(st.lists(st.text(max_size=40) | st.sampled_from(MALFORMED + [
    "<search>born</search>", "<answer>yes</answer>", "<search>é</search>"]), max_size=6))
def test_fuzzed_responses_never_raise(world, bm25, responses):
  task = make_tasks(ENV, "eval", -1, **world.task_kwargs())[0]
  env = SearchQAEnv(retriever=bm25)
  result = env.reset(task)
  for response in responses:
    if result.done:
      break
    result = env.step(response)
    assert result.info["valid_action"] == parse_response(response).valid
  assert env.turns_left == (0 if result.done else env.max_steps - len(responses))
