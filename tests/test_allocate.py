"""The stateless ``allocate``: both variants, edge cases and properties."""

from __future__ import annotations

import heapq
import math
import warnings
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats as sps

import coba_rl
from strategies import batch

VARIANTS = ["paper", "release"]


def _quiet_allocate(rates: list[float], budget: int, cfg: coba_rl.CoBAConfig) -> coba_rl.Allocation:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", coba_rl.BudgetWarning)
        return coba_rl.allocate(coba_rl.BatchStats(pass_rates=rates), budget, cfg)


@pytest.mark.parametrize("variant", VARIANTS)
@given(rates=batch(), data=st.data())
def test_budget_spent_exactly_and_bounds_hold(
    variant: str, rates: list[float], data: st.DataObject
) -> None:
    cfg = coba_rl.CoBAConfig(variant=variant, n_low=2, n_up=data.draw(st.integers(2, 40)))
    m = len(rates)
    budget = data.draw(st.integers(0, m * cfg.n_up))
    a = _quiet_allocate(rates, budget, cfg)
    assert a.counts.dtype == np.int64
    assert a.counts.shape == (m,)
    assert int(a.counts.sum()) == budget
    assert (a.counts <= cfg.n_up).all()
    if budget >= m * cfg.n_low:
        assert (a.counts >= cfg.n_low).all()
    else:
        assert a.counts.max() - a.counts.min() <= 1  # the even split


def _reference_heap(
    rates: list[float], failure_rate: float, budget: int, n_low: int, n_up: int
) -> tuple[list[int], Callable[[list[int]], float], tuple[float, float, float]]:
    """Algorithm 1 from the paper's formulas with SciPy's Beta density: no library code.

    Returns ``(counts, value)`` where ``value(counts)`` is the objective under the same
    independently computed ``V``.
    """
    f = failure_rate
    f_tilde = f if f > 0.5 else 1.0 / (1.0 + math.exp(-10.0 * (f - 0.5)))
    alpha = min(max(1.0 + 9.0 * f_tilde, 1.0), 10.0)
    beta = 11.0 - alpha
    p = np.clip(np.asarray(rates, dtype=np.float64), 0.01, 0.99)
    tau = 3.0 + 9.0 * min(max(float(np.var(p)) / 0.1667, 0.0), 1.0)
    density = sps.beta.pdf(p, alpha, beta)

    def v(i: int, n: int) -> float:
        return float((1.0 - math.exp(-(n / tau) * p[i] * (1.0 - p[i]))) * density[i])

    counts = [n_low] * len(rates)
    heap = [(-(v(i, n_low + 1) - v(i, n_low)), i) for i in range(len(rates)) if n_up > n_low]
    heapq.heapify(heap)
    for _ in range(budget - len(rates) * n_low):
        _, i = heapq.heappop(heap)
        counts[i] += 1
        if counts[i] < n_up:
            heapq.heappush(heap, (-(v(i, counts[i] + 1) - v(i, counts[i])), i))

    def value(c: list[int]) -> float:
        return sum(v(i, n) for i, n in enumerate(c))

    return counts, value, (alpha, beta, tau)


@given(rates=batch(max_m=30, allow_unseen=False), data=st.data())
def test_paper_variant_equals_an_independent_heap(rates: list[float], data: st.DataObject) -> None:
    cfg = coba_rl.CoBAConfig(n_low=2, n_up=data.draw(st.integers(2, 30)))
    budget = data.draw(st.integers(len(rates) * 2, len(rates) * cfg.n_up))
    f = data.draw(st.sampled_from([0.7, 0.5, 0.2]))
    a = coba_rl.allocate(coba_rl.BatchStats(pass_rates=rates, failure_rate=f), budget, cfg)
    ref, value, (alpha, beta, tau) = _reference_heap(rates, f, budget, cfg.n_low, cfg.n_up)
    assert (a.alpha, a.beta, a.tau) == pytest.approx((alpha, beta, tau), rel=1e-12)
    # SciPy's density and the library's may differ in the last bits, which can swap two
    # gains that are equal up to rounding, so the objectives are compared, not the counts.
    assert int(a.counts.sum()) == budget
    assert value(a.counts.tolist()) == pytest.approx(value(ref), rel=1e-12, abs=1e-300)


