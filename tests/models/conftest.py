import pytest

from tests.models.hf_reference import HF_CONFIGS, make_hf_model


@pytest.fixture(params=sorted(HF_CONFIGS))
def hf_checkpoint(request, tmp_path):
  """(transformers model, directory of its save_pretrained checkpoint)."""
  model = make_hf_model(request.param)
  model.save_pretrained(tmp_path / "hf")
  return model, str(tmp_path / "hf")
