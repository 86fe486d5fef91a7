"""Token budgets: the fast solver equals the unit-by-unit reference, keeps every budget,
and stays within its stated guarantee of the exact dynamic program."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from coba_rl import solvers, tokens
from coba_rl.value import marginal_gains, unique_gains

Arr = np.ndarray[Any, Any]
Problem = tuple[Arr, Arr, int, int, int, int | None]

# Float slack for comparing objectives that are sums of float gains.
TOL = 1e-9


@st.composite
def token_problem(
    draw: st.DrawFn, max_m: int = 6, max_k: int = 6, ties: bool = False, cap: bool | None = None
) -> Problem:
    """``(gains, costs, T, n_low, n_up, B)``: non-negative non-increasing rows, integer costs."""
    n_low = draw(st.integers(1, 3))
    k = draw(st.integers(0, max_k))
    m = draw(st.integers(1, max_m))
    elems = st.integers(0, 3).map(float) if ties else st.floats(0.0, 100.0)
    g = draw(hnp.arrays(np.float64, (m, k), elements=elems))
    g = -np.sort(-g, axis=1)
    costs = np.array(draw(st.lists(st.integers(1, 12), min_size=m, max_size=m)), dtype=np.float64)
    floor = int(n_low * costs.sum())
    t = draw(st.integers(floor, floor + int(costs.sum()) * k + 3))
    use_cap = draw(st.booleans()) if cap is None else cap
    b = draw(st.integers(m * n_low, m * (n_low + k) + 2)) if use_cap else None
    return g, costs, t, n_low, n_low + k, b


def _next_gain_max(g: Arr, counts: Arr, n_low: int) -> float:
    """The largest next marginal gain of any prompt below its cap (0 if none)."""
    x = counts - n_low
    open_rows = x < g.shape[1]
    if not open_rows.any():
        return 0.0
    return float(np.max(g[open_rows, x[open_rows]]))


def _check_feasible(sol: tokens.TokenSolution, p: Problem) -> None:
    _, c, t, n_low, n_up, b = p
    n = sol.counts
    assert n.dtype == np.int64
    assert (n >= n_low).all() and (n <= n_up).all()
    assert float(c @ n) <= t
    assert sol.tokens == float(c @ n)
    if b is not None:
        assert int(n.sum()) <= b


@given(token_problem())
def test_fast_equals_table(p: Problem) -> None:
    g, c, t, n_low, n_up, b = p
    fast = tokens.token_greedy(g, c, t, n_low, n_up, b)
    table = tokens.token_greedy_table(g, c, t, n_low, n_up, b)
    np.testing.assert_array_equal(fast.counts, table.counts)
    assert fast.bound == table.bound


@given(token_problem(ties=True))
def test_fast_equals_table_with_ties(p: Problem) -> None:
    g, c, t, n_low, n_up, b = p
    fast = tokens.token_greedy(g, c, t, n_low, n_up, b)
    np.testing.assert_array_equal(
        fast.counts, tokens.token_greedy_table(g, c, t, n_low, n_up, b).counts
    )


@given(token_problem())
def test_budgets_and_bounds_hold(p: Problem) -> None:
    for solve in (tokens.token_greedy, tokens.token_greedy_table):
        _check_feasible(solve(*p), p)
    g, c, t, n_low, n_up, b = p
    n = tokens.token_dp(g, c, t, n_low, n_up, b)
    assert (n >= n_low).all() and (n <= n_up).all() and float(c @ n) <= t
    assert b is None or int(n.sum()) <= b


@given(token_problem(cap=False))
def test_token_only_within_one_marginal_gain_of_dp(p: Problem) -> None:
    g, c, t, n_low, n_up, _ = p
    sol = tokens.token_greedy(g, c, t, n_low, n_up)
    opt = solvers.objective(g, tokens.token_dp(g, c, t, n_low, n_up), n_low)
    got = solvers.objective(g, sol.counts, n_low)
    assert got <= opt + TOL
    one_gain = _next_gain_max(g, sol.counts, n_low)
    assert opt - got <= one_gain + TOL
    # The certificate is valid and no weaker than the one-gain bound.
    assert opt - got <= sol.gap + TOL
    assert sol.gap <= one_gain + TOL


@given(token_problem(cap=True))
def test_two_budgets_within_certified_gap_of_dp(p: Problem) -> None:
    g, c, t, n_low, n_up, b = p
    sol = tokens.token_greedy(g, c, t, n_low, n_up, b)
    opt = solvers.objective(g, tokens.token_dp(g, c, t, n_low, n_up, b), n_low)
    got = solvers.objective(g, sol.counts, n_low)
    assert got <= opt + TOL
    assert opt - got <= sol.gap + TOL
    assert sol.gap <= 2 * _next_gain_max(g, sol.counts, n_low) + TOL


@given(token_problem())
def test_no_spare_budget_buys_another_rollout(p: Problem) -> None:
    g, c, t, n_low, n_up, b = p
    sol = tokens.token_greedy(g, c, t, n_low, n_up, b)
    if sol.nu == np.inf:  # the rollout-only allocation, returned as is
        return
    x = sol.counts - n_low
    left = t - float(c @ sol.counts)
    could = (x < g.shape[1]) & (c <= left)
    if b is not None and int(sol.counts.sum()) >= b:
        could[:] = False
    assert not could.any()


@given(token_problem(cap=True), st.integers(0, 50), st.floats(0.1, 9.9))
@example(  # the floor n_low * sum(c) and the tokens of the counts must round alike
    p=(np.zeros((4, 0)), np.array([1.0, 8.0, 1.0, 1.0]), 33, 3, 3, 12), slack=0, scale=0.1
)
def test_equals_rollout_only_when_tokens_do_not_bind(p: Problem, slack: int, scale: float) -> None:
    g, c, _, n_low, n_up, b = p
    assert b is not None
    b = min(b, g.shape[0] * n_up)
    c = c * scale  # non-integer costs: the budget is met with equality up to rounding
    rollout_only = solvers.greedy(g, b, n_low, n_up)
    t = float(c @ rollout_only) + slack
    sol = tokens.token_greedy(g, c, t, n_low, n_up, b)
    np.testing.assert_array_equal(sol.counts, rollout_only)
    assert sol.gap == 0.0


def test_token_budget_that_binds_moves_rollouts_to_cheap_prompts() -> None:
    # Same value rows; prompt 1 is ten times cheaper, so it gets more rollouts.
    g = np.array([[4.0, 2.0, 1.0, 0.5], [4.0, 2.0, 1.0, 0.5]])
    sol = tokens.token_greedy(g, [100.0, 10.0], 350.0, 1, 5)
    # Spare 240 tokens: all four units of prompt 1 (keys 0.4 .. 0.05) before any of
    # prompt 0 (0.04, 0.02, ...), which then gets two.
    assert sol.counts.tolist() == [3, 5]
    assert sol.bound == "tokens"  # prompt 0 is below its cap and cannot afford another
    assert sol.tokens == 350.0


@given(token_problem(max_m=8, max_k=4), st.integers(1, 3))
def test_grouped_rows_equal_full_table(p: Problem, u: int) -> None:
    g, c, t, n_low, n_up, b = p
    rows = g[: min(u, g.shape[0])]
    inverse = np.arange(g.shape[0]) % rows.shape[0]
    full = tokens.token_greedy(rows[inverse], c, t, n_low, n_up, b)
    grouped = tokens.token_greedy(rows, c, t, n_low, n_up, b, inverse=inverse)
    np.testing.assert_array_equal(full.counts, grouped.counts)


@given(token_problem(max_m=4, max_k=3))
@settings(max_examples=40)
def test_dp_is_the_optimum_by_enumeration(p: Problem) -> None:
    g, c, t, n_low, n_up, b = p
    k = g.shape[1]
    best = -np.inf
    for xs in itertools.product(range(k + 1), repeat=g.shape[0]):
        n = n_low + np.array(xs)
        if float(c @ n) <= t and (b is None or n.sum() <= b):
            best = max(best, solvers.objective(g, n, n_low))
    dp = solvers.objective(g, tokens.token_dp(g, c, t, n_low, n_up, b), n_low)
    assert dp == pytest.approx(best, abs=TOL)


def _coba_problem(seed: int, m: int = 512) -> tuple[Arr, Arr, Arr]:
    """CoBA-RL gains at the paper's scale on pass rates k/n_i, lengths growing with difficulty."""
    rng = np.random.default_rng(seed)
    group = rng.integers(2, 17, m)
    p = rng.binomial(group, rng.beta(1.0, 1.0, m)) / group
    gains_u, inverse = unique_gains(p, 8.2, 2.8, 7.5, 2, 128)
    costs = np.round(200.0 + 3000.0 * (1.0 - p) * rng.uniform(0.5, 1.5, m))
    return gains_u, inverse, costs


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("share", [0.3, 0.7])
def test_fast_equals_table_at_paper_scale(seed: int, share: float) -> None:
    gains_u, inverse, costs = _coba_problem(seed)
    t = float(costs.sum()) * (2 + share * 126)
    fast = tokens.token_greedy(gains_u, costs, t, 2, 128, inverse=inverse)
    table = tokens.token_greedy_table(gains_u, costs, t, 2, 128, inverse=inverse)
    np.testing.assert_array_equal(fast.counts, table.counts)
    assert fast.bound == "tokens" and fast.tokens <= t
    g = gains_u[inverse]
    assert fast.gap <= _next_gain_max(g, fast.counts, 2) + TOL


