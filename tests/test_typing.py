"""The usage files in tests/typing type-check without plugins, under mypy and pyright.

``make typecheck`` runs the same checks; these tests keep them in the suite, so a change
that breaks a user's type checker fails ``pytest`` too.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
USAGE = ROOT / "tests" / "typing"


def test_mypy_config_has_no_plugins() -> None:
    # Users' mypy runs without the pydantic plugin, so ours must too.
    text = (ROOT / "pyproject.toml").read_text()
    section = text.split("[tool.mypy]", 1)[1].split("\n[", 1)[0]
    assert "strict = true" in section
    assert "plugins" not in section


def test_usage_files_pass_mypy_strict_without_plugins() -> None:
    api = pytest.importorskip("mypy.api")
    files = sorted(str(p) for p in USAGE.glob("*.py"))
    assert len(files) >= 2
    out, err, status = api.run(["--config-file", str(ROOT / "pyproject.toml"), *files])
    assert status == 0, out + err


@pytest.mark.skipif(importlib.util.find_spec("pyright") is None, reason="pyright not installed")
def test_usage_files_pass_pyright_strict() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pyright", "--project", str(ROOT / "pyproject.toml")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 errors" in proc.stdout


def test_readme_usage_file_is_the_readme_block() -> None:
    readme = (ROOT / "README.md").read_text()
    block = readme.split("## Usage", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    assert block in (USAGE / "usage_readme.py").read_text()
