"""Replay the vectors recorded from Knapsack-RL's ``sampling_budget_by_knapsack``.

The contract (data/conformance/README.md): the multiset of (pass rate, count) pairs
equals the reference's, since prompts with equal pass rates are interchangeable and the
reference's DP breaks ties its own way; where the reference failed (``reference_error``)
the call succeeds and spends the budget exactly.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from typing import Any

import numpy as np
import pytest

import coba_rl
from coba_rl.knapsack import _knapsack_rule
from conftest import DATA


def _load() -> list[dict[str, Any]]:
    with open(DATA / "conformance" / "knapsack_rl.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


VECTORS = _load()


def _replay(vec: dict[str, Any]) -> tuple[list[float], coba_rl.Allocation, coba_rl.KnapsackConfig]:
    rates = [p if valid else math.nan for valid, p, _ in vec["reward_states"]]
    cfg = coba_rl.KnapsackConfig(
        n_low=vec["min_n"], n_up=vec["max_n"], confidence=vec["alpha"], unseen_n=vec["n"]
    )
    total_budget = len(rates) * vec["n"]
    assert total_budget == vec["total_budget"]
    a = coba_rl.knapsack_allocate(coba_rl.BatchStats(pass_rates=rates), total_budget, cfg)
    return rates, a, cfg


def _pairs(rates: list[float], counts: list[int]) -> Counter[tuple[str, int]]:
    # NaN != NaN, so key the pass rate by its repr ("nan" for no estimate).
    return Counter((repr(p), int(c)) for p, c in zip(rates, counts, strict=True))


def test_vectors_are_present() -> None:
    assert len(VECTORS) >= 20
    assert any("reference_error" in v for v in VECTORS)
    assert any(v.get("expected_fallback") for v in VECTORS)
    assert any(v.get("expected_fallback") is False for v in VECTORS)


@pytest.mark.parametrize("vec", VECTORS, ids=[v["name"] for v in VECTORS])
def test_knapsack_vector(vec: dict[str, Any]) -> None:
    rates, a, cfg = _replay(vec)
    assert int(a.counts.sum()) == vec["total_budget"]
    if "reference_error" in vec:
        assert a.method == "knapsack"
        return
    assert a.method == "knapsack"
    assert _pairs(rates, a.counts.tolist()) == _pairs(rates, vec["expected_counts"])
    rule = _knapsack_rule(np.array(rates), vec["total_budget"], cfg, vec["n"], True)
    assert rule.fallback == vec["expected_fallback"]


def test_reference_error_case_is_the_all_effective_fallback() -> None:
    """The recorded crash is the reference's defect (docs/rules.md, "When every prompt is
    effective"): every prompt effective and the fallback's need below the spare budget.
    We skip the fallback, which is the same as running without it."""
    crashed = [v for v in VECTORS if "reference_error" in v]
    assert crashed
    for vec in crashed:
        rates, a, cfg = _replay(vec)
        p = np.array(rates)
        assert ((p > 0) & (p < 1)).all()
        no_fallback = coba_rl.knapsack_allocate(
            coba_rl.BatchStats(pass_rates=rates),
            vec["total_budget"],
            cfg.model_copy(update={"fallback": False}),
        )
        assert a.counts.tolist() == no_fallback.counts.tolist()
