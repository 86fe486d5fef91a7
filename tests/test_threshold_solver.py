"""The threshold solver equals the heap on the gain table it never builds.

:func:`coba_rl.solvers.capability_greedy` must return, bit for bit, the counts of
:func:`coba_rl.solvers.greedy_heap` on ``marginal_gains(...)``: on grid, continuous and
tie-heavy pass rates, on rows whose float differences rise by an ulp, and at extreme
kappa and tau. The expected counts always come from the literal heap on the full table.
"""

from __future__ import annotations

import json
import math
import tracemalloc
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import coba_rl.solvers as solvers
from coba_rl import BatchStats, CoBAConfig, allocate
from coba_rl.solvers import capability_greedy, greedy, greedy_heap
from coba_rl.value import (
    _beta_pdf_and_logs,
    _beta_pdf_scalar_path,
    _beta_pdf_vector,
    _vector_pdf_is_exact,
    beta_shape,
    marginal_gains,
)
from conftest import DATA


@pytest.fixture(autouse=True)
def route(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    # Small tables are ranked whole in production; these tests exercise the band paths:
    # the fixed-width band first (its general fallback behind it), or the general
    # ragged band alone.
    monkeypatch.setattr(solvers, "_SMALL_TABLE", 0)
    name = str(getattr(request, "param", "fixed band"))
    if name == "ragged band":
        monkeypatch.setattr(solvers, "_band_select", lambda *args: None)
        monkeypatch.setattr(solvers._GeometricRows, "fixed_band", lambda *args: None)
    return name


#: Run a test on both band routes.
both_routes = pytest.mark.parametrize("route", ["fixed band", "ragged band"], indirect=True)
#: Run a test on the ragged band alone (the fixed band would settle it first).
ragged_route = pytest.mark.parametrize("route", ["ragged band"], indirect=True)


def _record_settled(monkeypatch: pytest.MonkeyPatch, owner: Any, name: str) -> list[bool]:
    """Wrap ``owner.name`` (a solver step that may give up with ``None``): the returned
    list records, per call, whether that step settled the allocation."""
    settled: list[bool] = []
    real = getattr(owner, name)

    def spy(*args: Any) -> Any:
        out = real(*args)
        settled.append(out is not None)
        return out

    monkeypatch.setattr(owner, name, spy)
    return settled


grid_rates = st.integers(0, 16).map(lambda k: k / 16)
tie_rates = st.sampled_from([0.25, 0.5, 0.75])
any_rates = st.floats(0.0, 1.0, allow_nan=False)
# k / n with n varying, as a tracker reports after different numbers of rollouts.
kn_rates = st.tuples(st.integers(1, 128), st.integers(0, 128)).map(lambda t: min(t[1], t[0]) / t[0])


@st.composite
def problem(
    draw: st.DrawFn,
    rates: st.SearchStrategy[float],
    max_m: int = 40,
    max_k: int = 140,
    kappa: st.SearchStrategy[float] | None = None,
    tau: st.SearchStrategy[float] | None = None,
) -> tuple[Any, ...]:
    kappa = kappa if kappa is not None else st.floats(2.5, 60.0)
    tau = tau if tau is not None else st.floats(0.5, 20.0)
    m = draw(st.integers(1, max_m))
    p = draw(st.lists(rates, min_size=m, max_size=m))
    n_low = draw(st.integers(1, 4))
    n_up = n_low + draw(st.integers(0, max_k))
    a, b = beta_shape(draw(st.floats(0.0, 1.0)), draw(kappa))
    budget = draw(st.integers(m * n_low, m * n_up))
    smoothing = draw(st.sampled_from([0.01, 0.0, 0.1]))
    return p, float(a), float(b), draw(tau), budget, n_low, n_up, smoothing


def _same_as_heap(args: tuple[Any, ...]) -> None:
    p, a, b, tau, budget, n_low, n_up, s = args
    table = marginal_gains(p, a, b, tau, n_low, n_up, s)
    expected = greedy_heap(table, budget, n_low, n_up)
    got = capability_greedy(p, a, b, tau, budget, n_low, n_up, s)
    np.testing.assert_array_equal(got, expected)
    assert got.dtype == np.int64


@both_routes
@settings(max_examples=150)
@given(problem(grid_rates))
def test_grid_rates_equal_heap(args: tuple[Any, ...]) -> None:
    _same_as_heap(args)


@both_routes
@settings(max_examples=150)
@given(problem(tie_rates, max_m=60))
def test_tie_heavy_rates_equal_heap(args: tuple[Any, ...]) -> None:
    _same_as_heap(args)


@both_routes
@settings(max_examples=150)
@given(problem(any_rates))
def test_continuous_rates_equal_heap(args: tuple[Any, ...]) -> None:
    _same_as_heap(args)


@both_routes
@settings(max_examples=100)
@given(problem(kn_rates))
def test_k_over_n_rates_equal_heap(args: tuple[Any, ...]) -> None:
    _same_as_heap(args)


@both_routes
@settings(max_examples=80, suppress_health_check=[HealthCheck.too_slow])
@given(problem(st.one_of(grid_rates, any_rates), max_m=12, kappa=st.floats(200.0, 1000.0)))
def test_extreme_kappa_equal_heap(args: tuple[Any, ...]) -> None:
    # Densities from ~0 (floored) to huge: rows whose scales differ by many orders.
    _same_as_heap(args)


@both_routes
@settings(max_examples=80, suppress_health_check=[HealthCheck.too_slow])
@given(
    problem(
        st.one_of(grid_rates, any_rates),
        max_m=12,
        max_k=300,
        tau=st.sampled_from([1e-3, 0.05, 1e3, 1e6]),
    )
)
def test_extreme_tau_equal_heap(args: tuple[Any, ...]) -> None:
    # Tiny tau: rows saturate (gains underflow to exact zeros); huge tau: nearly flat rows.
    _same_as_heap(args)


def _rising_rows(p: list[float], tau: float, n_up: int) -> int:
    g = marginal_gains(p, 9.0, 2.0, tau, 2, n_up)
    return int(np.count_nonzero(g[:, 1:] > g[:, :-1]))


# Rows that decay to the float noise floor: their differences rise by an ulp here and there.
ULP_RATES = [0.5, 0.3, 0.45, 0.5, 0.2]


def test_ulp_rising_rows_exist_in_the_fixture() -> None:
    assert _rising_rows(ULP_RATES, 3.0, 700) >= 10


@both_routes
@settings(max_examples=120)
@given(st.integers(5 * 2, 5 * 700), st.permutations(ULP_RATES))
def test_ulp_rising_rows_equal_heap(budget: int, p: list[float]) -> None:
    _same_as_heap((p, 9.0, 2.0, 3.0, budget, 2, 700, 0.01))


@ragged_route
def test_ulp_rising_rows_settled_by_the_band(monkeypatch: pytest.MonkeyPatch) -> None:
    # Budgets whose threshold lies among the rising entries, but above exact zero, must be
    # settled by the band (not by the table fallback) and still equal the heap.
    table = marginal_gains(ULP_RATES, 9.0, 2.0, 3.0, 2, 700)
    settled = _record_settled(monkeypatch, solvers._GeometricRows, "select")
    rising = np.flatnonzero((table[:, 1:] > table[:, :-1]).any(axis=0))
    for col in rising[:8]:
        budget = 5 * 2 + int((table > table[:, col + 1].max()).sum()) + 1
        expected = greedy_heap(table, budget, 2, 700)
        np.testing.assert_array_equal(
            capability_greedy(ULP_RATES, 9.0, 2.0, 3.0, budget, 2, 700), expected
        )
    assert sum(settled) >= 4, settled


@both_routes
def test_many_seeded_batches_equal_table_greedy() -> None:
    # A broader sweep than hypothesis runs: 300 seeded batches of every kind, bounds up to
    # [4, 1004], budgets from the floor to the cap. greedy (table) equals greedy_heap
    # (tests/test_solvers.py); it is used here because the heap is slow on big tables.
    rng = np.random.default_rng(12)
    for it in range(300):
        m = int(rng.integers(1, 200))
        n_low = int(rng.integers(1, 5))
        n_up = n_low + int(rng.choice([1, 16, 126, 1000]))
        kind = it % 4
        if kind == 0:
            p = rng.integers(0, 17, m) / 16
        elif kind == 1:
            p = rng.random(m)
        elif kind == 2:
            p = rng.choice([0.25, 0.5, 0.75], m)
        else:
            n = rng.integers(1, 129, m)
            p = rng.binomial(n, rng.random(m)) / n
        a, b = beta_shape(float(rng.random()), float(rng.choice([3.0, 11.0, 100.0])))
        tau = float(rng.choice([3.0, 7.5, 12.0]))
        budget = int(rng.integers(m * n_low, m * n_up + 1))
        table = marginal_gains(p, float(a), float(b), tau, n_low, n_up)
        expected = greedy(table, budget, n_low, n_up)
        got = capability_greedy(p, float(a), float(b), tau, budget, n_low, n_up)
        assert np.array_equal(got, expected), (it, m, n_low, n_up, budget)


@ragged_route
def test_wrong_closed_form_is_caught_by_the_proofs(monkeypatch: pytest.MonkeyPatch) -> None:
    # The band's start and stop come from the closed form; if it were wrong, the proof
    # columns must catch it and the rows be computed in full. Sabotage it both ways.
    rng = np.random.default_rng(3)
    p = rng.random(300)
    table = marginal_gains(p, 9.0, 2.0, 6.0, 2, 128)
    expected = greedy_heap(table, 300 * 16, 2, 128)
    real = solvers._GeometricRows.first_columns

    def too_far_right(self: Any, rows: Any, lo: float, hi: float) -> Any:
        start, stop = real(self, rows, lo, hi)
        return np.minimum(start + 7, self.k - 1), np.minimum(stop + 7, self.k - 1)

    def too_far_left(self: Any, rows: Any, lo: float, hi: float) -> Any:
        start, stop = real(self, rows, lo, hi)
        return np.maximum(start - 7, 0), np.maximum(stop - 9, np.maximum(start - 7, 0))

    for wrong in (too_far_right, too_far_left):
        monkeypatch.setattr(solvers._GeometricRows, "first_columns", wrong)
        np.testing.assert_array_equal(
            capability_greedy(p, 9.0, 2.0, 6.0, 300 * 16, 2, 128), expected
        )


@ragged_route
def test_bad_bracket_is_widened(monkeypatch: pytest.MonkeyPatch) -> None:
    # A relaxed threshold far off must be corrected by widening, not trusted.
    rng = np.random.default_rng(4)
    p = rng.random(200)
    expected = greedy_heap(marginal_gains(p, 3.0, 8.0, 5.0, 2, 64), 200 * 10, 2, 64)
    real = solvers._GeometricRows.relaxed_threshold
    for shift in (-0.5, 0.5):

        def off(self: Any, w: Any, spare: int, shift: float = shift) -> Any:
            t0, d, d_lo = real(self, w, spare)
            return t0 + shift, d / 100, d_lo / 100

        monkeypatch.setattr(solvers._GeometricRows, "relaxed_threshold", off)
        np.testing.assert_array_equal(
            capability_greedy(p, 3.0, 8.0, 5.0, 200 * 10, 2, 64), expected
        )


@both_routes
@pytest.mark.parametrize("small_table", [0, 1 << 12, 1 << 30])
@pytest.mark.parametrize("kind", ["grid", "continuous", "tie"])
def test_every_route_equals_the_heap(
    monkeypatch: pytest.MonkeyPatch, small_table: int, kind: str
) -> None:
    # The small-table route, the band route, the sampled relaxed threshold and the
    # undeduplicated rows (a mostly distinct large batch) give the heap's counts.
    monkeypatch.setattr(solvers, "_SMALL_TABLE", small_table)
    monkeypatch.setattr(solvers, "_SORT_ROWS", 64)
    monkeypatch.setattr(solvers, "_DEDUP_CHECK", 512)
    rng = np.random.default_rng(7)
    m = 5000
    p = {
        "grid": rng.integers(0, 17, m) / 16,
        "continuous": rng.random(m),
        "tie": rng.choice([0.25, 0.5, 0.75], m),
    }[kind]
    if kind == "continuous":
        p[:50] = p[50:100]  # a few exact repeats among distinct rates
    for budget in (m * 2 + 1, m * 16, m * 40):
        table = marginal_gains(p, 6.7, 4.3, 9.0, 2, 64)
        expected = greedy(table, budget, 2, 64)
        got = capability_greedy(p, 6.7, 4.3, 9.0, budget, 2, 64)
        np.testing.assert_array_equal(got, expected)


def test_ties_go_to_the_lowest_prompt_index() -> None:
    p = [0.5] * 5
    # Every prompt has the same row: the heap gives the spare unit to prompt 0 first.
    assert capability_greedy(p, 3.0, 3.0, 4.0, 5 * 2 + 3, 2, 10).tolist() == [3, 3, 3, 2, 2]


@pytest.mark.parametrize(
    ("budget", "expected"),
    [(0 + 6, [2, 2, 2]), (3 * 9, [9, 9, 9])],
)
def test_floor_and_cap(budget: int, expected: list[int]) -> None:
    assert capability_greedy([0.1, 0.5, 0.9], 3.0, 3.0, 4.0, budget, 2, 9).tolist() == expected


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"budget": 100}, ValueError, "budget must lie in"),
        ({"budget": 8.0}, TypeError, "budget must be an int"),
        ({"pass_rates": [0.5, float("nan")]}, ValueError, "finite"),
        ({"pass_rates": [[0.5]]}, ValueError, "1-D"),
        ({"tau": 0.0}, ValueError, "tau"),
        ({"n_low": 5, "n_up": 2}, ValueError, "n_low <= n_up"),
    ],
)
def test_bad_input(kwargs: dict[str, Any], exc: type[Exception], match: str) -> None:
    args: dict[str, Any] = {
        "pass_rates": [0.5, 0.25],
        "alpha": 3.0,
        "beta": 3.0,
        "tau": 4.0,
        "budget": 8,
        "n_low": 2,
        "n_up": 9,
    }
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        capability_greedy(**args)


