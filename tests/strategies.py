"""Hypothesis strategies shared by the property tests (bounded sizes)."""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

# Pass rates as a trainer produces them: k / G on a small grid, with 0/1 mass, or any float.
grid_rate = st.integers(0, 16).map(lambda k: k / 16)
any_rate = st.floats(0.0, 1.0, allow_nan=False)
pass_rate = st.one_of(grid_rate, any_rate)


@st.composite
def bounds(draw: st.DrawFn, max_up: int = 24) -> tuple[int, int]:
    n_low = draw(st.integers(1, 6))
    n_up = draw(st.integers(n_low, max(n_low, max_up)))
    return n_low, n_up


@st.composite
def gain_problem(
    draw: st.DrawFn, max_m: int = 12, monotone: bool = True, tie_heavy: bool = False
) -> tuple[np.ndarray[Any, Any], int, int, int]:
    """A random ``(gains, budget, n_low, n_up)`` instance for the solvers."""
    n_low, n_up = draw(bounds(max_up=14))
    m = draw(st.integers(1, max_m))
    k = n_up - n_low
    if tie_heavy:
        elems = st.integers(0, 4).map(float)
    else:
        elems = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False)
    g = draw(hnp.arrays(np.float64, (m, k), elements=elems))
    if monotone and k > 1:
        g = -np.sort(-g, axis=1)
    budget = draw(st.integers(m * n_low, m * n_up))
    return g, budget, n_low, n_up


@st.composite
def batch(draw: st.DrawFn, max_m: int = 40, allow_unseen: bool = True) -> list[float]:
    m = draw(st.integers(1, max_m))
    rate = st.one_of(pass_rate, st.just(float("nan"))) if allow_unseen else pass_rate
    return draw(st.lists(rate, min_size=m, max_size=m))
