"""Experiment configs: the one set of defaults, the command line, and validation.

Configs are Python files with `get_config(arg)` returning an `ml_collections.ConfigDict`
(big_vision style). Each starts from `base_config()`, which holds every key a run reads with its
default (the `algo` block is made from `StepConfig`'s fields, the rollout's from the rollout
dataclasses), and sets only what it changes. The command line is `ml_collections.config_flags`
(`--config=path:arg --config.a.b=v`, typed); this module adds only one-line errors that name
the key and the fix. Everything is validated before anything compiles.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Callable, Sequence
from typing import Any

import ml_collections
from absl import flags
from ml_collections import config_flags

from stepopsd_jax import envs, sampling, sharding, text
from stepopsd_jax.rollout import RolloutConfig
from stepopsd_jax.rollout.prompts import PromptConfig
from stepopsd_jax.train.config import ConfigError, StepConfig

CRITIC_LR = 1e-3
NOT_ALGO = ("temperature",)  # StepConfig fields set from other keys (rollout.temperature)


def parse_arg(arg: str | None, **defaults: Any) -> dict[str, Any]:
  """`"model=qwen3_1p7b,runlocal"` -> {"model": "qwen3_1p7b", "runlocal": True, ...defaults}.

  A bare word sets a boolean default to True; values are coerced to the default's type.
  """
  out = dict(defaults)
  for item in filter(None, (arg or "").split(",")):
    key, eq, value = item.partition("=")
    if key not in defaults:
      raise ConfigError(f"unknown config arg {key!r}; known: {sorted(defaults)}.")
    default = defaults[key]
    if not eq:
      out[key] = True
    elif isinstance(default, bool):
      out[key] = value.lower() in ("1", "true", "yes")
    else:
      out[key] = type(default)(value) if default is not None else value
  return out


def _defaults(cls) -> dict[str, Any]:
  return {f.name: f.default for f in dataclasses.fields(cls)}


def base_config() -> ml_collections.ConfigDict:
  """Every key a run reads, with its default. Config files set what they change."""
  rollout, sample, prompt = _defaults(RolloutConfig), _defaults(sampling.SamplingParams), (
      _defaults(PromptConfig))
  buckets = _defaults(sampling.Buckets)
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.model = ml_collections.ConfigDict(dict(
      preset="qwen3_tiny",  # a random preset with the tokenizer's vocab, or...
      path="",  # ...a HF checkpoint dir (or hub id) to load instead
      dtype="float32", remat_policy="none",
      layer_unroll=0,  # layers per layer-scan iteration; 0: all when <= 8 layers, else 1
      attention_block=128))  # queries per causal-attention block; 0: one block
  c.tokenizer = ml_collections.ConfigDict(dict(
      path="",  # HF tokenizer dir or .model file; "": SentencePiece trained on the env's texts
      train_vocab_size=2000))
  c.env = ml_collections.ConfigDict(dict(name="credit_lab/critical_step",
                                         kwargs=ml_collections.ConfigDict(),
                                         num_train_tasks=2048, num_eval_tasks=96))
  c.rollout = ml_collections.ConfigDict(dict(
      batch_size=32,  # trajectories per step = tasks per step x group_size
      group_size=rollout["group_size"], max_new_tokens=sample["max_new_tokens"],
      temperature=sample["temperature"], top_p=sample["top_p"], top_k=sample["top_k"],
      history_window=prompt["history_window"], system_prompt="",  # "": the template's own
      control_mode=rollout["control_mode"], invalid_penalty=rollout["invalid_penalty"],
      hindsight_sibling=rollout["hindsight_sibling"],
      hindsight_reference=rollout["hindsight_reference"],
      batch_buckets=buckets["batch"],  # StepBatch rows (agent steps): the train step's shapes
      decode_batch_buckets=(),  # the sampler's batch (episodes); empty: see decode_batch_buckets
      share_prompts=True,  # prefill a sampler call's repeated prompts once (Sampler)
      pack_prompts=True,  # pack short prompts several to a prefill row when it saves rows
      # sampler calls decoding parts of a turn's rows at once (Sampler.streams); 0: 2 on one
      # CPU device (faster there from 32 rows), else 1
      sampler_streams=0,
      prompt_buckets=buckets["prompt"]))
  c.algo = ml_collections.ConfigDict({k: v for k, v in _defaults(StepConfig).items()
                                      if k not in NOT_ALGO})
  c.optim = ml_collections.ConfigDict(dict(
      lr=3e-4, warmup_steps=5, weight_decay=0.0, grad_clip=1.0, b1=0.9, b2=0.99,
      critic_lr=CRITIC_LR))  # ppo / steppo: the critic's own AdamW (same warm-up, clip, betas)
  c.train = ml_collections.ConfigDict(dict(
      num_steps=60, eval_every=20, checkpoint_every=20, keep_checkpoints=2, resume=True,
      max_consecutive_skips=5,  # stop after this many non-finite updates in a row
      # format warm-up: behaviour cloning of the env's random policy before RL
      sft_steps=0, sft_lr=3e-3, sft_batch_size=32, sft_weight_decay=1e-4,
      # the reading warm-up: this fraction of the episodes carries a hindsight block listing
      # their own (random) actions, to be followed (run/warmup.reading_examples)
      sft_hint_fraction=0.0,
      sft_prompt_loss=False))  # add the next-token loss on the prompts' own tokens
  c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))
  return c


def model_options(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The `model.*` keys that become QwenConfig fields whatever the model's source (a preset or
  a checkpoint); keys a config saved before they existed take QwenConfig's defaults."""
  m = config.model
  return {k: m[k] for k in ("remat_policy", "layer_unroll", "attention_block") if k in m}