@pytest.mark.parametrize("seed", [0, 1])
def test_two_budgets_at_paper_scale(seed: int) -> None:
    gains_u, inverse, costs = _coba_problem(seed)
    b = 512 * 16
    rollout_only = 2 + solvers._greedy_extra_grouped(gains_u, inverse, b - 1024)
    t = 0.6 * float(costs @ rollout_only)
    fast = tokens.token_greedy(gains_u, costs, t, 2, 128, b, inverse=inverse)
    table = tokens.token_greedy_table(gains_u, costs, t, 2, 128, b, inverse=inverse)
    np.testing.assert_array_equal(fast.counts, table.counts)
    assert fast.tokens <= t and int(fast.counts.sum()) <= b
    g = gains_u[inverse]
    assert fast.gap <= 2 * _next_gain_max(g, fast.counts, 2) + TOL


def test_rollout_only_equality_on_coba_gains() -> None:
    p = np.array([0.1, 0.5, 0.5, 0.9, 0.25, 0.75])
    g = marginal_gains(p, 8.2, 2.8, 6.0, 2, 32)
    b = 60
    t = 1e9
    sol = tokens.token_greedy(g, np.full(6, 300.0), t, 2, 32, b)
    np.testing.assert_array_equal(sol.counts, solvers.greedy(g, b, 2, 32))


