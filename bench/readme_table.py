"""Regenerates the README's measured tables from `bench/results/*.json`, so they cannot drift.

    python bench/readme_table.py [--check]

Rewrites the lines between `<!-- NAME:begin -->` and `<!-- NAME:end -->` in README.md for each
block: `main-job` (`bench/main_job.py`'s table), `bench-table` (step, sampler, decode-sweep and
rollout benchmarks), `alfworld-engine` (`bench/alfworld_env.py`) and `credit-study`
(`bench/credit_report.py`'s tables of the study's summary); `--check` only reports whether the
README is up to date (exit 1 if not). A result file that is missing is left out (with its
command, so it can be produced).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
RESULTS = os.path.join(ROOT, "bench", "results")
sys.path.insert(0, ROOT)  # bench.* renderers, imported where used (matplotlib)
BEGIN, END = "<!-- bench-table:begin -->", "<!-- bench-table:end -->"  # the benchmark block
STEP_RUNS = (  # (json, command)
    ("step_main.json", "python bench/step.py --size main --compare xla "
                       "--out bench/results/step_main.json"),
    ("step_main_long.json", "python bench/step.py --size main --rows 32 --prompt 1024 "
                            "--teacher 1088 --response 24 --compare xla "
                            "--out bench/results/step_main_long.json"),
    ("step_main_long_blocks.json", "python bench/step.py --size main --rows 32 --prompt 1024 "
                                   "--teacher 1088 --response 24 --compare attention "
                                   "--out bench/results/step_main_long_blocks.json"),
    ("step_main_unroll.json", "python bench/step.py --size main --compare unroll "
                              "--out bench/results/step_main_unroll.json"),
    ("step_main_micro8.json", "python bench/step.py --size main --micro-batches 8 "
                              "--out bench/results/step_main_micro8.json"),
    ("step.json", "python bench/step.py --compare xla"),
    ("step_micro4.json", "python bench/step.py --micro-batches 4 "
                         "--out bench/results/step_micro4.json"),
    ("step_medium.json", "python bench/step.py --size medium --rows 16 "
                         "--out bench/results/step_medium.json"),
    ("step_large.json", "python bench/step.py --size large --rows 8 "
                        "--out bench/results/step_large.json"),
    ("step_micro.json", "XLA_FLAGS=--xla_force_host_platform_device_count=8 python "
                        "bench/step.py --devices 8 --micro-batches 4 "
                        "--out bench/results/step_micro.json"),
)
SAMPLERS = (("sampler.json", "python bench/sampler.py --torch-threads 1"),
            ("sampler_main.json", "python bench/sampler.py --torch-threads 1 --size main "
                                  "--out bench/results/sampler_main.json"))
SWEEP = ("decode_sweep.json", "python bench/decode_sweep.py")
SPLIT = ("rollout_split.json", "python bench/rollout_split.py")


def _load(name: str) -> dict | None:
  path = os.path.join(RESULTS, name)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def step_row(name: str, command: str, d: dict) -> str:
  a, peak = d["args"], d["matmul_flops_per_s"]
  by = {r["estimator"]: r for r in d["results"]}
  g, s = by["grpo"], by["stepopsd"]
  pct = lambda r: 100 * r["flops"] / r["step_s"] / peak
  model = "base model" if a["size"] == "main" else \
      f"hidden {d['config']['hidden_size']}, {d['config']['num_layers']} layers"
  teacher = a.get("teacher") or a["prompt"] + 32
  if a.get("devices", 1) > 1 or a.get("micro_batches", 1) > 1:
    model += (f"; {a['devices']} device{'s' * (a['devices'] > 1)}, "
              f"{a['micro_batches']} micro-batches")
  split = (f" ({by['stepopsd_split']['step_s']:.2f} s with a trajectory across micro-batches)"
           if "stepopsd_split" in by else "")
  variant = next((r["estimator"].split(" [")[1][:-1] for r in d["results"]
                  if " [" in r["estimator"]), None)
  ab = "–" if variant is None else (
      f"{variant}: {by[f'grpo [{variant}]']['step_s'] / g['step_s']:.2f}× / "
      f"{by[f'stepopsd [{variant}]']['step_s'] / s['step_s']:.2f}×")
  return (f"| `{command}` ({model}; {a['rows']} rows × {a['prompt']} (teacher {teacher}) + "
          f"{a['response']} tokens) | {g['step_s']:.2f} s / {s['step_s']:.2f} s{split} | "
          f"**{s['step_s'] / g['step_s']:.2f}×** | {pct(g):.0f}% / {pct(s):.0f}% of "
          f"{peak / 1e9:.0f} GFLOP/s | {ab} |")


def sampler_rows(command: str, d: dict) -> list[str]:
  lim = d["limits"]
  out = [f"`{command}` ({d['num_params'] / 1e6:.1f}M-param Qwen3, greedy, "
         f"{d['args']['prompt_len']} + {d['args']['new_tokens']} tokens; matmul "
         f"{lim['matmul_flops_per_s'] / 1e9:.0f} GFLOP/s, copy bandwidth "
         f"{lim['copy_bytes_per_s'] / 1e9:.1f} GB/s, measured in the same run):", "",
         "| batch | streams | ours tok/s | HF `generate` tok/s | ours / HF | "
         "greedy tokens identical | "
         "prefill | decode step | % of matmul rate | × bandwidth time | "
         "its matmuls alone (% of rate) | × matmuls alone | ours sampled (T = 1) tok/s |",
         "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
  for r in d["results"]:
    a, l = r["greedy_agreement"], r["limits"]
    sampled = f"{r['ours_sampled']['tokens_per_s']:,.0f}" if "ours_sampled" in r else "–"
    alone = (f"{1e3 * l['matmuls_alone_s']:.2f} ms ({100 * l['matmuls_alone_fraction']:.0f}%) | "
             f"{l['over_matmuls_alone']:.2f}×" if "matmuls_alone_s" in l else "– | –")
    out.append(f"| {r['batch']} | {r.get('streams', 1)} | {r['ours']['tokens_per_s']:,.0f} | "
               f"{r['hf']['tokens_per_s']:,.0f} | **{r['ratio_ours_over_hf']:.2f}×** | "
               f"{a['rows_identical']}/{a['rows']} rows | "
               f"{1e3 * l['parts_s']['prefill_s']:.0f} ms | {1e3 * l['decode_step_s']:.2f} ms | "
               f"{100 * l['matmul_fraction']:.0f}% | {l['over_bandwidth_time']:.2f}× | "
               f"{alone} | {sampled} |")
  return out


def sweep_rows(command: str, d: dict) -> list[str]:
  from bench import decode_sweep  # pylint: disable=g-import-not-at-top
  lim = d["limits"]
  return [f"`{command}` ({d['num_params'] / 1e6:.1f}M-param Qwen3, greedy, prompt + "
          f"{d['args']['new_tokens']} tokens; matmul {lim['matmul_flops_per_s'] / 1e9:.0f} "
          f"GFLOP/s, copy bandwidth {lim['copy_bytes_per_s'] / 1e9:.1f} GB/s, measured in the "
          "same run): one decode step against the cache it attends over; the shortest cache "
          "is the step without attention's share:", "",
          decode_sweep.table(d["points"], lim)]


def split_rows(command: str, d: dict) -> list[str]:
  from bench import rollout_split  # pylint: disable=g-import-not-at-top
  return [f"`{command}`: where a rollout's seconds go ({d['args']['rollouts']} rollouts, run "
          "once to compile and then timed; parts under 1% everywhere are left out, `other` "
          "included; each rollout run with each sampler variant in turn: `plain` every prompt in "
          "its own prefill row, `shared` `rollout.share_prompts`, `packed` shared and "
          "`rollout.pack_prompts`):", "",
          rollout_split.table(d["results"], min_fraction=0.01)]


def table() -> str:
  lines = ["Train step, GRPO vs StepOPSD (median of 3 after compile; FLOPs counted by hand, "
           "`tools.aot.step_flops`):", "",
           "| command | step GRPO / StepOPSD | StepOPSD / GRPO | achieved / matmul rate | "
           "`--compare`: its step time / the shipped step's, GRPO / StepOPSD |",
           "|---|---:|---:|---:|---:|"]
  missing = []
  for name, command in STEP_RUNS:
    d = _load(name)
    if d is None:
      missing.append(command)
    else:
      lines.append(step_row(name, command, d))
  for name, command in SAMPLERS:
    d = _load(name)
    if d is None or "limits" not in d:
      missing.append(command)
    else:
      lines += [""] + sampler_rows(command, d)
  for (name, command), rows in ((SWEEP, sweep_rows), (SPLIT, split_rows)):
    d = _load(name)
    if d is None:
      missing.append(command)
    else:
      lines += [""] + rows(command, d)
  if missing:
    lines += ["", "Not yet measured: " + "; ".join(f"`{m}`" for m in missing) + "."]
  return "\n".join(lines)


def main_job_table() -> str:
  d = _load("main_job.json")
  if d is None:
    return "Not yet measured: `python bench/main_job.py`."
  from bench import main_job  # pylint: disable=g-import-not-at-top  (matplotlib: only here)
  return main_job.table(d)


def credit_study_table() -> str:
  d = _load(os.path.join("credit_study", "summary.json"))
  if d is None:
    return "Not yet run: `python bench/credit_study.py`."
  from bench import credit_report  # pylint: disable=g-import-not-at-top
  out = credit_report.markdown(d)
  quick = _load(os.path.join("credit_study_quick", "quick.json"))
  if quick is not None:
    out = (f"`python bench/credit_study.py --quick` ({len(quick['runs'])} runs, "
           f"{len(quick['warm_ups_built'])} warm-ups built, commit {quick['commit']}, "
           f"{quick['cpu_count']} cores): {quick['wall_s'] / 60:.1f} min "
           "(`bench/results/credit_study_quick/`).\n\n" + out)
  return out


def alfworld_engine_table() -> str:
  command = "python bench/alfworld_env.py"
  d = _load("alfworld_env.json")
  return f"Not yet measured: `{command}`." if d is None else alfworld_tables(d, command)


def alfworld_tables(d: dict, command: str) -> str:
  """`bench/alfworld_env.py`'s tables from its JSON (rendered here: that module imports
  textworld, which this one must not need)."""
  a = d["args"]
  rows = d["results"]
  base = rows[0]["steps_per_s"]
  lines = [f"`{command}` ({len(d['games'])} generated games, {a['steps']} random-walk steps "
           f"each; transcripts identical: {d['transcripts_identical']}; then batches of "
           f"{a['envs']} envs, {a['group']} per game, {a['batch_steps']} steps; the batch "
           "row's resets are the whole batch's, the first loading the games):", "",
           "| engine | steps/s | load s | reset s (after load) | reset s (after steps) |"
           " speed-up |", "|---|---:|---:|---:|---:|---:|"]
  for r in rows:
    load = f"{r['load_s']:.2f}" if "load_s" in r else "–"
    lines.append(f"| {r['engine']} | {r['steps_per_s']:,.1f} | {load} | "
                 f"{r.get('reset_cold_s', r.get('cold_reset_s')):.3f} | "
                 f"{r.get('reset_warm_s', r.get('warm_reset_s')):.3f} | "
                 f"{r['steps_per_s'] / base:.1f}× |")
  if d.get("rollouts"):
    lines += ["", f"A fresh `BatchedEnv` of {a['envs']} envs per rollout, as the trainer builds "
              f"them ({a['rollouts']} batches per way, taking turns):", "",
              "| way | build + reset s per batch (after the first) | steps/s | "
              "library copies newly mapped, per batch | resident MiB added, per batch |",
              "|---|---:|---:|---|---|"]
    for r in d["rollouts"]:
      builds = r["build_reset_s"][1:] or r["build_reset_s"]
      lines.append(f"| {r['engine']} | {sum(builds) / len(builds):.3f} | "
                   f"{r['steps'] / sum(r['step_s']):,.1f} | "
                   f"{' '.join(map(str, r['new_library_copies']))} | "
                   f"{' '.join(f'{m:.0f}' for m in r['resident_mib_added'])} |")
  return "\n".join(lines)


BLOCKS = {"main-job": main_job_table, "bench-table": table,
          "alfworld-engine": alfworld_engine_table, "credit-study": credit_study_table}


def render(text: str) -> str:
  """`text` with every block's lines regenerated; a missing marker is an error naming it."""
  for name, make in BLOCKS.items():
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    if begin not in text or end not in text:
      raise ValueError(f"README has no {begin} ... {end} block: add the two markers where the "
                       "table goes.")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    text = f"{head}{begin}\n{make()}\n{end}{tail}"
  return text


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--check", action="store_true", help="exit 1 if the README is out of date")
  p.add_argument("--readme", default=os.path.join(ROOT, "README.md"))
  args = p.parse_args(argv)
  with open(args.readme) as f:
    text = f.read()
  try:
    new = render(text)
  except ValueError as e:
    print(f"{args.readme}: {e}", file=sys.stderr)
    return 2
  if args.check:
    print("README tables are up to date" if new == text else
          "README tables are out of date: run python bench/readme_table.py")
    return 0 if new == text else 1
  with open(args.readme, "w") as f:
    f.write(new)
  print(f"wrote the measured tables into {args.readme}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
