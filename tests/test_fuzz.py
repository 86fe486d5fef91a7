"""Fuzzing of every public entry point with arbitrary values.

Each call either returns a valid result (an allocation that spends the budget exactly and
respects its bounds; finite values of the right shape) or raises ``ValueError`` /
``TypeError`` with a non-empty message. Anything else escaping (``IndexError``,
``ZeroDivisionError``, ``OverflowError``, ``MemoryError``, a numpy ``RuntimeWarning``
turned into an error...) fails the test. A failed call on a stateful allocator must also
leave its state exactly as it was. Where the input is judged valid (without the library),
the call must succeed: an entry point that always raised would fail here.

The last section draws valid inputs only (every call must succeed) and inputs with one
named defect each (the call must raise that defect's error, naming it).

The number of examples follows the hypothesis profile (``tests/conftest.py``): ``ci``
in CI, ``long`` for ``make stress``.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import coba_rl
from coba_rl import grpo, solvers
from coba_rl.knapsack import RolloutHistory, knapsack_gains
from strategies import (
    batch,
    config_kwargs,
    gain_problem,
    huge_int,
    junk,
    odd_text,
    pass_rate,
    prompt_ids,
)
from test_contract import CASES, N_LOW, N_UP, Case

EXAMPLES = settings.default.max_examples
# The stateful tests run several calls per example; they get a share of the profile.
SEQ_EXAMPLES = max(10, EXAMPLES // 4)


@contextmanager
def strict_numerics() -> Iterator[None]:
    """Every warning is an error, except the documented ``BudgetWarning`` and ``RewardWarning``."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.simplefilter("ignore", coba_rl.BudgetWarning)
        warnings.simplefilter("ignore", coba_rl.RewardWarning)  # fuzzed rewards are graded
        yield


def attempt(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[bool, Any]:
    """``(True, result)``, or ``(False, error)`` for a ValueError/TypeError with a message.

    Any other exception propagates, and fails the test.
    """
    with strict_numerics():
        try:
            return True, fn(*args, **kwargs)
        except (ValueError, TypeError) as exc:
            error = exc
    assert str(error).strip(), f"{type(error).__name__} raised without a message"
    return False, error


def check_allocation(
    a: Any, m: int, budget: Any, n_low: int, n_up: int | None, floored: bool = True
) -> None:
    """A valid allocation of ``budget`` over ``m`` prompts within ``[n_low, n_up]``."""
    assert isinstance(a, coba_rl.Allocation)
    c = a.counts
    assert c.dtype == np.int64 and c.shape == (m,)
    assert sum(c.tolist()) == int(budget) == a.budget  # Python ints: no int64 wrap-around
    assert (c >= 0).all()
    if n_up is not None:
        assert (c <= n_up).all()
    if floored and int(budget) >= m * n_low:
        assert (c >= n_low).all()
    assert a.pass_rates.shape in ((m,), (0,))


# -- stateless allocation ------------------------------------------------------------------

rates_arg = st.one_of(batch(max_m=12), st.lists(pass_rate, max_size=12), junk)
failure_arg = st.one_of(st.none(), st.floats(0.0, 1.0), junk)
COBA_FIELDS = list(coba_rl.CoBAConfig.model_fields)
KNAPSACK_FIELDS = list(coba_rl.KnapsackConfig.model_fields)


def budget_arg(m: int, n_low: int, n_up: int) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.integers(0, m * n_up),
        st.integers(max(0, m * n_low - 3), m * n_low + 3),
        st.integers(m * n_up - 2, m * n_up + 2),
        huge_int,
        junk,
    )


@given(rates=rates_arg, failure_rate=failure_arg, kwargs=config_kwargs(COBA_FIELDS), data=st.data())
def test_allocate(
    rates: Any, failure_rate: Any, kwargs: dict[str, Any], data: st.DataObject
) -> None:
    ok_s, stats = attempt(coba_rl.BatchStats, pass_rates=rates, failure_rate=failure_rate)
    ok_c, cfg = attempt(coba_rl.CoBAConfig, **kwargs)
    if not (ok_s and ok_c):
        return
    m = stats.num_prompts
    budget = data.draw(budget_arg(m, cfg.n_low, cfg.n_up), label="budget")
    ok, a = attempt(coba_rl.allocate, stats, budget, cfg)
    if ok:
        check_allocation(a, m, budget, cfg.n_low, cfg.n_up)
        assert 1.0 <= a.alpha <= cfg.kappa - 1.0 and math.isclose(a.alpha + a.beta, cfg.kappa)
        if a.method == "greedy":
            assert math.isfinite(a.tau) or cfg.variant == "release"


