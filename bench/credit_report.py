"""Tables and plots of the credit-lab study from its per-run JSONs (see bench/credit_study.py).

    python bench/credit_report.py [bench/results/credit_study]

Writes `summary.json` and `summary.md` (every number of the README's study section comes from
them) and `success_<variant>.png`, `weights_main.png`, `heatmap_main.png`.
"""

from __future__ import annotations

import collections
import glob
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from stepopsd_jax.run import analysis  # noqa: E402

THRESHOLD, WINDOW = 0.8, 5


def load(out_dir: str) -> list[dict]:
  runs = []
  for path in sorted(glob.glob(os.path.join(out_dir, "*_seed*.json"))):
    with open(path) as f:
      runs.append(json.load(f))
  return runs


def key(record: dict) -> str:
  """variant/estimator, with the knobs of heatmap runs."""
  r = record["run"]
  extra = "".join(f",{k}={v:g}" for k, v in r["knobs"])
  return f"{r['variant']}/{r['estimator']}{extra}"


def crossing(record: dict) -> analysis.ToThreshold:
  return analysis.episodes_to_threshold(record["success"], record["episodes_per_step"],
                                        THRESHOLD, WINDOW)


def summarise(runs: list[dict]) -> dict:
  groups = collections.defaultdict(list)
  for r in runs:
    groups[key(r)].append(r)
  table = {}
  for name, rs in sorted(groups.items()):
    hits = [crossing(r) for r in rs]
    table[name] = dict(
        seeds=sorted(r["run"]["seed"] for r in rs),
        budget=rs[0]["rl_steps"] * rs[0]["episodes_per_step"],
        episodes_to_80=analysis.describe(hits),
        final_greedy=_mean_ci([r["eval_after"] for r in rs]),
        last5_sampled=_mean_ci([np.mean(r["success"][-WINDOW:]) for r in rs]),
        minutes=float(np.mean([r["seconds"] for r in rs]) / 60))
  ratios = {}
  for name in table:
    variant, est = name.split("/", 1)
    if est == "stepopsd" and f"{variant}/grpo" in table:
      g = [crossing(r) for r in groups[f"{variant}/grpo"]]
      s = [crossing(r) for r in groups[name]]
      censored = sum(x.censored for x in g + s)
      if censored == len(g) + len(s):  # neither ever reached the threshold: no ratio
        ratios[variant] = dict(grpo_over_stepopsd=None, ci95=None, censored=censored,
                               runs=censored)
        continue
      ratio, lo, hi = analysis.bootstrap_ratio([x.episodes for x in g], [x.episodes for x in s])
      ratios[variant] = dict(grpo_over_stepopsd=ratio, ci95=[lo, hi], censored=censored,
                             runs=len(g) + len(s))
  return dict(threshold=THRESHOLD, window=WINDOW,
              episodes_per_step=runs[0]["episodes_per_step"] if runs else None, table=table,
              ratios=ratios, paired=paired(groups), mechanism=mechanism(groups),
              heatmap=heatmap(groups))


def paired(groups) -> dict:
  """Each arm against GRPO of the same variant and seed (same warm-up, same rollout seeds): in
  how many RL steps the sampled success differs, and GRPO's episodes to 80% minus the arm's."""
  out = {}
  for name, rs in sorted(groups.items()):
    variant, est = name.split("/", 1)
    base = {r["run"]["seed"]: r for r in groups.get(f"{variant}/grpo", [])}
    if est == "grpo" or not base:
      continue
    pairs = [(base[r["run"]["seed"]], r) for r in rs if r["run"]["seed"] in base]
    if pairs:
      out[name] = dict(
          seeds=[g["run"]["seed"] for g, _ in pairs],
          steps_differing=[int(np.sum(~np.isclose(g["success"], r["success"]))) for g, r in pairs],
          steps=[len(r["success"]) for _, r in pairs],
          episodes_saved=[crossing(g).episodes - crossing(r).episodes for g, r in pairs])
  return out


def _mean_ci(values) -> dict:
  mean, lo, hi = analysis.bootstrap_mean(values)
  return dict(mean=mean, ci95=[lo, hi])


