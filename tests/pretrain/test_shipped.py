"""The shipped base model matches its manifest, loads like a Qwen checkpoint through the main
job's config, and a broken copy of it gets one line naming the file."""

import hashlib
import json
import pathlib
import shutil

import pytest

from stepopsd_jax import models, text
from stepopsd_jax.pretrain import base_model_dir
from stepopsd_jax.run import config as config_lib
from stepopsd_jax.train.config import ConfigError

DIR = pathlib.Path(base_model_dir())
MANIFEST = json.loads((DIR / "manifest.json").read_text())


def test_files_match_their_sha256():
  for name, digest in MANIFEST["files_sha256"].items():
    assert hashlib.sha256((DIR / name).read_bytes()).hexdigest() == digest, name


def test_parameter_count_vocab_and_recipe():
  config, params = models.load_hf(str(DIR))
  assert models.count_params(config) == MANIFEST["num_params"]
  assert config.hidden_size == MANIFEST["recipe"]["width"]
  assert config.num_layers == MANIFEST["recipe"]["layers"]
  tokenizer = text.load_tokenizer(DIR)
  assert tokenizer.vocab_size == MANIFEST["tokenizer_vocab"] <= config.vocab_size
  assert MANIFEST["heldout_gate"]["plan"]["n"] > 0 and MANIFEST["build_minutes"] > 0


def test_the_main_job_loads_it():
  config = config_lib.load("configs/default.py")
  assert config.model.path == config.tokenizer.path == str(DIR)
  config_lib.validate(config, 1)


@pytest.mark.parametrize("missing, named", [("config.json", "config.json"),
                                            ("model.safetensors", "safetensors"),
                                            ("tokenizer.json", "tokenizer.json")])
def test_an_incomplete_copy_is_named(tmp_path, missing, named):
  broken = tmp_path / "base"
  shutil.copytree(DIR, broken)
  (broken / missing).unlink()
  with pytest.raises(ConfigError, match=named) as e:
    config_lib.check_model_files(str(broken), str(broken))
  assert "\n" not in str(e.value) and str(broken) in str(e.value)


def test_a_tokenizer_of_another_model_is_named(tmp_path):
  small = tmp_path / "small"
  shutil.copytree(DIR, small)
  cfg = json.loads((small / "config.json").read_text())
  cfg["vocab_size"] = 512  # as if the weights were a model with a smaller vocabulary
  (small / "config.json").write_text(json.dumps(cfg))
  with pytest.raises(ConfigError, match="do not fit .*vocab_size 512 .*config.json"):
    config_lib.check_model_files(str(small), str(DIR))
