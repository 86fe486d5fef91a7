"""Every class of bad input gets a clear ValueError or TypeError naming the problem."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import coba_rl


def stats(rates: Any, failure_rate: float | None = None) -> coba_rl.BatchStats:
    return coba_rl.BatchStats(pass_rates=rates, failure_rate=failure_rate)


@pytest.mark.parametrize(
    ("rates", "match"),
    [
        ([0.5, 1.5], r"pass_rates\[1\] = 1.5 is outside \[0, 1\]"),
        ([-0.1], r"pass_rates\[0\] = -0.1 is outside \[0, 1\]"),
        ([0.2, math.inf], r"pass_rates\[1\] = inf is infinite"),
        ([[0.1, 0.2]], r"must be 1-D, got an array of shape \(1, 2\)"),
        (0.5, r"must be 1-D, got an array of shape \(\)"),
    ],
)
def test_bad_pass_rates(rates: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        stats(rates)


@pytest.mark.parametrize(
    ("rates", "match"),
    [
        (["a", "b"], r"must hold numbers \(NaN for unseen\), got \['str'\]"),
        (["0.5"], r"got \['str'\]"),
        ([0.5, None], r"got \['NoneType', 'float'\]"),
        ({"a": 0.5}, r"got \['dict'\]"),
    ],
)
def test_non_numeric_pass_rates(rates: Any, match: str) -> None:
    with pytest.raises(TypeError, match=match):
        stats(rates)


@pytest.mark.parametrize("f", [-0.1, 1.1, math.nan, math.inf])
def test_bad_failure_rate(f: float) -> None:
    with pytest.raises(ValueError, match="failure_rate"):
        stats([0.5], failure_rate=f)


@pytest.mark.parametrize(
    ("budget", "exc", "match"),
    [
        (-1, ValueError, "budget must be non-negative, got -1"),
        (8.5, TypeError, r"budget must be an int, got float \(8.5\)"),
        (8.0, TypeError, "budget must be an int, got float"),
        ("8", TypeError, "budget must be an int, got str"),
        (True, TypeError, "budget must be an int, got bool"),
        (2 * 128 + 1, ValueError, r"budget 257 exceeds M \* n_up = 2 \* 128 = 256"),
    ],
)
def test_bad_budget(budget: Any, exc: type[Exception], match: str) -> None:
    with pytest.raises(exc, match=match):
        coba_rl.allocate(stats([0.5, 0.2]), budget)
    with pytest.raises(exc, match=match):
        coba_rl.CoBAAllocator().allocate([1, 2], budget)


def test_positive_budget_on_empty_batch() -> None:
    with pytest.raises(
        ValueError, match=r"positive budget \(4\) cannot be spent on an empty batch"
    ):
        coba_rl.allocate(stats([]), 4)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_low": 5, "n_up": 4}, r"n_low \(5\) must not exceed n_up \(4\)"),
        ({"n_low": 0}, "n_low"),
        ({"kappa": 2.0}, "kappa"),
        ({"kappa": 1.0}, "kappa"),
        ({"variant": "papr"}, "variant"),
        ({"fallback": "random"}, "fallback"),
        ({"n_lo": 2}, "(?s)n_lo.*Extra inputs are not permitted"),
        ({"tau": -1.0}, "tau"),
        ({"tau": "auto"}, "tau"),
        ({"window": 0}, "window"),
        ({"tau_min": 13.0}, r"tau_min \(13.0\) must not exceed tau_max \(12.0\)"),
        ({"smoothing": 0.5}, "smoothing"),
    ],
)
def test_bad_config(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        coba_rl.CoBAConfig(**kwargs)


def test_config_is_frozen() -> None:
    cfg = coba_rl.CoBAConfig()
    with pytest.raises(ValueError, match="frozen"):
        cfg.n_up = 3  # type: ignore[misc]


def test_mismatched_lengths() -> None:
    with pytest.raises(ValueError, match="got 3 ids and 2 rewards"):
        coba_rl.CoBAAllocator().update([1, 1, 2], [1.0, 0.0])


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_reward(bad: float) -> None:
    with pytest.raises(ValueError, match=r"rewards\[1\] = (nan|inf) is not finite"):
        coba_rl.CoBAAllocator().update([1, 1], [1.0, bad])


def test_non_finite_reward_leaves_state_untouched() -> None:
    alloc = coba_rl.CoBAAllocator()
    before = alloc.state_dict()
    with pytest.raises(ValueError, match="not finite"):
        alloc.update([1, 2], [1.0, math.nan])
    assert alloc.state_dict() == before


@pytest.mark.parametrize("ids", [[3, 4, 3], ["a", "b", "a"], np.array([7, 7])])
def test_duplicate_prompt_ids(ids: Any) -> None:
    with pytest.raises(ValueError, match="duplicate prompt id"):
        coba_rl.CoBAAllocator().allocate(ids, 12)


@pytest.mark.parametrize(
    ("ids", "match"),
    [
        ([1, "a"], r"all ints or all strings, got element types \['int', 'str'\]"),
        ([1.0, 2.0], r"element types \['float'\]"),
        ([True, False], r"element types \['bool'\]"),
        (np.array([1.5, 2.5]), "dtype float64"),
        ("abc", "not a single str"),
        (5, "sequence of ints or strings, got int"),
        (np.array([[1, 2]]), "1-D"),
    ],
)
def test_bad_prompt_ids(ids: Any, match: str) -> None:
    with pytest.raises((TypeError, ValueError), match=match):
        coba_rl.CoBAAllocator().allocate(ids, 0)


def _saved(tmp_path: Path) -> tuple[coba_rl.CoBAAllocator, Path]:
    alloc = coba_rl.CoBAAllocator()
    alloc.update([1, 1, 2, 2], [1.0, 0.0, 0.0, 0.0])
    path = tmp_path / "state.json"
    alloc.save(path)
    return alloc, path


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda d: d.update(version=99), "unsupported state version 99"),
        (lambda d: d.update(format="other"), "not a coba-rl allocator state"),
        (lambda d: d.pop("alpha"), "has fields"),
        (lambda d: d.update(alpha=50.0), "not a valid shape"),
        (lambda d: d.update(alpha="x"), "alpha must be a finite number"),
        (lambda d: d.update(failure_window=[2.0]), "failure_window"),
        (lambda d: d["config"].update(n_up=-3), "invalid config"),
        (lambda d: d["tracker"].update(ids=[1, 1]), "duplicate ids"),
        (lambda d: d["tracker"].update(totals=[[1]]), "totals has shape"),
        (lambda d: d["tracker"].update(appearances=[0, 0]), "window columns"),
        (lambda d: d["tracker"].update(ids=[1, "a"]), "all ints or all strings"),
    ],
)
def test_malformed_state(tmp_path: Path, mutate: Any, match: str) -> None:
    alloc, _ = _saved(tmp_path)
    state = alloc.state_dict()
    mutate(state)
    target = coba_rl.CoBAAllocator()
    before = target.state_dict()
    with pytest.raises(ValueError, match=match):
        target.load_state_dict(state)
    assert target.state_dict() == before


def test_truncated_state_file(tmp_path: Path) -> None:
    _, path = _saved(tmp_path)
    text = path.read_text()
    path.write_text(text[: len(text) // 2])
    with pytest.raises(ValueError, match="not valid JSON"):
        coba_rl.CoBAAllocator.load(path)


def test_state_file_not_an_object(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    path.write_text(json.dumps([1, 2]))
    with pytest.raises(ValueError, match="does not hold a JSON object"):
        coba_rl.CoBAAllocator.load(path)


def test_state_not_a_dict() -> None:
    with pytest.raises(ValueError, match="must be a dict"):
        coba_rl.CoBAAllocator().load_state_dict([1])


def test_save_is_atomic_and_leaves_no_temp_files(tmp_path: Path) -> None:
    alloc, path = _saved(tmp_path)
    alloc.save(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]
