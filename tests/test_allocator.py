"""The stateful allocator and its tracker: windows, shaping, persistence, stress."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import coba_rl
from coba_rl import PassRateTracker


def _rollouts(
    ids: list[Any], counts: list[int], rates: list[float], rng: np.random.Generator
) -> tuple[list[Any], list[float]]:
    rows = [i for i, c in zip(ids, counts, strict=False) for _ in range(c)]
    rewards = [
        float(rng.random() < p) for p, c in zip(rates, counts, strict=False) for _ in range(c)
    ]
    return rows, rewards


class TestTracker:
    def test_window_keeps_last_appearances(self) -> None:
        t = PassRateTracker(window=2)
        t.record([1, 1], [1.0, 1.0])
        t.record([1, 1], [0.0, 0.0])
        assert t.pass_rates([1]).tolist() == [0.5]
        t.record([1, 1, 1, 1], [0.0, 0.0, 0.0, 1.0])
        # last two appearances: (0 of 2) and (1 of 4)
        assert t.pass_rates([1]).tolist() == [pytest.approx(1 / 6)]

    def test_lookup_never_grows(self) -> None:
        t = PassRateTracker()
        t.record(["a"], [1.0])
        t.pass_rates(["b", "c", "a"])
        t.lookup(["zzz"])
        assert len(t) == 1

    def test_step_fractions_in_first_seen_order(self) -> None:
        t = PassRateTracker()
        t.record([5, 3], [1.0, 0.0])
        out = t.record([3, 5, 9, 3], [1.0, 0.0, 1.0, 1.0])
        assert out.tolist() == [0.0, 1.0, 1.0]  # slots: 5, 3, 9

    def test_success_reward(self) -> None:
        t = PassRateTracker()
        t.record([0, 0, 0], [1.0, -1.0, -1.0], success_reward=1.0)
        assert t.pass_rates([0]).tolist() == [pytest.approx(1 / 3)]

    def test_mixed_id_kinds_rejected(self) -> None:
        t = PassRateTracker()
        t.record([1], [1.0])
        with pytest.raises(TypeError, match="holds int prompt ids; got str"):
            t.pass_rates(["1"])

    def test_state_round_trip(self) -> None:
        t = PassRateTracker(window=3)
        for k in range(5):
            t.record([k, k + 1, k + 2], [1.0, 0.0, float(k % 2)])
        u = PassRateTracker.from_state_dict(json.loads(json.dumps(t.state_dict())))
        ids = list(range(10))
        np.testing.assert_array_equal(t.pass_rates(ids), u.pass_rates(ids))
        assert u.state_dict() == t.state_dict()

    def test_million_ids_stay_compact(self) -> None:
        t = PassRateTracker()
        n = 1_000_000
        ids = np.arange(n, dtype=np.int64) * 7
        t.record(ids, np.ones(n))
        # arrays only: keys + order + (succ, total) + appearances = 5 int64 per id
        assert t.nbytes() <= 5 * 8 * n
        assert t.pass_rates([7, 8]).tolist()[0] == 1.0


class TestAllocator:
    def test_first_allocation_uses_initial_shape(self) -> None:
        a = coba_rl.CoBAAllocator().allocate([1, 2], 8)
        assert (a.alpha, a.beta) == (9.0, 2.0)

    def test_shape_follows_failure_rate(self) -> None:
        alloc = coba_rl.CoBAAllocator(coba_rl.CoBAConfig(window=2))
        alloc.update([1, 1, 2, 2], [0.0, 0.0, 1.0, 0.0])  # F_1 = 1 - mean(0, 0.5) = 0.75
        assert alloc.failure_rate == pytest.approx(0.75)
        assert alloc.alpha == pytest.approx(1 + 9 * 0.75)
        alloc.update([1, 1], [1.0, 1.0])  # F_2 = 0; F_bar = 0.375 -> sigmoid
        f_tilde = 1 / (1 + np.exp(-10 * (0.375 - 0.5)))
        assert alloc.alpha == pytest.approx(1 + 9 * f_tilde)
        assert alloc.alpha + alloc.beta == pytest.approx(11.0)

    def test_empty_update_keeps_shape(self) -> None:
        alloc = coba_rl.CoBAAllocator()
        alloc.update([], [])
        assert (alloc.alpha, alloc.beta) == (9.0, 2.0)
        assert alloc.step == 1

    def test_string_ids(self) -> None:
        alloc = coba_rl.CoBAAllocator(coba_rl.CoBAConfig(n_up=16))
        alloc.update(["q1", "q1", "q2", "q2"], [1.0, 0.0, 0.0, 0.0])
        a = alloc.allocate(["q2", "q1", "q3"], 24)
        assert int(a.counts.sum()) == 24
        assert a.n_unseen == 1

    def test_save_load_resume_is_identical(self, tmp_path: Path) -> None:
        rng = np.random.default_rng(1)
        cfg = coba_rl.CoBAConfig(window=3, n_up=32)
        alloc = coba_rl.CoBAAllocator(cfg)
        ids = list(range(20))
        for _ in range(4):
            c = alloc.allocate(ids, 160).counts.tolist()
            alloc.update(*_rollouts(ids, c, list(rng.random(20)), rng))
        alloc.save(tmp_path / "s.json")
        resumed = coba_rl.CoBAAllocator.load(tmp_path / "s.json")
        a, b = alloc.allocate(ids, 160), resumed.allocate(ids, 160)
        assert a.counts.tolist() == b.counts.tolist()
        assert (a.alpha, a.beta) == (b.alpha, b.beta)
        assert resumed.state_dict() == alloc.state_dict()

    def test_resume_in_another_process(self, tmp_path: Path) -> None:
        alloc = coba_rl.CoBAAllocator(coba_rl.CoBAConfig(variant="release", window=2))
        rng = np.random.default_rng(2)
        ids = [f"prompt-{i}" for i in range(30)]
        for _ in range(3):
            c = alloc.allocate(ids, 240).counts.tolist()
            alloc.update(*_rollouts(ids, c, list(rng.random(30)), rng))
        path = tmp_path / "state.json"
        alloc.save(path)
        code = (
            "import json, sys, coba_rl\n"
            "a = coba_rl.CoBAAllocator.load(sys.argv[1])\n"
            "ids = [f'prompt-{i}' for i in range(30)]\n"
            "print(json.dumps(a.allocate(ids, 240).counts.tolist()))\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", code, str(path)],
            capture_output=True,
            text=True,
            check=True,
            env={
                "PYTHONHASHSEED": "123",
                "PATH": "",
                "PYTHONPATH": os.environ.get("PYTHONPATH", ""),
            },
        )
        assert json.loads(out.stdout) == alloc.allocate(ids, 240).counts.tolist()

    def test_load_state_dict_requires_same_config(self) -> None:
        a = coba_rl.CoBAAllocator(coba_rl.CoBAConfig(window=2))
        b = coba_rl.CoBAAllocator(coba_rl.CoBAConfig(window=3))
        with pytest.raises(ValueError, match=r"different config \(fields \['window'\]\)"):
            b.load_state_dict(a.state_dict())

    def test_failed_load_leaves_allocator_untouched(self) -> None:
        alloc = coba_rl.CoBAAllocator()
        alloc.update([1, 1, 2, 2], [1.0, 0.0, 0.0, 0.0])
        before = alloc.state_dict()
        bad = alloc.state_dict()
        bad["tracker"]["successes"] = [[5], [0]]  # more successes than rollouts
        with pytest.raises(ValueError, match="successes exceed totals"):
            alloc.load_state_dict(bad)
        assert alloc.state_dict() == before


@given(
    seed=st.integers(0, 2**32 - 1),
    variant=st.sampled_from(["paper", "release"]),
    window=st.integers(1, 3),
)
def test_stress_update_allocate_roundtrip(seed: int, variant: str, window: int) -> None:
    """Random update/allocate/state round trips with an invariant check after each step."""
    rng = np.random.default_rng(seed)
    cfg = coba_rl.CoBAConfig(variant=variant, window=window, n_low=2, n_up=24)
    alloc = coba_rl.CoBAAllocator(cfg)
    universe = np.arange(60)
    true_p = rng.random(60)
    for _ in range(12):
        m = int(rng.integers(0, 12))
        ids = rng.choice(universe, size=m, replace=False)
        budget = int(rng.integers(0, m * cfg.n_up + 1)) if m else 0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", coba_rl.BudgetWarning)
            a = alloc.allocate(ids, budget)
        assert int(a.counts.sum()) == budget
        assert (a.counts <= cfg.n_up).all()
        if budget >= m * cfg.n_low:
            assert (a.counts >= cfg.n_low).all()
        rows, rewards = _rollouts(ids.tolist(), a.counts.tolist(), true_p[ids].tolist(), rng)
        alloc.update(rows, rewards)
        alloc._check()
        if rng.random() < 0.3:
            restored = coba_rl.CoBAAllocator.from_state_dict(
                json.loads(json.dumps(alloc.state_dict()))
            )
            restored._check()
            assert restored.state_dict() == alloc.state_dict()
            alloc = restored
