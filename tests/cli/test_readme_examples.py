"""Every README block marked `<!-- example: NAME -->` runs as written, in a fresh Python
process of this venv: the documentation cannot drift from what recursa does."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from e2e_helpers import host_env

README = Path(__file__).resolve().parents[2] / "README.md"
EXAMPLE = re.compile(r"<!-- example: (\w+) -->\n```python\n(.*?)\n```$", re.S | re.M)
EXAMPLES = dict(EXAMPLE.findall(README.read_text(encoding="utf-8")))


def test_the_readme_has_its_marked_examples() -> None:
    assert set(EXAMPLES) >= {"signature", "auto", "session", "tools"}
    marked = README.read_text(encoding="utf-8").count("<!-- example: ")
    assert len(EXAMPLES) == marked  # every marker is followed by a python fence


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_the_readme_example_runs(name: str, tmp_path) -> None:
    script = tmp_path / f"readme_{name}.py"
    script.write_text(EXAMPLES[name] + "\nprint('example finished')\n", encoding="utf-8")

    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=host_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout.endswith("example finished\n")
