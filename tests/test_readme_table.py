"""The README's benchmark table is the one `bench/readme_table.py` generates from the JSONs."""

import os
import sys

ROOT = os.path.join(os.path.dirname(__file__), "..")
sys.path.insert(0, ROOT)
from bench import readme_table  # noqa: E402  pylint: disable=g-import-not-at-top


def test_readme_benchmark_table_matches_the_committed_results(capsys):
  assert readme_table.main(["--check"]) == 0, capsys.readouterr().out


def test_a_hand_edited_number_is_caught(tmp_path, capsys):
  with open(os.path.join(ROOT, "README.md")) as f:
    text = f.read()
  readme = tmp_path / "README.md"
  block = text.split(readme_table.BEGIN)[1].split(readme_table.END)[0]
  first_bold = block.index("**")
  edited = text.replace(block, block[:first_bold] + "9" + block[first_bold:])
  readme.write_text(edited)
  assert readme_table.main(["--check", "--readme", str(readme)]) == 1
  assert readme_table.main(["--readme", str(readme)]) == 0  # regenerating repairs it
  assert readme_table.main(["--check", "--readme", str(readme)]) == 0
  assert "out of date" in capsys.readouterr().out