def test_paper_variant_equals_an_independent_heap_worked_case() -> None:
    # Distinct rates far from any tie: here the counts themselves must match.
    rates = [0.1, 0.3, 0.5, 0.7, 0.9]
    a = coba_rl.allocate(coba_rl.BatchStats(pass_rates=rates, failure_rate=0.7), 60)
    ref, _, _ = _reference_heap(rates, 0.7, 60, 2, 128)
    assert a.counts.tolist() == ref


# Distinct after the value's clip to [s, 1 - s], so no two prompts tie.
distinct_rates = st.lists(
    st.floats(0.0, 1.0), min_size=1, max_size=25, unique_by=lambda x: min(max(x, 0.01), 0.99)
)


@pytest.mark.parametrize("variant", VARIANTS)
@given(rates=distinct_rates, data=st.data())
def test_permutation_invariance_without_ties(
    variant: str, rates: list[float], data: st.DataObject
) -> None:
    cfg = coba_rl.CoBAConfig(variant=variant, n_low=2, n_up=32)
    budget = data.draw(st.integers(len(rates) * 2, len(rates) * 32))
    perm = np.array(data.draw(st.permutations(range(len(rates)))))
    a = coba_rl.allocate(coba_rl.BatchStats(pass_rates=rates, failure_rate=0.4), budget, cfg)
    b = coba_rl.allocate(
        coba_rl.BatchStats(pass_rates=np.array(rates)[perm], failure_rate=0.4), budget, cfg
    )
    if variant == "paper":
        np.testing.assert_array_equal(b.counts, a.counts[perm])
    else:
        # The release rule's fallback spreads remainders "first prompts first", so only
        # the greedy part is order-free; budget and bounds still hold.
        assert int(b.counts.sum()) == budget


def test_failure_rate_defaults_to_one_minus_mean_known_rate() -> None:
    rates = [0.2, 0.4, float("nan")]
    a = coba_rl.allocate(coba_rl.BatchStats(pass_rates=rates), 30)
    b = coba_rl.allocate(coba_rl.BatchStats(pass_rates=rates, failure_rate=0.7), 30)
    assert a.alpha == b.alpha
    assert a.counts.tolist() == b.counts.tolist()
    assert a.failure_rate == pytest.approx(0.7)


def test_unseen_prompts_count_as_half() -> None:
    a = coba_rl.allocate(coba_rl.BatchStats(pass_rates=[0.3, float("nan")], failure_rate=0.5), 20)
    b = coba_rl.allocate(coba_rl.BatchStats(pass_rates=[0.3, 0.5], failure_rate=0.5), 20)
    assert a.counts.tolist() == b.counts.tolist()
    assert a.n_unseen == 1


def test_all_unseen_gives_even_split() -> None:
    a = coba_rl.allocate(coba_rl.BatchStats(pass_rates=[math.nan] * 3), 10)
    assert a.counts.tolist() == [4, 3, 3]
    assert a.method == "even_split"


def test_budget_below_floor_warns_and_splits_evenly() -> None:
    with pytest.warns(coba_rl.BudgetWarning, match=r"below M \* n_low"):
        a = coba_rl.allocate(coba_rl.BatchStats(pass_rates=[0.5, 0.1, 0.9]), 5)
    assert a.counts.tolist() == [2, 2, 1]


def test_empty_batch_with_zero_budget() -> None:
    a = coba_rl.allocate(coba_rl.BatchStats(pass_rates=[]), 0)
    assert a.counts.shape == (0,)
    assert a.counts.dtype == np.int64


def test_exploit_first_then_explore() -> None:
    # A failing model (F high) favours easy prompts; a strong one favours hard prompts.
    rates = [0.2, 0.8]
    early = coba_rl.allocate(coba_rl.BatchStats(pass_rates=rates, failure_rate=0.9), 40)
    late = coba_rl.allocate(coba_rl.BatchStats(pass_rates=rates, failure_rate=0.1), 40)
    assert early.counts[1] > early.counts[0]
    assert late.counts[0] > late.counts[1]


def test_zero_and_one_pass_rates_get_the_floor_in_the_paper_variant() -> None:
    a = coba_rl.allocate(coba_rl.BatchStats(pass_rates=[0.0, 1.0, 0.5], failure_rate=0.5), 40)
    assert a.counts[2] > a.counts[0]
    assert a.counts[2] > a.counts[1]


def test_fixed_tau_is_used() -> None:
    cfg = coba_rl.CoBAConfig(tau=5.0)
    a = coba_rl.allocate(coba_rl.BatchStats(pass_rates=[0.3, 0.6], failure_rate=0.5), 20, cfg)
    assert a.tau == 5.0