def step_config(config: ml_collections.ConfigDict) -> StepConfig:
  """The step's settings: `algo.*`, and the temperature the behaviour log-probs were sampled
  at (`rollout.temperature`, the one source of it: the PPO ratio and the teacher gap must score
  tokens under the distribution they were sampled from)."""
  return StepConfig(**config.algo.to_dict(), temperature=config.rollout.temperature)


# ------------------------------------------------------------------------------------------
# The command line: ml_collections.config_flags, with one-line errors.
# ------------------------------------------------------------------------------------------
DEFAULT_CONFIG = "configs/default.py"


def parse_flags(argv: Sequence[str], define: Callable[[flags.FlagValues], None] | None = None,
                workdir_required: bool = True) -> flags.FlagValues:
  """`--config=path[:arg] --config.a.b=v --workdir=DIR` (plus what `define` adds) -> parsed
  flags; raises ConfigError with one line naming the argument and the fix."""
  argv = ["prog", *argv]
  fv = flags.FlagValues()
  try:
    config_flags.DEFINE_config_file("config", DEFAULT_CONFIG, "config file[:arg]",
                                    flag_values=fv, sys_argv=argv)
    flags.DEFINE_string("workdir", None, "checkpoints, logs and eval tables", flag_values=fv)
    if define is not None:
      define(fv)
    fv(argv)
    fv.config.keys()  # a config file that failed to load raises only when first used
  except Exception as e:  # pylint: disable=broad-except
    wrapped = "Error whilst parsing config file" in str(e) or not isinstance(e, flags.Error)
    raise ConfigError(_one_line(_root_cause(e) if wrapped else e, argv)) from e
  if workdir_required and not fv.workdir:
    raise ConfigError("--workdir is required, e.g. --workdir=/tmp/run")
  return fv


def load(spec: str = DEFAULT_CONFIG, overrides: dict[str, Any] | None = None
         ) -> ml_collections.ConfigDict:
  """The config of `path[:arg]` with `{"a.b": v}` overrides, parsed as on the command line."""
  argv = [f"--config={spec}"] + [f"--config.{k}={v}" for k, v in (overrides or {}).items()]
  return parse_flags(argv, workdir_required=False).config


def _root_cause(e: BaseException) -> BaseException:
  """The innermost exception: absl wraps what a config file's get_config(arg) raised."""
  while (e.__cause__ or e.__context__) is not None:
    e = e.__cause__ or e.__context__
  return e


