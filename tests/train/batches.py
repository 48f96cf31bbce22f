"""A small random StepBatch with the shapes and invariants the rollout loop produces."""

import numpy as np

from stepopsd_jax.batch import StepBatch


def random_step_batch(vocab: int, rows: int = 8, prompt: int = 12, teacher: int = 16,
                      response: int = 6, groups: int = 2, seed: int = 0) -> StepBatch:
  """Trajectories of 1-3 steps, 2 groups, padding rows at the end, all masks consistent.

  Each trajectory's return is paid as the reward of its last step; step t of every trajectory
  of a group starts from the same observation (anchor_id = step_idx), so GiGPO's anchor groups
  have 1-2 members.
  """
  rng = np.random.default_rng(seed)
  traj_len = [2, 1, 3, 1]  # 7 real rows; trajectories 0,1 -> group 0, 2,3 -> group 1
  traj_id = np.concatenate([np.full(n, i) for i, n in enumerate(traj_len)])
  step_idx = np.concatenate([np.arange(n) for n in traj_len])
  n_real = len(traj_id)
  pad = rows - n_real
  group_of_traj = np.array([0, 0, 1, 1]) % groups
  returns = np.array([1.0, 0.0, 0.0, 1.0])
  is_last = np.concatenate([np.arange(n) == n - 1 for n in traj_len])

  def left(width):
    lengths = rng.integers(width // 2, width + 1, rows)
    mask = np.arange(width)[None] >= (width - lengths)[:, None]
    return np.where(mask, rng.integers(1, vocab, (rows, width)), 0).astype(np.int32), mask

  prompt_tokens, prompt_mask = left(prompt)
  teacher_tokens, teacher_mask = left(teacher)
  resp_len = rng.integers(2, response + 1, rows)
  response_mask = np.arange(response)[None] < resp_len[:, None]
  valid = np.arange(rows) < n_real
  ext = lambda x, fill=0: np.concatenate([x, np.full(pad, fill)])
  control = response_mask & (rng.random((rows, response)) < 0.6)
  return StepBatch(**{
      "prompt_tokens": prompt_tokens, "prompt_mask": prompt_mask & valid[:, None],
      "teacher_prompt_tokens": teacher_tokens, "teacher_prompt_mask": teacher_mask & valid[:, None],
      "response_tokens": np.where(response_mask, rng.integers(1, vocab, (rows, response)),
                                  0).astype(np.int32),
      "response_mask": response_mask & valid[:, None],
      "control_mask": control & valid[:, None],
      "behavior_logprobs": np.where(response_mask, -rng.random((rows, response)) * 3 - 4,
                                    0).astype(np.float32),
      "traj_id": ext(traj_id).astype(np.int32), "step_idx": ext(step_idx).astype(np.int32),
      "group_id": ext(group_of_traj[traj_id]).astype(np.int32),
      "step_reward": ext(np.where(is_last, returns[traj_id], 0.0)).astype(np.float32),
      "traj_return": ext(returns[traj_id]).astype(np.float32),
      "traj_success": ext(returns[traj_id] > 0, False).astype(bool),
      "anchor_id": ext(step_idx).astype(np.int32), "has_hindsight": valid.copy(),
      "row_valid": valid,
  })