def weight_curves(rs: list[dict], critical: int) -> dict[str, list[float]]:
  """Per training step, the mean over seeds of the weight on the critical step's action tokens
  and on the other steps', for won and lost trajectories (NaN where no such tokens)."""
  out = {}
  for outcome in ("won", "lost"):
    crit, other = [], []
    for step in range(min(len(r["train"]) for r in rs)):
      c, o = [], []
      for r in rs:
        row = r["train"][step]
        values = {int(k.rsplit("step", 1)[1]): v for k, v in row.items()
                  if k.startswith(f"train/weight_{outcome}_step")}
        if critical in values:
          c.append(values[critical])
        o += [v for k, v in values.items() if k != critical]
      crit.append(float(np.mean(c)) if c else float("nan"))
      other.append(float(np.mean(o)) if o else float("nan"))
    out[f"critical_{outcome}"], out[f"other_{outcome}"] = crit, other
  return out


def mechanism(groups) -> dict:
  out = {}
  for name, rs in groups.items():
    if name.split("/", 1)[1] in ("stepopsd", "rlsd"):
      out[name] = weight_curves(rs, rs[0]["env"].get("critical_step", 2) - 1)
  return out


def heatmap(groups) -> dict:
  """episodes-to-80% of main/stepopsd over (alpha_clip, lambda_mix)."""
  cells = {}
  for name, rs in groups.items():
    if not name.startswith("main/stepopsd"):
      continue
    knobs = dict(rs[0]["run"]["knobs"]) or {}
    a, lam = knobs.get("alpha_clip", 0.2), knobs.get("lambda_mix", 0.5)
    cells[f"{a:g},{lam:g}"] = analysis.describe([crossing(r) for r in rs if r["run"]["seed"] < 3])
  return cells


def markdown(summary: dict) -> str:
  lines = ["| variant / estimator | seeds | episodes to 80% (mean [95% CI]) | censored | "
           "final greedy success | sampled success, last 5 steps | min/run |",
           "|---|---|---|---|---|---|---|"]
  for name, row in summary["table"].items():
    e = row["episodes_to_80"]
    bound = ">" if e["censored"] == e["runs"] else ("≥" if e["censored"] else "")
    lines.append(
        f"| {name} | {len(row['seeds'])} | {bound}{e['mean']:.0f} [{e['ci95'][0]:.0f}, "
        f"{e['ci95'][1]:.0f}] | {e['censored']}/{e['runs']} (budget {row['budget']}) | "
        f"{_fmt(row['final_greedy'])} | {_fmt(row['last5_sampled'])} | {row['minutes']:.1f} |")
  lines += ["", "| variant | GRPO / StepOPSD episodes to 80% [95% CI] | censored runs |",
            "|---|---|---|"]
  for variant, r in summary["ratios"].items():
    value = ("— (neither reached 80%)" if r["grpo_over_stepopsd"] is None else
             f"{r['grpo_over_stepopsd']:.2f} [{r['ci95'][0]:.2f}, {r['ci95'][1]:.2f}]")
    lines.append(f"| {variant} | {value} | {r['censored']}/{r['runs']} (counted at the budget) |")
  lines += ["", "Paired with GRPO of the same variant and seed (same warm-up, same rollout seeds): "
            "RL steps whose sampled success differs, and GRPO's episodes to 80% minus the arm's "
            "(> 0: the arm was faster), per seed.", "",
            "| variant / estimator | seeds | steps with a different success | episodes saved |",
            "|---|---|---|---|"]
  for name, p in summary.get("paired", {}).items():
    lines.append(f"| {name} | {', '.join(map(str, p['seeds']))} | "
                 f"{', '.join(f'{d}/{n}' for d, n in zip(p['steps_differing'], p['steps']))} | "
                 f"{', '.join(f'{e:+.0f}' for e in p['episodes_saved'])} |")
  lines += ["", f"Mean weight on the action tokens over RL steps 1-{WINDOW} (mean over seeds): "
            "the deciding room's vs the other rooms', in won and in lost trajectories.", "",
            "| variant / estimator | deciding room, won | other rooms, won | deciding room, lost "
            "| other rooms, lost |", "|---|---|---|---|---|"]
  for name, curves in summary["mechanism"].items():
    early = lambda k: (np.nanmean(curves[k][:WINDOW]) if np.isfinite(curves[k][:WINDOW]).any()
                       else float("nan"))
    lines.append(f"| {name} | {early('critical_won'):.3f} | {early('other_won'):.3f} | "
                 f"{early('critical_lost'):.3f} | {early('other_lost'):.3f} |")
  return "\n".join(lines)


def _fmt(m: dict) -> str:
  return f"{m['mean']:.2f} [{m['ci95'][0]:.2f}, {m['ci95'][1]:.2f}]"