def _one_line(e: BaseException, argv: Sequence[str]) -> str:
  """What absl / config_flags raised, as one line in the project's words."""
  text = str(e)
  if isinstance(e, (KeyError, AttributeError)):  # an override names no key of the config
    name = re.search(r"[A-Za-z_][A-Za-z_0-9]*", text)
    name = name.group(0) if name else text
    bad = next((a for a in argv if re.search(rf"\.{name}(\.|=|$)", a.split("=")[0])), "")
    key = bad.split("=")[0].removeprefix("--config.") or name
    hint = re.search(r"Did you mean [^?]*\?", text)
    return f"unknown config key {key!r}" + (f" ({hint.group(0)})" if hint else "") + "."
  if isinstance(e, OSError) or "No such file" in text:
    spec = next((a for a in argv if a.startswith("--config=")), f"--config={DEFAULT_CONFIG}")
    return f"{spec}: no such config file; e.g. --config=configs/default.py"
  lines = [line.strip() for line in text.splitlines() if line.strip()]
  return lines[0] if lines else type(e).__name__


# ------------------------------------------------------------------------------------------
# Validation: the checks that span sections (each section's own checks live in its dataclass).
# ------------------------------------------------------------------------------------------
def _require(ok: bool, message: str) -> None:
  if not ok:
    raise ConfigError(message)


def validate(config: ml_collections.ConfigDict, num_devices: int) -> None:
  """Checks every value a run depends on; raises ConfigError naming the key and the fix."""
  a, r, t = config.algo, config.rollout, config.train
  _require("temperature" not in a,
           "algo.temperature is not a key: the step scores tokens at rollout.temperature, the "
           "temperature they were sampled at; set --config.rollout.temperature instead.")
  step = step_config(config)  # StepConfig owns the algo checks
  rollout_config(config)  # and RolloutConfig / SamplingParams the rollout's
  _require(r.batch_size % r.group_size == 0,
           f"rollout.batch_size={r.batch_size} is not divisible by rollout.group_size="
           f"{r.group_size}; make batch_size a multiple of group_size.")
  _require(config.env.name in envs.known_envs(),
           f"env.name={config.env.name!r}: known envs are {envs.known_envs()}.")
  try:
    shape = sharding.mesh_shape(config.mesh.data, config.mesh.fsdp, config.mesh.tensor,
                                num_devices)
  except ValueError as e:
    raise ConfigError(str(e)) from e
  dp = shape[0] * shape[1]
  bad = [b for b in r.batch_buckets if b % (dp * step.micro_batches)]
  _require(not bad, f"rollout.batch_buckets {bad} are not divisible by data x fsdp ({dp}) x "
                    f"algo.micro_batches ({step.micro_batches}); use multiples of "
                    f"{dp * step.micro_batches}.")
  _require(r.sampler_streams >= 0, f"rollout.sampler_streams={r.sampler_streams} must be >= 0 "
                                    "(0: chosen by the backend).")
  bad = [b for b in r.decode_batch_buckets if b < 1 or b % dp]
  _require(not bad, f"rollout.decode_batch_buckets {bad} are not positive multiples of data x "
                    f"fsdp ({dp}); use multiples of {dp}, or () for the default.")
  _require(t.sft_steps == 0 or t.sft_batch_size % dp == 0,
           f"train.sft_batch_size={t.sft_batch_size} is not divisible by data x fsdp ({dp}).")
  _require(0.0 <= t.sft_hint_fraction <= 1.0,
           f"train.sft_hint_fraction={t.sft_hint_fraction} must be in [0, 1].")
  check_model_files(config.model.path, config.tokenizer.path)
  _require(t.num_steps >= 0 and t.sft_steps >= 0,
           "train.num_steps and train.sft_steps must be >= 0.")
  _require(t.eval_every >= 1 and t.checkpoint_every >= 1 and t.max_consecutive_skips >= 1,
           "train.eval_every, train.checkpoint_every and train.max_consecutive_skips must be "
           ">= 1.")
  _require(config.optim.critic_lr > 0.0,
           f"optim.critic_lr={config.optim.critic_lr} must be > 0; e.g. "
           "--config.optim.critic_lr=1e-3")


