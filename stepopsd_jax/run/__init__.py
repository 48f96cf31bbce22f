"""Host-side orchestration of a run: configs and the CLI, setup, the trainer loop with its
format warm-up, the multi-host join, evaluation and the metrics writer.

`python -m stepopsd_jax.train` and `python -m stepopsd_jax.evaluate` are its entry points.
"""
