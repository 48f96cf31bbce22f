"""The trainer: format warm-up, then rollout -> StepBatch -> the jitted step, with eval and resume.

    python -m stepopsd_jax.train --config=configs/default.py --workdir=DIR [--config.a.b=v]

Writes DIR/tb/ (TensorBoard), DIR/metrics.jsonl, DIR/eval.json, DIR/plots/learning_curve.png and
DIR/checkpoints/ (orbax; resumed automatically).
"""

from __future__ import annotations

import logging
import time

import grain
import jax
import tqdm

from stepopsd_jax.rollout import loop
from stepopsd_jax.train import checkpoint as ckpt_lib
from stepopsd_jax.train import metrics as metrics_lib
from stepopsd_jax.train import multihost
from stepopsd_jax.train import sft
from stepopsd_jax.train.setup import Setup, build, optimizers, prompt_config
from stepopsd_jax.train.state import abstract_state, create_state
from stepopsd_jax.train.step import batch_ndims, jit_train_step

log = logging.getLogger(__name__)

# Independent RNG streams derived from the one config seed (fold_in, then the step).
_INIT, _ROLLOUT, _TRAIN, _EVAL = range(4)


def task_iterator(setup: Setup):
  """Endless shuffled batches of train-task indices, sharded per process; resumable."""
  r = setup.config.rollout
  ds = grain.MapDataset.range(len(setup.train_tasks))
  ds = ds[jax.process_index()::jax.process_count()]
  ds = ds.shuffle(seed=setup.config.seed).repeat().batch(r.batch_size // r.group_size)
  return ds.to_iter_dataset().__iter__()


def evaluate(setup: Setup, params, rng) -> dict[str, float]:
  """Greedy episodes on the eval tasks: success overall and per subset, invalid rate, return."""
  result = loop.collect(setup.eval_sampler, params, setup.tokenizer, setup.config.env.name,
                        setup.eval_tasks, rng, setup.eval_cfg, env_seed=1 << 20)
  keys = [k for k in result.metrics if k.startswith("success")]
  return {k: result.metrics[k] for k in keys + ["return", "invalid_action_rate", "env_invalid_rate",
                                                "episode_steps"]}


def _warm_up(setup: Setup, params, writer) -> object:
  t = setup.config.train
  if t.sft_steps == 0:
    return params
  examples = sft.random_policy_examples(setup.config.env.name, setup.train_tasks,
                                        setup.tokenizer, prompt_config(setup.config),
                                        seed=setup.config.seed)
  bar = tqdm.tqdm(total=t.sft_steps, desc="format warm-up", leave=False)

  def on_step(i, loss):
    bar.update(1)
    if i % 10 == 0 or i == t.sft_steps - 1:
      writer.write(i, {"loss": float(loss)}, prefix="sft")

  params, loss = sft.warm_up(setup.model_config, params, examples, steps=t.sft_steps,
                             lr=t.sft_lr, batch_size=t.sft_batch_size,
                             response_len=setup.config.rollout.max_new_tokens,
                             pad_id=setup.tokenizer.pad_token_id, buckets=setup.sampler.buckets,
                             seed=setup.config.seed, on_step=on_step)
  bar.close()
  log.info("format warm-up: %d steps, final loss %.3f", t.sft_steps, loss)
  return params


def state_options(setup: Setup) -> dict:
  """The optional TrainState parts this run has, as create_state/abstract_state keywords:
  a reference and/or EMA copy, and for ppo/steppo the critic's optimizer (`optim.critic_lr`;
  the policy's warm-up, weight decay, clip and betas)."""
  cfg = setup.step_cfg
  _, critic_tx = optimizers(setup.config, cfg)
  return {"keep_reference": cfg.keep_reference, "keep_ema": cfg.keep_ema,
          "critic_tx": critic_tx}


def _resume(setup: Setup, checkpointer):
  """(state, step, task iterator) from the latest checkpoint, or None when there is none."""
  restored = checkpointer.restore_latest(abstract_state(
      setup.model_config, setup.tx, setup.mesh, **state_options(setup)))
  if restored is None:
    return None
  state, extra, step = restored
  tasks = task_iterator(setup)
  tasks.set_state(extra["tasks"])
  log.info("resumed from step %d", step)
  return state, step, tasks


def _fresh_start(setup: Setup, params, checkpointer, writer, base_rng):
  """Evaluates the initial policy, runs the format warm-up, saves step 0."""
  tasks = task_iterator(setup)
  eval_rng = jax.random.fold_in(base_rng, _EVAL)
  writer.write_eval(0, {f"before_warmup/{k}": v
                        for k, v in evaluate(setup, params, eval_rng).items()})
  params = _warm_up(setup, params, writer)
  state = create_state(setup.model_config, params, setup.tx, setup.mesh,
                       **state_options(setup))  # a critic starts from the warmed-up policy
  writer.write_eval(0, evaluate(setup, state.params, eval_rng))
  checkpointer.save(0, state, {"tasks": tasks.get_state()}, force=True)
  return state, 0, tasks


def _rl_step(setup: Setup, state, tasks, base_rng, step: int):
  t0 = time.perf_counter()
  batch_tasks = [setup.train_tasks[i] for i in next(tasks)]
  rollout = loop.collect(setup.sampler, state.params, setup.tokenizer, setup.config.env.name,
                         batch_tasks, jax.random.fold_in(jax.random.fold_in(base_rng, _ROLLOUT),
                                                         step),
                         setup.rollout_cfg, env_seed=step * jax.process_count()
                         + jax.process_index())
  t1 = time.perf_counter()
  arrays = multihost.global_step_batch(rollout.batch.arrays(), setup.mesh,
                                      setup.tokenizer.pad_token_id)
  step_fn = jit_train_step(setup.model_config, setup.step_cfg, setup.tx, setup.mesh,
                           batch_ndims(arrays), state_options(setup)["critic_tx"])
  state, metrics = step_fn(state, arrays, jax.random.fold_in(jax.random.fold_in(base_rng, _TRAIN),
                                                             step))
  metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
  t2 = time.perf_counter()
  rollout_metrics = multihost.global_rollout_metrics(rollout.tally)  # all processes' episodes
  timing = {"rollout_s": t1 - t0, "train_s": t2 - t1,  # the processes roll out in lock-step
            "tokens_per_s": rollout_metrics["generated_tokens"] / max(t1 - t0, 1e-9)}
  return state, rollout_metrics, metrics, timing


def run(config, workdir: str) -> dict[str, float]:
  """Trains to `train.num_steps`; returns the final eval table."""
  base_rng = jax.random.key(config.seed)
  setup, params = build(config, jax.random.fold_in(base_rng, _INIT))
  t = config.train
  checkpointer = ckpt_lib.Checkpointer(f"{workdir}/checkpoints", every=t.checkpoint_every,
                                       keep=t.keep_checkpoints)
  checkpointer.install_sigterm_handler()
  resumed = _resume(setup, checkpointer) if t.resume else None
  writer = metrics_lib.MetricsWriter(workdir, resume_step=resumed[1] if resumed else None)
  state, start, tasks = resumed or _fresh_start(setup, params, checkpointer, writer, base_rng)
  eval_rng = jax.random.fold_in(base_rng, _EVAL)
  final = {}
  for step in tqdm.trange(start, t.num_steps, initial=start, total=t.num_steps, desc="train"):
    state, rollout_metrics, train_metrics, timing = _rl_step(setup, state, tasks, base_rng, step)
    writer.write(step + 1, rollout_metrics, prefix="rollout")
    writer.write(step + 1, train_metrics, prefix="train")
    writer.write(step + 1, timing, prefix="time")
    if (step + 1) % t.eval_every == 0 or step + 1 == t.num_steps:
      final = evaluate(setup, state.params, eval_rng)
      writer.write_eval(step + 1, final)
    checkpointer.save(step + 1, state, {"tasks": tasks.get_state()},
                      force=step + 1 == t.num_steps or checkpointer.should_stop())
    if checkpointer.should_stop():
      log.warning("SIGTERM: saved step %d and stopping", step + 1)
      break
  checkpointer.close()
  writer.plot()
  writer.close()
  return final
