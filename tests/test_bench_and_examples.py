"""The examples run, and the console script answers ``--help``.

The benchmark's own tests live in ``tests/test_bench.py``.
"""

from __future__ import annotations

import runpy
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("script", sorted((ROOT / "examples").glob("*.py")), ids=lambda p: p.name)
def test_examples_run(script: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runpy.run_path(str(script), run_name="__main__")
    assert capsys.readouterr().out.strip()


def test_console_script_help() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "coba_rl.cli", "--help"], capture_output=True, text=True, check=True
    )
    assert "bench" in out.stdout


def test_bench_help_lists_its_options() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "coba_rl.cli", "bench", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    for option in ("--quick", "--out", "--sizes", "--cap", "--tracker-sizes", "--update-docs"):
        assert option in out.stdout


def test_token_benchmark_script_checks_pass() -> None:
    """``benchmarks/tokens_vs_rollouts.py`` exits 0 only if every token case held its
    budgets and the closed form agreed with the gain table (same counts; with a rollout
    budget, values within the certified gap)."""
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "tokens_vs_rollouts.py"),
            "--reps",
            "1",
            "--batches",
            "5",
        ],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "tokens + rollouts, T = 0.9 spend (gain table)" in out.stdout
