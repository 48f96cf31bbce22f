"""ALFWorld in the trainer's path: the agent protocol, a tiny model's rollout, the oracle eval."""

import json

import jax
import numpy as np
import pytest

from stepopsd_jax import envs, sampling
from stepopsd_jax.rollout import RolloutConfig, agent_sampler, collect, prompts, protocol
from stepopsd_jax.rollout.random_policy import train_env_tokenizer
from stepopsd_jax.run import config as config_lib
from tests.envs.alfworld.conftest import needs_alfworld
from tests.rollout.conftest import tiny_policy

ENV = "alfworld"
CONFIG = "configs/alfworld_stepopsd.py"
PROMPT = prompts.PromptConfig(history_window=2)

pytestmark = needs_alfworld


def _keys(node, prefix=""):
  out = set()
  for key, value in node.items():
    if hasattr(value, "items") and key != "kwargs":  # env.kwargs is free-form
      out |= _keys(value, f"{prefix}{key}.")
    else:
      out.add(prefix + key)
  return out


def test_config_has_the_default_keys_and_needs_a_data_dir(monkeypatch, tmp_path):
  default = _keys(config_lib.load("configs/default.py"))
  monkeypatch.setenv("ALFWORLD_DATA", str(tmp_path))
  for arg in ("", ":runlocal"):
    config = config_lib.load(CONFIG + arg)
    assert _keys(config) == default
    assert config.env.kwargs.data_dir == str(tmp_path)
  monkeypatch.delenv("ALFWORLD_DATA")
  with pytest.raises(ValueError, match="ALFWORLD_DATA"):
    config_lib.load(CONFIG + ":runlocal")
  assert config_lib.load(f"{CONFIG}:data_dir=/d").env.kwargs.data_dir == "/d"


def test_protocol_renders_verl_agents_prompt(unseen_tasks):
  proto = protocol.for_env(ENV)
  assert proto.format_instruction == "" and proto.stop_strings == ("</action>",)
  env = envs.make_env(ENV, seed=0)
  first = env.reset(unseen_tasks[0])
  text = protocol.user_text(proto, env.task_description, [], first, PROMPT)
  assert text.startswith("\nYou are an expert agent operating in the ALFRED")
  assert "<action> </action>" in text and prompts.FORMAT_INSTRUCTION not in text
  action = env.expert_action()
  later = env.step(action)
  text = protocol.user_text(proto, env.task_description, [(first.observation, action)], later,
                            PROMPT)
  assert "you have already taken 1 step(s)" in text and f"Action 1: '{action}'" in text


@pytest.fixture(scope="module")
def train_tasks(games):
  return envs.make_tasks(ENV, "train", -1, data_dir=str(games.root), max_steps=3,
                         short_subsets=True)


def test_tiny_random_model_rollout_through_collect(train_tasks):
  tokenizer = train_env_tokenizer(ENV, train_tasks, PROMPT, vocab_size=400)
  config, weights = tiny_policy(tokenizer)
  sampler = agent_sampler(config, tokenizer, max_new_tokens=8,
                               stop_strings=protocol.for_env(ENV).stop_strings,
                               buckets=sampling.Buckets(batch=(8, 16), prompt=(512, 1024, 2048)))
  result = collect(sampler, weights, tokenizer, ENV, train_tasks, jax.random.key(0),
                   RolloutConfig(group_size=2, prompt=PROMPT))
  m, b, trajs = result.metrics, result.batch, result.trajectories
  assert len(trajs) == 4 and all(1 <= len(t.rows) <= 3 for t in trajs)  # every episode ended
  assert m["num_steps"] == b.num_rows == sum(len(t.rows) for t in trajs)
  assert sorted(k for k in m if k.startswith("success/")) == ["success/Look", "success/Pick"]
  assert m["env_errors"] == 0 and m["truncated_prompts"] == 0
  for i, traj in enumerate(trajs):
    rows = np.flatnonzero((b.traj_id == i) & b.row_valid)
    assert list(b.step_idx[rows]) == list(range(len(traj.rows)))
    assert np.all(b.group_id[rows] == i // 2)
    assert np.allclose(b.traj_return[rows], b.step_reward[rows].sum())
  assert (b.control_mask <= b.response_mask).all()


def test_oracle_evaluate_wins_every_task_type(games, tmp_path, capsys):
  from stepopsd_jax import evaluate  # pylint: disable=import-outside-toplevel
  assert evaluate.main([f"--config={CONFIG}:runlocal,data_dir={games.root}",
                        f"--workdir={tmp_path}", "--policy=oracle",
                        "--config.algo.micro_batches=1"]) == 0  # 8 fake devices: buckets % 8
  out = capsys.readouterr().out
  assert "oracle policy on alfworld: 6 eval tasks" in out
  for name in ("Pick", "Look", "Clean", "Heat", "Cool", "PickTwo"):
    assert f"| {name} | 1 | 1.000 |" in out
  saved = json.loads((tmp_path / "eval_oracle.json").read_text())
  assert saved["success"] == saved["success_subset_average"] == 1.0
  assert saved["return"] == 10.0 and saved["invalid_actions"] == saved["env_errors"] == 0