def test_memory_is_independent_of_n_up() -> None:
    # 4096 distinct rates and n_up = 65,536: the table would take 4096 * 65534 * 8 B = 2.1 GB.
    rng = np.random.default_rng(5)
    p = rng.random(4096)
    tracemalloc.start()
    try:
        capability_greedy(p, 9.0, 2.0, 6.0, 16 * 4096, 2, 65536)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20e6, peak


def test_allocate_uses_the_threshold_solver(monkeypatch: pytest.MonkeyPatch) -> None:
    # Both variants go through it (the release variant for its explore bucket).
    calls = []
    real = solvers._capability_extra

    def spy(*args: Any) -> Any:
        calls.append(args[-1])
        return real(*args)

    import coba_rl.coba as coba

    monkeypatch.setattr(coba, "_capability_extra", spy)
    stats = BatchStats(pass_rates=[0.1, 0.5, 0.7, 0.0, 1.0], failure_rate=0.4)
    for variant in ("paper", "release"):
        allocate(stats, 40, CoBAConfig(variant=variant))
    assert len(calls) == 2


# -- the vectorised Beta density -------------------------------------------------------------


def _conformance_shapes_and_rates() -> list[tuple[float, float, list[float]]]:
    out = []
    for name in ("coba_paper.jsonl", "coba_release.jsonl"):
        with open(DATA / "conformance" / name, encoding="utf-8") as f:
            for line in f:
                if not line.strip():
                    continue
                vec = json.loads(line)
                a, b = vec.get("expected_alpha"), vec.get("expected_beta")
                if a is None or b is None or math.isnan(a):
                    continue
                rates = [r for r in vec["pass_rates"] if r is not None and not math.isnan(r)]
                out.append((float(a), float(b), rates))
    return out