# ------------------------------------------------------------------ per-prompt caps


@st.composite
def capped_problem(draw: st.DrawFn, cap: bool | None = None) -> tuple[Problem, Arr]:
    """A :func:`token_problem` with per-prompt upper bounds in ``[n_low, n_up]``."""
    p = draw(token_problem(cap=cap))
    g, _, _, n_low, n_up, _ = p
    caps = np.array(
        draw(st.lists(st.integers(n_low, n_up), min_size=g.shape[0], max_size=g.shape[0]))
    )
    return p, caps


@given(capped_problem())
def test_caps_fast_equals_table_and_hold(pc: tuple[Problem, Arr]) -> None:
    p, caps = pc
    g, c, t, n_low, n_up, b = p
    fast = tokens.token_greedy(g, c, t, n_low, n_up, b, caps=caps)
    table = tokens.token_greedy_table(g, c, t, n_low, n_up, b, caps=caps)
    np.testing.assert_array_equal(fast.counts, table.counts)
    _check_feasible(fast, p)
    assert (fast.counts <= caps).all()
    dp = tokens.token_dp(g, c, t, n_low, n_up, b, caps=caps)
    assert (dp <= caps).all()
    opt, got = solvers.objective(g, dp, n_low), solvers.objective(g, fast.counts, n_low)
    assert got <= opt + TOL
    assert opt - got <= fast.gap + TOL


