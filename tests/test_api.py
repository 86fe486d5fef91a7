"""The public API is hard to misuse: wrong objects, unknown values, equal values, metrics."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import coba_rl
from coba_rl import knapsack_allocate
from coba_rl.types import Allocation

STATS = coba_rl.BatchStats(pass_rates=[0.1, 0.5, 0.9], failure_rate=0.6)


# -- wrong objects get a TypeError naming the expected type ------------------------------------


@pytest.mark.parametrize(
    "config", [coba_rl.KnapsackConfig(), coba_rl.UniformConfig(), "paper", 11.0, [("n_up", 4)]]
)
def test_allocate_rejects_another_config(config: Any) -> None:
    with pytest.raises(
        TypeError, match=r"config must be a CoBAConfig.*got " + type(config).__name__
    ):
        coba_rl.allocate(STATS, 8, config)


@pytest.mark.parametrize("stats", [[0.1, 0.5, 0.9], np.array([0.1, 0.5]), {"pass_rates": [0.1]}])
def test_allocate_rejects_stats_that_are_not_batch_stats(stats: Any) -> None:
    with pytest.raises(TypeError, match=r"stats must be a BatchStats.*got " + type(stats).__name__):
        coba_rl.allocate(stats, 8)


@pytest.mark.parametrize("stats", [[0.1, 0.5, 0.9], np.array([0.1, 0.5])])
def test_knapsack_allocate_rejects_stats_that_are_not_batch_stats(stats: Any) -> None:
    with pytest.raises(TypeError, match=r"batch_stats must be a BatchStats"):
        knapsack_allocate(stats, 8)


@pytest.mark.parametrize("config", [coba_rl.CoBAConfig(), coba_rl.UniformConfig()])
def test_knapsack_allocate_rejects_another_config(config: Any) -> None:
    with pytest.raises(
        TypeError, match=r"config must be a KnapsackConfig.*got " + type(config).__name__
    ):
        knapsack_allocate(STATS, 8, config)


@pytest.mark.parametrize(
    ("cls", "expected", "wrong"),
    [
        (coba_rl.CoBAAllocator, "CoBAConfig", coba_rl.KnapsackConfig()),
        (coba_rl.CoBAAllocator, "CoBAConfig", coba_rl.UniformConfig()),
        (coba_rl.KnapsackRLAllocator, "KnapsackConfig", coba_rl.CoBAConfig()),
        (coba_rl.KnapsackRLAllocator, "KnapsackConfig", coba_rl.UniformConfig()),
        (coba_rl.UniformAllocator, "UniformConfig", coba_rl.CoBAConfig()),
        (coba_rl.UniformAllocator, "UniformConfig", coba_rl.KnapsackConfig()),
    ],
)
def test_allocators_reject_another_allocators_config(cls: Any, expected: str, wrong: Any) -> None:
    with pytest.raises(
        TypeError, match=rf"config must be a {expected}.*got {type(wrong).__name__}"
    ):
        cls(wrong)


def test_uniform_allocator_with_a_coba_config_never_writes_an_unloadable_file() -> None:
    # It used to be accepted, run and save, and then UniformAllocator.load refused the file.
    with pytest.raises(TypeError, match="UniformConfig"):
        coba_rl.UniformAllocator(coba_rl.CoBAConfig())  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("cls", "config_type", "data"),
    [
        (coba_rl.CoBAAllocator, coba_rl.CoBAConfig, {"n_up": 16, "kappa": 7.0}),
        (coba_rl.KnapsackRLAllocator, coba_rl.KnapsackConfig, {"n_up": 16}),
        (coba_rl.UniformAllocator, coba_rl.UniformConfig, {"window": 3}),
    ],
)
def test_allocators_validate_a_plain_dict(cls: Any, config_type: Any, data: dict[str, Any]) -> None:
    # Hydra and YAML users hold plain dicts: they are validated into the config type.
    alloc = cls(data)
    assert type(alloc.config) is config_type
    assert alloc.config == config_type(**data)
    with pytest.raises(ValueError, match="n_lo"):
        cls({**data, "n_lo": 2})


def test_allocate_validates_a_plain_dict() -> None:
    a = coba_rl.allocate(STATS, 12, {"n_up": 8, "variant": "release"})
    b = coba_rl.allocate(STATS, 12, coba_rl.CoBAConfig(n_up=8, variant="release"))
    assert a == b
    with pytest.raises(ValueError, match="n_lo"):
        coba_rl.allocate(STATS, 12, {"n_lo": 2})
    with pytest.raises(ValueError, match="n_up"):
        coba_rl.allocate(STATS, 12, {"n_up": 0})


def test_knapsack_allocate_validates_a_plain_dict() -> None:
    a = knapsack_allocate(STATS, 12, {"n_up": 8})
    assert a == knapsack_allocate(STATS, 12, coba_rl.KnapsackConfig(n_up=8))
    with pytest.raises(ValueError, match="kappa"):
        knapsack_allocate(STATS, 12, {"kappa": 11.0})


# -- one convention for "unknown": None ------------------------------------------------------


def test_unknown_scalars_are_none_not_nan() -> None:
    alloc = coba_rl.CoBAAllocator()
    assert alloc.failure_rate is None  # before any update
    a = alloc.allocate([1, 2], 8)
    assert a.failure_rate is None
    assert a.tau is None  # the even split runs no greedy
    alloc.update([1, 1, 2, 2], [1.0, 0.0, 0.0, 0.0])
    assert alloc.failure_rate == 0.75
    for baseline in (coba_rl.KnapsackRLAllocator(), coba_rl.UniformAllocator()):
        b = baseline.allocate([1, 2], 8)
        assert (b.alpha, b.beta, b.tau, b.failure_rate) == (None, None, None, None)


def test_release_variant_reports_none_when_its_greedy_does_not_run() -> None:
    # Every pass rate in the hard bucket: the explore greedy never runs.
    stats = coba_rl.BatchStats(pass_rates=[0.0, 0.01], failure_rate=0.9)
    a = coba_rl.allocate(stats, 10, coba_rl.CoBAConfig(variant="release", n_up=8))
    assert a.tau is None
    assert a.alpha is not None and math.isfinite(a.alpha)


@pytest.mark.parametrize("field", ["alpha", "beta", "tau", "failure_rate"])
def test_allocation_refuses_nan_for_unknown(field: str) -> None:
    with pytest.raises(ValueError, match=rf"{field}.*None"):
        Allocation(counts=np.array([1, 1]), budget=2, **{field: math.nan})


# -- Allocation is a value ---------------------------------------------------------------------


def _alloc(**kw: Any) -> Allocation:
    base: dict[str, Any] = {"counts": np.array([2, 6]), "budget": 8, "alpha": 8.2, "beta": 2.8}
    return Allocation(**{**base, **kw})


def test_allocation_compares_by_value() -> None:
    a, b = _alloc(), _alloc()
    assert a == b
    assert not a.__ne__(b)
    assert hash(a) == hash(b)
    assert len({a, b}) == 1
    assert a != _alloc(counts=np.array([3, 5]))
    assert a != _alloc(alpha=8.3)
    assert a != _alloc(method="even_split")
    assert a != "Allocation"
    # pass rates compare with NaN (an unseen prompt) equal to NaN
    p = np.array([0.5, np.nan])
    assert _alloc(pass_rates=p) == _alloc(pass_rates=p.copy())
    assert _alloc(pass_rates=p) != _alloc(pass_rates=np.array([0.5, 0.4]))


def test_allocations_from_the_same_inputs_are_equal() -> None:
    cfg = coba_rl.CoBAConfig(n_up=16)
    assert coba_rl.allocate(STATS, 20, cfg) == coba_rl.allocate(STATS, 20, cfg)
    assert coba_rl.allocate(STATS, 20, cfg) != coba_rl.allocate(STATS, 21, cfg)


@pytest.mark.parametrize(
    ("kw", "exc", "match"),
    [
        ({"counts": np.array([2, 5])}, ValueError, r"sum to 7.*budget.*8"),
        ({"counts": np.array([10, -2])}, ValueError, "non-negative"),
        ({"counts": np.array([2.0, 6.0])}, TypeError, "integer"),
        ({"counts": np.array([[2, 6]])}, ValueError, "1-D"),
        ({"counts": np.array([True, False]), "budget": 1}, TypeError, "integer"),
        ({"budget": 8.0}, TypeError, "budget"),
        ({"budget": -1, "counts": np.array([0, 0])}, ValueError, "budget"),
        ({"pass_rates": np.array([0.5])}, ValueError, "pass_rates"),
        ({"n_low": 3, "n_up": 2}, ValueError, "n_low"),
        ({"n_unseen": 3}, ValueError, "n_unseen"),
    ],
)
def test_allocation_validates_at_construction(kw: dict[str, Any], exc: type, match: str) -> None:
    with pytest.raises(exc, match=match):
        _alloc(**kw)


def test_allocation_counts_are_read_only_and_not_the_callers_array() -> None:
    counts = np.array([2, 6])
    a = _alloc(counts=counts)
    counts[0] = 5  # the caller's array stays theirs
    assert a.counts.tolist() == [2, 6]
    with pytest.raises(ValueError, match="read-only"):
        a.counts[0] = 3


def test_allocation_repr_is_short() -> None:
    m = 10**6
    a = Allocation(counts=np.full(m, 4), budget=4 * m, method="even_split", n_low=2, n_up=8)
    r = repr(a)
    assert len(r) < 400
    assert r.startswith("Allocation(")
    for part in ("method='even_split'", "prompts=1000000", "budget=4000000", "min=4", "max=4"):
        assert part in r
    assert "..." in r  # the counts are summarised, not dumped
    assert "Allocation(" in repr(_alloc()) and "alpha=8.2" in repr(_alloc())


# -- metrics are JSON-safe and document the bounds --------------------------------------------


def _all_allocations() -> list[tuple[str, Allocation]]:
    out: list[tuple[str, Allocation]] = []
    ids = list(range(6))
    rollouts = [i for i in ids for _ in range(8)]
    rewards = [float((i + k) % 3 == 0) for i in ids for k in range(8)]
    for alloc in (
        coba_rl.CoBAAllocator(coba_rl.CoBAConfig(n_up=16)),
        coba_rl.CoBAAllocator(coba_rl.CoBAConfig(n_up=16, variant="release")),
        coba_rl.KnapsackRLAllocator(coba_rl.KnapsackConfig(n_up=16)),
        coba_rl.UniformAllocator(),
    ):
        name = type(alloc).__name__
        out.append((f"{name} before update", alloc.allocate(ids, 48)))
        alloc.update(rollouts, rewards)
        out.append((f"{name} after update", alloc.allocate(ids, 48)))
        out.append((f"{name} empty batch", alloc.allocate([], 0)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", coba_rl.BudgetWarning)
        out.append(("stateless below floor", coba_rl.allocate(STATS, 2)))
    out.append(("stateless unseen", coba_rl.allocate(coba_rl.BatchStats(pass_rates=[math.nan]), 4)))
    out.append(("knapsack stateless", knapsack_allocate(STATS, 12)))
    return out


@pytest.mark.parametrize(("name", "alloc"), _all_allocations())
def test_metrics_are_json_safe(name: str, alloc: Allocation) -> None:
    m = alloc.metrics(prefix="x/")
    json.dumps(m, allow_nan=False)
    assert all(type(v) is float and math.isfinite(v) for v in m.values()), name
    for key in ("alpha", "beta", "tau", "failure_rate"):
        value = getattr(alloc, key)
        assert (f"x/{key}" in m) == (value is not None), (name, key)
        if value is not None:
            assert m[f"x/{key}"] == value


def test_at_floor_and_at_cap_are_shares_at_the_configured_bounds() -> None:
    # An even split of 4 each between n_low = 2 and n_up = 8: nobody is at a bound.
    a = coba_rl.CoBAAllocator(coba_rl.CoBAConfig(n_low=2, n_up=8)).allocate([1, 2, 3, 4], 16)
    m = a.metrics()
    assert (a.n_low, a.n_up) == (2, 8)
    assert m["at_floor"] == 0.0 and m["at_cap"] == 0.0
    stats = coba_rl.BatchStats(pass_rates=[0.0, 0.5, 0.5, 1.0], failure_rate=0.5)
    b = coba_rl.allocate(stats, 12, coba_rl.CoBAConfig(n_low=2, n_up=4))
    assert b.counts.tolist() == [2, 4, 4, 2]
    assert b.metrics()["at_floor"] == 0.5 and b.metrics()["at_cap"] == 0.5
    # Knapsack-RL reports its own bounds; uniform has none, so the keys are left out.
    k = knapsack_allocate(stats, 12, coba_rl.KnapsackConfig(n_low=2, n_up=4))
    assert (k.n_low, k.n_up) == (2, 4)
    assert "at_floor" in k.metrics()
    u = coba_rl.UniformAllocator().allocate([1, 2], 8).metrics()
    assert "at_floor" not in u and "at_cap" not in u


def test_metrics_keys_are_documented() -> None:
    doc = (Path(__file__).parents[1] / "docs" / "howto" / "logging.md").read_text()
    stats = coba_rl.BatchStats(pass_rates=[0.0, 0.5, 1.0], failure_rate=0.5)
    keys = set(coba_rl.allocate(stats, 12).metrics())
    assert {"alpha", "tau", "at_floor", "zero_pass_share", "rollouts/mean"} <= keys
    for key in keys:
        leaf = key.split("/")[-1]
        assert f"`{key}`" in doc or f"`{leaf}`" in doc, key
        assert f"``{key}``" in (Allocation.metrics.__doc__ or "") or key.startswith("rollouts/"), (
            key
        )