def test_vector_density_equals_scalar_on_conformance_inputs() -> None:
    cases = _conformance_shapes_and_rates()
    assert len(cases) >= 20
    for a, b, rates in cases:
        for s in (0.0, 0.01):
            q = np.clip(np.asarray([*rates, 0.0, 1.0, 0.5], dtype=np.float64), s, 1 - s)
            np.testing.assert_array_equal(_beta_pdf_vector(q, a, b), _beta_pdf_scalar_path(q, a, b))


def test_vector_density_equals_scalar_on_random_rates() -> None:
    # 2 * 10^5 rates here; benchmarks/density_bit_identity.py runs 10^7 (too slow for CI).
    rng = np.random.default_rng(6)
    q = np.concatenate([rng.random(10**5), rng.random(10**5) ** 8, np.arange(1, 1025) / 1024])
    assert _vector_pdf_is_exact()
    for a, b in [(9.0, 2.0), (1.0, 10.0), (5.5, 5.5), (1.0, 1.0), (850.0, 150.0)]:
        np.testing.assert_array_equal(_beta_pdf_vector(q, a, b), _beta_pdf_scalar_path(q, a, b))


def test_density_with_logs_is_the_scalar_density() -> None:
    # The band's density comes with its logarithms (one pass): the density itself must be
    # the scalar one bit for bit, on conformance shapes and at the clip's ends.
    rng = np.random.default_rng(61)
    q = np.concatenate([rng.random(20_000) * 0.98 + 0.01, [1e-10, 0.01, 0.5, 0.99, 1 - 1e-10]])
    shapes = [(a, b) for a, b, _ in _conformance_shapes_and_rates()[:10]]
    for a, b in [*shapes, (9.0, 2.0), (1.0, 10.0), (1.0, 1.0), (850.0, 150.0)]:
        parts = _beta_pdf_and_logs(q, a, b)
        assert parts is not None
        pdf, om, log_k, log_pdf = parts
        np.testing.assert_array_equal(pdf, _beta_pdf_scalar_path(q, a, b))
        np.testing.assert_array_equal(om, 1.0 - q)
        np.testing.assert_allclose(log_k, np.log(q * (1.0 - q)), rtol=1e-13, atol=1e-13)
        normal = pdf >= np.finfo(np.float64).tiny  # where the density has not underflowed
        np.testing.assert_allclose(log_pdf[normal], np.log(pdf[normal]), rtol=1e-13, atol=1e-13)
        assert (log_pdf[~normal] < -700).all()


