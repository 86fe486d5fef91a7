"""Solvers: the vectorised greedy equals the literal heap; both reach the DP optimum."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from coba_rl import solvers
from strategies import gain_problem

Problem = tuple[np.ndarray[Any, Any], int, int, int]


def _check_counts(counts: np.ndarray[Any, Any], budget: int, n_low: int, n_up: int) -> None:
    assert counts.dtype == np.int64
    assert int(counts.sum()) == budget
    assert (counts >= n_low).all()
    assert (counts <= n_up).all()


@given(gain_problem())
def test_budget_and_bounds(problem: Problem) -> None:
    g, budget, n_low, n_up = problem
    for solve in (solvers.greedy, solvers.greedy_heap, solvers.dp):
        _check_counts(solve(g, budget, n_low, n_up), budget, n_low, n_up)


@given(gain_problem(max_m=30))
def test_greedy_equals_heap(problem: Problem) -> None:
    g, budget, n_low, n_up = problem
    np.testing.assert_array_equal(
        solvers.greedy(g, budget, n_low, n_up), solvers.greedy_heap(g, budget, n_low, n_up)
    )


@given(gain_problem(max_m=30, tie_heavy=True))
def test_greedy_equals_heap_with_many_ties(problem: Problem) -> None:
    g, budget, n_low, n_up = problem
    np.testing.assert_array_equal(
        solvers.greedy(g, budget, n_low, n_up), solvers.greedy_heap(g, budget, n_low, n_up)
    )


@given(gain_problem(max_m=20, monotone=False, tie_heavy=True))
def test_greedy_equals_heap_on_non_monotone_rows(problem: Problem) -> None:
    # Rows that rise (as a float difference can by an ulp) are still handled exactly.
    g, budget, n_low, n_up = problem
    np.testing.assert_array_equal(
        solvers.greedy(g, budget, n_low, n_up), solvers.greedy_heap(g, budget, n_low, n_up)
    )


@given(gain_problem(max_m=10))
def test_heap_objective_equals_dp(problem: Problem) -> None:
    g, budget, n_low, n_up = problem
    heap = solvers.objective(g, solvers.greedy_heap(g, budget, n_low, n_up), n_low)
    best = solvers.objective(g, solvers.dp(g, budget, n_low, n_up), n_low)
    assert heap == pytest.approx(best, rel=1e-9, abs=1e-9)


@given(gain_problem(max_m=8, monotone=False))
def test_dp_beats_every_random_allocation(problem: Problem) -> None:
    g, budget, n_low, n_up = problem
    best = solvers.objective(g, solvers.dp(g, budget, n_low, n_up), n_low)
    rng = np.random.default_rng(0)
    m = g.shape[0]
    for _ in range(20):
        counts = np.full(m, n_low)
        for _ in range(budget - m * n_low):
            i = rng.choice(np.flatnonzero(counts < n_up))
            counts[i] += 1
        assert solvers.objective(g, counts, n_low) <= best + 1e-9 * max(1.0, abs(best))


def test_ties_go_to_the_lowest_prompt_index() -> None:
    g = np.ones((4, 3))
    for solve in (solvers.greedy, solvers.greedy_heap):
        # all gains equal: prompt 0 takes its 3 units first, then prompt 1 the last 2
        assert solve(g, 4 * 2 + 5, 2, 5).tolist() == [5, 4, 2, 2]


@pytest.mark.parametrize("m", [0, 1, 2])
def test_tiny_sizes(m: int) -> None:
    g = np.linspace(3, 1, m * 4).reshape(m, 4)
    for budget in range(m * 1, m * 5 + 1):
        ref = solvers.greedy_heap(g, budget, 1, 5)
        np.testing.assert_array_equal(solvers.greedy(g, budget, 1, 5), ref)
        assert solvers.dp(g, budget, 1, 5).sum() == budget


def test_n_low_equals_n_up() -> None:
    g = np.empty((3, 0))
    for solve in (solvers.greedy, solvers.greedy_heap, solvers.dp):
        assert solve(g, 12, 4, 4).tolist() == [4, 4, 4]


@pytest.mark.parametrize(
    ("args", "exc", "match"),
    [
        ((np.ones((2, 3)), 20, 2, 5), ValueError, r"budget must lie in .* = \[4, 10\], got 20"),
        ((np.ones((2, 3)), 3, 2, 5), ValueError, "budget must lie in"),
        ((np.ones((2, 3)), 6.0, 2, 5), TypeError, "budget must be an int"),
        ((np.ones((2, 2)), 6, 2, 5), ValueError, r"shape \(M, n_up - n_low\)"),
        ((np.ones(3), 6, 2, 5), ValueError, "shape"),
        ((np.full((2, 3), np.nan), 6, 2, 5), ValueError, "finite"),
        ((np.ones((2, 3)), 6, 5, 2), ValueError, "n_low <= n_up"),
    ],
)
def test_solver_bad_input(args: tuple[Any, ...], exc: type[Exception], match: str) -> None:
    for solve in (solvers.greedy, solvers.greedy_heap, solvers.dp):
        with pytest.raises(exc, match=match):
            solve(*args)


@given(gain_problem(max_m=6, tie_heavy=True), st.lists(st.integers(0, 5), min_size=1, max_size=40))
def test_grouped_selection_equals_expanded(problem: Problem, rows: list[int]) -> None:
    # Prompts sharing a pass rate share a row of gains; the grouped selection (used by
    # allocate) must equal the selection on the expanded table, in both of its branches.
    from coba_rl.solvers import _greedy_extra, _greedy_extra_grouped, _running_min

    g = problem[0]
    keys_u = _running_min(g)
    inverse = np.array([r % g.shape[0] for r in rows], dtype=np.int64)
    full = keys_u[inverse]
    for spare in range(0, full.size + 1, max(1, full.size // 7)):
        np.testing.assert_array_equal(
            _greedy_extra_grouped(keys_u, inverse, spare), _greedy_extra(full, spare)
        )
