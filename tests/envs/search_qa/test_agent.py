"""Search-QA through the rollout loop: its agent protocol, StepBatch rows, warm-up texts."""

import jax
import numpy as np
import pytest

from stepopsd_jax import sampling
from stepopsd_jax.envs import make_tasks
from stepopsd_jax.envs.search_qa import STOP_STRINGS, parse_response, retrievers
from stepopsd_jax.rollout import RolloutConfig, agent_sampler, collect, parse, prompts, protocol
from stepopsd_jax.rollout.random_policy import random_policy_texts, train_env_tokenizer
from tests.rollout.conftest import ScriptedSampler, tiny_policy

ENV = "search_qa"
PROMPT = prompts.PromptConfig(history_window=4)


@pytest.fixture(scope="module")
def tasks(world):
  return make_tasks(ENV, "train", 3, seed=0, **world.task_kwargs())


@pytest.fixture(scope="module")
def tokenizer(world):
  train = make_tasks(ENV, "train", -1, **world.task_kwargs())
  return train_env_tokenizer(ENV, train, PROMPT, vocab_size=1000)


def _real(tokens, mask):
  return [int(t) for t, m in zip(tokens, mask) if m]


def test_protocol_is_search_r1():
  p = protocol.for_env(ENV)
  assert p.stop_strings == STOP_STRINGS and p.parse_response is parse_response
  assert p.format_instruction == "" and p.prefetch is not None


def test_warm_up_texts_are_well_formed_search_r1_transcripts(world, tasks):
  texts = random_policy_texts(ENV, tasks, PROMPT, seed=0)
  assert texts == random_policy_texts(ENV, tasks, PROMPT, seed=0)
  assert len(texts) >= len(tasks)
  for k, (user, response) in enumerate(texts):
    assert parse_response(response).valid and response.startswith("<think>")
    assert "<action>" not in user and user.startswith("Answer the question below.")
    previous = texts[k - 1][1] if k else ""
    if "<search>" in previous:  # the next step shows that search and what it brought
      assert parse_response(previous).action in user and "<information>" in user


class _Recording:
  """Records the batch size of every retrieval call."""

  def __init__(self, inner):
    self.inner, self.batches = inner, []

  def search(self, queries, topk):
    self.batches.append(len(queries))
    return self.inner.search(queries, topk)


FIRST_TURN = "<think>look up</think><search>{q}</search>"
LATER_TURNS = [  # cycled: an answer, two malformed responses, a search with made-up "information"
    "<think>done</think><answer>Paris</answer>", "no tags at all",
    "<search>x</search><answer>y</answer>",
    "<think>hmm</think><information>fake doc</information><search>{q} again</search>"]


def _first_turn(prompt_text: str) -> bool:
  user = prompt_text.rsplit("<|im_start|>user\n", 1)[-1].split("<|im_end|>")[0]
  return user.split("\n\n")[-1].startswith("Question:")


def test_scripted_rollout_rows_masks_and_batched_retrieval(world, tasks, tokenizer, monkeypatch):
  shared = retrievers.get_retriever(
      retrievers.RetrieverSpec.from_payload(tasks[0].payload["retriever"]))
  recording = _Recording(shared.inner)
  monkeypatch.setattr(shared, "inner", recording)
  calls = iter(range(10**6))

  def respond(prompt_text, rng):
    del rng
    k = next(calls)
    if _first_turn(prompt_text):
      return FIRST_TURN.format(q=f"{k} unique query")
    return LATER_TURNS[k % len(LATER_TURNS)].format(q=f"{k} query")

  sampler = ScriptedSampler(tokenizer, respond, max_new_tokens=48)
  sampler.buckets = sampling.Buckets(batch=(8, 16, 32, 64), prompt=(256, 512, 1024, 2048))
  result = collect(sampler, None, tokenizer, ENV, tasks, jax.random.key(0),
                   RolloutConfig(group_size=4, control_mode="no_observation", prompt=PROMPT))
  b, m = result.batch, result.metrics
  assert max(recording.batches) == 3 * 4  # the first turn's searches went out as one batch
  assert b.num_rows == sum(len(t.rows) for t in result.trajectories)
  assert all(1 <= len(t.rows) <= 4 for t in result.trajectories)  # every episode ended
  assert m["invalid_actions"] == m["invalid/no_tags"] + m["invalid/both_tags"] > 0
  saw_fake = False
  for row in np.flatnonzero(b.row_valid):
    traj = result.trajectories[b.traj_id[row]]
    response = tokenizer.decode(_real(b.response_tokens[row], b.response_mask[row]))
    assert response == traj.responses[b.step_idx[row]]
    prompt = tokenizer.decode(_real(b.prompt_tokens[row], b.prompt_mask[row]))
    assert "<action>" not in prompt
    outside = tokenizer.decode(_real(b.response_tokens[row],
                                     b.response_mask[row] & ~b.control_mask[row]))
    if "<information>" in response:  # the model's own fake observation is all that is left out
      assert "fake doc" in outside and "again</search>" not in outside
      saw_fake = True
    else:
      assert outside == ""
    valid = parse_response(response).valid
    assert (b.step_reward[row] < 0) == (not valid)
    if b.step_idx[row] > 0:  # the retrieved passages are context (prompt), never response
      assert "\n\n<information>" in prompt and "Doc 1" not in response
  assert saw_fake


def test_action_only_keeps_the_search_or_answer_span(tokenizer):
  tags = protocol.for_env(ENV).action_tags
  text = "<think>hm</think><search>capital of Brelia</search>"
  ids = tokenizer.encode(text)
  pieces = [tokenizer.decode([i]) for i in ids]
  mask = parse.control_mask(pieces, "action_only", tags)
  kept = "".join(p for p, keep in zip(pieces, mask) if keep)
  assert "capital of Brelia" in kept and "hm" not in kept


def test_tiny_random_model_episodes_end_and_malformed_outputs_count(tasks, tokenizer):
  config, weights = tiny_policy(tokenizer)
  sampler = agent_sampler(config, tokenizer, max_new_tokens=12,
                               stop_strings=protocol.for_env(ENV).stop_strings,
                               buckets=sampling.Buckets(batch=(8, 16), prompt=(512, 1024, 2048)))
  assert sampler.params.stop_strings == STOP_STRINGS
  result = collect(sampler, weights, tokenizer, ENV, tasks[:2], jax.random.key(0),
                   RolloutConfig(group_size=2, control_mode="no_observation", prompt=PROMPT))
  m, b = result.metrics, result.batch
  assert m["turns"] <= 4 and m["num_steps"] == b.num_rows <= 2 * 2 * 4
  invalid = sum(not parse_response(r).valid for t in result.trajectories for r in t.responses)
  assert m["invalid_actions"] == invalid
  assert (b.control_mask <= b.response_mask).all()
  assert (b.step_reward[b.row_valid] < 0).sum() == invalid  # the penalty, on those rows only
