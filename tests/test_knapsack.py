"""Knapsack-RL: the value, each released rule and quirk, the exact solve, the estimator."""

from __future__ import annotations

import json
import math
import warnings
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import coba_rl
from coba_rl import KnapsackConfig, RolloutHistory, knapsack_allocate, knapsack_value
from coba_rl.knapsack import _value_table, knapsack_gains
from coba_rl.solvers import dp, objective
from test_contract import plain_state

NAN = math.nan


def _alloc(rates: list[float], budget: int, **cfg: Any) -> list[int]:
    a = knapsack_allocate(coba_rl.BatchStats(pass_rates=rates), budget, KnapsackConfig(**cfg))
    assert int(a.counts.sum()) == budget
    return a.counts.tolist()


class TestValue:
    def test_hand_values(self) -> None:
        # p = 1/3, n = 2: (1 - 1/9 - 4/9) * (1/3) * (4/9) = 16/243
        assert float(knapsack_value(2, 1 / 3)) == pytest.approx(16 / 243, rel=1e-14)
        # p = 1/2, n = 3: (1 - 1/8 - 1/8) * (1/2) * (1/4) = 3/32
        assert float(knapsack_value(3, 0.5)) == pytest.approx(3 / 32, rel=1e-14)
        assert knapsack_value([1, 5, 50], 0.0).tolist() == [0.0, 0.0, 0.0]
        assert knapsack_value([1, 5, 50], 1.0).tolist() == [0.0, 0.0, 0.0]

    def test_information_gain_peaks_at_one_third(self) -> None:
        grid = np.linspace(0.001, 0.999, 999)
        v = knapsack_value(10_000, grid)  # the first factor is 1: only p (1 - p)^2 is left
        assert grid[int(np.argmax(v))] == pytest.approx(1 / 3, abs=1e-3)

    def test_table_is_the_value_at_float32_pass_rates(self) -> None:
        p = np.array([0.1, 0.3, 0.77, 0.999])
        p32 = p.astype(np.float32).astype(np.float64)
        n = np.arange(3, 41)
        np.testing.assert_allclose(
            _value_table(p, 3, 40), knapsack_value(n[None, :], p32[:, None]), rtol=1e-12
        )

    @given(st.lists(st.floats(0.001, 0.999), min_size=1, max_size=8), st.integers(1, 5))
    def test_gains_start_with_the_value_and_never_increase(
        self, p: list[float], n_low: int
    ) -> None:
        n_up = n_low + 20
        g = knapsack_gains(p, n_low, n_up)
        p32 = np.array(p, dtype=np.float32).astype(np.float64)
        np.testing.assert_allclose(g[:, 0], knapsack_value(n_low + 1, p32), rtol=1e-12)
        np.testing.assert_allclose(g.sum(axis=1), knapsack_value(n_up, p32), rtol=1e-9, atol=1e-15)
        assert (g[:, 1:] <= g[:, :-1] + 1e-15).all()