def plot(runs: list[dict], summary: dict, out_dir: str) -> None:
  groups = collections.defaultdict(list)
  for r in runs:
    if not r["run"]["knobs"]:
      groups[(r["run"]["variant"], r["run"]["estimator"])].append(r)
  for variant in sorted({v for v, _ in groups}):
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for (v, est), rs in sorted(groups.items()):
      if v != variant:
        continue
      n = min(len(r["success"]) for r in rs)
      curves = np.array([analysis.trailing_mean(r["success"][:n], WINDOW) for r in rs])
      x = (np.arange(n) + 1) * rs[0]["episodes_per_step"]
      lo, hi = np.percentile(_boot_means(curves), [2.5, 97.5], axis=0)
      ax.plot(x, curves.mean(0), label=f"{est} ({len(rs)} seeds)")
      ax.fill_between(x, lo, hi, alpha=0.2)
    ax.axhline(THRESHOLD, color="grey", lw=0.5, ls="--")
    ax.set(xlabel="sampled episodes", ylabel=f"success ({WINDOW}-step mean)", title=variant,
           ylim=(0, 1))
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, f"success_{variant}.png"), dpi=110)
    plt.close(fig)
  _plot_weights(summary, out_dir)
  _plot_heatmap(summary, out_dir)


def _boot_means(curves: np.ndarray, n: int = 2000) -> np.ndarray:
  idx = np.random.default_rng(0).integers(0, len(curves), (n, len(curves)))
  return curves[idx].mean(axis=1)


def _plot_weights(summary: dict, out_dir: str) -> None:
  names = [n for n in summary["mechanism"] if n.startswith("main/")]
  if not names:
    return
  fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 3.4), squeeze=False)
  for ax, name in zip(axes[0], names):
    for label, values in summary["mechanism"][name].items():
      ax.plot(np.arange(1, len(values) + 1), values, label=label.replace("_", ", "),
              ls="-" if "critical" in label else ":")
    ax.axhline(1.0, color="grey", lw=0.5)
    ax.set(xlabel="RL step", ylabel="mean weight on action tokens", title=name)
    ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(os.path.join(out_dir, "weights_main.png"), dpi=110)
  plt.close(fig)


def _plot_heatmap(summary: dict, out_dir: str) -> None:
  cells = summary["heatmap"]
  alphas = sorted({float(k.split(",")[0]) for k in cells})
  lams = sorted({float(k.split(",")[1]) for k in cells})
  if len(alphas) < 2 or len(lams) < 2:
    return
  grid, runs = np.full((len(alphas), len(lams)), np.nan), {}
  for k, v in cells.items():
    a, lam = map(float, k.split(","))
    grid[alphas.index(a), lams.index(lam)] = v["mean"]
    runs[alphas.index(a), lams.index(lam)] = v["runs"]
  # colours centred on GRPO's mean (white = GRPO), at least +-2 RL steps wide, so a difference
  # of a few episodes does not fill the colour range
  grpo = summary["table"].get("main/grpo", {}).get("episodes_to_80", {}).get("mean")
  centre = grpo if grpo is not None else float(np.nanmean(grid))
  width = max(float(np.nanmax(np.abs(grid - centre))), 2.0 * summary["episodes_per_step"])
  fig, ax = plt.subplots(figsize=(4.6, 3.6))
  im = ax.imshow(grid, cmap="RdBu_r", vmin=centre - width, vmax=centre + width)
  ax.set(xticks=range(len(lams)), xticklabels=[f"{x:g}" for x in lams], xlabel="lambda_mix",
         yticks=range(len(alphas)), yticklabels=[f"{x:g}" for x in alphas], ylabel="alpha_clip",
         title="episodes to 80% (main, StepOPSD)" +
               (f"\nGRPO {grpo:.0f} = white; blue: fewer" if grpo is not None else ""))
  for i in range(len(alphas)):
    for j in range(len(lams)):
      if np.isfinite(grid[i, j]):
        ax.text(j, i, f"{grid[i, j]:.0f}\n({runs[i, j]} seeds)", ha="center", va="center",
                fontsize=8)
  fig.colorbar(im)
  fig.tight_layout()
  fig.savefig(os.path.join(out_dir, "heatmap_main.png"), dpi=110)
  plt.close(fig)


def write(out_dir: str) -> str:
  runs = load(out_dir)
  summary = summarise(runs)
  text = markdown(summary)
  with open(os.path.join(out_dir, "summary.json"), "w") as f:
    json.dump(summary, f, indent=1)
  with open(os.path.join(out_dir, "summary.md"), "w") as f:
    f.write(text + "\n")
  plot(runs, summary, out_dir)
  return text


if __name__ == "__main__":
  print(write(sys.argv[1] if len(sys.argv) > 1 else "bench/results/credit_study"))