@given(rates=rates_arg, kwargs=config_kwargs(KNAPSACK_FIELDS), data=st.data())
def test_knapsack_allocate(rates: Any, kwargs: dict[str, Any], data: st.DataObject) -> None:
    ok_s, stats = attempt(coba_rl.BatchStats, pass_rates=rates)
    ok_c, cfg = attempt(coba_rl.KnapsackConfig, **kwargs)
    if not (ok_s and ok_c):
        return
    m = stats.num_prompts
    budget = data.draw(budget_arg(m, cfg.n_low, 3 * cfg.n_up), label="budget")
    ok, a = attempt(coba_rl.knapsack_allocate, stats, budget, cfg)
    if ok:
        # Knapsack-RL's leftover may exceed n_up (rule 5): no upper bound.
        check_allocation(a, m, budget, cfg.n_low, None)


@given(budget=st.one_of(st.integers(-3, 100), huge_int, junk), m=st.one_of(st.integers(0, 9), junk))
def test_even_split(budget: Any, m: Any) -> None:
    # The result has m entries: memory in proportion to the request is expected.
    assume(not isinstance(m, (int, np.integer)) or int(m) <= 10**6)
    ok, counts = attempt(coba_rl.even_split, budget, m)
    if ok:
        assert counts.dtype == np.int64 and counts.shape == (int(m),)
        assert sum(counts.tolist()) == int(budget)
        assert counts.size == 0 or counts.max() - counts.min() <= 1


@given(kwargs=config_kwargs(list(coba_rl.UniformConfig.model_fields)))
def test_uniform_config(kwargs: dict[str, Any]) -> None:
    attempt(coba_rl.UniformConfig, **kwargs)


# -- the stateful allocators: arbitrary call sequences --------------------------------------


def _length(ids: Any) -> int:
    """The batch size of ids that a call may accept (a list, a tuple or a 1-D array)."""
    if isinstance(ids, (list, tuple)) or (isinstance(ids, np.ndarray) and ids.ndim == 1):
        return len(ids)
    return 0


def _state(alloc: Any) -> str:
    return json.dumps(alloc.state_dict(), sort_keys=True)


def _rewards(data: st.DataObject, n: int) -> Any:
    valid = st.lists(st.sampled_from([0.0, 1.0, -1.0, 0.5]), min_size=n, max_size=n)
    return data.draw(st.one_of(valid, valid, junk), label="rewards")


