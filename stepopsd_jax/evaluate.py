"""`python -m stepopsd_jax.evaluate --config=... --workdir=DIR [--policy=model|oracle|random]`:
per-subset eval tables (the command is `stepopsd_jax.run.evaluate`)."""

import sys

from stepopsd_jax.run.evaluate import main

if __name__ == "__main__":
  sys.exit(main())
