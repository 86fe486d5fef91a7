"""The bundled benchmark runs end to end at tiny sizes and its paths agree.

No test here asserts a time: the benchmark measures, the tests check plumbing and
agreement.
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import coba_rl
from coba_rl import PassRateTracker, bench
from coba_rl.bench import _report as report
from coba_rl.bench import _timing as timing
from coba_rl.cli import main

TINY = ["--sizes", "16,32", "--tracker-sizes", "160,320", "--reps", "1", "--cap", "5"]


@pytest.fixture(autouse=True)
def _small_scale_stage(monkeypatch: pytest.MonkeyPatch) -> None:
    # The scale stage allocates 10^6 prompts; the plumbing tests use tiny cases.
    from coba_rl.bench import _scale

    monkeypatch.setattr(_scale, "SCALE_CASES", (("distinct", 200, 128), ("wide bounds", 64, 4096)))


# -- inputs and the paper's heap ---------------------------------------------------------


@pytest.mark.parametrize("kind", bench.BATCH_KINDS)
def test_reference_heap_equals_allocate(kind: str) -> None:
    rng = np.random.default_rng(3)
    cfg = coba_rl.CoBAConfig(n_low=2, n_up=40)
    for _ in range(3):
        p = bench.paper_batch(rng, m=50, kind=kind)  # type: ignore[arg-type]
        stats = coba_rl.BatchStats(pass_rates=p, failure_rate=0.35)
        a = coba_rl.allocate(stats, 700, cfg)
        ref = bench.reference_heap(p, 700, cfg, a.alpha, a.beta)
        np.testing.assert_array_equal(ref, a.counts)
        np.testing.assert_array_equal(bench.plain_heap(p, 700, cfg, a.alpha, a.beta), ref)
        np.testing.assert_array_equal(bench.table_allocate(stats, 700, cfg).counts, ref)


def test_paper_batch_kinds() -> None:
    rng = np.random.default_rng(0)
    grid = bench.paper_batch(rng, m=2000, kind="grid")
    assert np.array_equal(grid * 16, np.round(grid * 16))
    assert (grid == 0.0).mean() > 0.25 and (grid == 1.0).any()
    cont = bench.paper_batch(rng, m=2000, kind="continuous")
    assert np.unique(cont[(cont > 0) & (cont < 1)]).size > 1000
    ties = bench.paper_batch(rng, m=2000, kind="tie-heavy")
    assert set(ties.tolist()) == {0.25, 0.5, 0.75}


def test_realistic_batch_is_k_over_varying_n() -> None:
    # k / n_i with n_i from an allocation: denominators vary, so rates fall off the
    # 1/16 grid, and there are far more distinct rates than on the grid.
    rng = np.random.default_rng(1)
    real = bench.paper_batch(rng, m=2000, kind="realistic")
    assert ((real >= 0) & (real <= 1)).all()
    assert not np.array_equal(real * 16, np.round(real * 16))
    assert np.unique(real).size > 3 * 17
    assert (real == 0.0).mean() > 0.25  # the unsolved third stays unsolved
    assert bench.BATCH_KINDS[0] == "realistic"  # the headline case


def test_paper_batch_rejects_unknown_kind() -> None:
    with pytest.raises(ValueError, match="kind must be one of"):
        bench.paper_batch(np.random.default_rng(0), m=4, kind="uniform")  # type: ignore[arg-type]


# -- stages at tiny sizes ------------------------------------------------------------------


def test_paper_setting_tiny_paths_agree() -> None:
    results = bench.run_paper_setting(reps=2, dp_reps=1, m=24, budget=24 * 16, n_up=40)
    assert [r.case for r in results] == ["realistic", "grid", "continuous", "tie-heavy"]
    for r in results:
        assert r.counts_identical and r.dp_objective_equal
        assert set(r.times) == {
            "allocate",
            "allocate (table)",
            "reference heap",
            "plain heap",
            "heap (table)",
            "greedy (table)",
            "dp",
        }
        assert len(r.times["dp"]) == 1 and len(r.times["allocate"]) == 2
    table = bench.format_paper_table(results)
    assert "| grid | dp |" in table and "| 115.05 s |" in table and "| 928x |" in table
    assert "| plain-Python heap / allocate |" in table


def test_scale_stage_records_time_memory_and_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    rows = bench.run_scale(cases=(("distinct", 300, 128), ("wide bounds", 64, 4096)), reps=1)
    assert [r["case"] for r in rows] == ["distinct", "wide bounds"]
    assert rows[0]["distinct"] == 300 and rows[1]["n_up"] == 4096
    assert all(r["error"] is None and r["peak_bytes"] > 0 and r["median_s"] > 0 for r in rows)

    def out_of_memory(*args: Any, **kwargs: Any) -> Any:
        raise MemoryError

    from coba_rl.bench import _scale

    monkeypatch.setattr(_scale, "allocate", out_of_memory)
    (row,) = bench.run_scale(cases=(("wide bounds", 64, 4096),), reps=1)
    assert row["error"] == "MemoryError" and row["median_s"] is None


def test_size_sweep_cap_skips_larger_sizes() -> None:
    # A cap no call can meet: every path runs at the first size only (nothing to
    # extrapolate from), then is skipped at every larger size.
    points = bench.run_size_sweep(sizes=(32, 16, 64), kinds=("grid",), cap_s=1e-12, reps=1)
    assert [q.m for q in points] == [16, 32, 64]
    assert set(points[0].results) == set(bench._sweep.SWEEP_PATHS)
    for q in points[1:]:
        assert not q.results and set(q.skipped) == set(bench._sweep.SWEEP_PATHS)
    assert "cap" in points[1].skipped["dp"]


def test_size_sweep_paths_agree_and_trace_memory() -> None:
    points = bench.run_size_sweep(sizes=(16, 48), cap_s=60.0, reps=2, memory_cap_s=60.0)
    assert [(q.kind, q.m) for q in points] == [
        ("realistic", 16),
        ("realistic", 48),
        ("grid", 16),
        ("grid", 48),
        ("continuous", 16),
        ("continuous", 48),
    ]
    for q in points:
        assert q.counts_identical and q.dp_objective_equal is True and not q.skipped
        assert q.budget == 16 * q.m
        assert all(
            meas.peak_bytes is not None and meas.peak_bytes > 0 for meas in q.results.values()
        )


def test_bounds_sweep_runs_fast_paths() -> None:
    points = bench.run_bounds_sweep(m=20, n_ups=(64, 32), kinds=("continuous",), reps=1)
    assert [q.n_up for q in points] == [32, 64]
    for q in points:
        assert set(q.results) == {"allocate", "greedy (table)"} and q.counts_identical
        assert q.dp_objective_equal is None


def test_growth_exponents_fit_slopes() -> None:
    def point(m: int, times: dict[str, float]) -> bench.SweepPoint:
        res = {k: timing.Measurement([t]) for k, t in times.items()}
        return bench.SweepPoint("grid", m, 16 * m, 2, 128, res, {}, True, None)

    # dp grows as M^2, allocate as M; the tiny size (a fixed overhead) is left out.
    points = [point(8, {"dp": 1.0, "allocate": 1.0})]
    points += [point(m, {"dp": (m / 1000) ** 2, "allocate": m / 1000}) for m in (1000, 4000)]
    got = bench.growth_exponents(points, axis=lambda q: q.m, min_axis=1000)
    assert got["grid"]["dp"] == pytest.approx(2.0)
    assert got["grid"]["allocate"] == pytest.approx(1.0)


def test_tracker_throughput_and_persistence() -> None:
    rows, alloc = bench.run_tracker_throughput(sizes=(320, 160), seed=1)
    assert [r["rollouts_per_step"] for r in rows] == [160, 320]
    assert [r["tracked_prompts"] for r in rows] == [160, 320]
    assert all(r["steps"] == 32 and r["rollouts_per_s"] > 0 for r in rows)
    assert len(alloc.tracker) == 320 and alloc.step == 32
    per = bench.run_persistence(alloc)
    assert per["round_trip_identical"] and per["tracked_prompts"] == 320
    assert per["file_bytes"] > 0 and per["tracker_nbytes"] == alloc.tracker.nbytes()


def test_measure_respects_reps_and_budget() -> None:
    calls: list[int] = []

    def fn() -> int:
        calls.append(1)
        return len(calls)

    meas, first = timing.measure(fn, reps=4, budget_s=float("inf"), memory=True)
    assert first == 1 and len(meas.times) == 4 and len(calls) == 5  # 4 timed, 1 traced
    calls.clear()
    meas, _ = timing.measure(fn, reps=4, budget_s=0.0, memory=False)
    assert len(meas.times) == 1 and len(calls) == 1 and meas.peak_bytes is None


def test_peak_memory_sees_numpy_buffers() -> None:
    assert timing.peak_memory(lambda: np.ones(1_000_000)) >= 8_000_000


def test_estimate_seconds_extrapolates() -> None:
    assert timing.estimate_seconds((100, 2.0), 400, exponent=1.0) == pytest.approx(8.0)
    assert timing.estimate_seconds((100, 2.0), 400, exponent=2.0) == pytest.approx(32.0)


# -- targets and files ---------------------------------------------------------------------


def _case(name: str, ref_s: float, alloc_s: float, plain_s: float | None = None) -> dict[str, Any]:
    paths = {"reference heap": {"median": ref_s}, "allocate": {"median": alloc_s}}
    if plain_s is not None:
        paths["plain heap"] = {"median": plain_s}
    return {"case": name, "paths": paths}


def test_targets_apply_to_every_batch_kind() -> None:
    # A target is met only when every case reaches it; a slow case is never left out.
    cases = [
        _case("realistic", 1.0, 0.0005),
        _case("grid", 1.0, 0.0002),
        _case("continuous", 1.0, 0.002),
        _case("tie-heavy", 1.0, 0.0001),
    ]
    row = report.targets({"paper_setting": {"cases": cases}})[0]
    assert row["met"] is False
    assert "500x (continuous)" in row["measured"] and "2000x (realistic)" in row["measured"]
    cases[2] = _case("continuous", 1.0, 0.0009)
    assert report.targets({"paper_setting": {"cases": cases}})[0]["met"] is True


def test_plain_heap_target() -> None:
    cases = [_case("realistic", 1.0, 0.0002, plain_s=0.2), _case("grid", 1.0, 0.0002, 0.05)]
    rows = report.targets({"paper_setting": {"cases": cases}})
    plain = next(r for r in rows if "plain-Python" in r["target"])
    assert plain["met"] is False and "250x (grid)" in plain["measured"]


# -- token budgets -------------------------------------------------------------------------


def test_token_batch_lengths_grow_with_difficulty() -> None:
    rates, lengths = bench.token_batch(np.random.default_rng(3), m=2000)
    assert rates.shape == lengths.shape == (2000,)
    assert ((rates >= 0) & (rates <= 1)).all()
    assert ((lengths > 0) & (lengths <= bench.LENGTH_LIMIT)).all()
    assert lengths.max() == bench.LENGTH_LIMIT  # the length limit is reached
    assert lengths[rates == 0].mean() > 2 * lengths[rates > 0.9].mean()
    assert len({float(r) for r in rates}) > 100  # k / n with varying n: many distinct rates


def test_token_stage_cases_hold_their_budgets() -> None:
    cases = bench.run_token_budget(reps=1, batches=1, m=64, budget=1024)
    assert [c.case for c in cases] == list(bench.TOKEN_CASES)
    for c in cases:
        assert c.agrees, c.to_json()
        assert 0.9 < c.max_token_use <= 1.0 + 1e-9  # the token budget is spent, not exceeded
        assert len(c.times[c.case]) == len(c.times["rollouts (allocate)"]) == 1
    # T = 0.9 spend with B: both budgets constrain; a certified ranking may stop on tokens
    # a few rollouts short of B.
    assert cases[2].bindings and cases[2].bindings <= {"tokens", "rollouts", "tokens+rollouts"}
    assert cases[1].bindings == {"tokens"}
    # T = spend with B: the rollout-only allocation fits (exactly) and is returned.
    assert cases[4].bindings and cases[4].bindings <= {"rollouts", "tokens+rollouts"}


def test_token_stage_reports_a_broken_solver(monkeypatch: pytest.MonkeyPatch) -> None:
    # A token path that overspends its budget, overshoots B and leaves the bounds must be
    # reported as a disagreement, not timed as if it were right.
    from coba_rl.bench import _tokens

    real = _tokens.allocate

    def broken(stats: Any, budget: Any, cfg: Any, **kw: Any) -> Any:
        out = real(stats, budget, cfg, **kw)
        if kw.get("token_budget") is None:
            return out
        counts = np.asarray(out.counts) + 1  # one more rollout per prompt: over every budget
        counts[0] = cfg.n_up + 1
        # an Allocation validates itself, so the broken result is a stand-in with its fields
        return types.SimpleNamespace(
            counts=counts, costs=out.costs, tokens=out.tokens, binding=out.binding
        )

    monkeypatch.setattr(_tokens, "allocate", broken)
    cases = _tokens.run_token_budget(reps=1, batches=1, m=64, budget=1024)
    assert not any(c.agrees for c in cases)
    assert not any(c.bounds_held for c in cases)
    assert not any(c.budget_held for c in cases)
    assert not cases[2].rollouts_held  # B binds there, so one more rollout each overshoots it
    assert cases[0].rollouts_held  # no rollout budget: nothing to overshoot
    js = [c.to_json() for c in cases]
    assert "| NO |" in bench.format_token_table(js)
    results = _results_with(token_budget={"cases": js})
    assert report.targets(results)[0]["target"] == report.TOKEN_TARGET


def test_broken_token_solver_fails_the_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The stage's checks feed the command's agreement: exit status 1 even without --check.
    from coba_rl.bench import _tokens

    real = _tokens.allocate

    def overspend(stats: Any, budget: Any, cfg: Any, **kw: Any) -> Any:
        out = real(stats, budget, cfg, **kw)
        if kw.get("token_budget") is None:
            return out
        return types.SimpleNamespace(
            counts=np.asarray(out.counts) * 2, costs=out.costs, tokens=out.tokens, binding=None
        )

    monkeypatch.setattr(_tokens, "allocate", overspend)
    code, out, _ = _run_cli(["--quick", *TINY, "--quiet", "--out", str(tmp_path / "r")], capsys)
    assert code == 1
    results = json.loads((tmp_path / "r" / "results.json").read_text())
    assert results["ok"] is False
    assert not any(c["budget_held"] for c in results["token_budget"]["cases"])
    assert "FAILED" in out


def _token_case(name: str, ratio: float) -> dict[str, Any]:
    times = {"median": 0.001 * ratio, "min": 0.001 * ratio, "max": 0.001 * ratio, "reps": 1}
    ref = {"median": 0.001, "min": 0.001, "max": 0.001, "reps": 1}
    return {"case": name, "paths": {name: times, "rollouts (allocate)": ref}, "ratio": ratio}


def test_token_target_scored_on_every_case() -> None:
    names = list(bench.TOKEN_CASES)
    cases = [_token_case(n, r) for n, r in zip(names, (1.9, 1.8, 4.5, 2.7, 1.2), strict=True)]
    row = report.targets({"token_budget": {"cases": cases}})[0]
    assert row["target"] == report.TOKEN_TARGET
    assert row["met"] is False and "4.50x (tokens + rollouts, T = 0.9 spend)" in row["measured"]
    assert report.targets_missed({"token_budget": {"cases": cases}}) == [report.TOKEN_TARGET]
    cases = [_token_case(n, 1.5) for n in names]
    assert report.targets({"token_budget": {"cases": cases}})[0]["met"] is True


def _results_with(**parts: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"ok": True}
    base.update(parts)
    return base


def test_summary_names_the_missed_targets_and_never_claims_all_passed() -> None:
    row = {"rollouts_per_step": 10**6, "median_s_new_ids": 0.3, "median_s_seen_ids": 0.1}
    row["rollouts_per_s"] = 5e6
    per = {"tracked_prompts": 10**6, "save_s": 2.5, "load_s": 0.5}
    scale = [
        {
            "case": "distinct",
            "m": 10**6,
            "n_up": 128,
            "distinct": 10**6,
            "median_s": 0.5,
            "min_s": 0.4,
            "peak_bytes": 400e6,
            "error": None,
        },
        {
            "case": "wide bounds",
            "m": 4096,
            "n_up": 65536,
            "distinct": 4096,
            "median_s": None,
            "min_s": None,
            "peak_bytes": None,
            "error": "MemoryError",
        },
    ]
    results = _results_with(
        tracker={"throughput": [row], "persistence": per},
        scale=scale,
        sweep={"points": [], "growth_in_m": {}},
    )
    rows = report.targets(results)
    assert [r["met"] for r in rows] == [None, False, False, False, False]
    lines = report.summary_lines(results)
    missed = lines[0]
    assert missed.startswith("Targets missed: ") and "save and load" in missed
    assert "tracker update" in missed
    assert "300 MB" in missed and "100 MB" in missed
    assert "not measured" in lines[1] and "M = 65,536" in lines[1]
    assert "all passed" in lines[-1]
    assert len(report.targets_missed(results)) == 4
    md_lines = "\n".join(lines)
    assert "All checks passed: yes" not in md_lines


def test_unmeasured_targets_are_not_missed() -> None:
    results = _results_with(
        tracker={
            "throughput": [
                {
                    "rollouts_per_step": 1000,
                    "median_s_new_ids": 9.0,
                    "median_s_seen_ids": 9.0,
                    "rollouts_per_s": 1.0,
                }
            ],
            "persistence": {"tracked_prompts": 1000, "save_s": 9.0, "load_s": 9.0},
        }
    )
    assert report.targets_missed(results) == []
    assert [r["met"] for r in report.targets(results)] == [None, None]


def test_targets_tracker_and_growth() -> None:
    row = {"rollouts_per_step": 10**6, "median_s_new_ids": 0.3, "median_s_seen_ids": 0.1}
    row["rollouts_per_s"] = 5e6
    results = {
        "sweep": {"growth_in_m": {"grid": {"allocate": 1.5}}, "points": []},
        "tracker": {"throughput": [row]},
    }
    _, growth, tracker = report.targets(results)
    assert growth["met"] is False and "1.50 (grid, in M)" in growth["measured"]
    assert tracker["met"] is False and "0.300 s" in tracker["measured"]


def test_plot_skipped_without_matplotlib(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` fail
    assert report.plot_sweep([], tmp_path / "x.png") is False
    assert not (tmp_path / "x.png").exists()


def test_update_docs_splices_between_markers(tmp_path: Path) -> None:
    doc = tmp_path / "perf.md"
    doc.write_text(f"# Perf\n\nintro\n{report.DOCS_BEGIN}\nold\n{report.DOCS_END}\n\nafter\n")
    plot = tmp_path / "p.png"
    plot.write_bytes(b"png")
    report.update_docs(doc, "| new | table |\n", plot)
    text = doc.read_text()
    assert "old" not in text and "| new | table |" in text
    assert text.startswith("# Perf\n\nintro\n") and text.endswith(f"{report.DOCS_END}\n\nafter\n")
    assert (tmp_path / "figures" / report.PLOT_NAME).read_bytes() == b"png"


def test_update_docs_needs_markers(tmp_path: Path) -> None:
    doc = tmp_path / "perf.md"
    doc.write_text("# no markers\n")
    with pytest.raises(ValueError, match="must contain the lines"):
        report.update_docs(doc, "x", None)


# -- the command ---------------------------------------------------------------------------


def _run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["bench", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run_cli(["--quick", *TINY, "--out", str(tmp_path / "r")], capsys)
    assert code == 0
    results = json.loads((tmp_path / "r" / "results.json").read_text())
    assert {"schema", "created", "machine", "settings", "ok", "paper_setting", "sweep"} <= set(
        results
    )
    assert {"bounds_sweep", "tracker", "elapsed_s", "token_budget"} <= set(results)
    assert {"cpu", "cores", "python", "numpy", "scipy"} <= set(results["machine"])
    assert results["ok"] is True
    assert results["settings"]["command"] == (
        "coba-rl bench --quick --reps 1 --cap 5 --sizes 16,32 --tracker-sizes 160,320"
    )
    cases = results["paper_setting"]["cases"]
    assert [c["case"] for c in cases] == ["realistic", "grid", "continuous", "tie-heavy"]
    assert all(c["counts_identical"] and c["dp_objective_equal"] for c in cases)
    tokens = results["token_budget"]["cases"]
    assert [c["case"] for c in tokens] == list(bench.TOKEN_CASES)
    assert results["token_budget"]["setting"] == {"m": 512, "budget": 8192, "n_low": 2, "n_up": 128}
    assert all(c["agrees"] for c in tokens)
    assert all(c["paths"][c["case"]]["reps"] == 5 * 5 for c in tokens)  # --quick: 5 x 5
    assert sorted({q["m"] for q in results["sweep"]["points"]}) == [16, 32]
    assert all(q["counts_identical"] for q in results["sweep"]["points"])
    tracker = results["tracker"]
    assert [r["rollouts_per_step"] for r in tracker["throughput"]] == [160, 320]
    assert tracker["persistence"]["tracked_prompts"] == 320
    md = (tmp_path / "r" / "results.md").read_text()
    assert "### Targets" in md and "| DP / heap | 928x |" in md and "### Tracker" in md
    assert "### Token budgets (M = 512, B = 8192" in md and report.TOKEN_TARGET in md
    # the Markdown is a function of the JSON alone, so it can be rebuilt from the file
    assert report.format_markdown(results) == md
    assert md in out and "paper setting" in err  # table on stdout, progress on stderr
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert "skipping the plot" in out
    else:
        assert (tmp_path / "r" / report.PLOT_NAME).stat().st_size > 0


def test_check_fails_on_a_missed_target(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A real tiny run, then the same results with a save time over its 2 s target.
    code, _, _ = _run_cli(["--quick", *TINY, "--quiet", "--out", str(tmp_path / "a")], capsys)
    assert code == 0
    results = json.loads((tmp_path / "a" / "results.json").read_text())
    results["tracker"]["persistence"].update(tracked_prompts=10**6, save_s=3.0, load_s=0.1)
    from coba_rl.bench import _command

    monkeypatch.setattr(_command, "run_all", lambda settings, progress: results)
    out = str(tmp_path / "b")
    assert _run_cli([*TINY, "--quiet", "--out", out], capsys)[0] == 0
    code, stdout, _ = _run_cli([*TINY, "--quiet", "--check", "--out", out], capsys)
    assert code == 1
    assert "Targets missed:" in stdout and "save and load at 10^6 prompts" in stdout
    assert "| 3.00 s" not in stdout or "NO" in stdout
    results["ok"] = False
    assert _run_cli([*TINY, "--quiet", "--out", out], capsys)[0] == 1


def test_cli_without_matplotlib_and_quiet(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    doc = tmp_path / "perf.md"
    doc.write_text(f"{report.DOCS_BEGIN}\n{report.DOCS_END}\n")
    args = [*TINY, "--quiet", "--out", str(tmp_path), "--update-docs", str(doc)]
    code, out, err = _run_cli(args, capsys)
    assert code == 0 and err == ""
    assert "matplotlib is not installed: skipping the plot" in out
    assert not (tmp_path / report.PLOT_NAME).exists()
    assert (tmp_path / "results.md").read_text() in doc.read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--sizes", "16,x"], "comma-separated integers"),
        (["--sizes", "0"], "positive integers"),
        (["--reps", "0"], "must be at least 1"),
        (["--cap", "-1"], "must be positive"),
    ],
)
def test_cli_rejects_bad_options(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit, match="2"):
        main(["bench", *args])
    assert message in capsys.readouterr().err


# -- the tracker's fast path ---------------------------------------------------------------


@given(
    steps=st.lists(
        st.lists(st.tuples(st.integers(0, 12), st.booleans()), min_size=1, max_size=30),
        min_size=1,
        max_size=6,
    ),
    window=st.integers(1, 3),
    as_str=st.booleans(),
)
def test_tracker_matches_a_dictionary_model(
    steps: list[list[tuple[int, bool]]], window: int, as_str: bool
) -> None:
    """Run collapsing and the merged key order agree with a plain per-id model.

    Ids arrive in any order (runs, interleaved, repeats), as strings of varying width or
    ints; the benchmark's throughput relies on these internal shortcuts.
    """
    tracker = PassRateTracker(window)
    model: dict[Any, list[tuple[int, int]]] = {}
    first_seen: list[Any] = []
    for step in steps:
        ids = [f"p{i * 37}" if as_str else i * 1_000_003 for i, _ in step]
        rewards = [1.0 if ok else 0.0 for _, ok in step]
        fractions = tracker.record(ids, rewards)
        this: dict[Any, list[int]] = {}
        for pid, r in zip(ids, rewards, strict=True):
            s = this.setdefault(pid, [0, 0])
            s[0] += r == 1.0
            s[1] += 1
        for pid, (succ, total) in this.items():
            if pid not in model:
                model[pid] = []
                first_seen.append(pid)
            model[pid] = (model[pid] + [(succ, total)])[-window:]
        expected = [this[p][0] / this[p][1] for p in first_seen if p in this]
        np.testing.assert_allclose(fractions, expected)
        tracker._check()
        assert tracker.lookup(first_seen).tolist() == list(range(len(first_seen)))
        rates = tracker.pass_rates(first_seen)
        want = [sum(s for s, _ in model[p]) / sum(t for _, t in model[p]) for p in first_seen]
        np.testing.assert_allclose(rates, want)
