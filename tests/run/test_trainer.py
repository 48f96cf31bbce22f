"""The trainer end to end on a tiny config: resume equals an uninterrupted run; CLI errors."""

import json
import re

import pytest

from stepopsd_jax import models
from stepopsd_jax.run import cli
from stepopsd_jax.run import config as config_lib
from stepopsd_jax.run import setup as setup_lib
from stepopsd_jax.run import trainer

TINY = {  # the random tiny preset and the format warm-up only (not the shipped base model)
    "model.path": "", "tokenizer.path": "", "train.sft_hint_fraction": "0.0",
    "env.kwargs.horizon": "2", "env.kwargs.num_choices": "2", "env.kwargs.critical_step": "1",
    "env.num_train_tasks": "16", "env.num_eval_tasks": "4", "rollout.batch_size": "8",
    "rollout.group_size": "4", "rollout.max_new_tokens": "8", "train.sft_steps": "2",
    "train.sft_batch_size": "8", "train.eval_every": "100", "train.checkpoint_every": "2",
    "tokenizer.train_vocab_size": "600",
}


def _config(spec="configs/default.py", **overrides):
  return config_lib.load(spec, {**TINY, **overrides})


def _train_lines(workdir):
  lines = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
  return [l for l in lines if any(k.startswith(("rollout/", "train/")) for k in l)]


def _comparable(line):
  return {k: v for k, v in line.items() if not k.startswith("rollout/time/")}


def test_resume_gives_the_metrics_of_an_uninterrupted_run(tmp_path):
  straight, split = tmp_path / "straight", tmp_path / "split"
  trainer.run(_config(**{"train.num_steps": "4"}), str(straight))
  trainer.run(_config(**{"train.num_steps": "2"}), str(split))
  trainer.run(_config(**{"train.num_steps": "4"}), str(split))
  a, b = _train_lines(straight), _train_lines(split)
  assert [l["step"] for l in a] == [l["step"] for l in b] == [1, 1, 2, 2, 3, 3, 4, 4]
  for x, y in zip(a, b):
    assert _comparable(x) == _comparable(y)
  assert (split / "plots" / "learning_curve.png").exists()
  # step times: the update from dispatch to ready; the rollout without its wait for the update's
  # parameters, which the rollout's own split records as the sampler's `wait_params`
  lines = [json.loads(l) for l in (straight / "metrics.jsonl").read_text().splitlines()]
  times = {l["step"]: l for l in lines if "time/update_s" in l}
  waits = {l["step"]: l["rollout/time/generate/wait_params_s"] for l in lines
           if "rollout/time/generate/wait_params_s" in l}
  assert sorted(times) == sorted(waits) == [1, 2, 3, 4]
  for step, line in times.items():
    assert line["time/update_s"] > 0 and line["time/rollout_s"] > 0
    assert line["time/rollout_wait_s"] == pytest.approx(waits[step])
  evals = json.loads((split / "eval.json").read_text())
  assert evals[0]["step"] == 0 and evals[-1]["step"] == 4


@pytest.mark.parametrize("flag,message", [
    ("--config.algo.alpha_clip=1.5", "algo.alpha_clip=1.5 must be in (0, 1)"),
    ("--config.algo.lambda_mix=-0.1", "algo.lambda_mix=-0.1 must be in [0, 1]"),
    ("--config.algo.alpha=0.1", "unknown config key 'algo.alpha'"),
    ("--config.rollout.batch_size=30", "not divisible by rollout.group_size"),
    ("--config.mesh.data=3", "needs 3 devices but 8 are available"),
    ("--config.algo.estimator=ppo2", "algo.estimator='ppo2'"),
    ("--config.algo.gae_lambda=1.5", "algo.gae_lambda=1.5 must be in [0, 1]"),
    ("--config.algo.gamma=0", "algo.gamma=0.0 must be in (0, 1]"),
    ("--config.algo.opsd_kl=k5", "algo.opsd_kl='k5'"),
    ("--config.optim.critic_lr=-1", "optim.critic_lr=-1.0 must be > 0"),
])
def test_config_errors_are_one_line_naming_the_key(flag, message, tmp_path, capsys):
  assert cli.main(["--config=configs/default.py", f"--workdir={tmp_path}", flag]) == 2
  err = capsys.readouterr().err.strip()
  assert message in err and len(err.splitlines()) == 1
  assert not (tmp_path / "checkpoints").exists()  # nothing ran


def test_config_arg_and_runlocal():
  config = config_lib.load("configs/default.py:estimator=grpo,runlocal")
  assert config.algo.estimator == "grpo" and config.train.num_steps == 4
  assert config_lib.load("configs/default.py:estimator=steppo").algo.estimator == "steppo"
  with pytest.raises(ValueError, match="unknown config arg 'nonsense'"):
    config_lib.load("configs/default.py:nonsense=1")


def test_the_step_scores_tokens_at_the_rollout_temperature():
  """One source of truth: --config.rollout.temperature sets the sampler's and the step's."""
  config = _config(**{"rollout.temperature": "0.7"})
  assert config_lib.step_config(config).temperature == 0.7
  assert setup_lib.make_sampler(config, models.get_preset("qwen3_tiny"), _Tok(),
                                greedy=False).params.temperature == 0.7


class _Tok:
  vocab_size, eos_token_id, pad_token_id = 8, 1, 0

  def decode(self, ids):
    return "".join(map(str, ids))


@pytest.mark.parametrize("key,value,message", [
    ("rollout.temperature", 0.0, "rollout.temperature=0.0 must be > 0"),
    ("algo.temperature", 0.7, "set --config.rollout.temperature instead"),
])
def test_bad_temperatures_name_the_key(key, value, message):
  config = _config()
  with config.unlocked():  # a config file that still sets algo.temperature: a new key
    config[key.split(".")[0]][key.split(".")[1]] = value
  with pytest.raises(config_lib.ConfigError, match=re.escape(message)):
    config_lib.validate(config, 8)


def test_a_run_stops_after_too_many_non_finite_updates_in_a_row(tmp_path):
  """optim.lr=1e30 sends the parameters to ~1e30 after the first update (the entropy bonus gives
  a gradient even where every advantage is 0); every loss after it is NaN, each update is
  skipped, and the run stops at the limit with an error naming the key."""
  config = _config(**{"optim.lr": "1e30", "optim.warmup_steps": "0", "train.num_steps": "8",
                      "algo.entropy_coef": "0.1",
                      "train.max_consecutive_skips": "3", "train.checkpoint_every": "100"})
  with pytest.raises(trainer.NonFiniteUpdates, match="train.max_consecutive_skips"):
    trainer.run(config, str(tmp_path))
  lines = [l for l in _train_lines(tmp_path) if "train/skipped_update" in l]
  assert [l["train/skipped_update"] for l in lines][-3:] == [1.0, 1.0, 1.0]
  assert lines[0]["train/skipped_update"] == 0.0  # the first update was finite
