"""Hand-worked cases at the edges of the allocation rules.

Each case sits where a plausible one-line slip changes the answer: a bucket edge moved
by 0.01, a success counted as ``reward > 0``, Knapsack-RL's uncapped leftover spread over
the wrong prompts, a float32 rounding dropped, a running minimum or a tie order lost.
Every expected value is worked out by hand from the rules (docs/rules.md), or with plain
Python and numpy arithmetic written out in the test; none comes from the library.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

import coba_rl
from coba_rl import solvers

# -- the release variant: bucket edges ------------------------------------------------------


def _release(rates: list[float], budget: int, **kwargs: object) -> list[int]:
    cfg = coba_rl.CoBAConfig(variant="release", n_low=2, n_up=64, **kwargs)  # type: ignore[arg-type]
    a = coba_rl.allocate(coba_rl.BatchStats(pass_rates=rates, failure_rate=0.5), budget, cfg)
    return [int(c) for c in a.counts]


def _explore_budget(spare: int, n_explore: int, m: int) -> int:
    """``E = int(R * r)`` of the release rule, written out."""
    if n_explore > m / 2:
        ratio = 0.8
    elif n_explore > 0:
        ratio = 0.6 + (0.8 - 0.6) * (2 * n_explore / m)
    else:
        ratio = 0.6
    return int(spare * ratio)


@pytest.mark.parametrize("hard", [0.0, 0.049])
@pytest.mark.parametrize("explore", [0.05, 0.055])
def test_release_hard_edge(hard: float, explore: float) -> None:
    # hard is p < 0.05, so 0.05 and 0.055 are explore prompts. M = 2, B = 40, R = 36.
    # One explore prompt of two: r = 0.6 + 0.2 * (2 * 1 / 2) = 0.8, E = int(28.8) = 28.
    # The greedy on a single prompt gives it all 28 (cap 64): 2 + 28 = 30.
    # Leftover 36 - 28 = 8 goes to the hard bucket first; one hard prompt takes
    # int(8 * w / w) = 8 of it: 2 + 8 = 10.
    assert _explore_budget(36, 1, 2) == 28
    assert _release([hard, explore], 40) == [10, 30]


@pytest.mark.parametrize("explore", [0.99, 0.985])
def test_release_easy_edge_keeps_0_99_in_explore(explore: float) -> None:
    # easy is p > 0.99, so 0.99 is an explore prompt; 1.0 is easy. M = 2, B = 40, R = 36.
    # E = 28 to the explore prompt (2 + 28 = 30). Leftover 8: no hard prompt, so the
    # explore bucket takes it (min(int(8 * w / w), 64 - 30) = 8): 38. Easy stays at 2.
    assert _release([1.0, explore], 40) == [2, 38]


@pytest.mark.parametrize("easy", [0.995, 1.0])
def test_release_easy_edge_puts_0_995_in_easy(easy: float) -> None:
    # 0.995 > 0.99 is easy: as above, the explore prompt 0.5 gets 30 + 8 = 38.
    assert _release([easy, 0.5], 40) == [2, 38]


def test_release_all_edges_in_one_batch() -> None:
    # M = 6, n_low = 2, n_up = 64, B = 12 + 48: R = 48.
    # hard: 0.0, 0.049; explore: 0.05, 0.99 (2 of 6); easy: 0.995, 1.0.
    # r = 0.6 + 0.2 * (2 * 2 / 6), E = int(48 * r).
    rates = [0.0, 0.049, 0.05, 0.99, 0.995, 1.0]
    e = _explore_budget(48, 2, 6)
    assert e == 35  # int(48 * 0.7333...) = int(35.2)
    counts = _release(rates, 60)
    # The greedy spends E on the two explore prompts only (neither reaches the cap).
    assert counts[2] + counts[3] == 4 + e
    assert counts[4:] == [2, 2]  # easy prompts get only the floor
    # Leftover 48 - E = 14 goes to the hard bucket, weights w = 1 - p:
    # sum_w = 0.999999 + 0.951; first int(14 * 0.999999 / sum_w), then the second
    # prompt int(rest * 0.951 / sum_w), then the remainder evenly, first ones first.
    left = 48 - e
    sum_w = 0.999999 + 0.951
    g0 = int(left * 0.999999 / sum_w)
    g1 = int((left - g0) * 0.951 / sum_w)
    rest = left - g0 - g1
    g0, g1 = g0 + (rest + 1) // 2, g1 + rest // 2
    # 13 left: int(13 * 0.999999 / 1.950999) = 6, int(7 * 0.951 / 1.950999) = 3, 4 evenly
    assert (g0, g1) == (6 + 2, 3 + 2)
    assert counts[:2] == [2 + g0, 2 + g1]


# -- success is an exact match of the success reward ----------------------------------------

# Prompt 7: rewards 1.0, 0.5, 0.9, 1.0, 0.0, 0.5 -> 2 exact successes of 6 = 1/3.
# Prompt 8: rewards 0.5, 0.5, 0.5, 1.0           -> 1 of 4 = 1/4.
GRADED_IDS = [7] * 6 + [8] * 4
GRADED_REWARDS = [1.0, 0.5, 0.9, 1.0, 0.0, 0.5, 0.5, 0.5, 0.5, 1.0]


def _quietly(fn: object, *args: object) -> object:
    # A warning about graded rewards under exact match is allowed; the rates are checked.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args)  # type: ignore[operator]


def test_tracker_counts_only_exact_successes() -> None:
    t = coba_rl.PassRateTracker()
    fractions = _quietly(t.record, GRADED_IDS, GRADED_REWARDS)
    assert np.asarray(fractions).tolist() == [2 / 6, 1 / 4]
    assert t.pass_rates([7, 8]).tolist() == [2 / 6, 1 / 4]


def test_coba_allocator_counts_only_exact_successes() -> None:
    alloc = coba_rl.CoBAAllocator()
    _quietly(alloc.update, GRADED_IDS, GRADED_REWARDS)
    assert alloc.pass_rates([7, 8]).tolist() == [2 / 6, 1 / 4]
    # F_1 = 1 - mean(1/3, 1/4), window 1
    assert alloc.failure_rate == pytest.approx(1 - (1 / 3 + 1 / 4) / 2, abs=1e-15)


def test_knapsack_allocator_counts_only_exact_successes() -> None:
    alloc = coba_rl.KnapsackRLAllocator(coba_rl.KnapsackConfig(min_rollouts=4))
    _quietly(alloc.update, GRADED_IDS, GRADED_REWARDS)
    # Prompt 7's visit has 6 < 16 rollouts: the mean of its last 6 outcomes, 2/6.
    assert alloc.pass_rates([7, 8]).tolist() == [2 / 6, 1 / 4]


def test_success_reward_other_than_one_is_an_exact_match() -> None:
    t = coba_rl.PassRateTracker()
    _quietly(t.record, [1, 1, 1, 1], [2.0, 1.0, 2.0, 0.5], 2.0)
    assert t.pass_rates([1]).tolist() == [0.5]


# -- Knapsack-RL rule 5: the uncapped leftover goes to the effective prompts only -----------


def test_knapsack_leftover_goes_only_to_effective_prompts() -> None:
    # Without the fallback: floors unseen_n = 100 // 5 = 20 for the NaN prompt, 2 for the
    # rest (28 in all), spare 72. Effective prompts: 0.5 and 0.25. The knapsack fills
    # both to the cap 8 (6 + 6 = 12 units); the 60 left go evenly to them, 30 each,
    # beyond the cap. p = 0, p = 1 and the unseen prompt keep their floors.
    cfg = coba_rl.KnapsackConfig(n_low=2, n_up=8, fallback=False)
    stats = coba_rl.BatchStats(pass_rates=[math.nan, 0.0, 0.5, 1.0, 0.25])
    a = coba_rl.knapsack_allocate(stats, 100, cfg)
    assert a.counts.tolist() == [20, 2, 38, 2, 38]


def test_knapsack_leftover_after_the_fallback() -> None:
    # B = 20, floors 4, spare 16. Need of p = 0.5: ln(0.1) / ln(0.5) = 3.32 -> 3 < 16,
    # so 16 - 3 = 13 go to the p = 0 prompt (2 + 13 = 15) and the knapsack gets 3.
    # It can place 2 (cap 4); the 1 left goes to the effective prompt: 2 + 2 + 1 = 5.
    cfg = coba_rl.KnapsackConfig(n_low=2, n_up=4)
    a = coba_rl.knapsack_allocate(coba_rl.BatchStats(pass_rates=[0.0, 0.5]), 20, cfg)
    assert int(math.log(1 - 0.9) / math.log(0.5)) == 3
    assert a.counts.tolist() == [15, 5]


# -- Knapsack-RL rule 3: the need is rounded to float32 before truncation -----------------

# ln(1 - 0.9) / ln(P) = 9.9999999987 in float64, which float32 rounds to exactly 10.0.
P_NEAR_TEN = 0.7943282347


def test_knapsack_need_is_rounded_to_float32() -> None:
    need = math.log(1 - 0.9) / math.log(P_NEAR_TEN)
    assert 9.999999 < need < 10.0
    assert float(np.float32(need)) == 10.0
    # B = 32, floors 4, spare 28. Need 10 < 28: 18 go to the p = 0 prompt (2 + 18 = 20);
    # the knapsack spends the 10 on the one effective prompt (cap 128): 2 + 10 = 12.
    a = coba_rl.knapsack_allocate(coba_rl.BatchStats(pass_rates=[0.0, P_NEAR_TEN]), 32)
    assert a.counts.tolist() == [20, 12]


# -- the running minimum: a row that rises by an ulp ----------------------------------------

UP = math.nextafter(1.0, 2.0)


@pytest.mark.parametrize(("spare", "expected"), [(1, [3, 2]), (2, [4, 2]), (3, [4, 3])])
def test_greedy_on_a_row_that_rises_by_an_ulp(spare: int, expected: list[int]) -> None:
    # Row 1's second gain is an ulp above its first. The heap of Algorithm 1 only sees it
    # after taking the first, and ties go to the lowest row, so row 0 is served first:
    # spare 1 -> row 0; spare 2 -> row 0 twice (its 1.0 ties row 1's 1.0 and wins);
    # spare 3 -> then row 1's first, 1.0.
    gains = [[1.0, 1.0], [1.0, UP]]
    for solve in (solvers.greedy, solvers.greedy_heap):
        assert solve(gains, 4 + spare, 2, 4).tolist() == expected


def test_greedy_on_rows_that_rise_by_an_ulp_deep_in_the_row() -> None:
    # Row 0: 3, 2, 2. Row 1: 2.5, 2, 2 + ulp. Heap order: 3 (row 0), 2.5 (row 1), then
    # the 2s tie and row 0 wins both of its own; only then row 1's 2, then its 2 + ulp.
    # (Ranking the table by value alone would hand row 1's 2 + ulp out third.)
    two_up = math.nextafter(2.0, 3.0)
    gains = [[3.0, 2.0, 2.0], [2.5, 2.0, two_up]]
    expected = {1: [2, 1], 2: [2, 2], 3: [3, 2], 4: [4, 2], 5: [4, 3], 6: [4, 4]}
    for spare, counts in expected.items():
        for solve in (solvers.greedy, solvers.greedy_heap):
            assert solve(gains, 2 + spare, 1, 4).tolist() == counts


# -- slot order: the failure rate averages in the order ids were first recorded ------------


def test_failure_rate_sums_fractions_in_first_seen_order() -> None:
    # 0.1 + 0.2 + 0.3 != 0.3 + 0.2 + 0.1 in floating point, so the order in which the
    # step's fractions are averaged is visible in the last bit of the failure rate.
    alloc = coba_rl.CoBAAllocator()
    ids = [30] * 10 + [20] * 10 + [10] * 10
    rewards = [1.0] * 1 + [0.0] * 9 + [1.0] * 2 + [0.0] * 8 + [1.0] * 3 + [0.0] * 7
    alloc.update(ids, rewards)
    # first seen: 30 (0.1), 20 (0.2), 10 (0.3)
    assert alloc.failure_rate == 1.0 - (0.1 + 0.2 + 0.3) / 3
    # Call order 10, 20, 30 with 0.1, 0.2, 0.3; slot order is still 30, 20, 10.
    ids = [10] * 10 + [20] * 10 + [30] * 10
    alloc.update(ids, rewards)
    assert alloc.failure_rate == 1.0 - (0.3 + 0.2 + 0.1) / 3
    assert (0.1 + 0.2 + 0.3) != (0.3 + 0.2 + 0.1)  # the test can tell the orders apart


def test_tracker_reports_new_string_ids_in_first_seen_order() -> None:
    t = coba_rl.PassRateTracker()
    out = t.record(["b", "b", "a", "c", "c"], [1.0, 0.0, 1.0, 0.0, 0.0])
    assert out.tolist() == [0.5, 1.0, 0.0]  # b, a, c
    out = t.record(["d", "c", "a"], [1.0, 1.0, 0.0])
    assert out.tolist() == [0.0, 1.0, 1.0]  # slots: a, c, d
    assert t.state_dict()["ids"] == ["b", "a", "c", "d"]


@pytest.mark.parametrize(("spare", "expected"), [(5, [3] * 5 + [2] * 3), (10, [4, 4] + [3] * 6)])
def test_equal_rates_break_ties_by_position(spare: int, expected: list[int]) -> None:
    # Eight equal pass rates have equal gains: the first column goes to the first
    # prompts, then the second column, first prompts first.
    stats = coba_rl.BatchStats(pass_rates=[0.4] * 8, failure_rate=0.5)
    assert coba_rl.allocate(stats, 16 + spare).counts.tolist() == expected
