"""Experiment configs: loading `configs/x.py:arg`, `--config.a.b=v` overrides, validation.

Configs are Python files with `get_config(arg)` returning an `ml_collections.ConfigDict`
(big_vision style). Everything is validated before anything compiles; each error is one line that
names the key and the fix.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import os
from typing import Any

import ml_collections

from stepopsd_jax import algorithms, envs, sharding
from stepopsd_jax.algorithms import losses
from stepopsd_jax.train.advantage import ESTIMATORS
from stepopsd_jax.train.state import CRITIC_LR, TEACHERS
from stepopsd_jax.train.step import StepConfig


class ConfigError(ValueError):
  """A bad config value; the message names the key and the fix."""


def split_overrides(items: list[str]) -> dict[str, str]:
  """`["--config.a.b=v", ...]` -> {"a.b": "v", ...}; anything else is a ConfigError."""
  overrides = {}
  for item in items:
    key, eq, value = item.partition("=")
    if not key.startswith("--config.") or not eq:
      raise ConfigError(f"unrecognised argument {item!r}; overrides look like "
                        "--config.algo.lambda_mix=0.5")
    overrides[key[len("--config."):]] = value
  return overrides


def parse_arg(arg: str | None, **defaults: Any) -> dict[str, Any]:
  """`"model=qwen3_1p7b,runlocal"` -> {"model": "qwen3_1p7b", "runlocal": True, ...defaults}.

  A bare word sets a boolean default to True; values are coerced to the default's type.
  """
  out = dict(defaults)
  for item in filter(None, (arg or "").split(",")):
    key, _, value = item.partition("=")
    if key not in defaults:
      raise ValueError(f"Unknown config arg {key!r}; known: {sorted(defaults)}.")
    default = defaults[key]
    if not _:
      out[key] = True
    elif isinstance(default, bool):
      out[key] = value.lower() in ("1", "true", "yes")
    else:
      out[key] = type(default)(value) if default is not None else value
  return out


def load_config(spec: str) -> ml_collections.ConfigDict:
  """`path/to/config.py[:arg]` -> the ConfigDict its `get_config(arg)` returns."""
  path, _, arg = spec.partition(":")
  if not os.path.isfile(path):
    raise ConfigError(f"--config={spec}: no such file {path!r}; e.g. --config=configs/default.py")
  module_spec = importlib.util.spec_from_file_location(
      f"_stepopsd_config_{abs(hash(path))}", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  if not hasattr(module, "get_config"):
    raise ConfigError(f"{path} defines no get_config(arg); every config file must.")
  return module.get_config(arg or None)


def apply_overrides(config: ml_collections.ConfigDict, overrides: dict[str, str]) -> None:
  """Sets `a.b=v` entries (values parsed as Python literals, else strings), checking each key."""
  for dotted, raw in overrides.items():
    *parents, leaf = dotted.split(".")
    node = config
    for i, key in enumerate(parents + [leaf]):
      if key not in node:
        where = ".".join(parents[:i]) or "the top level"
        raise ConfigError(f"unknown config key {dotted!r}: {key!r} is not in {where} "
                          f"(known: {', '.join(sorted(node.keys()))}).")
      if key != leaf:
        node = node[key]
    try:
      value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
      value = raw
    old = node[leaf]
    if isinstance(old, float) and isinstance(value, int) and not isinstance(value, bool):
      value = float(value)
    try:
      node[leaf] = value
    except TypeError as e:
      raise ConfigError(f"--config.{dotted}={raw}: expected {type(old).__name__} like {old!r}.") \
          from e


def _require(ok: bool, message: str) -> None:
  if not ok:
    raise ConfigError(message)


def _validate_estimator_knobs(config: ml_collections.ConfigDict) -> None:
  """Discounts, GAE lambda, GiGPO/OPSD weights, value clip and the critic's learning rate.

  A config without these keys (written before them) gets StepConfig's defaults."""
  a = {f.name: config.algo.get(f.name, f.default) for f in dataclasses.fields(StepConfig)}
  for key in ("gamma", "gae_gamma"):
    _require(0.0 < a[key] <= 1.0,
             f"algo.{key}={a[key]} must be in (0, 1]; e.g. --config.algo.{key}=0.95")
  _require(0.0 <= a["gae_lambda"] <= 1.0,
           f"algo.gae_lambda={a['gae_lambda']} must be in [0, 1]; e.g. "
           "--config.algo.gae_lambda=1.0")
  for key in ("gigpo_step_weight", "opsd_beta", "value_clip"):
    _require(a[key] >= 0.0, f"algo.{key}={a[key]} must be >= 0; e.g. --config.algo.{key}=0.1")
  _require(a["opsd_kl"] in algorithms.OPSD_KL_ESTIMATORS,
           f"algo.opsd_kl={a['opsd_kl']!r}: choose one of {algorithms.OPSD_KL_ESTIMATORS}.")
  critic_lr = config.optim.get("critic_lr", CRITIC_LR)
  _require(critic_lr > 0.0,
           f"optim.critic_lr={critic_lr} must be > 0; e.g. --config.optim.critic_lr=1e-3")


