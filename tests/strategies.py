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


# -- arbitrary values, for the fuzz tests ---------------------------------------------------
# Bounded, so that an example stays fast; odd on purpose: NaN/inf, huge and negative ints,
# numpy scalars, complex numbers, bytes, and text with surrogates, NUL and combining marks.

odd_text = st.text(st.characters(exclude_categories=()), max_size=5)
huge_int = st.one_of(st.integers(-(2**80), 2**80), st.sampled_from([2**63, 2**63 - 1, -(2**63)]))
np_scalar = st.sampled_from(
    [
        np.int64(3),
        np.int8(-1),
        np.uint64(2**64 - 1),
        np.float32(0.5),
        np.float64("nan"),
        np.float64("inf"),
        np.bool_(True),
        np.str_("a"),
        np.complex128(1j),
    ]
)
scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 40),
    huge_int,
    st.floats(),
    odd_text,
    st.binary(max_size=3),
    st.complex_numbers(max_magnitude=2.0),
    np_scalar,
)
small_array = hnp.arrays(
    st.sampled_from(
        [np.int64, np.uint64, np.int8, np.float64, np.float32, np.bool_, np.complex128, "<U3"]
    ),
    hnp.array_shapes(min_dims=0, max_dims=2, min_side=0, max_side=4),
)
junk = st.one_of(
    st.recursive(
        scalar,
        lambda inner: st.one_of(
            st.lists(inner, max_size=5),
            st.tuples(inner, inner),
            st.dictionaries(st.text(max_size=2), inner, max_size=2),
        ),
        max_leaves=8,
    ),
    small_array,
    st.just(np.array([1, "a", None], dtype=object)),
)

#: Prompt ids: valid int or string batches (possibly with duplicates) or anything at all.
int_ids = st.lists(st.integers(-5, 30), max_size=12)
str_ids = st.lists(odd_text, max_size=12)
prompt_ids = st.one_of(
    int_ids,
    int_ids.map(lambda xs: np.array(xs, dtype=np.int64)),
    str_ids,
    st.lists(huge_int, max_size=3),
    st.lists(st.one_of(st.integers(0, 5), odd_text), max_size=4),
    junk,
)


def config_kwargs(fields: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    """Keyword arguments for a config model: some near-valid values, some junk, some typos."""
    value = st.one_of(
        st.integers(-2, 40),
        st.floats(-1.0, 15.0),
        st.sampled_from(
            ["paper", "release", "adaptive", "weighted", "uniform", None, True, 0.5, 0.99]
        ),
        junk,
    )
    return st.dictionaries(st.sampled_from([*fields, "bogus"]), value, max_size=4)
