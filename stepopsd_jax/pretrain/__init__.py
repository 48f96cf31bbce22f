"""The tiny base model that reads (DESIGN 4.10): a synthetic reading corpus, its tokenizer, the
pretraining, the held-out gate and the credit-lab transfer check. Build it with
`python -m stepopsd_jax.tools.make_base`; the shipped build is at `base_model_dir()`."""

import pathlib


def base_model_dir() -> str:
  """The shipped base model (HF checkpoint + tokenizer + manifest.json) inside the package."""
  return str(pathlib.Path(__file__).resolve().parent.parent / "assets" / "base_model")


__all__ = ["base_model_dir"]
