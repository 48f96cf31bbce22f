"""Everything a run builds from its config before the loop: tokenizer, model, mesh, optimizers,
samplers, task sets. Built once; the trainer and `evaluate` share it."""

from __future__ import annotations

import dataclasses
import functools

import jax
import ml_collections

from stepopsd_jax import envs, models, sampling, sharding, text
from stepopsd_jax.rollout import RolloutConfig, agent_sampler, protocol, random_policy
from stepopsd_jax.run.config import (
    decode_batch_buckets,
    model_options,
    prompt_config,
    rollout_config,
    step_config,
    validate,
)
from stepopsd_jax.train import StepConfig, make_optimizer
from stepopsd_jax.train.state import abstract_state, create_state


@dataclasses.dataclass
class Setup:
  config: ml_collections.ConfigDict
  model_config: models.QwenConfig
  tokenizer: text.Tokenizer
  mesh: jax.sharding.Mesh
  tx: object  # the policy's AdamW
  critic_tx: object | None  # the critic's (ppo, steppo), else None
  step_cfg: StepConfig
  rollout_cfg: RolloutConfig
  eval_cfg: RolloutConfig
  sampler: sampling.Sampler
  eval_sampler: sampling.Sampler
  train_tasks: list
  eval_tasks: list

  @property
  def state_options(self) -> dict:
    """The optional TrainState parts of this run, as create_state/abstract_state keywords."""
    return {"keep_reference": self.step_cfg.keep_reference, "keep_ema": self.step_cfg.keep_ema,
            "critic_tx": self.critic_tx}

  def create_state(self, params):
    return create_state(self.model_config, params, self.tx, self.mesh, **self.state_options)

  def abstract_state(self):
    return abstract_state(self.model_config, self.tx, self.mesh, **self.state_options)


def optimizers(config, cfg: StepConfig) -> tuple[object, object | None]:
  """(policy AdamW, critic AdamW or None): the critic's has `optim.critic_lr` and the policy's
  warm-up, weight decay, clip and betas. `make_optimizer` is cached, so equal configs give the
  same objects (and share compiled steps)."""
  o = config.optim
  make = lambda lr: make_optimizer(lr, o.warmup_steps, config.train.num_steps, o.weight_decay,
                                   o.grad_clip, o.b1, o.b2)
  return make(o.lr), make(o.critic_lr) if cfg.needs_critic else None


def make_task_set(config, split: str) -> list:
  """The config's "train" or "eval" tasks (`env.num_<split>_tasks` of them, seeded)."""
  e = config.env
  num = e.num_train_tasks if split == "train" else e.num_eval_tasks
  return envs.make_tasks(e.name, split, num, seed=config.seed, **e.kwargs)


def make_tokenizer(config, train_tasks) -> text.Tokenizer:
  """The configured tokenizer, or a SentencePiece one trained on random-policy episode texts."""
  if config.tokenizer.path:
    return text.load_tokenizer(config.tokenizer.path)
  return random_policy.train_env_tokenizer(config.env.name, train_tasks[:256],
                                           prompt_config(config),
                                           config.tokenizer.train_vocab_size, config.seed)


def initial_params(config, tokenizer, rng):
  """(model config, params): a HF checkpoint if `model.path`, else a random preset."""
  m = config.model
  if m.path:
    model_config, params = models.load_hf(m.path, dtype=m.dtype)
    model_config = model_config.replace(**model_options(config))
  else:
    model_config = models.get_preset(m.preset, vocab_size=models.padded_vocab(tokenizer.vocab_size),
                                     param_dtype=m.dtype, dtype=m.dtype,
                                     **model_options(config))
    params = models.init_params(model_config, rng)
  if model_config.vocab_size < tokenizer.vocab_size:
    raise ValueError(f"model vocab {model_config.vocab_size} < tokenizer vocab "
                     f"{tokenizer.vocab_size}: the tokenizer at tokenizer.path does not belong to "
                     "this model.")
  return model_config, params


def make_sampler(config, model_config, tokenizer, *, greedy: bool,
                 mesh=None) -> sampling.Sampler:
  """The rollout sampler; it stops at EOS or at the env protocol's stop strings."""
  r = config.rollout
  dp = 1 if mesh is None else sharding.data_parallel_size(mesh)
  return agent_sampler(
      model_config, tokenizer, max_new_tokens=r.max_new_tokens,
      temperature=0.0 if greedy else r.temperature, top_p=r.top_p, top_k=r.top_k,
      buckets=sampling.Buckets(batch=decode_batch_buckets(config, dp, jax.process_count()),
                               prompt=tuple(r.prompt_buckets), rows=tuple(r.batch_buckets)),
      stop_strings=protocol.for_env(config.env.name).stop_strings, mesh=mesh,
      share_prompts=r.share_prompts, pack_prompts=r.pack_prompts,
      streams=r.sampler_streams or None)


def build(config, rng) -> tuple[Setup, object]:
  """Validates the config and builds the run; returns the setup and the initial params."""
  validate(config, jax.device_count())
  train_tasks, eval_tasks = make_task_set(config, "train"), make_task_set(config, "eval")
  tokenizer = make_tokenizer(config, train_tasks)
  model_config, params = initial_params(config, tokenizer, rng)
  cfg = step_config(config)
  tx, critic_tx = optimizers(config, cfg)
  mesh = sharding.make_mesh(config.mesh.data, config.mesh.fsdp, config.mesh.tensor)
  sampler = functools.partial(make_sampler, config, model_config, tokenizer, mesh=mesh)
  setup = Setup(
      config=config, model_config=model_config, tokenizer=tokenizer, mesh=mesh, tx=tx,
      critic_tx=critic_tx, step_cfg=cfg, rollout_cfg=rollout_config(config),
      eval_cfg=rollout_config(config, evaluation=True), sampler=sampler(greedy=False),
      eval_sampler=sampler(greedy=True), train_tasks=train_tasks, eval_tasks=eval_tasks)
  return setup, params
