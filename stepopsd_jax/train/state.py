"""The train state (a pytree the step donates) and its sharded initialisation.

Optional fields are None unless the run needs them (no memory, nothing in the checkpoint):
`ref_params` (KL anchor or reference teacher), `ema_params` (EMA teacher), `critic_params` and
`critic_opt_state` (ppo / steppo: pass the critic's optimizer as `critic_tx`).
"""

from __future__ import annotations

import functools
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

from stepopsd_jax import models, sharding
from stepopsd_jax.models import QwenConfig
from stepopsd_jax.train.value_model import critic_shapes, critic_shardings, init_critic



@flax.struct.dataclass
class TrainState:
  step: jax.Array  # int32 []
  params: Any  # the policy
  opt_state: Any
  ref_params: Any = None  # frozen reference: KL anchor and/or teacher="reference"
  ema_params: Any = None  # teacher="ema"
  critic_params: Any = None  # ppo / steppo: {"backbone": ..., "head": ...} (train/critic.py)
  critic_opt_state: Any = None


@functools.lru_cache(maxsize=16)
def make_optimizer(lr: float, warmup_steps: int, total_steps: int, weight_decay: float = 0.0,
                   grad_clip: float | None = 1.0, b1: float = 0.9, b2: float = 0.999
                   ) -> optax.GradientTransformation:
  """AdamW with global-norm clipping (None: none) and a linear warm-up to a constant rate.
  Cached: equal settings give the same object, so runs share compiled steps."""
  del total_steps  # constant after warm-up, as in verl's default actor schedule
  schedule = optax.linear_schedule(0.0, lr, max(warmup_steps, 1)) if warmup_steps else lr
  adamw = optax.adamw(schedule, b1=b1, b2=b2, weight_decay=weight_decay)
  return adamw if grad_clip is None else optax.chain(optax.clip_by_global_norm(grad_clip), adamw)


def _init(params, tx, keep_reference: bool, keep_ema: bool, model_config: QwenConfig,
          critic_tx=None) -> TrainState:
  critic = init_critic(model_config, params) if critic_tx is not None else None
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                    ref_params=params if keep_reference else None,
                    ema_params=params if keep_ema else None, critic_params=critic,
                    critic_opt_state=critic_tx.init(critic) if critic is not None else None)


def opt_shardings(tx, param_shapes, param_shardings, mesh):
  """The optimizer state's shardings: moments like their params, counters replicated."""
  opt_shapes = jax.eval_shape(tx.init, param_shapes)
  return optax.tree_map_params(tx, lambda _, s: s, opt_shapes, param_shardings,
                               transform_non_params=lambda _: sharding.replicated(mesh))


@functools.lru_cache(maxsize=32)
def state_shardings(model_config: QwenConfig, tx, mesh, keep_reference: bool, keep_ema: bool,
                    critic_tx=None):
  """NamedShardings of every TrainState leaf: params by the logical rules, Adam moments alike."""
  param_shapes = models.param_shapes(model_config)
  params = sharding.tree_shardings(models.param_logical_axes(model_config), param_shapes, mesh)
  critic = critic_opt = None
  if critic_tx is not None:
    critic = critic_shardings(model_config, mesh)
    critic_opt = opt_shardings(critic_tx, critic_shapes(model_config), critic, mesh)
  return TrainState(step=sharding.replicated(mesh), params=params,
                    opt_state=opt_shardings(tx, param_shapes, params, mesh),
                    ref_params=params if keep_reference else None,
                    ema_params=params if keep_ema else None, critic_params=critic,
                    critic_opt_state=critic_opt)


def _init_fn(model_config, tx, keep_reference, keep_ema, critic_tx):
  return functools.partial(_init, tx=tx, keep_reference=keep_reference, keep_ema=keep_ema,
                           model_config=model_config, critic_tx=critic_tx)


@functools.lru_cache(maxsize=32)
def _jitted_init(model_config: QwenConfig, tx, mesh, keep_reference: bool, keep_ema: bool,
                 critic_tx=None):
  shardings = state_shardings(model_config, tx, mesh, keep_reference, keep_ema, critic_tx)
  return jax.jit(_init_fn(model_config, tx, keep_reference, keep_ema, critic_tx),
                 out_shardings=shardings)


@functools.lru_cache(maxsize=32)
def _jitted_random_params(model_config: QwenConfig, mesh):
  shardings = sharding.tree_shardings(models.param_logical_axes(model_config),
                                      models.param_shapes(model_config), mesh)
  return jax.jit(functools.partial(models.init_params, model_config), out_shardings=shardings)


def create_state(model_config: QwenConfig, params, tx, mesh, *, keep_reference: bool = False,
                 keep_ema: bool = False, critic_tx=None) -> TrainState:
  """Places `params` (host or device arrays) and a fresh optimizer state onto the mesh; with
  `critic_tx`, also a critic initialised from `params` (train/critic.py) and its optimizer."""
  shardings = state_shardings(model_config, tx, mesh, keep_reference, keep_ema, critic_tx)
  params = jax.device_put(params, shardings.params)
  return _jitted_init(model_config, tx, mesh, keep_reference, keep_ema, critic_tx)(params)


def init_state(model_config: QwenConfig, rng, tx, mesh, *, keep_reference: bool = False,
               keep_ema: bool = False, critic_tx=None) -> TrainState:
  """Random parameters initialised directly into their shardings (no host copy)."""
  params = _jitted_random_params(model_config, mesh)(rng)
  return create_state(model_config, params, tx, mesh, keep_reference=keep_reference,
                      keep_ema=keep_ema, critic_tx=critic_tx)


def abstract_state(model_config: QwenConfig, tx, mesh, *, keep_reference: bool = False,
                   keep_ema: bool = False, critic_tx=None) -> TrainState:
  """ShapeDtypeStructs with shardings of a TrainState: the target of a checkpoint restore."""
  shardings = state_shardings(model_config, tx, mesh, keep_reference, keep_ema, critic_tx)
  shapes = jax.eval_shape(_init_fn(model_config, tx, keep_reference, keep_ema, critic_tx),
                          models.param_shapes(model_config))
  return jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                      shapes, shardings)