class TestReleaseRule:
    """Small cases worked out by hand from the release-variant rules (docs/rules.md)."""

    def test_buckets_and_weighted_leftover(self) -> None:
        cfg = coba_rl.CoBAConfig(variant="release", n_low=2, n_up=64)
        # one hard, one easy, two explore prompts; spare R = 40 - 8 = 32
        rates = [0.0, 1.0, 0.5, 0.25]
        a = coba_rl.allocate(coba_rl.BatchStats(pass_rates=rates, failure_rate=0.5), 40, cfg)
        # |explore| = 2 = M/2, so r = 0.6 + 0.2 * (2/4 * 2) = 0.8 and E = int(32 * 0.8) = 25
        # the greedy puts those 25 on the explore prompts; the 7 left go to the hard one
        assert a.counts[0] == 2 + 7
        assert a.counts[1] == 2
        assert a.counts[2] + a.counts[3] == 4 + 25

    def test_uniform_fallback_spreads_evenly(self) -> None:
        cfg = coba_rl.CoBAConfig(variant="release", n_low=2, n_up=64, fallback="uniform")
        rates = [0.0, 0.01, 0.02, 0.5]
        a = coba_rl.allocate(coba_rl.BatchStats(pass_rates=rates, failure_rate=0.5), 40, cfg)
        # one explore prompt of 4: r = 0.6 + 0.2 * 0.5 = 0.7, E = int(32 * 0.7) = 22
        assert a.counts[3] == 2 + 22
        assert a.counts[:3].tolist() == [2 + 4, 2 + 3, 2 + 3]  # 10 spread evenly, first ones first

    def test_leftover_past_the_caps_is_still_spent(self) -> None:
        cfg = coba_rl.CoBAConfig(variant="release", n_low=2, n_up=4)
        a = coba_rl.allocate(
            coba_rl.BatchStats(pass_rates=[0.0, 1.0, 0.5], failure_rate=0.5), 12, cfg
        )
        assert a.counts.tolist() == [4, 4, 4]


def test_metrics_are_flat_floats() -> None:
    a = coba_rl.allocate(coba_rl.BatchStats(pass_rates=[0.0, 0.5, 1.0], failure_rate=0.5), 30)
    m = a.metrics(prefix="coba/")
    assert all(k.startswith("coba/") for k in m)
    assert all(isinstance(v, float) for v in m.values())
    assert m["coba/budget"] == 30.0
    assert m["coba/prompts"] == 3.0
    assert m["coba/rollouts/mean"] == 10.0
    assert m["coba/alpha"] == a.alpha
    assert 0.0 <= m["coba/zero_pass_share"] <= 1.0


def test_counts_are_read_only() -> None:
    a = coba_rl.allocate(coba_rl.BatchStats(pass_rates=[0.5, 0.5]), 8)
    with pytest.raises(ValueError, match="read-only"):
        a.counts[0] = 3


@pytest.mark.parametrize("variant", ["paper", "release"])
def test_per_step_allocation_passes_the_public_validation(variant: str) -> None:
    # allocate builds its result without re-validating it: the same fields must pass
    # Allocation's own checks and give an equal, equally typed object.
    import dataclasses

    from coba_rl.types import Allocation

    rng = np.random.default_rng(8)
    p = rng.random(64)
    p[:5] = np.nan
    cfg = coba_rl.CoBAConfig(variant=variant)
    for f_bar in (None, 0.3):
        stats = coba_rl.BatchStats(pass_rates=p, failure_rate=f_bar)
        got = coba_rl.allocate(stats, 64 * 9, cfg)
        fields = {f.name: getattr(got, f.name) for f in dataclasses.fields(Allocation)}
        checked = Allocation(**fields)
        assert checked == got
        for name, value in fields.items():
            assert type(getattr(checked, name)) is type(value), name
        assert not got.counts.flags.writeable and not got.pass_rates.flags.writeable
        assert got.counts.dtype == np.int64


def test_trusted_allocation_refuses_counts_off_the_budget() -> None:
    from coba_rl.types import _trusted_allocation

    counts = np.array([2, 3], dtype=np.int64)
    with pytest.raises(AssertionError, match="sum to 5, not to the budget 6"):
        _trusted_allocation(counts, 6, np.array([0.1, 0.2]))
