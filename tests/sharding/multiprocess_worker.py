"""One process of the 2-process CPU test: 2 train steps over a global mesh, prints a checksum.

After training, every process saves the state through `train.checkpoint.Checkpointer` (async
orbax, each process writing its own shards) into the one directory given as argv[2], and restores
it into a different mesh (fsdp over all devices), whose checksum must equal the trained one.

Each process brings its own StepBatch (its own rows and prompt widths, and ids numbered from 0,
as its own rollouts would) and `train.multihost.global_step_batch` joins them. The
single-process reference is one process given the concatenated rows with its trajectories and
groups numbered the way one process numbers its own rollout (densely, in row order): by hand,
not by the join's code.

Run by tests/sharding/test_distributed.py as `python -m tests.sharding.multiprocess_worker`
with STEPOPSD_COORDINATOR / STEPOPSD_NUM_PROCESSES / STEPOPSD_PROCESS_ID set (or none of them:
the single-process reference over the same global device count).
"""

import hashlib
import json
import os
import sys

LOCAL_DEVICES = int(sys.argv[1])
CHECKPOINT_DIR = sys.argv[2]
os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={LOCAL_DEVICES}"
os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # noqa: E402
import numpy as np  # noqa: E402

jax.config.update("jax_threefry_partitionable", True)
from stepopsd_jax import sharding  # noqa: E402

sharding.maybe_initialize()  # before anything touches devices

from stepopsd_jax import models, sampling, train  # noqa: E402
from stepopsd_jax import algorithms  # noqa: E402
from stepopsd_jax.run import multihost  # noqa: E402
from stepopsd_jax.train import checkpoint, micro  # noqa: E402
from stepopsd_jax.train import state as train_state  # noqa: E402
from stepopsd_jax.train import step as step_lib  # noqa: E402
from tests.train.batches import random_step_batch  # noqa: E402

CONFIG = models.get_preset("qwen3_tiny", vocab_size=128, num_layers=1)
PROMPTS = [[5, 6, 7], [9, 10, 11, 12], [3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13], [40, 41, 42, 43, 44]]


def process_batch(i: int):
  """Process i's local rollouts: different rows and prompt widths per process."""
  return random_step_batch(CONFIG.vocab_size, rows=8, prompt=12 + 4 * i, teacher=16 - 4 * i,
                           seed=i)


def joined_by_hand(n: int):
  """Every process's rows in one batch; each brought 4 trajectories in 2 groups, so one process
  holding them all numbers process i's as 4i..4i+3 and its groups as 2i, 2i+1."""
  local = [process_batch(i) for i in range(n)]
  sizes = [b.sizes() for b in local]
  local = [b.repad(max(s["B"] for s in sizes), max(s["P"] for s in sizes),
                   max(s["T"] for s in sizes)) for b in local]
  joined = jax.tree.map(lambda *xs: np.concatenate(xs), *local)
  return joined.replace(
      traj_id=np.concatenate([b.traj_id + 4 * i for i, b in enumerate(local)]),
      group_id=np.concatenate([b.group_id + 2 * i for i, b in enumerate(local)]))


def step_advantages(arrays, cfg, mesh) -> list[float]:
  """The per-row advantages the step computes on the global batch (every process's rows)."""
  fn = jax.jit(lambda b: algorithms.estimate(step_lib.with_dense_ids(b), cfg)[0].adv_rows,
               out_shardings=sharding.replicated(mesh))
  return np.asarray(fn(arrays).addressable_data(0)).tolist()


def episode_rows(mesh) -> tuple[int, dict]:
  """Multi-turn rollouts with a global sampler: process 0's episodes last 1 turn, process 1's 3,
  so process 0 must keep joining the decode until process 1 is done (a deadlock otherwise).
  Returns this process's StepBatch rows and the rollout metrics over all processes' episodes."""
  from stepopsd_jax import envs, rollout  # pylint: disable=g-import-not-at-top
  from stepopsd_jax.rollout import prompts, random_policy  # pylint: disable=g-import-not-at-top
  env = "credit_lab/critical_step"
  tokenizer = random_policy.train_env_tokenizer(
      env, envs.make_tasks(env, "train", 8, seed=0), prompts.PromptConfig(), vocab_size=500)
  config = models.get_preset("qwen3_tiny", num_layers=1,
                             vocab_size=models.padded_vocab(tokenizer.vocab_size))
  weights = jax.device_put(models.init_params(config, jax.random.key(0)), sharding.tree_shardings(
      models.param_logical_axes(config), models.param_shapes(config), mesh))
  sampler = rollout.agent_sampler(config, tokenizer, max_new_tokens=8, mesh=mesh,
                                  buckets=sampling.Buckets(batch=(4, 8, 16), prompt=(256, 512)))
  horizon = 3 if jax.process_index() == 1 or jax.process_count() == 1 else 1
  tasks = envs.make_tasks(env, "train", 2, seed=jax.process_index(), horizon=horizon,
                          num_choices=2, critical_step=1)
  result = rollout.collect(sampler, weights, tokenizer, env, tasks, jax.random.key(3),
                           rollout.RolloutConfig(group_size=2))
  metrics = multihost.global_rollout_metrics(result.tally)
  return result.batch.num_rows, {k: metrics[k] for k in ("num_trajectories", "num_steps", "turns")}