class TestRules:
    def test_floors_without_spare(self) -> None:
        # B = floors exactly: unseen get unseen_n, everyone else n_low.
        assert _alloc([0.0, 0.5, 1.0, NAN], 2 + 2 + 2 + 8, unseen_n=8) == [2, 2, 2, 8]

    def test_unseen_n_defaults_to_budget_over_m(self) -> None:
        # B = 20: B // M = 6 for the unseen prompt; floors 2 + 6 + 2 = 10; no effective
        # prompt, so the spare 10 goes evenly to the p = 0 and unseen prompts.
        assert _alloc([0.0, NAN, 1.0], 20, fallback=False) == [7, 11, 2]

    def test_no_effective_prompts_feeds_zero_and_unseen(self) -> None:
        # floors 2, 4, 2, 2 = 10; spare 6 over [p=0 #0, unseen #1, p=0 #3] = 2 each.
        assert _alloc([0.0, NAN, 1.0, 0.0], 16, unseen_n=4) == [4, 6, 2, 4]

    def test_no_effective_and_no_zero_prompts_gives_the_even_split(self) -> None:
        assert _alloc([1.0, 1.0, 1.0], 10) == [4, 3, 3]

    def test_fallback_compares_need_with_spare_budget(self) -> None:
        # One effective prompt, p = 0.5: need = int(ln 0.1 / ln 0.5) = 3 (includes the floor).
        # Spare 3: not below, so no fallback; the knapsack spends all 3 on the p = 0.5 prompt.
        assert _alloc([0.5, 0.0], 4 + 3) == [5, 2]
        # Spare 4: the excess 1 goes to the p = 0 prompt, the knapsack spends the need 3.
        assert _alloc([0.5, 0.0], 4 + 4) == [5, 3]
        assert _alloc([0.5, 0.0], 4 + 4, fallback=False) == [6, 2]

    def test_fallback_counts_unseen_prompts_as_zero(self) -> None:
        # Kept quirk: prompts without an estimate share the excess with p = 0 prompts.
        # floors 2, 2, 4, 2 = 10; spare 20; need(0.5) = 3: excess 17 over [#1, #2] = 9, 8.
        assert _alloc([0.5, 0.0, NAN, 1.0], 30, unseen_n=4) == [5, 11, 12, 2]

    def test_fallback_goes_to_full_pass_prompts_when_no_zero(self) -> None:
        # floors 2, 2, 2 = 6; spare 10; need 3; excess 7 over the p = 1 prompts: 4, 3.
        assert _alloc([1.0, 0.5, 1.0], 16) == [6, 5, 5]

    def test_crash_fixed_all_effective_fallback_is_skipped(self) -> None:
        # Every prompt effective and the need (3 + 3) below the spare: the reference
        # divides by zero and misses its budget. We skip the fallback.
        rates = [0.5, 0.5]
        assert _alloc(rates, 40, n_up=64) == _alloc(rates, 40, n_up=64, fallback=False)
        assert _alloc(rates, 40, n_up=64) == [20, 20]

    def test_zero_extra_scores_zero(self) -> None:
        # p = 0.5: g = V(3) = 3/32, then V(4) - V(3) = 1/64. p = 0.1: g = V(3) = 0.02187.
        # Scoring zero extra as 0 makes the first extra worth all of V(3): the second unit
        # goes to p = 0.1 (0.02187 > 1/64). Scored from V(n_low) it would not
        # (V(3) - V(2) = 0.00729 < 1/64) and the counts would be [4, 2].
        assert _alloc([0.5, 0.1], 6, fallback=False) == [3, 3]

    def test_uncapped_leftover_exceeds_n_up(self) -> None:
        # Caps take 2 extra each (12); the leftover 4 goes evenly, first ones first.
        assert _alloc([0.5, 0.5, 0.5], 16, n_up=4, fallback=False) == [6, 5, 5]

    def test_ties_break_by_position(self) -> None:
        assert _alloc([0.3, 0.3, 0.3], 3 * 2 + 2, fallback=False) == [3, 3, 2]

    @given(
        st.lists(st.floats(0.01, 0.99), min_size=1, max_size=10),
        st.integers(1, 4),
        st.integers(0, 12),
        st.data(),
    )
    def test_greedy_reaches_the_dp_objective(
        self, rates: list[float], n_low: int, width: int, data: st.DataObject
    ) -> None:
        n_up = n_low + width
        m = len(rates)
        budget = data.draw(st.integers(m * n_low, m * n_up))
        counts = _alloc(rates, budget, n_low=n_low, n_up=n_up, fallback=False)
        gains = knapsack_gains(rates, n_low, n_up)
        best = dp(gains, budget, n_low, n_up)
        assert objective(gains, counts, n_low) == pytest.approx(
            objective(gains, best, n_low), rel=1e-12, abs=1e-15
        )

    @given(
        st.lists(
            st.one_of(st.sampled_from([0.0, 1.0, NAN]), st.floats(0.01, 0.99)),
            min_size=1,
            max_size=12,
        ),
        st.integers(0, 400),
        st.booleans(),
    )
    def test_budget_and_floors_always_hold(self, rates: list[float], budget: int, fb: bool) -> None:
        cfg = KnapsackConfig(n_low=2, n_up=16, fallback=fb)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", coba_rl.BudgetWarning)
            a = knapsack_allocate(coba_rl.BatchStats(pass_rates=rates), budget, cfg)
        assert int(a.counts.sum()) == budget
        if a.method == "knapsack":
            assert (a.counts >= cfg.n_low).all()
            unseen = np.isnan(np.array(rates))
            assert (a.counts[unseen] >= budget // len(rates)).all()


class TestBadInput:
    def test_budget_below_floor_warns_and_splits(self) -> None:
        with pytest.warns(coba_rl.BudgetWarning, match="below M \\* n_low"):
            assert _alloc([0.5, 0.2, 0.1], 5) == [2, 2, 1]

    def test_explicit_unseen_n_above_budget_warns(self) -> None:
        with pytest.warns(coba_rl.BudgetWarning, match="below the floors of the batch"):
            assert _alloc([NAN, 0.5], 9, unseen_n=8) == [5, 4]

    def test_budget_type_and_sign(self) -> None:
        stats = coba_rl.BatchStats(pass_rates=[0.5])
        with pytest.raises(TypeError, match="budget must be an int"):
            knapsack_allocate(stats, 4.0)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="budget must be non-negative"):
            knapsack_allocate(stats, -1)
        with pytest.raises(ValueError, match="cannot be spent on an empty batch"):
            knapsack_allocate(coba_rl.BatchStats(pass_rates=[]), 3)
        assert knapsack_allocate(coba_rl.BatchStats(pass_rates=[]), 0).counts.tolist() == []

    @pytest.mark.parametrize(
        ("kwargs", "match"),
        [
            ({"n_low": 5, "n_up": 4}, "n_low \\(5\\) must not exceed n_up \\(4\\)"),
            ({"unseen_n": 1}, "unseen_n \\(1\\) must be at least n_low \\(2\\)"),
            ({"confidence": 1.0}, "less than 1"),
            ({"min_n": 2}, "Extra inputs are not permitted"),
        ],
    )
    def test_config(self, kwargs: dict[str, Any], match: str) -> None:
        with pytest.raises(ValueError, match=match):
            KnapsackConfig(**kwargs)


