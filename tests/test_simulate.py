"""``coba-rl simulate``: settings, the comparison runner, its outputs and the command line."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

import coba_rl
from coba_rl import simulate
from coba_rl.cli import main as cli_main
from coba_rl.sim import SimConfig, TokenBudgetCoBA
from coba_rl.simulate import SimulateSettings

TINY_SIM = SimConfig(num_train=96, num_heldout=48)
COBA = ("coba-paper", "coba-release")


def tiny(**kw: object) -> SimulateSettings:
    base: dict[str, object] = {
        "steps": 6,
        "batch_size": 16,
        "group_size": 8,
        "seeds": (0, 1),
        "allocators": COBA,
        "n_up": 32,
        "sim": TINY_SIM,
        "lr_grid": (0.3,),
        "same_lr": False,
    }
    base.update(kw)
    return SimulateSettings(**base)  # type: ignore[arg-type]


def test_settings_reject_bad_values() -> None:
    with pytest.raises(ValidationError, match="unknown allocator 'grpo'"):
        tiny(allocators=("grpo",))
    with pytest.raises(ValidationError, match="allocators must be non-empty and distinct"):
        tiny(allocators=("coba-paper", "coba-paper"))
    with pytest.raises(ValidationError, match="seeds must be non-empty, distinct and >= 0"):
        tiny(seeds=(1, 1))
    with pytest.raises(ValidationError, match="budget_fractions must be non-empty and positive"):
        tiny(budget_fractions=(1.0, 0.0))
    with pytest.raises(ValidationError, match=r"budget 1024 is outside \[M \* n_low, M \* n_up\]"):
        tiny(budget_fractions=(8.0,))
    with pytest.raises(ValidationError, match=r"n_low \(9\) must not exceed n_up \(4\)"):
        tiny(n_low=9, n_up=4)
    with pytest.raises(ValidationError, match="exceeds the training set"):
        tiny(batch_size=200)
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        tiny(budget=100)


def test_budgets_are_fractions_of_m_times_g() -> None:
    assert tiny(budget_fractions=(1.0, 0.5, 0.25)).budgets() == [128, 64, 32]


def test_comparison_runs_every_pair_and_summarises_over_seeds() -> None:
    comp = simulate.run_comparison(tiny())
    assert [(r.allocator, r.budget, r.seed) for r in comp.runs] == [
        (a, b, s) for b in (128, 64) for a in COBA for s in (0, 1)
    ]
    rows = simulate.summarise(comp)
    assert [(r["budget"], r["allocator"]) for r in rows] == [
        (b, a) for b in (128, 64) for a in COBA
    ]
    for row in rows:
        runs = comp.select(row["allocator"], row["budget"])
        finals = [r.history.heldout_accuracy[-1] for r in runs]
        assert row["heldout_final"][0] == pytest.approx(sum(finals) / 2)
        assert row["heldout_final"][1] == pytest.approx(abs(finals[0] - finals[1]) / 2**0.5)
        zero = [sum(r.history.zero_variance_rollouts) / 6 for r in runs]
        assert row["zero_variance_per_step"][0] == pytest.approx(sum(zero) / 2)
        assert row["seeds"] == [0, 1]


def test_same_seed_same_world_for_every_allocator() -> None:
    comp = simulate.run_comparison(tiny(seeds=(3,)))
    starts = {r.history.heldout_accuracy[0] for r in comp.runs}
    assert len(starts) == 1  # identical held-out set and initial policy


def test_table_lists_each_budget_and_allocator() -> None:
    table = simulate.format_table(simulate.run_comparison(tiny()))
    lines = table.splitlines()
    assert lines[0].startswith("| budget | allocator | lr | held-out acc. (%)")
    assert len(lines) == 2 + 4
    assert lines[2].startswith("| 128 (1 x) | coba-paper | 0.3 | ")
    assert lines[5].startswith("| 64 (0.5 x) | coba-release | 0.3 | ")
    assert all(line.count("±") == 5 for line in lines[2:])


def test_make_allocator_rejects_unknown_names() -> None:
    with pytest.raises(ValueError, match="unknown allocator 'ppo'"):
        simulate.make_allocator("ppo", tiny())


def test_all_allocators_run_at_the_same_budget() -> None:
    comp = simulate.run_comparison(tiny(allocators=simulate.ALLOCATORS, seeds=(0,)))
    assert comp.allocators() == list(simulate.ALLOCATORS)
    kinds = [type(simulate.make_allocator(a, tiny())) for a in simulate.ALLOCATORS]
    assert kinds == [
        coba_rl.UniformAllocator,
        coba_rl.KnapsackRLAllocator,
        coba_rl.CoBAAllocator,
        coba_rl.CoBAAllocator,
        TokenBudgetCoBA,
    ]
    assert SimulateSettings().allocators == simulate.DEFAULT_ALLOCATORS == simulate.ALLOCATORS[:4]
    for r in comp.runs:
        assert len(r.history.effective_ratio) == 6
    uniform = comp.select("uniform", 128)[0].history
    assert all(np.nanmax(row) == np.nanmin(row) == 8 for row in uniform.counts_by_bin)


def test_results_are_written_with_settings_and_seeds(tmp_path: Path) -> None:
    comp = simulate.run_comparison(tiny())
    written = simulate.write_results(comp, tmp_path / "out", plots=False)
    assert set(written) == {"json", "markdown"}
    record = json.loads(written["json"].read_text())
    assert record["settings"]["seeds"] == [0, 1] and record["budgets"] == [128, 64]
    assert record["settings"]["sim"]["num_train"] == 96
    assert "Synthetic model" in record["note"]
    assert len(record["runs"]) == 8 and len(record["summary"]["tuned"]) == 4
    assert record["optimizer"] == {"name": "adam", "betas": [0.9, 0.999], "eps": 1e-8}
    assert {(c["allocator"], c["budget"], c["lr"]) for c in record["chosen_lr"]} == {
        (a, b, 0.3) for a in COBA for b in (128, 64)
    }
    assert all(r["lr"] == 0.3 and r["view"] == "tuned" for r in record["runs"])
    assert len(record["runs"][0]["history"]["heldout_accuracy"]) == 7
    md = written["markdown"].read_text()
    assert "Synthetic model" in md and "- seeds: 0, 1" in md and "| 64 (0.5 x) |" in md


def test_plots_are_pngs(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    written = simulate.write_results(simulate.run_comparison(tiny()), tmp_path)
    pngs = {k: p for k, p in written.items() if p.suffix == ".png"}
    assert set(pngs) == {"accuracy", "shape", "allocation", "tokens"}
    for p in pngs.values():
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "![accuracy](sim_accuracy.png)" in written["markdown"].read_text()


def test_plots_skip_with_a_message_without_matplotlib(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert simulate.write_plots(simulate.run_comparison(tiny(seeds=(0,))), tmp_path) == {}
    assert "matplotlib is not installed: skipping plots" in capsys.readouterr().err
    assert not list(tmp_path.glob("*.png"))


def test_progress_bar_prints_plain_lines_off_a_terminal() -> None:
    buf = io.StringIO()
    bar = simulate.TextProgress(100, stream=buf, width=10)
    for i in range(1, 101):
        bar.update(i, "x")
    bar.close()
    lines = buf.getvalue().splitlines()
    assert lines[0].startswith("[..........]   1%  1/100  x  0:00 elapsed, ETA ")
    assert lines[1].startswith("[#.........]  10%  10/100  x  0:00 elapsed, ETA ")  # every 10 %
    assert lines[-1] == "[##########] 100%  100/100  x" and len(lines) == 11


def test_cli_simulate_writes_results(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sim"
    argv = ["simulate", "--steps", "4", "--batch-size", "16", "--group-size", "8"]
    argv += ["--n-up", "32", "--num-train", "64", "--seeds", "0", "--out", str(out)]
    argv += ["--allocators", *COBA, "--no-plots", "--kappa", "9", "--window", "2"]
    argv += ["--lr-grid", "0.1", "0.3", "--lr", "0.1"]
    assert cli_main(argv) == 0
    captured = capsys.readouterr()
    assert f"Table:   {out / 'results.md'}" in captured.out
    assert "kappa = 9, gamma = 10, window = 2" in captured.out
    assert "[" in captured.err and "100%" in captured.err  # the progress bar
    record = json.loads((out / "results.json").read_text())
    assert record["settings"]["window"] == 2 and record["lr_grid"] == [0.1, 0.3]
    assert {r["view"] for r in record["runs"]} == {"tuned", "same-lr"}
    assert all(r["lr"] == 0.1 for r in record["runs"] if r["view"] == "same-lr")
    assert "Secondary view, every allocator at lr = 0.1:" in captured.out


def test_cli_simulate_reports_bad_settings(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli_main(["simulate", "--n-low", "5", "--n-up", "4", "--quiet"])
    assert "n_low (5) must not exceed n_up (4)" in capsys.readouterr().err


def test_cli_lists_simulate() -> None:
    with pytest.raises(SystemExit):
        cli_main(["--help"])


def test_each_pair_gets_the_lr_with_the_best_validation_score() -> None:
    comp = simulate.run_comparison(tiny(lr_grid=(0.03, 0.3, 1.0), seeds=(0,), tune_seeds=(7, 8)))
    for (name, budget), lr in comp.chosen_lr.items():
        trials = [t for t in comp.tuning if t.allocator == name and t.budget == budget]
        assert [t.lr for t in trials] == [0.03, 0.3, 1.0]
        for t in trials:
            assert len(t.validation_final) == 2 and t.score == pytest.approx(
                np.mean(t.validation_final)
            )
        best = max(trials, key=lambda t: t.score)
        assert lr == best.lr
        assert all(r.lr == lr for r in comp.select(name, budget))


def test_tuning_reads_validation_never_heldout() -> None:
    """The search scores a tuning-seed run by its validation accuracy; held-out is not read."""
    comp = simulate.run_comparison(tiny(lr_grid=(0.1,), seeds=(0,), tune_seeds=(5,)))
    hist = simulate.run_simulation(
        simulate.make_allocator("coba-paper", tiny()), steps=6, batch_size=16, budget=128,
        seed=5, config=TINY_SIM.model_copy(update={"lr": 0.1}),
    )  # fmt: skip
    trial = next(t for t in comp.tuning if t.allocator == "coba-paper" and t.budget == 128)
    assert trial.validation_final == [hist.validation_accuracy[-1]]
    assert hist.validation_accuracy[-1] != hist.heldout_accuracy[-1]


def test_same_lr_view_runs_everyone_at_sim_lr() -> None:
    settings = tiny(lr_grid=(0.03, 0.3), same_lr=True, seeds=(0,),
                    sim=TINY_SIM.model_copy(update={"lr": 0.03}))  # fmt: skip
    comp = simulate.run_comparison(settings)
    assert comp.views() == ["tuned", "same-lr"]
    for name in COBA:
        for budget in (128, 64):
            (same,) = comp.select(name, budget, "same-lr")
            (tuned,) = comp.select(name, budget, "tuned")
            assert same.lr == 0.03 and tuned.lr == comp.chosen_lr[(name, budget)]
            if tuned.lr == 0.03:
                assert same.history is tuned.history  # identical run, reused
    assert simulate.format_table(comp, "same-lr").count("| 0.03 |") == 4


def test_tune_seeds_must_be_disjoint_from_seeds() -> None:
    with pytest.raises(ValidationError, match="tune_seeds must be non-empty and disjoint"):
        tiny(seeds=(0, 1), tune_seeds=(1,))


# -- the numbers quoted in the docs ----------------------------------------------------

DOCS = Path(__file__).resolve().parent.parent / "docs" / "simulation.md"


def _quoted(text: str, name: str) -> str:
    start, end = f"<!-- quick-run:{name} -->", f"<!-- /quick-run:{name} -->"
    assert start in text and end in text, f"docs/simulation.md lacks the {name} block"
    return text.split(start, 1)[1].split(end, 1)[0].strip()


@pytest.mark.slow
def test_docs_quote_what_the_quick_run_produces() -> None:
    """``coba-rl simulate --quick`` regenerates the tables quoted in docs/simulation.md."""
    args = simulate.build_parser().parse_args(["--quick"])
    comparison = simulate.run_comparison(simulate.settings_from_args(args))
    text = DOCS.read_text(encoding="utf-8")
    assert _quoted(text, "tuned") == simulate.format_table(comparison, "tuned")
    assert _quoted(text, "same-lr") == simulate.format_table(comparison, "same-lr")
    assert _quoted(text, "lr-search") == simulate.format_lr_search(comparison)


# -- token budgets ---------------------------------------------------------------------


def test_token_allocator_is_coba_paper_spending_uniform_tokens() -> None:
    settings = tiny(
        kappa=9.0, window=2, n_low=3, sim=TINY_SIM.model_copy(update={"length_limit": 777})
    )
    alloc = simulate.make_allocator("coba-paper-tokens", settings)
    assert isinstance(alloc, TokenBudgetCoBA) and alloc.default_length == 777.0
    cfg = alloc.inner.config
    assert (cfg.variant, cfg.kappa, cfg.window, cfg.n_low, cfg.n_up) == ("paper", 9.0, 2, 3, 32)
    assert cfg.default_tokens_per_rollout == 777.0


def test_token_table_reports_tokens_and_same_seed_differences() -> None:
    comp = simulate.run_comparison(
        tiny(allocators=("uniform", "coba-paper", "coba-paper-tokens"), seeds=(0, 1, 2))
    )
    lines = simulate.format_token_table(comp).splitlines()
    assert lines[0].startswith("| budget | allocator | lr | tokens generated (M) | rollouts |")
    assert lines[0].endswith("| vs uniform at B = 128 | vs uniform at B = 128, same tokens |")
    assert len(lines) == 2 + 6
    assert lines[2].endswith("| 0.00 ± 0.00 | 0.00 ± 0.00 | 0.00 ± 0.00 |")  # uniform vs itself
    # the half-budget uniform row: same budget is itself, the full budget is not
    cells = lines[5].strip("| ").split(" | ")
    assert cells[:2] == ["64 (0.5 x)", "uniform"]
    assert cells[-3] == "0.00 ± 0.00" and cells[-2] != "0.00 ± 0.00"
    rows = {(r["allocator"], r["budget"]): r for r in simulate.summarise(comp)}
    for (name, budget), row in rows.items():
        runs = comp.select(name, budget)
        tokens = [float(sum(r.history.generated_tokens)) for r in runs]
        assert row["generated_tokens"][0] == pytest.approx(np.mean(tokens))
        assert row["rollouts"][0] == pytest.approx(np.mean([sum(r.history.rollouts) for r in runs]))
    uni = {r.seed: r.history.heldout_accuracy[-1] for r in comp.select("uniform", 128)}
    tok = {r.seed: r.history.heldout_accuracy[-1] for r in comp.select("coba-paper-tokens", 64)}
    diffs = [tok[sd] - uni[sd] for sd in (0, 1, 2)]
    got = simulate.paired_difference(comp, "coba-paper-tokens", 64, 128)
    assert got == pytest.approx((np.mean(diffs), np.std(diffs, ddof=1)))
    # uniform buys exactly its budget; the token runs record a token budget every step
    assert rows[("uniform", 128)]["rollouts"] == (6 * 128, 0.0)
    for r in comp.select("coba-paper-tokens", 64):
        assert np.isfinite(r.history.token_budget).all()
        assert (np.array(r.history.expected_tokens) <= np.array(r.history.token_budget)).all()
    assert simulate.paired_difference(comp, "coba-paper", 128, 999) is None
    # at the same tokens: uniform at B = 128 read where it had generated the half run's tokens
    want = []
    for sd in (0, 1, 2):
        (half,) = [r for r in comp.select("coba-paper-tokens", 64) if r.seed == sd]
        (ref,) = [r for r in comp.select("uniform", 128) if r.seed == sd]
        spent, acc, done = sum(half.history.generated_tokens), ref.history.heldout_accuracy, 0
        for k, step_tokens in enumerate(ref.history.generated_tokens):
            if done + step_tokens >= spent:
                ref_acc = acc[k] + (acc[k + 1] - acc[k]) * (spent - done) / step_tokens
                break
            done += step_tokens
        want.append(half.history.heldout_accuracy[-1] - ref_acc)
    got = simulate.paired_difference(comp, "coba-paper-tokens", 64, 128, at_same_tokens=True)
    assert got == pytest.approx((np.mean(want), np.std(want, ddof=1)))
    # uniform at half the budget never generates as many tokens as at the full budget
    assert simulate.paired_difference(comp, "uniform", 128, 64, at_same_tokens=True) is None


def test_token_table_says_n_a_without_uniform() -> None:
    table = simulate.format_token_table(simulate.run_comparison(tiny(seeds=(0,))))
    assert table.splitlines()[2].endswith("| n/a | n/a |")


def test_results_and_cli_show_the_token_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "sim"
    argv = ["simulate", "--steps", "3", "--batch-size", "16", "--group-size", "8"]
    argv += ["--n-up", "32", "--num-train", "64", "--seeds", "0", "--out", str(out)]
    argv += ["--allocators", "uniform", "coba-paper-tokens", "--no-plots", "--quiet"]
    argv += ["--lr-grid", "0.3", "--no-same-lr", "--length-limit", "2000"]
    assert cli_main(argv) == 0
    printed = capsys.readouterr().out
    assert "Generated tokens and held-out accuracy (tuned learning rates):" in printed
    assert "| 128 (1 x) | coba-paper-tokens | 0.3 |" in printed
    assert "limit 2000" in printed
    record = json.loads((out / "results.json").read_text())
    assert record["settings"]["sim"]["length_limit"] == 2000
    hist = record["runs"][0]["history"]
    assert len(hist["generated_tokens"]) == 3 and max(hist["generated_tokens"]) <= 2000 * 128
    assert "## Generated tokens and held-out accuracy" in (out / "results.md").read_text()


def test_cli_rejects_bad_token_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli_main(["simulate", "--length-limit", "0", "--quiet"])
    err = capsys.readouterr().err
    assert "--length-limit: input should be greater than or equal to 1 (got 0)" in err
    with pytest.raises(SystemExit):
        cli_main(["simulate", "--allocators", "coba-tokens", "--quiet"])
    err = capsys.readouterr().err
    assert "invalid choice: 'coba-tokens'" in err and "coba-paper-tokens" in err
    with pytest.raises(ValidationError, match="unknown allocator 'coba-tokens'; choose from"):
        tiny(allocators=("coba-tokens",))
