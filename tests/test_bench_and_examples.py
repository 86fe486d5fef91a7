"""The benchmark and the examples run, and the benchmark's paths agree (no timing asserts)."""

from __future__ import annotations

import runpy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import coba_rl
from coba_rl import bench

ROOT = Path(__file__).resolve().parents[1]


def test_reference_heap_equals_allocate() -> None:
    rng = np.random.default_rng(3)
    cfg = coba_rl.CoBAConfig(n_low=2, n_up=40)
    for tie_heavy in (False, True):
        p = bench.paper_batch(rng, m=50, tie_heavy=tie_heavy)
        a = coba_rl.allocate(coba_rl.BatchStats(pass_rates=p, failure_rate=0.35), 700, cfg)
        ref = bench.reference_heap(p, 700, cfg, a.alpha, a.beta)
        np.testing.assert_array_equal(ref, a.counts)


def test_paper_setting_runs_tiny_and_paths_agree() -> None:
    results = bench.run_paper_setting(reps=2, dp_reps=1, m=24, budget=24 * 16, n_up=40)
    assert [r.case for r in results] == ["realistic", "tie-heavy"]
    for r in results:
        assert r.counts_identical and r.dp_objective_equal
        assert set(r.times) == {
            "allocate",
            "reference heap",
            "heap (table)",
            "greedy (table)",
            "dp",
        }
    table = bench.format_paper_table(results)
    assert "Paper's Table 4" in table and "| realistic | dp |" in table


def test_cli_bench_quick_runs(capsys: pytest.CaptureFixture[str]) -> None:
    from coba_rl.cli import main

    assert main(["bench", "--reps", "1", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "speed-up vs reference heap" in out and "| realistic | yes |" in out


def test_machine_info_fields() -> None:
    info = bench.machine_info()
    assert {"cpu", "cores", "python", "numpy", "scipy"} <= set(info)


@pytest.mark.parametrize("script", sorted((ROOT / "examples").glob("*.py")), ids=lambda p: p.name)
def test_examples_run(script: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runpy.run_path(str(script), run_name="__main__")
    assert capsys.readouterr().out.strip()


def test_console_script_help() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "coba_rl.cli", "--help"], capture_output=True, text=True, check=True
    )
    assert "bench" in out.stdout