def validate(config: ml_collections.ConfigDict, num_devices: int) -> None:
  """Checks every value a run depends on; raises ConfigError naming the key and the fix."""
  a, r, t = config.algo, config.rollout, config.train
  _require(a.estimator in ESTIMATORS,
           f"algo.estimator={a.estimator!r}: choose one of {ESTIMATORS}.")
  _require(0.0 < a.alpha_clip < 1.0,
           f"algo.alpha_clip={a.alpha_clip} must be in (0, 1); e.g. --config.algo.alpha_clip=0.2")
  _require(0.0 <= a.lambda_mix <= 1.0,
           f"algo.lambda_mix={a.lambda_mix} must be in [0, 1]; e.g. --config.algo.lambda_mix=0.5")
  for key, choices in (("credit_budget", algorithms.CREDIT_BUDGETS), ("teacher", TEACHERS),
                       ("loss_agg", losses.LOSS_AGGREGATIONS),
                       ("kl_estimator", losses.KL_ESTIMATORS)):
    _require(a[key] in choices, f"algo.{key}={a[key]!r}: choose one of {choices}.")
  _validate_estimator_knobs(config)
  _require(r.group_size >= 1 and r.batch_size % r.group_size == 0,
           f"rollout.batch_size={r.batch_size} is not divisible by rollout.group_size="
           f"{r.group_size}; make batch_size a multiple of group_size.")
  _require(r.control_mode in ("action_only", "no_observation", "all"),
           f"rollout.control_mode={r.control_mode!r}: choose action_only, no_observation or all.")
  _require(r.max_new_tokens >= 1, "rollout.max_new_tokens must be >= 1.")
  _require("temperature" not in a,
           "algo.temperature is not a key: the step scores tokens at rollout.temperature, the "
           "temperature they were sampled at; set --config.rollout.temperature instead.")
  _require(r.temperature > 0,
           f"rollout.temperature={r.temperature} must be > 0 (training samples; greedy decoding "
           "is for evaluation only); e.g. --config.rollout.temperature=1.0")
  _require(config.env.name in envs.known_envs(),
           f"env.name={config.env.name!r}: known envs are {envs.known_envs()}.")
  try:
    shape = sharding.mesh_shape(config.mesh.data, config.mesh.fsdp, config.mesh.tensor,
                                num_devices)
  except ValueError as e:
    raise ConfigError(str(e)) from e
  dp = shape[0] * shape[1]
  bad = [b for b in r.batch_buckets if b % (dp * a.micro_batches)]
  _require(not bad, f"rollout.batch_buckets {bad} are not divisible by data x fsdp ({dp}) x "
                    f"algo.micro_batches ({a.micro_batches}); use multiples of "
                    f"{dp * a.micro_batches}.")
  _require(t.num_steps >= 0 and t.sft_steps >= 0,
           "train.num_steps and train.sft_steps must be >= 0.")
  _require(t.eval_every >= 1 and t.checkpoint_every >= 1,
           "train.eval_every and train.checkpoint_every must be >= 1.")