def test_band_centre_from_the_density_logs_matches_the_plain_logs() -> None:
    # Both ways of computing the band's centre agree to rounding (the fused one is used
    # when the smoothing keeps rates inside the density's clip; the plain one otherwise).
    rng = np.random.default_rng(62)
    p_s = np.sort(rng.random(500) * 0.98 + 0.01)
    with np.errstate(all="ignore"):
        fused = solvers._band_parts(p_s, 6.7, 4.3, 5.0, 2, 0.01)
        plain = solvers._band_parts(p_s, 6.7, 4.3, 5.0, 2, 0.0)  # below 1e-10: plain logs
    for a, b in zip(fused, plain, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(fused[0], plain[0])  # the density: bit for bit


def test_fixed_band_settles_realistic_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    # The fixed band is the hot path: on batches like a CoBA-RL run's (k / n_i with n_i
    # varying) it must settle the allocation itself, not leave it to the fallback.
    from coba_rl.bench import paper_batch

    rng = np.random.default_rng(21)
    batches = [paper_batch(rng, m=512, kind="realistic") for _ in range(20)]
    settled = _record_settled(monkeypatch, solvers, "_band_select")
    for p in batches:
        table = marginal_gains(p, 9.0, 2.0, 4.0, 2, 128)
        np.testing.assert_array_equal(
            capability_greedy(p, 9.0, 2.0, 4.0, 8192, 2, 128), greedy(table, 8192, 2, 128)
        )
    assert len(settled) == 20 and all(settled), settled


@pytest.mark.parametrize("width", [1, 2, 3])
def test_narrow_fixed_band_is_proved_or_refused(
    monkeypatch: pytest.MonkeyPatch, width: int
) -> None:
    # A band too narrow for the crossing must be caught by its proof (then the general
    # path answers); a band that proves itself must be right.
    monkeypatch.setattr(solvers, "_BAND_WIDTH", width)
    rng = np.random.default_rng(30 + width)
    outcomes = _record_settled(monkeypatch, solvers, "_band_select")
    for it in range(40):
        m = int(rng.integers(20, 400))
        n = rng.integers(1, 129, m)
        p = rng.binomial(n, rng.random(m)) / n if it % 2 else rng.random(m)
        budget = int(rng.integers(m * 2, m * 64 + 1))
        table = marginal_gains(p, 6.0, 3.0, 5.0, 2, 64)
        np.testing.assert_array_equal(
            capability_greedy(p, 6.0, 3.0, 5.0, budget, 2, 64), greedy(table, budget, 2, 64)
        )
    if width == 3:  # narrower bands rarely hold the crossing: refusing them is right
        assert any(outcomes), "the band never settled an allocation"


@pytest.mark.parametrize("shift", [-2.0, -0.05, 0.05, 2.0])
def test_fixed_band_with_an_off_centre_threshold(
    monkeypatch: pytest.MonkeyPatch, shift: float
) -> None:
    # The band is centred by the relaxed root; centred wrongly, its proof must refuse it
    # (or the answer still be exact).
    real_root = solvers._relaxed_root

    def off(*args: Any) -> float | None:
        t0 = real_root(*args)
        return None if t0 is None else t0 + shift

    monkeypatch.setattr(solvers, "_relaxed_root", off)
    rng = np.random.default_rng(40)
    for _ in range(10):
        n = rng.integers(1, 129, 300)
        p = rng.binomial(n, rng.random(300)) / n
        budget = int(rng.integers(600, 300 * 64))
        table = marginal_gains(p, 9.0, 2.0, 4.0, 2, 64)
        np.testing.assert_array_equal(
            capability_greedy(p, 9.0, 2.0, 4.0, budget, 2, 64), greedy(table, budget, 2, 64)
        )


def test_fixed_band_settles_large_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    # Above _BAND_ROWS distinct rates the fixed band is centred by the sampled relaxed
    # threshold and its Newton steps; it must settle such batches itself, exactly.
    settled = _record_settled(monkeypatch, solvers._GeometricRows, "fixed_band")
    rng = np.random.default_rng(50)
    m = 3 * solvers._BAND_ROWS
    for it in range(4):
        p = rng.random(m)
        p[: m // 4] = 0.0  # one rate shared by a quarter of the batch (a heavy row)
        p[m // 4 : m // 3] = 1.0
        rng.shuffle(p)
        budget = m * (4 + 8 * it)
        table = marginal_gains(p, 9.0, 2.0, 4.0, 2, 128)
        np.testing.assert_array_equal(
            capability_greedy(p, 9.0, 2.0, 4.0, budget, 2, 128), greedy(table, budget, 2, 128)
        )
    assert settled == [True] * 4


def test_sampled_rows_keep_heavy_rows() -> None:
    # A rate shared by many prompts must stay in the sample with its whole weight, and the
    # sample's total weight must equal the batch's.
    rng = np.random.default_rng(51)
    u = 20 * solvers._SORT_ROWS
    top, rate = rng.normal(size=u), rng.random(u) + 0.1
    w = np.ones(u, dtype=np.int64)
    w[7] = 50_000  # stride sampling from row 0 would skip row 7
    t, r, ww = solvers._sample_rows(top, rate, w)
    assert np.array_equal(r[t == top[7]], rate[[7]])
    assert t.size <= solvers._SORT_ROWS + 1
    assert top[7] in t and ww[np.flatnonzero(t == top[7])[0]] == 50_000
    assert float(ww.sum()) == pytest.approx(float(w.sum()))


def test_uncapped_root_equals_the_full_root_or_refuses() -> None:
    # The half-size root is the full one wherever no row is capped at it, and refuses
    # (None) wherever one is.
    rng = np.random.default_rng(60)
    answered = refused = 0
    for _ in range(300):
        u = int(rng.integers(1, 60))
        top = rng.normal(size=u)
        rate = rng.random(u) * rng.choice([0.001, 0.05, 1.0]) + 1e-4
        w = rng.integers(1, 6, u)
        k = int(rng.integers(1, 200))
        spare = float(rng.integers(1, int(w.sum()) * k))
        full = solvers._relaxed_root(top, rate, w, k, spare)
        half = solvers._uncapped_root(top, rate, w, k, spare)
        if half is None:
            refused += 1
            continue
        answered += 1
        t, x = half
        assert full is not None and t == pytest.approx(full, rel=1e-9, abs=1e-9)
        np.testing.assert_array_equal(x, (top - t) / rate)  # the relaxed counts at t
        assert float(np.max(x)) < k  # no row capped at the root
    assert answered > 30 and refused > 30, (answered, refused)
