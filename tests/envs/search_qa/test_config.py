"""configs/search_stepopsd.py: both settings load and validate, with the paper's knobs."""

import os

import pytest

from stepopsd_jax.run.config import load as load_config
from stepopsd_jax.run.config import validate

CONFIG = os.path.join(os.path.dirname(__file__), "..", "..", "..", "configs", "search_stepopsd.py")


def test_paper_setting():
  c = load_config(CONFIG)
  validate(c, num_devices=1)
  assert (c.model.preset, c.rollout.control_mode, c.rollout.group_size) == (
      "qwen2p5_3b_instruct", "no_observation", 5)
  assert c.env.name == "search_qa" and c.env.kwargs.topk == 3 and c.env.kwargs.max_turns == 4


@pytest.mark.parametrize("arg", ["runlocal", "runlocal,estimator=grpo,data_dir=/data/x"])
def test_runlocal_points_at_generated_data(arg):
  c = load_config(f"{CONFIG}:{arg}")
  validate(c, num_devices=1)
  assert c.env.kwargs.retriever == "bm25" and c.env.kwargs.corpus.endswith("corpus.jsonl")
  assert c.rollout.batch_size % c.rollout.group_size == 0


def test_runlocal_tasks_load_from_generated_data(world):
  from stepopsd_jax import envs
  c = load_config(f"{CONFIG}:runlocal,data_dir={os.path.dirname(world.corpus)}")
  kwargs = dict(c.env.kwargs, index_dir=world.index_dir)
  tasks = envs.make_tasks(c.env.name, "eval", c.env.num_eval_tasks, seed=c.seed, **kwargs)
  assert len(tasks) == c.env.num_eval_tasks
