"""`python -m stepopsd_jax.evaluate`: the oracle on generated Search-QA data, per-subset tables."""

import json

import pytest

from stepopsd_jax.run import evaluate
from stepopsd_jax.envs.search_qa import generate, source_average

CONFIG = "configs/search_stepopsd.py"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp("search_qa_eval")
  generate.generate(str(root), num_people=40, num_train=30, num_test=24, seed=5)
  return root


def _argv(data_dir, workdir, *extra):
  return [f"--config={CONFIG}:runlocal,data_dir={data_dir}", f"--workdir={workdir}",
          f"--config.env.kwargs.index_dir={data_dir / 'index'}", *extra]


def test_oracle_prints_the_per_source_table_with_em_one(data_dir, tmp_path, capsys):
  assert evaluate.main(_argv(data_dir, tmp_path, "--policy=oracle",
                             "--config.env.num_eval_tasks=-1")) == 0
  out = capsys.readouterr().out
  assert "oracle policy on search_qa: 24 eval tasks" in out
  saved = json.loads((tmp_path / "eval_oracle.json").read_text())
  sources = [k for k in saved if k.startswith("success/")]
  assert saved["num_tasks"] == 24 and len(sources) == 3
  assert saved["success"] == saved["success_subset_average"] == 1.0
  assert saved["invalid_actions"] == 0 and saved["env_errors"] == 0
  for source in sources:
    assert f"| {source.split('/')[1]} |" in out
  assert "| average |" in out and "| overall | 24 | 1.000 |" in out


def test_model_policy_without_a_checkpoint_says_so(data_dir, tmp_path, capsys):
  assert evaluate.main(_argv(data_dir, tmp_path)) == 1
  assert "no checkpoint" in capsys.readouterr().err


def test_subset_rows_count_and_average():
  table = {"success": 0.5, "success/nq": 1.0, "success/hotpotqa": 0.25, "return": 0.5}
  rows = evaluate.subset_rows(table, {"nq": 1, "hotpotqa": 3})
  assert rows["nq"] == {"n": 1, "success": 1.0} and rows["hotpotqa"]["n"] == 3
  assert rows["average"]["success"] == source_average(table) == 0.625
  assert rows["overall"] == {"n": 4, "success": 0.5, "return": 0.5}
  assert "average" not in evaluate.subset_rows({"success": 1.0, "success/a": 1.0})


def test_random_and_oracle_policies_on_the_credit_lab(tmp_path, capsys):
  """Expert wins every critical-step task; uniform-random admissible doors win about 1/N."""
  argv = ["--config=configs/default.py", f"--workdir={tmp_path}", "--config.env.num_eval_tasks=300",
          "--config.env.num_train_tasks=8"]
  assert evaluate.main(argv + ["--policy=oracle"]) == 0
  assert json.loads((tmp_path / "eval_oracle.json").read_text())["success"] == 1.0
  assert evaluate.main(argv + ["--policy=random"]) == 0
  assert "random policy on credit_lab/critical_step: 300 eval tasks" in capsys.readouterr().out
  saved = json.loads((tmp_path / "eval_random.json").read_text())
  assert 0.25 < saved["success"] < 0.42  # 3 doors: 1/3 (binomial sd 0.027 on 300 tasks)
  assert saved["invalid_action_rate"] == 0.0