def _naive_estimate(history: dict[Any, list[list[float]]], pid: Any, k: int, least: int) -> float:
    """The estimator, written plainly over per-prompt Python lists of visits."""
    visits = history.get(pid, [])
    flat = [r for v in visits for r in v]
    if len(flat) < least:
        return NAN
    last = visits[-1]
    if len(last) >= k:
        return sum(last) / len(last)
    tail = flat[-k:]
    return sum(tail) / len(tail)


class TestRolloutHistory:
    def test_needs_min_rollouts(self) -> None:
        h = RolloutHistory()
        h.record([1] * 7, [1.0] * 7)
        assert math.isnan(h.pass_rates([1])[0])
        h.record([1], [0.0])
        assert h.pass_rates([1]).tolist() == [7 / 8]

    def test_last_visit_of_sixteen_or_more_wins(self) -> None:
        h = RolloutHistory()
        h.record([1] * 20, [1.0] * 20)
        h.record([1] * 20, [1.0] * 5 + [0.0] * 15)
        assert h.pass_rates([1]).tolist() == [0.25]

    def test_short_visit_uses_last_sixteen_across_visits(self) -> None:
        h = RolloutHistory()
        h.record([1] * 10, [1.0] * 10)
        h.record([1] * 10, [0.0] * 10)
        assert h.pass_rates([1]).tolist() == [6 / 16]

    def test_interleaved_rollouts_keep_their_order(self) -> None:
        h = RolloutHistory(recent=2)
        h.record([1, 2, 1, 2, 1], [1.0, 0.0, 0.0, 0.0, 0.0])  # 1: 1, 0, 0
        h.record([1, 2], [1.0, 1.0])  # 1: last 2 = 0, 1; 2: 0, 1
        assert h.pass_rates([1, 2], min_rollouts=1).tolist() == [0.5, 0.5]

    def test_lookups_never_grow(self) -> None:
        h = RolloutHistory()
        h.record(["a"], [1.0])
        h.pass_rates(["b", "c"])
        h.rollout_counts(["d"])
        assert len(h) == 1
        assert h.rollout_counts(["a", "z"]).tolist() == [1, 0]

    @given(
        seed=st.integers(0, 2**32 - 1),
        k=st.integers(1, 6),
        least=st.integers(1, 10),
    )
    def test_matches_the_naive_estimator(self, seed: int, k: int, least: int) -> None:
        rng = np.random.default_rng(seed)
        h = RolloutHistory(recent=k)
        naive: dict[Any, list[list[float]]] = {}
        for _ in range(8):
            ids = rng.choice(6, size=int(rng.integers(0, 20)))
            rewards = (rng.random(ids.size) < 0.4).astype(float)
            h.record(ids, rewards)
            for pid in np.unique(ids).tolist():
                naive.setdefault(pid, []).append(rewards[ids == pid].tolist())
            h._check()
            got = h.pass_rates(list(range(7)), min_rollouts=least)
            want = [_naive_estimate(naive, pid, k, least) for pid in range(7)]
            np.testing.assert_array_equal(got, np.array(want))

    def test_state_round_trip(self) -> None:
        h = RolloutHistory(recent=3)
        h.record([1, 1, 2, 1], [1.0, 0.0, 1.0, 1.0])
        h.record([2, 2, 2, 2], [0.0, 0.0, 1.0, 0.0])
        g = RolloutHistory.from_state_dict(json.loads(json.dumps(h.state_dict())))
        assert g.state_dict() == h.state_dict()
        np.testing.assert_array_equal(g.pass_rates([1, 2], 1), h.pass_rates([1, 2], 1))

    @pytest.mark.parametrize(
        ("mutate", "match"),
        [
            (lambda d: d["ring"][0].__setitem__(0, 2), "ring outcomes must be 0 or 1"),
            (lambda d: d.update(rollouts=[1, 1]), "last visit exceeds rollouts"),
            (lambda d: d.update(ring=[[1, 1, 1]]), "ring has shape"),
            (lambda d: d.update(recent=0), "recent must be an int >= 1"),
            (lambda d: d.pop("ring"), "history state has fields"),
        ],
    )
    def test_corrupt_state(self, mutate: Any, match: str) -> None:
        h = RolloutHistory(recent=3)
        h.record([1, 1, 2, 2, 2], [1.0, 0.0, 1.0, 1.0, 0.0])
        state = plain_state(h.state_dict())  # arrays as lists, to edit single entries
        mutate(state)
        with pytest.raises(ValueError, match=match):
            RolloutHistory.from_state_dict(state)


