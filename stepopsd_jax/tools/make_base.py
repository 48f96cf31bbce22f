"""Builds the tiny base model that reads (`stepopsd_jax.pretrain`): HF checkpoint + tokenizer.

    python -m stepopsd_jax.tools.make_base --out DIR [--quick] [--seed S] [--layers 4 ...]

Every field of `pretrain.build.BuildConfig` and `pretrain.train.TrainConfig` is a flag
(`--copy-steps 600`, `--answer-weight 2`); `--quick` is a smoke-test size (seconds). Prints the
held-out gate and the transfer check, and writes DIR/manifest.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys

from stepopsd_jax.pretrain import build as build_lib
from stepopsd_jax.pretrain import transfer
from stepopsd_jax.pretrain.train import TrainConfig

QUICK = dict(vocab_size=800, scaffold_texts=300, heldout_fraction=0.3, width=32, layers=1, heads=2, mlp=64,
             gate_examples=8, transfer_tasks=2, quick=True, survival="",
             survival_tasks=16)
QUICK_TRAIN = dict(prev_token_steps=1, copy_steps=1, mixed_steps=2, batch_size=4, copy_rows=1,
                   warmup_steps=1)


def _add_fields(parser: argparse.ArgumentParser, cls, skip=()) -> None:
  for f in dataclasses.fields(cls):
    if f.name in skip:
      continue
    kind = type(f.default)
    parser.add_argument("--" + f.name.replace("_", "-"), dest=f.name, default=None,
                        type=(lambda s: s.lower() in ("1", "true", "yes")) if kind is bool
                        else kind)


def parse(argv=None) -> tuple[str, build_lib.BuildConfig]:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--out", required=True, help="output directory")
  _add_fields(p, build_lib.BuildConfig, skip=("train",))
  _add_fields(p, TrainConfig)
  args = vars(p.parse_args(argv))
  quick = bool(args.get("quick"))
  build_fields = {f.name for f in dataclasses.fields(build_lib.BuildConfig)} - {"train"}
  given = {k: v for k, v in args.items() if v is not None and k != "out"}
  train_kw = (QUICK_TRAIN if quick else {}) | {k: v for k, v in given.items()
                                               if k not in build_fields}
  build_kw = (QUICK if quick else {}) | {k: v for k, v in given.items() if k in build_fields}
  return args["out"], build_lib.BuildConfig(**build_kw, train=TrainConfig(**train_kw))


def main(argv=None) -> int:
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
  out, cfg = parse(argv)
  manifest = build_lib.build(cfg, out)
  print(json.dumps(manifest["heldout_gate"], indent=1))
  print(transfer.format_report(manifest["transfer"]))
  print(f"built {out} in {manifest['build_minutes']:.1f} min "
        f"({manifest['num_params']} params)")
  return 0


if __name__ == "__main__":
  sys.exit(main())
