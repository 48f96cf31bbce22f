"""The trainer: format warm-up, then rollout -> StepBatch -> the jitted step, with eval and resume.

    python -m stepopsd_jax.train --config=configs/default.py --workdir=DIR [--config.a.b=v]

Writes DIR/tb/ (TensorBoard), DIR/metrics.jsonl, DIR/eval.json, DIR/plots/learning_curve.png and
DIR/checkpoints/ (orbax; resumed automatically). A step's train metrics are fetched one step
late, when the next rollout has waited for its parameters anyway, so the host never blocks on
the device just to log.

Step times (`time/`): `rollout_s` is the rollout's own wall time, without the wait for the
previous update's parameters (`rollout_wait_s`: the rollout's host work before its first sampler
call overlaps that update); `update_s` runs from dispatching the jitted step until its outputs
are ready, observed by a helper thread so the host keeps working meanwhile.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import time

import grain
import jax
import tqdm

from stepopsd_jax.rollout import collect
from stepopsd_jax.run import metrics as metrics_lib
from stepopsd_jax.run import multihost, warmup
from stepopsd_jax.run.config import prompt_config
from stepopsd_jax.run.setup import Setup, build
from stepopsd_jax.train import checkpoint as ckpt_lib
from stepopsd_jax.train import jit_train_step

log = logging.getLogger(__name__)

# Independent RNG streams derived from the one config seed (fold_in, then the step).
INIT, ROLLOUT, TRAIN, EVAL = range(4)
EVAL_ENV_SEED = 1 << 20  # eval episodes build their envs from seeds no training episode uses


class NonFiniteUpdates(RuntimeError):
  """Too many consecutive steps whose loss or gradient was not finite."""


def task_iterator(setup: Setup):
  """Endless shuffled batches of train-task indices, sharded per process; resumable."""
  r = setup.config.rollout
  ds = grain.MapDataset.range(len(setup.train_tasks))
  ds = ds[jax.process_index()::jax.process_count()]
  ds = ds.shuffle(seed=setup.config.seed).repeat().batch(r.batch_size // r.group_size)
  return ds.to_iter_dataset().__iter__()


def evaluate(setup: Setup, params, rng) -> dict[str, float]:
  """Greedy episodes on the eval tasks: success overall and per subset, invalid rate, return."""
  result = collect(setup.eval_sampler, params, setup.tokenizer, setup.config.env.name,
                   setup.eval_tasks, rng, setup.eval_cfg, env_seed=EVAL_ENV_SEED)
  keys = [k for k in result.metrics if k.startswith("success")]
  return {k: result.metrics[k] for k in keys + ["return", "invalid_action_rate", "env_invalid_rate",
                                                "episode_steps"]}


def warm_up(setup: Setup, params, writer=None) -> object:
  """The format (and reading) warm-up of `train.sft_steps` steps (none: `params` unchanged)."""
  t = setup.config.train
  if t.sft_steps == 0:
    return params
  examples = warmup.reading_examples(setup.config.env.name, setup.train_tasks, setup.tokenizer,
                                     prompt_config(setup.config), seed=setup.config.seed,
                                     hint_fraction=t.sft_hint_fraction)
  bar = tqdm.tqdm(total=t.sft_steps, desc="format warm-up", leave=False)

  def on_step(i, loss):
    bar.update(1)
    if writer is not None and (i % 10 == 0 or i == t.sft_steps - 1):
      writer.write(i, {"loss": float(loss)}, prefix="sft")

  params, loss = warmup.warm_up(setup.model_config, params, examples, steps=t.sft_steps,
                                lr=t.sft_lr, batch_size=t.sft_batch_size,
                                response_len=setup.config.rollout.max_new_tokens,
                                pad_id=setup.tokenizer.pad_token_id,
                                buckets=setup.sampler.buckets, seed=setup.config.seed,
                                mesh=setup.mesh, weight_decay=t.sft_weight_decay,
                                prompt_loss=t.sft_prompt_loss, on_step=on_step)
  bar.close()
  log.info("format warm-up: %d steps, final loss %.3f", t.sft_steps, loss)
  return params


def _resume(setup: Setup, checkpointer):
  """(state, step, task iterator) from the latest checkpoint, or None when there is none."""
  restored = checkpointer.restore_latest(setup.abstract_state())
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
  eval_rng = jax.random.fold_in(base_rng, EVAL)
  writer.write_eval(0, {f"before_warmup/{k}": v
                        for k, v in evaluate(setup, params, eval_rng).items()})
  params = warm_up(setup, params, writer)
  state = setup.create_state(params)  # a critic starts from the warmed-up policy
  writer.write_eval(0, evaluate(setup, state.params, eval_rng))
  checkpointer.save(0, state, {"tasks": tasks.get_state()}, force=True)
  return state, 0, tasks


@dataclasses.dataclass
class _Pending:
  """A dispatched step whose metrics have not been fetched yet."""
  step: int
  metrics: dict
  dispatched: float
  ready: concurrent.futures.Future  # perf_counter when the step's outputs were ready
  timing: dict


def _ready_at(tree) -> float:
  jax.block_until_ready(tree)
  return time.perf_counter()


class _Loop:
  """The RL steps: rollout, then the jitted step (its metrics written one step late)."""

  def __init__(self, setup: Setup, writer, base_rng):
    self.setup, self.writer = setup, writer
    self.rollout_rng = jax.random.fold_in(base_rng, ROLLOUT)
    self.train_rng = jax.random.fold_in(base_rng, TRAIN)
    self.step_fn = jit_train_step(setup.model_config, setup.step_cfg, setup.tx, setup.mesh,
                                  setup.critic_tx)
    self.pending: _Pending | None = None
    self.skipped_in_a_row = 0
    self.watcher = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="update-ready")

  def step(self, state, tasks, step: int):
    t0 = time.perf_counter()
    batch_tasks = [self.setup.train_tasks[i] for i in next(tasks)]
    rollout = collect(self.setup.sampler, state.params, self.setup.tokenizer,
                      self.setup.config.env.name, batch_tasks,
                      jax.random.fold_in(self.rollout_rng, step), self.setup.rollout_cfg,
                      env_seed=step * jax.process_count() + jax.process_index())
    waited = rollout.tally.seconds.get("generate/wait_params", 0.0)
    rollout_s = time.perf_counter() - t0 - waited
    self.flush()  # the rollout waited for the previous step's parameters: its metrics are ready
    cfg = self.setup.step_cfg
    batch = multihost.global_step_batch(
        rollout.batch, self.setup.mesh, self.setup.tokenizer.pad_token_id,
        cfg.micro_batches if cfg.shapes_credit and cfg.credit_budget == "trajectory" else 1)
    dispatched = time.perf_counter()
    state, metrics = self.step_fn(state, batch, jax.random.fold_in(self.train_rng, step))
    ready = self.watcher.submit(_ready_at, metrics)  # not `state`: the next step donates it
    rollout_metrics = multihost.global_rollout_metrics(rollout.tally)  # all processes' episodes
    self.writer.write(step + 1, rollout_metrics, prefix="rollout")
    self.pending = _Pending(step + 1, metrics, dispatched, ready, {
        "rollout_s": rollout_s, "rollout_wait_s": waited,
        "tokens_per_s": rollout_metrics["generated_tokens"] / max(rollout_s, 1e-9)})
    return state

  def flush(self) -> None:
    """Writes the pending step's train and time metrics; stops the run after too many
    non-finite updates in a row."""
    if self.pending is None:
      return
    p, self.pending = self.pending, None
    metrics = metrics_lib.expand_by_step(jax.device_get(p.metrics))
    metrics = {k: float(v) for k, v in metrics.items()}
    self.writer.write(p.step, metrics, prefix="train")
    self.writer.write(p.step, {**p.timing, "update_s": p.ready.result() - p.dispatched},
                      prefix="time")
    self.skipped_in_a_row = self.skipped_in_a_row + 1 if metrics["skipped_update"] else 0
    limit = self.setup.config.train.max_consecutive_skips
    if self.skipped_in_a_row:
      log.warning("step %d: the loss or gradient was not finite; the update was skipped (%d in "
                  "a row)", p.step, self.skipped_in_a_row)
    if self.skipped_in_a_row >= limit:
      raise NonFiniteUpdates(
          f"{self.skipped_in_a_row} consecutive updates were skipped (non-finite loss or "
          f"gradient, last at step {p.step}); the parameters are those before them. Lower "
          "optim.lr or check the rewards; train.max_consecutive_skips sets the limit.")


def run(config, workdir: str) -> dict[str, float]:
  """Trains to `train.num_steps`; returns the final eval table."""
  base_rng = jax.random.key(config.seed)
  setup, params = build(config, jax.random.fold_in(base_rng, INIT))
  t = config.train
  checkpointer = ckpt_lib.Checkpointer(f"{workdir}/checkpoints", every=t.checkpoint_every,
                                       keep=t.keep_checkpoints)
  checkpointer.install_sigterm_handler()
  resumed = _resume(setup, checkpointer) if t.resume else None
  writer = metrics_lib.MetricsWriter(workdir, resume_step=resumed[1] if resumed else None)
  state, start, tasks = resumed or _fresh_start(setup, params, checkpointer, writer, base_rng)
  loop = _Loop(setup, writer, base_rng)
  eval_rng = jax.random.fold_in(base_rng, EVAL)
  final = {}
  for step in tqdm.trange(start, t.num_steps, initial=start, total=t.num_steps, desc="train"):
    state = loop.step(state, tasks, step)
    last = step + 1 == t.num_steps
    if (step + 1) % t.eval_every == 0 or last:
      final = evaluate(setup, state.params, eval_rng)
      writer.write_eval(step + 1, final)
    stop = checkpointer.should_stop()
    if (step + 1) % t.checkpoint_every == 0 or last or stop:
      loop.flush()  # a checkpoint's step has all its lines in metrics.jsonl
    checkpointer.save(step + 1, state, {"tasks": tasks.get_state()}, force=last or stop)
    if stop:
      log.warning("SIGTERM: saved step %d and stopping", step + 1)
      break
  loop.flush()
  loop.watcher.shutdown()
  checkpointer.close()
  writer.plot()
  writer.close()
  return final