def rollout_config(config, *, evaluation: bool = False) -> RolloutConfig:
  """Evaluation runs one greedy episode per task and builds no teacher prompts; training builds
  them only for the estimators whose step reads them (stepopsd, opsd)."""
  r = config.rollout
  try:
    sampling.SamplingParams(max_new_tokens=r.max_new_tokens, temperature=r.temperature,
                            top_p=r.top_p, top_k=r.top_k)
    return RolloutConfig(
        group_size=1 if evaluation else r.group_size, control_mode=r.control_mode,
        invalid_penalty=r.invalid_penalty, hindsight_sibling=r.hindsight_sibling,
        hindsight_reference=r.hindsight_reference,
        teacher_prompts=not evaluation and step_config(config).needs_teacher,
        prompt=prompt_config(config))
  except ConfigError:
    raise
  except ValueError as e:
    raise ConfigError(f"rollout: {e}") from e


def decode_batch_buckets(config, dp: int, processes: int = 1) -> tuple[int, ...]:
  """The sampler's batch buckets: `rollout.decode_batch_buckets`, or when empty m, 2m, 4m, ...
  up to the largest of `rollout.batch_buckets`, m the first multiple of dp = data x fsdp that is
  at least 8 (fewer rows decode no faster on an accelerator, and every bucket compiles), and
  the episodes a process starts each step with (`rollout.batch_size` / processes, rounded up to
  a multiple of dp) and half of them (rounded up the same way), so that a step's first turn pads
  nothing, in one call or in two streams (`Sampler.streams`).

  The rollout decodes one row per episode still running, far fewer than a step's rows (agent
  steps) that `batch_buckets` are sized for: padding ALFWorld's 128 episodes to its smallest
  row bucket, 1024, decoded 8x the rows."""
  r = config.rollout
  if r.decode_batch_buckets:
    return tuple(sorted(r.decode_batch_buckets))
  top = max(r.batch_buckets)
  size, sizes = dp * -(-8 // dp), set()
  while size < top:
    sizes.add(size)
    size *= 2
  episodes = dp * -(-r.batch_size // (processes * dp))
  half = dp * -(-episodes // (2 * dp))  # the parts of a first turn decoded as two streams
  return tuple(sorted(sizes | {top} | {e for e in (episodes, half) if e <= top}))


def prompt_config(config) -> PromptConfig:
  """The rollout's prompt settings; the format instruction is the env protocol's."""
  return PromptConfig(history_window=config.rollout.history_window,
                      system_prompt=config.rollout.system_prompt or None)


_REBUILD = ("rebuild it (`python -m stepopsd_jax.tools.make_base --out DIR`) or point the key at a "
            "Hugging Face checkpoint dir")


def check_model_files(model_path: str, tokenizer_path: str) -> None:
  """A local `model.path` dir holds config.json and safetensors, a local `tokenizer.path` a
  tokenizer, and the tokenizer's ids fit the model's vocabulary; else one line naming the file
  (hub ids are left to the download)."""
  local = lambda p: bool(p) and (os.path.isdir(p) or p.startswith(("/", ".", "~")))
  if local(model_path):
    _require(os.path.isdir(model_path), f"model.path={model_path}: no such directory; {_REBUILD}.")
    _require(os.path.isfile(os.path.join(model_path, "config.json")),
             f"model.path={model_path}: config.json is missing; {_REBUILD}.")
    _require(any(f.endswith(".safetensors") for f in os.listdir(model_path)),
             f"model.path={model_path}: no *.safetensors weights; {_REBUILD}.")
  if not local(tokenizer_path):
    return
  _require(os.path.exists(tokenizer_path), f"tokenizer.path={tokenizer_path}: does not exist.")
  if os.path.isdir(tokenizer_path):
    _require(os.path.isfile(os.path.join(tokenizer_path, "tokenizer.json")),
             f"tokenizer.path={tokenizer_path}: tokenizer.json is missing; {_REBUILD}.")
  if local(model_path):
    with open(os.path.join(model_path, "config.json")) as f:
      model_vocab = json.load(f).get("vocab_size", 0)
    tokenizer_vocab = text.load_tokenizer(tokenizer_path).vocab_size
    _require(tokenizer_vocab <= model_vocab,
             f"tokenizer.path={tokenizer_path}: {tokenizer_vocab} ids do not fit model.path="
             f"{model_path}'s vocab_size {model_vocab} (config.json): the tokenizer belongs to "
             "another model; use the tokenizer saved with the checkpoint.")
