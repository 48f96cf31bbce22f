"""Where a rollout's seconds go, for the three envs: every second of `collect` accounted for.

    python bench/rollout_split.py [--envs credit_lab,alfworld,search_qa] [--rollouts 3]
        [--data DIR] [--variants plain,shared,packed] [--out bench/results/rollout_split.json]

Each env is built as its config builds it (the trainer's `setup.build`): the credit lab from
`configs/default.py` (the shipped base model, its 4 tasks x 8 rollouts), ALFWorld and Search-QA
from their configs' `:runlocal` (a tiny random model: its responses run to the token limit, so
these show the machinery's costs, not a trained policy's). ALFWorld games and the Search-QA
corpus are generated under `--data` when missing. The `--rollouts` rollouts run twice, the same
tasks and keys: the first pass untimed (every shape they meet compiles then), the seconds of the
second summed by part. Each rollout runs once per sampler variant, in turn (`--variants`):
`plain` (every prompt prefilled in its own row), `shared` (`rollout.share_prompts`: repeated
prompts prefilled once) and `packed` (shared, and `rollout.pack_prompts`: short prompts packed
several to a prefill row).

- generate: pad, wait_params, to_device, prefill, decode, to_host (the sampler's own split) and
  the rest of the call (bucket choice, Python);
- prompt: building user texts and chat-template tokenization; detokenize: responses to text;
  parse: response parsing and step rows; env: env steps, resets and retrieval prefetch;
  teacher_prompts: hindsight blocks rendered and tokenized; step_batch: padding into the
  StepBatch; other: the loop itself (total minus every part above).

Also the padding waste: decode slots spent on padding rows of the batch bucket or on rows that
had already stopped, and prompt slots that were padding; and the prompts that repeated another
of their call (a group's rollouts from one state) and took its prefill instead of their own.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import jax

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from stepopsd_jax.rollout import collect  # noqa: E402
from stepopsd_jax.run import config as config_lib  # noqa: E402
from stepopsd_jax.run import setup as setup_lib  # noqa: E402

GENERATE_PARTS = ("pad", "wait_params", "to_device", "prefill", "decode", "to_host")
HOST_PARTS = ("prompt", "detokenize", "parse", "env", "teacher_prompts", "step_batch")


def env_config(name: str, data: str):
  if name == "credit_lab":
    return config_lib.load("configs/default.py", {})
  if name == "alfworld":
    root = os.path.join(data, "alfworld")
    for split in ("train", "valid_unseen"):
      if not os.path.isdir(os.path.join(root, "json_2.1.1", split)):
        subprocess.run([sys.executable, "-m", "stepopsd_jax.envs.alfworld.generate", "--out",
                        root, "--split", split, "--per-type", "2", "--seed", "0"], check=True)
    return config_lib.load(f"configs/alfworld_stepopsd.py:runlocal,data_dir={root}", {})
  if name == "search_qa":
    root = os.path.join(data, "search_qa")
    if not os.path.isdir(root):
      subprocess.run([sys.executable, "-m", "stepopsd_jax.envs.search_qa.generate", "--out",
                      root], check=True)
    return config_lib.load(f"configs/search_stepopsd.py:runlocal,data_dir={root}", {})
  raise ValueError(f"unknown env {name!r}: credit_lab, alfworld or search_qa")


VARIANTS = {"plain": (False, False), "shared": (True, False), "packed": (True, True)}


def split(name: str, data: str, rollouts: int, variants: tuple[str, ...] = ("packed",)
          ) -> list[dict]:
  """One row per sampler variant (`VARIANTS`: share_prompts, pack_prompts), from one setup:
  each rollout runs once per variant in turn (a warm pass of them all first), so machine noise
  hits them alike."""
  config = env_config(name, data)
  setup, params = setup_lib.build(config, jax.random.key(0))
  per_step = config.rollout.batch_size // config.rollout.group_size
  seconds, values = ({variant: {} for variant in variants} for _ in range(2))

  def one(k: int, variant: str, record: bool):
    setup.sampler.share_prompts, setup.sampler.pack_prompts = VARIANTS[variant]
    tasks = [setup.train_tasks[(k * per_step + i) % len(setup.train_tasks)]
             for i in range(per_step)]
    result = collect(setup.sampler, params, setup.tokenizer, config.env.name, tasks,
                     jax.random.key(k), setup.rollout_cfg, env_seed=k)
    if record:
      for key, v in result.tally.seconds.items():
        seconds[variant][key] = seconds[variant].get(key, 0.0) + v
      for key, v in result.tally.values.items():
        values[variant][key] = values[variant].get(key, 0.0) + v

  t = time.perf_counter()
  for k in range(1, rollouts + 1):  # the same rollouts, unrecorded: every shape they meet compiles
    for variant in variants:
      one(k, variant, record=False)
  first_s = time.perf_counter() - t
  for k in range(1, rollouts + 1):
    for variant in variants:
      one(k, variant, record=True)
  return [_row(name, config, rollouts, first_s, variant, seconds[variant], values[variant])
          for variant in variants]


def _row(name, config, rollouts, first_s, variant, seconds, values) -> dict:
  total = seconds["total"]
  parts = {f"generate/{p}": seconds.get(f"generate/{p}", 0.0) for p in GENERATE_PARTS}
  parts["generate/other"] = seconds.get("generate", 0.0) - sum(parts.values())
  parts.update({p: seconds.get(p, 0.0) for p in HOST_PARTS})
  parts["other"] = total - sum(parts.values())
  waste = {
      "decode_padding_rows": values.get("decode_padding_row_slots", 0) /
                             max(values.get("decode_slots", 0), 1),
      "decode_after_stop": values.get("decode_after_stop_slots", 0) /
                           max(values.get("decode_slots", 0), 1),
      "prompt_padding": 1 - values.get("prompt_tokens", 0) / max(values.get("prompt_slots", 0), 1)}
  shared = values.get("prompt_rows_shared", 0) / max(values.get("prompts", 0), 1)
  share, pack = VARIANTS[variant]
  return {"env": name, "variant": variant, "share_prompts": share, "pack_prompts": pack,
          "config_env": config.env.name,
          "rollouts": rollouts, "episodes_per_rollout": config.rollout.batch_size,
          "first_pass_s": first_s, "total_s": total, "seconds": parts,
          "fraction": {k: v / total for k, v in parts.items()}, "waste": waste,
          "prompts_shared": shared, "counts": values}


def table(rows: list[dict], min_fraction: float = 0.0) -> str:
  """The split as a markdown table, one column per env; parts below `min_fraction` of every
  env's total are left out."""
  name = lambda r: f"{r['env']}, {r['variant']}"
  lines = ["| part | " + " | ".join(f"{name(r)} ({r['episodes_per_rollout']} episodes)"
                                  for r in rows) + " |",
           "|---|" + "---:|" * len(rows)]
  for k in rows[0]["seconds"]:
    if max(r["fraction"][k] for r in rows) < min_fraction:
      continue
    lines.append(f"| {k} | " + " | ".join(
        f"{r['seconds'][k]:.2f} s ({100 * r['fraction'][k]:.0f}%)" for r in rows) + " |")
  lines.append("| **total** | " + " | ".join(f"**{r['total_s']:.2f} s**" for r in rows) + " |")
  for k in rows[0]["waste"]:
    lines.append(f"| wasted slots: {k.replace('_', ' ')} | " + " | ".join(
        f"{100 * r['waste'][k]:.0f}%" for r in rows) + " |")
  if all("prompts_shared" in r for r in rows):
    lines.append("| prompts prefilled once for several rows (not counted in the slots) | " +
                 " | ".join(f"{100 * r['prompts_shared']:.0f}%" for r in rows) + " |")
  if all("prefill_rows" in r["counts"] for r in rows):
    lines.append("| prefill rows run (without packing) | " + " | ".join(
        f"{r['counts']['prefill_rows']:.0f} ({r['counts']['prefill_rows_unpacked']:.0f})"
        for r in rows) + " |")
  return "\n".join(lines)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--envs", default="credit_lab,alfworld,search_qa")
  p.add_argument("--rollouts", type=int, default=3)
  p.add_argument("--data", default=os.path.join(
      os.environ.get("STEPOPSD_CACHE_DIR", os.path.expanduser("~/.cache/stepopsd")),
      "bench_rollout"))
  p.add_argument("--variants", default="plain,shared,packed",
                 help="sampler variants, each rollout run with each in turn: plain (neither), "
                      "shared (rollout.share_prompts), packed (shared + rollout.pack_prompts)")
  p.add_argument("--out", default="bench/results/rollout_split.json")
  args = p.parse_args(argv)
  rows = []
  variants = tuple(v.strip() for v in args.variants.split(","))
  if unknown := [v for v in variants if v not in VARIANTS]:
    p.error(f"unknown --variants {unknown}: choose from {', '.join(VARIANTS)}")
  for name in args.envs.split(","):
    for row in split(name.strip(), args.data, args.rollouts, variants):
      rows.append(row)
      print(f"{name} ({row['variant']}): {row['total_s']:.2f} s over {args.rollouts} rollouts",
            flush=True)
  print(table(rows))
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, "w") as f:
    json.dump({"args": vars(args), "results": rows, "jax": jax.__version__,
               "cpu_count": os.cpu_count()}, f, indent=1)
  print(f"wrote {args.out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