def micro_batch_step(state, tx, mesh) -> tuple[float, float]:
  """The first step again with 2 micro-batches, each process's rows arranged so its
  trajectories sit in one micro-batch (process 1's rows start at 8, a multiple of 2): the loss,
  and whether the step found every trajectory whole (1.0: no extra student pass)."""
  if jax.process_count() > 1:
    arrays = multihost.global_step_batch(process_batch(jax.process_index()), mesh,
                                         micro_batches=2)
  else:
    arrays = micro.arrange(joined_by_hand(2), 2)
  cfg = train.StepConfig(estimator="stepopsd", lambda_mix=0.5, micro_batches=2)
  _, metrics = train.jit_train_step(CONFIG, cfg, tx, mesh)(state, arrays, jax.random.key(0))
  return float(metrics["loss"]), float(metrics["micro_whole_trajectories"])


def local_replica(x: jax.Array) -> np.ndarray:
  """The full array from this process's own shards (mesh data=2 puts one replica per process),
  so equal checksums mean the processes' replicas agree, not that a gather agrees with itself."""
  out, seen = np.zeros(x.shape, np.float32), np.zeros(x.shape, bool)
  for shard in x.addressable_shards:
    out[shard.index], seen[shard.index] = np.asarray(shard.data), True
  assert seen.all(), "this process does not hold a full replica"
  return out


def params_digest(params) -> tuple[str, list[float]]:
  leaves = [local_replica(x) for x in jax.tree.leaves(params)]
  digest = hashlib.sha256(b"".join(x.tobytes() for x in leaves)).hexdigest()
  return digest, [float(np.abs(x).sum()) for x in leaves]


def save_and_restore(state, tx) -> str:
  """Saves at step 2 from every process, restores into mesh data=1 x fsdp=all: its digest."""
  with checkpoint.Checkpointer(CHECKPOINT_DIR, every=1, keep=2) as ckpt:
    ckpt.save(2, state, {"rng": jax.random.key_data(jax.random.key(5)), "step": 2})
    ckpt.wait()
  other = sharding.make_mesh(data=1, fsdp=-1, tensor=1)
  with checkpoint.Checkpointer(CHECKPOINT_DIR, every=1, keep=2) as ckpt:
    restored, extra, step = ckpt.restore_latest(train_state.abstract_state(CONFIG, tx, other))
  assert step == 2 and extra["step"] == 2, (step, extra)
  leaf = jax.tree.leaves(restored.params)[0]
  assert leaf.sharding.mesh.shape == other.shape, leaf.sharding
  # every process holds a full replica only with data=2, so compare after re-placing there
  back = jax.device_put(restored.params, jax.tree.map(lambda x: x.sharding, state.params))
  return params_digest(back)[0]


def main() -> None:
  mesh = sharding.make_mesh(data=2, fsdp=-1, tensor=1)  # process i holds data replica i
  if jax.process_count() > 1:
    arrays = multihost.global_step_batch(process_batch(jax.process_index()), mesh)
  else:
    arrays = joined_by_hand(2)
  cfg = train.StepConfig(estimator="stepopsd", lambda_mix=0.5)
  tx = train.make_optimizer(1e-3, 0, 10)
  step = train.jit_train_step(CONFIG, cfg, tx, mesh)
  state = train.init_state(CONFIG, jax.random.key(0), tx, mesh)
  advantages = step_advantages(arrays, cfg, mesh)
  losses = []
  for i in range(2):
    state, metrics = step(state, arrays, jax.random.key(i))
    losses.append(float(metrics["loss"]))
  first_loss = losses[0]
  micro_loss, micro_whole = micro_batch_step(  # the step donated the first state: a fresh one
      train.init_state(CONFIG, jax.random.key(0), tx, mesh), tx, mesh)
  # greedy rollouts of the trained policy: process i brings prompts 2i, 2i+1 (their own widths)
  sampler = sampling.Sampler(CONFIG, sampling.SamplingParams(max_new_tokens=5, temperature=0.0),
                             pad_id=0, buckets=sampling.Buckets(batch=(2, 4), prompt=(8, 16)),
                             mesh=mesh)
  mine = PROMPTS if jax.process_count() == 1 else PROMPTS[2 * jax.process_index():][:2]
  sample = sampler.generate(state.params, mine, jax.random.key(7)).tokens.tolist()
  rows, rollout_metrics = episode_rows(mesh)
  digest, leaf_sums = params_digest(state.params)
  restored_digest = save_and_restore(state, tx)
  print("RESULT " + json.dumps({
      "process": jax.process_index(), "processes": jax.process_count(),
      "devices": jax.device_count(), "sha256": digest, "restored_sha256": restored_digest,
      "leaf_sums": leaf_sums,
      "loss": float(metrics["loss"]), "advantages": advantages, "first_loss": first_loss,
      "micro_loss": micro_loss, "micro_whole": micro_whole,
      "weight_max": float(metrics["weight_max"]), "sample": sample, "episode_rows": rows,
      "rollout_metrics": rollout_metrics}), flush=True)


if __name__ == "__main__":
  main()
