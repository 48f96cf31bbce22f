"""`python -m stepopsd_jax.train --config=configs/x.py[:arg] --workdir=DIR [--config.a.b=v ...]`:
the documented entry point; the trainer itself is `stepopsd_jax.run`."""

import sys

from stepopsd_jax.run.cli import main

if __name__ == "__main__":
  sys.exit(main())
