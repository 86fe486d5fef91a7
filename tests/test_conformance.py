"""Replay the vectors recorded from the authors' released allocator (see data/conformance)."""

from __future__ import annotations

import json
import warnings
from typing import Any

import numpy as np
import pytest

import coba_rl
from conftest import DATA

CONF = DATA / "conformance"


def _load(name: str) -> list[dict[str, Any]]:
    with open(CONF / name, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


PAPER = _load("coba_paper.jsonl")
RELEASE = _load("coba_release.jsonl")


def test_vectors_are_present() -> None:
    assert len(PAPER) >= 20
    assert len(RELEASE) >= 20


@pytest.mark.parametrize("vec", PAPER, ids=[v["name"] for v in PAPER])
def test_paper_vector(vec: dict[str, Any]) -> None:
    cfg = coba_rl.CoBAConfig(
        variant="paper", n_low=vec["n_low"], n_up=vec["n_up"], kappa=vec["kappa"]
    )
    stats = coba_rl.BatchStats(pass_rates=vec["pass_rates"], failure_rate=vec["failure_rate"])
    a = coba_rl.allocate(stats, vec["budget"], cfg)
    assert a.counts.tolist() == vec["expected_counts"]
    assert a.alpha == pytest.approx(vec["expected_alpha"], abs=1e-12)
    assert a.beta == pytest.approx(vec["expected_beta"], abs=1e-12)
    if len(vec["pass_rates"]) > 0 and vec["budget"] > len(vec["pass_rates"]) * vec["n_low"]:
        assert a.tau == pytest.approx(vec["tau"], abs=1e-12)


def _spend_leftover_reference_rule(counts: list[int], budget: int, n_up: int) -> list[int]:
    """The documented rule for budget the reference leaves unspent, written plainly:
    repeat an even spread over prompts below n_up, first prompts first."""
    out = list(counts)
    left = budget - sum(out)
    while left > 0:
        avail = [i for i, c in enumerate(out) if c < n_up]
        assert avail, "budget exceeds capacity"
        per, rem = divmod(left, len(avail))
        for j, i in enumerate(avail):
            give = min(per + (1 if j < rem else 0), n_up - out[i])
            out[i] += give
            left -= give
    return out


@pytest.mark.parametrize("vec", RELEASE, ids=[v["name"] for v in RELEASE])
def test_release_vector(vec: dict[str, Any]) -> None:
    alloc = coba_rl.CoBAAllocator(coba_rl.CoBAConfig(variant="release", **vec["config"]))
    shape: tuple[float, float] | None = None
    underspent = 0
    for event in vec["events"]:
        if event["op"] == "update":
            alloc.update(event["prompt_ids"], event["rewards"])
            shape = (event["expected_alpha"], event["expected_beta"])
            continue
        ids, budget, expected = event["prompt_ids"], event["budget"], event["expected_counts"]
        below_floor = budget < len(ids) * vec["config"]["n_low"]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            a = alloc.allocate(ids, budget)
        assert any(issubclass(w.category, coba_rl.BudgetWarning) for w in caught) == below_floor
        if shape is not None:
            assert a.alpha == pytest.approx(shape[0], abs=1e-12)
            assert a.beta == pytest.approx(shape[1], abs=1e-12)
        assert int(a.counts.sum()) == budget
        if sum(expected) == budget:
            assert a.counts.tolist() == expected
        else:
            # The reference left budget unspent here; we spend it by the documented rule.
            underspent += 1
            assert (a.counts >= np.array(expected)).all()
            assert a.counts.tolist() == _spend_leftover_reference_rule(
                expected, budget, vec["config"]["n_up"]
            )
    assert underspent <= 4