class TestKnapsackRLAllocator:
    def test_allocates_from_its_estimates(self) -> None:
        cfg = KnapsackConfig(n_up=32, min_rollouts=4)
        alloc = coba_rl.KnapsackRLAllocator(cfg)
        rng = np.random.default_rng(3)
        ids = list(range(12))
        for _ in range(3):
            counts = alloc.allocate(ids, 96).counts.tolist()
            rows = [i for i, c in zip(ids, counts, strict=True) for _ in range(c)]
            alloc.update(rows, (rng.random(len(rows)) < 0.3).astype(float))
        rates = alloc.pass_rates(ids)
        a = alloc.allocate(ids, 96)
        b = knapsack_allocate(coba_rl.BatchStats(pass_rates=rates), 96, cfg)
        assert a.counts.tolist() == b.counts.tolist()
        np.testing.assert_array_equal(a.pass_rates, rates)
        assert a.method == "knapsack"

    def test_history_length_must_match_config(self) -> None:
        state = coba_rl.KnapsackRLAllocator().state_dict()
        state["history"]["recent"] = 4
        state["history"]["ring"] = []
        with pytest.raises(ValueError, match="history keeps 4 recent rollouts, config says 16"):
            coba_rl.KnapsackRLAllocator.from_state_dict(state)
