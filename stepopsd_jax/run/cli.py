"""`python -m stepopsd_jax.train --config=configs/x.py[:arg] --workdir=DIR [--config.a.b=v ...]`."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

import jax
from absl import flags
from absl import logging as absl_logging

from stepopsd_jax import sharding
from stepopsd_jax.run import config as config_lib


def setup_process() -> None:
  """Logging, the RNG flag, and multi-host start-up (before anything touches devices)."""
  logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
  logging.getLogger("stepopsd_jax").setLevel(logging.INFO)
  absl_logging.set_verbosity(absl_logging.WARNING)  # orbax logs every file it writes at INFO
  jax.config.update("jax_threefry_partitionable", True)
  sharding.maybe_initialize()


def config_from_cli(argv: list[str], define: Callable[[flags.FlagValues], None] | None = None
                    ) -> flags.FlagValues | None:
  """Parsed flags with a validated `.config`, or None after printing the one-line error."""
  try:
    fv = config_lib.parse_flags(argv, define)
    config_lib.validate(fv.config, jax.device_count())
  except config_lib.ConfigError as e:
    print(f"config error: {e}", file=sys.stderr)
    return None
  return fv


def main(argv: list[str] | None = None) -> int:
  setup_process()
  fv = config_from_cli(sys.argv[1:] if argv is None else argv)
  if fv is None:
    return 2
  from stepopsd_jax.run import trainer  # after validation: nothing compiles on a bad config
  from stepopsd_jax.train.checkpoint import CheckpointError
  try:
    final = trainer.run(fv.config, fv.workdir)
  except CheckpointError as e:  # a full disk, a read-only workdir, no complete checkpoint
    print(f"checkpoint error: {e}", file=sys.stderr)
    return 3
  print("final eval: " + ", ".join(f"{k}={v:.3f}" for k, v in sorted(final.items())))
  return 0
