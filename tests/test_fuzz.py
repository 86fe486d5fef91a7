"""Fuzzing of every public entry point with arbitrary values.

Each call either returns a valid result (an allocation that spends the budget exactly and
respects its bounds; finite values of the right shape) or raises ``ValueError`` /
``TypeError`` with a non-empty message. Anything else escaping (``IndexError``,
``ZeroDivisionError``, ``OverflowError``, ``MemoryError``, a numpy ``RuntimeWarning``
turned into an error...) fails the test. A failed call on a stateful allocator must also
leave its state exactly as it was.

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
from strategies import batch, config_kwargs, huge_int, junk, odd_text, pass_rate, prompt_ids
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
    if ok and _num(f, 0, 1) and _num(kappa, 2.0 + 1e-9, 1e6) and _num(gamma, 1e-9, 1e6):
        a, b = (float(x) for x in out)
        assert 1.0 <= a <= kappa - 1.0 and math.isclose(a + b, kappa)


@given(p=rate_array, alpha=shape_param, beta=shape_param)
def test_beta_pdf(p: Any, alpha: Any, beta: Any) -> None:
    ok, dens = attempt(coba_rl.beta_pdf, p, alpha, beta)
    if ok and _valid_rates(p) and _num(alpha, 1, 30) and _num(beta, 1, 30):
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
    if ok:
        assert g.shape == (len(p), n_up - n_low)
        if _valid_rates(p) and _num(alpha, 1, 30) and _num(beta, 1, 30) and _num(tau, 1e-3, 50):
            assert np.isfinite(g).all()
    ok, v = attempt(coba_rl.capability_value, n_low, p, alpha, beta, tau)
    valid = _valid_rates(p) and _num(tau, 1e-3, 50) and _num(alpha, 1, 30)
    if ok and valid and _num(beta, 1, 30) and _num(n_low, 0, 100):
        assert np.isfinite(v).all() and (v >= 0).all()


@given(p=rate_array, lo=positive, hi=positive, var_max=positive)
def test_adaptive_tau(p: Any, lo: Any, hi: Any, var_max: Any) -> None:
    ok, tau = attempt(coba_rl.adaptive_tau, p, lo, hi, var_max)
    valid = _valid_rates(p) and _num(lo, 0, 1e6) and _num(hi, lo, 1e6)
    if ok and valid and _num(var_max, 1e-6, 1e6):
        assert lo <= tau <= hi


@given(f=st.one_of(st.floats(0.0, 1.0), junk), gamma=positive)
def test_transform_failure_rate(f: Any, gamma: Any) -> None:
    ok, out = attempt(coba_rl.transform_failure_rate, f, gamma)
    if ok and _num(f, 0, 1) and _num(gamma, 1e-9, 1e6):
        assert 0.0 <= float(out) <= 1.0


@given(
    n=st.one_of(st.integers(1, 200), junk),
    p=rate_array,
    bounds=st.one_of(st.tuples(st.integers(1, 6), st.integers(1, 40)), st.tuples(junk, junk)),
)
def test_knapsack_value_and_gains(n: Any, p: Any, bounds: Any) -> None:
    ok, v = attempt(coba_rl.knapsack_value, n, p)
    if ok and _valid_rates(p) and _num(n, 1, 200):  # V(0, p) < 0 by the formula
        assert np.isfinite(v).all() and (v >= -1e-12).all()
    ok, g = attempt(knapsack_gains, p, *bounds)
    if ok and _valid_rates(p):
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