@given(capped_problem(cap=False))
def test_caps_token_only_within_one_marginal_gain(pc: tuple[Problem, Arr]) -> None:
    p, caps = pc
    g, c, t, n_low, n_up, _ = p
    sol = tokens.token_greedy(g, c, t, n_low, n_up, caps=caps)
    opt = solvers.objective(g, tokens.token_dp(g, c, t, n_low, n_up, caps=caps), n_low)
    got = solvers.objective(g, sol.counts, n_low)
    x = sol.counts - n_low
    open_rows = sol.counts < caps
    one_gain = float(np.max(g[open_rows, x[open_rows]])) if open_rows.any() else 0.0
    assert opt - got <= one_gain + TOL


@given(capped_problem(cap=True), st.integers(0, 30))
def test_caps_equal_capped_rollout_only_when_tokens_do_not_bind(
    pc: tuple[Problem, Arr], slack: int
) -> None:
    p, caps = pc
    g, c, _, n_low, n_up, b = p
    assert b is not None
    b = max(min(b, int(caps.sum())), g.shape[0] * n_low)
    # The capped rollout-only problem: units beyond a cap get a prohibitive gain.
    beyond = np.arange(g.shape[1])[None, :] >= (caps - n_low)[:, None]
    rollout_only = solvers.greedy(np.where(beyond, -1e12, g), b, n_low, n_up)
    t = float(c @ rollout_only) + slack
    sol = tokens.token_greedy(g, c, t, n_low, n_up, b, caps=caps)
    np.testing.assert_array_equal(sol.counts, rollout_only)


def test_bad_caps_name_the_problem() -> None:
    with pytest.raises(ValueError, match=r"caps\[1\] = 5 is outside"):
        tokens.token_greedy([[1.0], [1.0]], [1.0, 1.0], 10.0, 1, 2, caps=[2, 5])
    with pytest.raises(ValueError, match="caps must be 2 integers"):
        tokens.token_greedy([[1.0], [1.0]], [1.0, 1.0], 10.0, 1, 2, caps=[2])


# ------------------------------------------------------------------------ bad input


def test_infeasible_floor_names_the_problem() -> None:
    with pytest.raises(ValueError, match="below the floor"):
        tokens.token_greedy([[1.0], [1.0]], [10.0, 20.0], 59.0, 2, 3)


@pytest.mark.parametrize(
    ("costs", "match"),
    [
        ([1.0, float("nan")], "unknown"),
        ([1.0, 0.0], "finite and positive"),
        ([1.0, -3.0], "finite and positive"),
        ([1.0, float("inf")], "finite and positive"),
        ([1.0], r"shape \(2,\)"),
    ],
)
def test_bad_costs_name_the_problem(costs: list[float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        tokens.token_greedy([[1.0], [1.0]], costs, 100.0, 1, 2)


def test_bad_budgets_name_the_problem() -> None:
    g, c = [[1.0], [1.0]], [1.0, 1.0]
    with pytest.raises(ValueError, match="non-negative"):
        tokens.token_greedy(g, c, -1.0, 1, 2)
    with pytest.raises(ValueError, match="token_budget"):
        tokens.token_greedy(g, c, float("nan"), 1, 2)
    with pytest.raises(ValueError, match="rollout_budget 1 is below"):
        tokens.token_greedy(g, c, 10.0, 1, 2, rollout_budget=1)
    with pytest.raises(TypeError, match="rollout_budget"):
        tokens.token_greedy(g, c, 10.0, 1, 2, rollout_budget=2.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="integer costs"):
        tokens.token_dp(g, [1.5, 1.0], 10, 1, 2)


def test_resolve_costs() -> None:
    nan = float("nan")
    assert tokens.resolve_costs([10.0, nan, 30.0]).tolist() == [10.0, 20.0, 30.0]
    assert tokens.resolve_costs([nan, nan], default=7).tolist() == [7.0, 7.0]
    assert tokens.resolve_costs([]).size == 0
    out = tokens.resolve_costs([1.0, 2.0])
    assert not out.flags.writeable
    with pytest.raises(ValueError, match="no prompt has a known cost"):
        tokens.resolve_costs([nan, nan])
    with pytest.raises(ValueError, match=r"costs\[1\] = -1"):
        tokens.resolve_costs([1.0, -1.0])
    with pytest.raises(ValueError, match="default"):
        tokens.resolve_costs([nan], default=0.0)
    with pytest.raises(ValueError, match="1-D"):
        tokens.resolve_costs([[1.0]])
