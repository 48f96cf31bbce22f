"""One quick build of the base model per test session: its tokenizer and manifest stand in for a
shipped one (nothing is shipped: the generic route did not reach its gate, see the README)."""

import pathlib

import pytest

from stepopsd_jax.tools import make_base


@pytest.fixture(scope="session")
def built(tmp_path_factory) -> pathlib.Path:
  out = tmp_path_factory.mktemp("base")
  assert make_base.main(["--out", str(out), "--quick", "true"]) == 0
  return out