def _mutated_state(data: st.DataObject, alloc: Any) -> Any:
    source = data.draw(st.sampled_from([alloc, *[c.make() for c in CASES]]), label="source")
    state = json.loads(json.dumps(source.state_dict()))
    return data.draw(mutate(state), label="state")


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
@settings(max_examples=SEQ_EXAMPLES)
@given(data=st.data())
def test_allocator_call_sequence(case: Case, data: st.DataObject) -> None:
    """Random calls with arbitrary arguments: valid results, untouched state on failure."""
    alloc = case.make()
    capped_up = N_UP if case.capped else None
    for _ in range(data.draw(st.integers(1, 8), label="calls")):
        op = data.draw(
            st.sampled_from(["allocate", "update", "pass_rates", "load", "round_trip"]), label="op"
        )
        before = _state(alloc)
        if op == "allocate":
            ids = data.draw(prompt_ids, label="ids")
            m = _length(ids)
            hi = m * (case.max_budget_per_prompt or 3 * N_UP)
            budget = data.draw(budget_arg(m, N_LOW, hi // max(m, 1)), label="budget")
            ok, a = attempt(alloc.allocate, ids, budget)
            if ok:
                check_allocation(a, m, budget, N_LOW, capped_up)
            assert _state(alloc) == before  # allocating never changes the state
        elif op == "update":
            ids = data.draw(prompt_ids, label="ids")
            n = _length(ids)
            ok, _ = attempt(alloc.update, ids, _rewards(data, n))
            if not ok:
                assert _state(alloc) == before
        elif op == "pass_rates":
            ok, rates = attempt(alloc.pass_rates, data.draw(prompt_ids, label="ids"))
            if ok:
                known = rates[~np.isnan(rates)]
                assert ((known >= 0.0) & (known <= 1.0)).all()
            assert _state(alloc) == before  # looking up never grows the state
        elif op == "load":
            ok, _ = attempt(alloc.load_state_dict, _mutated_state(data, alloc))
            if not ok:
                assert _state(alloc) == before  # validate, then swap
        else:
            ok, new = attempt(type(alloc).from_state_dict, _mutated_state(data, alloc))
            if ok:
                new._check()
                ids = list("abcdef") if _id_kind(new) == "str" else list(range(6))
                budget = 6 * N_LOW
                res = attempt(new.allocate, ids, budget)
                if res[0]:
                    check_allocation(res[1], 6, budget, N_LOW, None)
        alloc._check()


def _id_kind(alloc: Any) -> str | None:
    tracker = alloc.history._index if hasattr(alloc, "history") else alloc.tracker
    kind: str | None = tracker.id_kind
    return kind


@st.composite
def mutate(draw: st.DrawFn, state: Any) -> Any:
    """A saved state with a few leaves replaced, removed or added (or left intact)."""
    for _ in range(draw(st.integers(0, 3))):
        paths = list(_paths(state))
        if not paths:
            break
        container, key = draw(st.sampled_from(paths))
        action = draw(st.sampled_from(["replace", "replace", "delete", "add", "nudge"]))
        if action == "replace":
            container[key] = draw(st.one_of(junk, st.floats(), huge_int))
        elif action == "delete":
            if isinstance(container, dict):
                del container[key]
            elif container:
                container.pop(key)
        elif action == "add":
            if isinstance(container, dict):
                container[draw(st.text(max_size=3))] = draw(junk)
            else:
                container.append(draw(st.one_of(st.integers(-2, 9), junk)))
        else:
            old = container[key]
            if isinstance(old, (int, float)) and not isinstance(old, bool):
                container[key] = old + draw(st.sampled_from([-1, 1, -0.5, 10**6]))
    return state


def _paths(obj: Any) -> Iterator[tuple[Any, Any]]:
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield obj, k
            yield from _paths(v)
    elif isinstance(obj, list):
        for i, v in enumerate(obj[:4]):  # the first few entries are enough
            yield obj, i
            yield from _paths(v)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
@settings(max_examples=SEQ_EXAMPLES)
@given(data=st.data())
def test_tampered_state(case: Case, data: st.DataObject) -> None:
    """A tampered state loads into a consistent allocator or raises; the target is untouched."""
    source = case.make()
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    for _ in range(2):
        ids = rng.choice(20, size=5, replace=False).tolist()
        rows = [i for i in ids for _ in range(8)]
        source.update(rows, (rng.random(len(rows)) < 0.4).astype(float))
    state = data.draw(mutate(json.loads(json.dumps(source.state_dict()))), label="state")
    target = case.make()
    target.update([100, 100, 101], [1.0, 0.0, 0.0])
    before = _state(target)
    ok, _ = attempt(target.load_state_dict, state)
    if not ok:
        assert _state(target) == before
    target._check()
    ok, new = attempt(type(target).from_state_dict, state)
    if ok:
        new._check()
        assert json.loads(json.dumps(new.state_dict())) == new.state_dict()


# -- the tracker and the rollout history -----------------------------------------------------


@given(window=st.one_of(st.integers(-1, 4), huge_int, junk), data=st.data())
def test_tracker(window: Any, data: st.DataObject) -> None:
    ok, t = attempt(coba_rl.PassRateTracker, window)
    if not ok:
        return
    for _ in range(data.draw(st.integers(1, 5), label="calls")):
        before = json.dumps(t.state_dict())
        ids = data.draw(prompt_ids, label="ids")
        if data.draw(st.booleans(), label="record"):
            n = _length(ids)
            ok, fractions = attempt(t.record, ids, _rewards(data, n))
            if ok:
                assert ((fractions >= 0.0) & (fractions <= 1.0)).all()
            else:
                assert json.dumps(t.state_dict()) == before
        else:
            ok, rates = attempt(t.pass_rates, ids)
            if ok:
                assert rates.shape == (len(ids),)
            assert json.dumps(t.state_dict()) == before
        t._check()
    state = data.draw(mutate(json.loads(json.dumps(t.state_dict()))), label="state")
    ok, u = attempt(coba_rl.PassRateTracker.from_state_dict, state)
    if ok:
        u._check()


@given(recent=st.one_of(st.integers(-1, 5), huge_int, junk), data=st.data())
def test_rollout_history(recent: Any, data: st.DataObject) -> None:
    ok, h = attempt(RolloutHistory, recent)
    if not ok:
        return
    ids = data.draw(prompt_ids, label="ids")
    n = _length(ids)
    before = json.dumps(h.state_dict())
    ok, _ = attempt(h.record, ids, _rewards(data, n))
    if not ok:
        assert json.dumps(h.state_dict()) == before
    h._check()
    ok, rates = attempt(h.pass_rates, data.draw(prompt_ids, label="lookup"), 1)
    if ok:
        known = rates[~np.isnan(rates)]
        assert ((known >= 0.0) & (known <= 1.0)).all()
    state = data.draw(mutate(json.loads(json.dumps(h.state_dict()))), label="state")
    ok, u = attempt(RolloutHistory.from_state_dict, state)
    if ok:
        u._check()


# -- the value functions ---------------------------------------------------------------------

rate_array = st.one_of(
    st.lists(pass_rate, max_size=8),
    hnp.arrays(np.float64, st.integers(0, 8), elements=st.floats(0.0, 1.0)),
    junk,
)
shape_param = st.one_of(st.floats(1.0, 30.0), junk)
positive = st.one_of(st.floats(1e-3, 50.0), st.floats(), junk)


def _valid_rates(p: Any) -> bool:
    """A 1-D list or array of real numbers in [0, 1] (judged without the library)."""
    if isinstance(p, list):
        if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in p):
            return False
    elif not (isinstance(p, np.ndarray) and p.dtype.kind in "iuf"):
        return False
    arr = np.asarray(p, dtype=np.float64)
    return arr.ndim == 1 and bool(((arr >= 0) & (arr <= 1)).all())


def _num(x: Any, lo: float, hi: float) -> bool:
    return (
        isinstance(x, (int, float))
        and not isinstance(x, bool)
        and math.isfinite(x)
        and lo <= x <= hi
    )


@given(f=st.one_of(st.floats(0.0, 1.0), junk), kappa=positive, gamma=positive)
def test_beta_shape(f: Any, kappa: Any, gamma: Any) -> None:
    ok, out = attempt(coba_rl.beta_shape, f, kappa, gamma)
    if _num(f, 0, 1) and _num(kappa, 2.0 + 1e-9, 60.0) and _num(gamma, 1e-9, 1e6):
        assert ok, out  # valid input must succeed
        a, b = (float(x) for x in out)
        assert 1.0 <= a <= kappa - 1.0 and math.isclose(a + b, kappa)


@given(p=rate_array, alpha=shape_param, beta=shape_param)
def test_beta_pdf(p: Any, alpha: Any, beta: Any) -> None:
    ok, dens = attempt(coba_rl.beta_pdf, p, alpha, beta)
    if _valid_rates(p) and _num(alpha, 1, 30) and _num(beta, 1, 30):
        assert ok, dens
        assert dens.shape == np.shape(p) and np.isfinite(dens).all() and (dens >= 0).all()


@given(
    p=rate_array,
    alpha=shape_param,
    beta=shape_param,
    tau=positive,
    bounds=st.one_of(st.tuples(st.integers(1, 6), st.integers(1, 40)), st.tuples(junk, junk)),
)
def test_marginal_gains(p: Any, alpha: Any, beta: Any, tau: Any, bounds: Any) -> None:
    n_low, n_up = bounds
    ok, g = attempt(coba_rl.marginal_gains, p, alpha, beta, tau, n_low, n_up)
    valid_bounds = isinstance(n_low, int) and isinstance(n_up, int) and 1 <= n_low <= n_up
    if ok:
        assert g.shape == (len(p), n_up - n_low)
    shape_ok = _num(alpha, 1, 30) and _num(beta, 1, 30) and _num(tau, 1e-3, 50)
    if _valid_rates(p) and shape_ok and valid_bounds:
        assert ok, g
        assert np.isfinite(g).all()
    ok, v = attempt(coba_rl.capability_value, n_low, p, alpha, beta, tau)
    valid = _valid_rates(p) and _num(tau, 1e-3, 50) and _num(alpha, 1, 30)
    if valid and _num(beta, 1, 30) and isinstance(n_low, int) and 0 <= n_low <= 100:
        assert ok, v
        assert np.isfinite(v).all() and (v >= 0).all()


@given(p=rate_array, lo=positive, hi=positive, var_max=positive)
def test_adaptive_tau(p: Any, lo: Any, hi: Any, var_max: Any) -> None:
    ok, tau = attempt(coba_rl.adaptive_tau, p, lo, hi, var_max)
    valid = _valid_rates(p) and len(p) > 0 and _num(lo, 0, 1e6) and _num(hi, lo, 1e6)
    if valid and _num(var_max, 1e-6, 1e6):
        assert ok, tau
        assert lo <= tau <= hi


@given(f=st.one_of(st.floats(0.0, 1.0), junk), gamma=positive)
def test_transform_failure_rate(f: Any, gamma: Any) -> None:
    ok, out = attempt(coba_rl.transform_failure_rate, f, gamma)
    if _num(f, 0, 1) and _num(gamma, 1e-9, 1e6):
        assert ok, out
        assert 0.0 <= float(out) <= 1.0


@given(
    n=st.one_of(st.integers(1, 200), junk),
    p=rate_array,
    bounds=st.one_of(st.tuples(st.integers(1, 6), st.integers(1, 40)), st.tuples(junk, junk)),
)
def test_knapsack_value_and_gains(n: Any, p: Any, bounds: Any) -> None:
    ok, v = attempt(coba_rl.knapsack_value, n, p)
    if _valid_rates(p) and _num(n, 1, 200):  # V(0, p) < 0 by the formula
        assert ok, v
        assert np.isfinite(v).all() and (v >= -1e-12).all()
    ok, g = attempt(knapsack_gains, p, *bounds)
    valid_bounds = isinstance(bounds[0], int) and isinstance(bounds[1], int)
    if _valid_rates(p) and valid_bounds and 1 <= bounds[0] <= bounds[1]:
        assert ok, g
        assert g.shape == (len(p), bounds[1] - bounds[0]) and np.isfinite(g).all()


# -- the solvers -------------------------------------------------------------------------------


@st.composite
def solver_args(draw: st.DrawFn) -> tuple[Any, Any, Any, Any]:
    n_low = draw(st.one_of(st.integers(-1, 5), junk))
    n_up = draw(st.one_of(st.integers(-1, 12), junk))
    m = draw(st.integers(0, 6))
    width = 1
    if isinstance(n_up, int) and isinstance(n_low, int) and 0 <= n_up - n_low <= 12:
        width = n_up - n_low
    gains = draw(
        st.one_of(
            hnp.arrays(
                np.float64,
                (m, max(width, 0)),
                elements=st.floats(-1e3, 1e3) | st.sampled_from([math.nan, math.inf]),
            ),
            junk,
        )
    )
    lo = m * n_low if isinstance(n_low, int) else 0
    hi = m * n_up if isinstance(n_up, int) else 8
    budget = draw(st.one_of(st.integers(min(lo, hi) - 2, max(lo, hi) + 2), huge_int, junk))
    return gains, budget, n_low, n_up


@pytest.mark.parametrize("solver", [solvers.greedy, solvers.greedy_heap, solvers.dp])
@given(args=solver_args())
def test_solvers(solver: Callable[..., Any], args: tuple[Any, Any, Any, Any]) -> None:
    gains, budget, n_low, n_up = args
    ok, counts = attempt(solver, gains, budget, n_low, n_up)
    if ok:
        assert counts.dtype == np.int64 and counts.shape == (np.shape(gains)[0],)
        assert sum(counts.tolist()) == int(budget)
        assert ((counts >= n_low) & (counts <= n_up)).all()
        ok, total = attempt(solvers.objective, gains, counts, n_low)
        assert ok and math.isfinite(total)


@given(gains=junk, counts=junk, n_low=st.one_of(st.integers(-1, 4), junk))
def test_objective(gains: Any, counts: Any, n_low: Any) -> None:
    ok, total = attempt(solvers.objective, gains, counts, n_low)
    if ok:
        assert isinstance(total, float)


# -- GRPO helpers ------------------------------------------------------------------------------


@given(counts=st.one_of(st.lists(st.integers(0, 6), max_size=8), junk))
def test_expand(counts: Any) -> None:
    # The output has sum(counts) rows: memory in proportion to the request is expected.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with suppress(TypeError, ValueError):
            assume(float(np.sum(np.abs(np.asarray(counts, dtype=np.float64)))) < 1e6)
    ok, rows = attempt(grpo.expand, counts)
    if ok:
        c = np.asarray(counts)
        assert rows.dtype == np.int64 and rows.size == int(c.sum())
        assert (np.bincount(rows, minlength=c.size) == c).all()


@given(
    data=st.data(),
    ddof=st.one_of(st.sampled_from([0, 1]), junk),
    eps=st.one_of(st.sampled_from([1e-6, 0.0]), st.floats(), junk),
    scale=st.one_of(st.booleans(), junk),
    singleton=st.one_of(st.sampled_from(["zero", "raw", "error"]), junk),
)
def test_group_advantages(
    data: st.DataObject, ddof: Any, eps: Any, scale: Any, singleton: Any
) -> None:
    n = data.draw(st.integers(0, 10), label="n")
    rewards = data.draw(
        st.one_of(st.lists(st.floats(-5, 5), min_size=n, max_size=n), junk), label="rewards"
    )
    group_ids = data.draw(
        st.one_of(
            st.lists(st.integers(0, 3), min_size=n, max_size=n),
            st.lists(st.sampled_from(["a", "b", ""]), min_size=n, max_size=n),
            st.lists(st.one_of(st.integers(0, 2), odd_text), min_size=n, max_size=n),
            junk,
        ),
        label="group_ids",
    )
    for return_weights in (False, True):
        ok, out = attempt(
            grpo.group_advantages,
            rewards,
            group_ids,
            ddof=ddof,
            eps=eps,
            scale=scale,
            singleton=singleton,
            return_weights=return_weights,
        )
        if ok:
            arrays = out if return_weights else (out,)
            for arr in arrays:
                assert arr.shape == (len(rewards),) and np.isfinite(arr).all()
    ok, out = attempt(grpo.group_sizes, group_ids)
    if ok:
        inv, sizes = out
        assert int(sizes.sum()) == inv.size == len(group_ids)


# -- persistence entry points ------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
@settings(max_examples=SEQ_EXAMPLES)
@given(ids=st.lists(odd_text, min_size=1, max_size=6, unique=True))
def test_unicode_ids_survive_save_and_load(
    case: Case, ids: list[str], tmp_path_factory: Any
) -> None:
    """Any string id (surrogates, NUL, combining marks, empty) round-trips or is rejected."""
    alloc = case.make()
    rows = [i for i in ids for _ in range(4)]
    ok, _ = attempt(alloc.update, rows, [1.0, 0.0, 0.0, 1.0] * len(ids))
    if not ok:
        return
    path = tmp_path_factory.mktemp("unicode") / "state.json"
    ok, _ = attempt(alloc.save, path)
    assert ok  # anything update accepted can be saved
    loaded = type(alloc).load(path)
    assert loaded.state_dict() == alloc.state_dict()
    np.testing.assert_array_equal(loaded.pass_rates(ids), alloc.pass_rates(ids))
    budget = len(ids) * 8
    assert (
        loaded.allocate(ids, budget).counts.tolist() == alloc.allocate(ids, budget).counts.tolist()
    )


@given(content=st.one_of(st.binary(max_size=64), odd_text, junk.map(repr)))
def test_load_arbitrary_file(content: Any, tmp_path_factory: Any) -> None:
    path = tmp_path_factory.mktemp("load") / "state.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_bytes(content.encode("utf-8", "surrogatepass"))
    for case in CASES:
        ok, _ = attempt(type(case.make()).load, path)
        assert not ok


# -- valid inputs must succeed; each kind of invalid input raises its own error ------------
# The tests above accept a ValueError or TypeError from any input, so they alone would
# pass an entry point that always raised. Here inputs are drawn as valid (the call must
# return a valid result) or valid except for one named defect (the call must raise that
# defect's error type, with a message that names it).


def _with_partners(keys: set[str]) -> set[str]:
    """Fields drawn relative to another (n_up >= n_low...) are kept or dropped together."""
    for group in ({"n_low", "n_up", "unseen_n"}, {"tau_min", "tau_max"}):
        if keys & group:
            keys |= group
    return keys


@st.composite
def valid_coba_config(draw: st.DrawFn) -> coba_rl.CoBAConfig:
    n_low = draw(st.integers(1, 4))
    tau_min = draw(st.floats(0.5, 6.0))
    kwargs: dict[str, Any] = {
        "variant": draw(st.sampled_from(["paper", "release"])),
        "n_low": n_low,
        "n_up": draw(st.integers(n_low, 40)),
        "kappa": draw(st.floats(2.01, 60.0)),
        "gamma": draw(st.floats(0.1, 50.0)),
        "window": draw(st.integers(1, 4)),
        "tau": draw(st.one_of(st.just("adaptive"), st.floats(0.5, 20.0))),
        "tau_min": tau_min,
        "tau_max": draw(st.floats(tau_min, 30.0)),
        "smoothing": draw(st.floats(0.0, 0.49)),
        "exploration_budget_ratio": draw(st.floats(0.0, 1.0)),
        "fallback": draw(st.sampled_from(["weighted", "uniform"])),
        "weight_alpha": draw(st.floats(0.0, 3.0)),
        "unseen_pass_rate": draw(st.floats(0.0, 1.0)),
    }
    keep = _with_partners(draw(st.sets(st.sampled_from(sorted(kwargs)))))
    return coba_rl.CoBAConfig(**{k: v for k, v in kwargs.items() if k in keep})


@st.composite
def valid_knapsack_config(draw: st.DrawFn) -> coba_rl.KnapsackConfig:
    n_low = draw(st.integers(1, 4))
    kwargs: dict[str, Any] = {
        "n_low": n_low,
        "n_up": draw(st.integers(n_low, 40)),
        "confidence": draw(st.floats(0.01, 0.99)),
        "fallback": draw(st.booleans()),
        "unseen_n": draw(st.one_of(st.none(), st.integers(n_low, 50))),
    }
    keep = _with_partners(draw(st.sets(st.sampled_from(sorted(kwargs)))))
    return coba_rl.KnapsackConfig(**{k: v for k, v in kwargs.items() if k in keep})


@given(
    rates=batch(max_m=12),
    failure_rate=st.one_of(st.none(), st.floats(0.0, 1.0)),
    cfg=valid_coba_config(),
    data=st.data(),
)
def test_allocate_succeeds_on_valid_input(
    rates: list[float], failure_rate: float | None, cfg: coba_rl.CoBAConfig, data: st.DataObject
) -> None:
    m = len(rates)
    budget = data.draw(st.integers(0, m * cfg.n_up), label="budget")
    with strict_numerics():
        stats = coba_rl.BatchStats(pass_rates=rates, failure_rate=failure_rate)
        a = coba_rl.allocate(stats, budget, cfg)
    check_allocation(a, m, budget, cfg.n_low, cfg.n_up)


@given(rates=batch(max_m=12), cfg=valid_knapsack_config(), data=st.data())
def test_knapsack_allocate_succeeds_on_valid_input(
    rates: list[float], cfg: coba_rl.KnapsackConfig, data: st.DataObject
) -> None:
    m = len(rates)
    budget = data.draw(st.integers(0, m * 3 * cfg.n_up), label="budget")
    with strict_numerics():
        a = coba_rl.knapsack_allocate(coba_rl.BatchStats(pass_rates=rates), budget, cfg)
    check_allocation(a, m, budget, cfg.n_low, None)


# One defect at a time: (name, exception type, message pattern, strategy of call kwargs).
def _defective_allocate_calls() -> st.SearchStrategy[tuple[str, Any, str, dict[str, Any]]]:
    rates = batch(max_m=8)

    def case(name: str, exc: Any, match: str, **parts: Any) -> st.SearchStrategy[Any]:
        return st.fixed_dictionaries({"rates": rates, **parts}).map(lambda d: (name, exc, match, d))

    return st.one_of(
        case("budget above M * n_up", ValueError, r"exceeds M \* n_up", over=st.integers(1, 10**6)),
        case("negative budget", ValueError, "non-negative", budget=st.integers(-(10**6), -1)),
        case(
            "non-integer budget",
            TypeError,
            "budget must be an int",
            budget=st.one_of(st.floats(0, 100), st.text(max_size=2), st.booleans()),
        ),
        case(
            "pass rate outside [0, 1]",
            ValueError,
            r"outside \[0, 1\]",
            bad=st.one_of(st.floats(-1e6, -1e-9), st.floats(1.0 + 1e-9, 1e6)),
        ),
        case(
            "infinite pass rate", ValueError, "infinite", bad=st.sampled_from([-math.inf, math.inf])
        ),
        case(
            "failure rate outside [0, 1]",
            ValueError,
            "failure_rate",
            failure_rate=st.one_of(st.floats(-1e6, -1e-9), st.floats(1.0 + 1e-9, 1e6)),
        ),
        case(
            "unknown config key",
            ValueError,
            "typo_",
            config=st.text("abz_", min_size=1, max_size=6).map(lambda k: {"typo_" + k: 1}),
        ),
    )


def _call_with(entry: str, rates: list[Any], parts: dict[str, Any]) -> Any:
    """Build the config and batch from ``parts``, then call ``entry``."""
    config_type = coba_rl.CoBAConfig if entry == "allocate" else coba_rl.KnapsackConfig
    fn = coba_rl.allocate if entry == "allocate" else coba_rl.knapsack_allocate
    cfg = config_type(**parts.get("config", {}))
    stats = coba_rl.BatchStats(pass_rates=rates, failure_rate=parts.get("failure_rate"))
    if "over" in parts:
        budget = len(rates) * cfg.n_up + parts["over"]
    else:
        budget = parts.get("budget", len(rates) * cfg.n_low)
    return fn(stats, budget, cfg)


@pytest.mark.parametrize("entry", ["allocate", "knapsack_allocate"])
@given(call=_defective_allocate_calls(), data=st.data())
def test_allocate_rejects_each_defect_by_name(
    entry: str, call: tuple[str, Any, str, dict[str, Any]], data: st.DataObject
) -> None:
    _, exc, match, parts = call
    # Knapsack-RL has no budget cap: its rule 5 spends any excess beyond n_up.
    assume(entry == "allocate" or "over" not in parts)
    rates = list(parts["rates"])
    if "bad" in parts:
        rates[data.draw(st.integers(0, len(rates) - 1), label="where")] = parts["bad"]
    with strict_numerics(), pytest.raises(exc, match=match):
        _call_with(entry, rates, parts)


valid_int_ids = st.lists(st.integers(-5, 10**9), min_size=1, max_size=10, unique=True)
valid_str_ids = st.lists(
    st.text(max_size=5).filter(lambda s: "\x00" not in s), min_size=1, max_size=10, unique=True
)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
@settings(max_examples=SEQ_EXAMPLES)
@given(data=st.data())
def test_allocator_valid_call_sequence_succeeds(case: Case, data: st.DataObject) -> None:
    """Valid calls in any order all succeed, and a saved state reloads to the same answers."""
    alloc = case.make()
    ids_st = data.draw(st.sampled_from([valid_int_ids, valid_str_ids]), label="id kind")
    cap = case.max_budget_per_prompt or 3 * N_UP
    for _ in range(data.draw(st.integers(1, 6), label="calls")):
        ids = data.draw(ids_st, label="ids")
        m = len(ids)
        op = data.draw(st.sampled_from(["allocate", "update", "round_trip"]), label="op")
        with strict_numerics():
            if op == "allocate":
                budget = data.draw(st.integers(0, m * cap), label="budget")
                a = alloc.allocate(ids, budget)
                check_allocation(a, m, budget, N_LOW, N_UP if case.capped else None)
            elif op == "update":
                sizes = data.draw(st.lists(st.integers(1, 4), min_size=m, max_size=m))
                rows = [i for i, k in zip(ids, sizes, strict=True) for _ in range(k)]
                rewards = data.draw(
                    st.lists(st.sampled_from([0.0, 1.0]), min_size=len(rows), max_size=len(rows))
                )
                alloc.update(rows, rewards)
            else:
                new = type(alloc).from_state_dict(json.loads(json.dumps(alloc.state_dict())))
                assert new.state_dict() == alloc.state_dict()
                budget = m * N_LOW
                assert new.allocate(ids, budget).counts.tolist() == (
                    alloc.allocate(ids, budget).counts.tolist()
                )
        alloc._check()


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
@settings(max_examples=SEQ_EXAMPLES)
@given(ids=valid_int_ids, data=st.data())
def test_allocator_rejects_each_defect_by_name(
    case: Case, ids: list[int], data: st.DataObject
) -> None:
    alloc = case.make()
    alloc.update([ids[0]] * 2, [1.0, 0.0])
    before = _state(alloc)
    defect = data.draw(
        st.sampled_from(["duplicate id", "short rewards", "non-finite reward", "negative budget"])
    )
    with strict_numerics():
        if defect == "duplicate id":
            dup = [*ids, ids[data.draw(st.integers(0, len(ids) - 1))]]
            with pytest.raises(ValueError, match="duplicate prompt id"):
                alloc.allocate(dup, len(dup) * N_LOW)
        elif defect == "short rewards":
            with pytest.raises(ValueError, match="same length"):
                alloc.update(ids, [1.0] * (len(ids) - 1))
        elif defect == "non-finite reward":
            rewards = [0.0] * len(ids)
            rewards[data.draw(st.integers(0, len(ids) - 1))] = data.draw(
                st.sampled_from([math.nan, math.inf, -math.inf])
            )
            with pytest.raises(ValueError, match="not finite"):
                alloc.update(ids, rewards)
        else:
            with pytest.raises(ValueError, match="non-negative"):
                alloc.allocate(ids, data.draw(st.integers(-(10**6), -1)))
    assert _state(alloc) == before


@pytest.mark.parametrize("solver", [solvers.greedy, solvers.greedy_heap, solvers.dp])
@given(problem=gain_problem(max_m=8, monotone=False))
def test_solvers_succeed_on_valid_input(solver: Callable[..., Any], problem: Any) -> None:
    gains, budget, n_low, n_up = problem
    with strict_numerics():
        counts = solver(gains, budget, n_low, n_up)
        total = solvers.objective(gains, counts, n_low)
    assert sum(counts.tolist()) == budget
    assert ((counts >= n_low) & (counts <= n_up)).all()
    assert math.isfinite(total)


@given(
    rates=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=8),
    f=st.floats(0.0, 1.0),
    kappa=st.floats(2.01, 60.0),
    tau=st.floats(0.1, 50.0),
    bounds=st.tuples(st.integers(1, 6), st.integers(0, 30)),
)
def test_value_functions_succeed_on_valid_input(
    rates: list[float], f: float, kappa: float, tau: float, bounds: tuple[int, int]
) -> None:
    n_low, n_up = bounds[0], bounds[0] + bounds[1]
    with strict_numerics():
        alpha, beta = (float(x) for x in coba_rl.beta_shape(f, kappa))
        dens = coba_rl.beta_pdf(rates, alpha, beta)
        gains = coba_rl.marginal_gains(rates, alpha, beta, tau, n_low, n_up)
        v = coba_rl.capability_value(n_low, rates, alpha, beta, tau)
        t = coba_rl.adaptive_tau(rates)
        kv = coba_rl.knapsack_value(n_low, rates)
        kg = knapsack_gains(rates, n_low, n_up)
    assert np.isfinite(dens).all() and (dens >= 0).all()
    assert gains.shape == (len(rates), n_up - n_low) and np.isfinite(gains).all()
    assert np.isfinite(v).all() and (v >= 0).all()
    assert 3.0 <= t <= 12.0
    assert np.isfinite(kv).all() and np.isfinite(kg).all()


@given(
    rewards=st.lists(st.floats(-5, 5), min_size=1, max_size=12),
    data=st.data(),
)
def test_grpo_helpers_succeed_on_valid_input(rewards: list[float], data: st.DataObject) -> None:
    n = len(rewards)
    group_ids = data.draw(st.lists(st.integers(0, 3), min_size=n, max_size=n), label="groups")
    counts = data.draw(st.lists(st.integers(0, 6), max_size=8), label="counts")
    with strict_numerics():
        adv = grpo.group_advantages(rewards, group_ids)
        rows = grpo.expand(counts)
    assert adv.shape == (n,) and np.isfinite(adv).all()
    assert rows.size == sum(counts)
