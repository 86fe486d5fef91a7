"""The Allocator contract, run over every stateful allocator.

Every allocator must: spend the budget exactly, respect its bounds, report counts in the
order of the ids, be deterministic, resume to an identical next allocation (from a file
and from ``state_dict`` in a fresh object), and reject bad input with a clear error,
leaving itself untouched when a load fails.
"""

from __future__ import annotations

import base64
import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import coba_rl

N_LOW, N_UP = 2, 32


@dataclass(frozen=True)
class Case:
    name: str
    make: Callable[[], Any]
    capped: bool  # counts never exceed N_UP (Knapsack-RL's leftover may; GRPO has no cap)
    max_budget_per_prompt: int | None  # the largest budget / M accepted, if any
    floored: bool  # counts >= N_LOW whenever budget >= M * N_LOW
    # The same rule, stateless: (allocator, pass rates in batch order, budget) -> counts.
    stateless: Callable[[Any, Any, int], list[int]]
    # Permuting the batch permutes the counts (given distinct rates and no remainders).
    # The released CoBA rule spreads its leftover sequentially, first prompts first.
    equivariant: bool = True


def _coba_stateless(alloc: Any, rates: Any, budget: int) -> list[int]:
    stats = coba_rl.BatchStats(pass_rates=rates, failure_rate=alloc.failure_rate)
    return coba_rl.allocate(stats, budget, alloc.config).counts.tolist()


def _knapsack_stateless(alloc: Any, rates: Any, budget: int) -> list[int]:
    stats = coba_rl.BatchStats(pass_rates=rates)
    return coba_rl.knapsack_allocate(stats, budget, alloc.config).counts.tolist()


def _uniform_stateless(alloc: Any, rates: Any, budget: int) -> list[int]:
    return coba_rl.even_split(budget, len(rates)).tolist()


CASES = [
    Case(
        "coba-paper",
        lambda: coba_rl.CoBAAllocator(coba_rl.CoBAConfig(variant="paper", n_up=N_UP, window=2)),
        capped=True,
        max_budget_per_prompt=N_UP,
        floored=True,
        stateless=_coba_stateless,
    ),
    Case(
        "coba-release",
        lambda: coba_rl.CoBAAllocator(coba_rl.CoBAConfig(variant="release", n_up=N_UP)),
        capped=True,
        max_budget_per_prompt=N_UP,
        floored=True,
        stateless=_coba_stateless,
        equivariant=False,
    ),
    Case(
        "knapsack-rl",
        lambda: coba_rl.KnapsackRLAllocator(coba_rl.KnapsackConfig(n_up=N_UP, min_rollouts=4)),
        capped=False,
        max_budget_per_prompt=None,
        floored=True,
        stateless=_knapsack_stateless,
    ),
    Case(
        "uniform",
        coba_rl.UniformAllocator,
        capped=False,
        max_budget_per_prompt=None,
        floored=True,
        stateless=_uniform_stateless,
    ),
]


@pytest.fixture(scope="module", params=CASES, ids=[c.name for c in CASES])
def case(request: pytest.FixtureRequest) -> Case:
    c: Case = request.param
    return c


TRUE_P = np.linspace(0.0, 1.0, 40)


def _rollouts(ids: list[Any], counts: list[int], rng: np.random.Generator) -> tuple[list[Any], Any]:
    rows = [i for i, c in zip(ids, counts, strict=True) for _ in range(c)]
    p = np.array([TRUE_P[int(i) % TRUE_P.size] for i in rows])
    return rows, (rng.random(p.size) < p).astype(float)


def _train(alloc: Any, steps: int, seed: int = 0, m: int = 10) -> None:
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        ids = rng.choice(40, size=m, replace=False).tolist()
        counts = alloc.allocate(ids, m * 8).counts.tolist()
        alloc.update(*_rollouts(ids, counts, rng))


def plain_state(value: Any) -> Any:
    """A state with every compact array expanded to nested lists (decoded without ``src``).

    Both forms load; tests that tamper with single counts edit the lists.
    """
    if isinstance(value, dict) and set(value) == {"dtype", "shape", "data"}:
        raw = base64.b64decode(value["data"])
        return np.frombuffer(raw, dtype=np.dtype(value["dtype"])).reshape(value["shape"]).tolist()
    if isinstance(value, dict):
        return {k: plain_state(v) for k, v in value.items()}
    return value


def _budget_limit(case: Case, m: int) -> int:
    per = case.max_budget_per_prompt if case.max_budget_per_prompt is not None else 3 * N_UP
    return m * per


def test_implements_the_protocol(case: Case) -> None:
    assert isinstance(case.make(), coba_rl.Allocator)


@settings(max_examples=25)
@given(seed=st.integers(0, 2**32 - 1))
def test_budget_and_bounds(case: Case, seed: int) -> None:
    rng = np.random.default_rng(seed)
    alloc = case.make()
    _train(alloc, 2, seed)
    for _ in range(6):
        m = int(rng.integers(1, 16))
        ids = rng.choice(40, size=m, replace=False).tolist()
        budget = int(rng.integers(0, _budget_limit(case, m) + 1))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", coba_rl.BudgetWarning)
            a = alloc.allocate(ids, budget)
        assert a.counts.dtype == np.int64 and a.counts.shape == (m,)
        assert int(a.counts.sum()) == budget == a.budget
        assert (a.counts >= 0).all()
        if case.capped:
            assert (a.counts <= N_UP).all()
        if case.floored and budget >= m * N_LOW:
            assert (a.counts >= N_LOW).all()
        alloc.update(*_rollouts(ids, a.counts.tolist(), rng))
        alloc._check()


def test_uniform_is_the_even_split() -> None:
    a = coba_rl.UniformAllocator()
    _train(a, 3)
    assert a.allocate([5, 6, 7, 8], 30).counts.tolist() == [8, 8, 7, 7]


def test_order_follows_the_ids(case: Case) -> None:
    """Counts and pass rates come back in the order of the ids: each allocation equals the
    stateless rule applied to the ids' pass rates in batch order, and (for rules without
    a sequential leftover spread) permuting the batch permutes the counts. Remainder
    units of an even spread go to the first prompts by rule, so the scenario has
    distinct pass rates and no remainders."""
    alloc = case.make()
    ids = [1, 5, 9, 14, 18, 22, 27, 31]
    successes = [1, 3, 5, 6, 9, 10, 12, 14]  # of 16 each: distinct rates, none 0 or 1
    for _ in range(2):
        rows = [i for i in ids for _ in range(16)]
        rewards = [float(j < k) for k in successes for j in range(16)]
        alloc.update(rows, rewards)
    budget = 8 * len(ids)
    base = alloc.allocate(ids, budget)
    np.testing.assert_array_equal(base.pass_rates, np.array(successes) / 16)
    if case.name != "uniform":
        assert len(set(base.counts.tolist())) > 2  # the counts really depend on the prompt
    rng = np.random.default_rng(7)
    for perm in (np.arange(len(ids))[::-1], rng.permutation(len(ids)), rng.permutation(8)):
        moved = alloc.allocate([ids[j] for j in perm], budget)
        np.testing.assert_array_equal(moved.pass_rates, base.pass_rates[perm])
        rates = (np.array(successes) / 16)[perm]
        assert moved.counts.tolist() == case.stateless(alloc, rates, budget)
        if case.equivariant:
            assert moved.counts.tolist() == base.counts[perm].tolist()


def test_deterministic_and_allocate_is_read_only(case: Case) -> None:
    a, b = case.make(), case.make()
    _train(a, 4, seed=11)
    _train(b, 4, seed=11)
    assert a.state_dict() == b.state_dict()
    ids = list(range(0, 40, 3))
    before = json.dumps(a.state_dict())
    first = a.allocate([*ids, 99, 100], 120)
    second = a.allocate([*ids, 99, 100], 120)
    assert json.dumps(a.state_dict()) == before  # unseen ids 99, 100 were not added
    assert first.counts.tolist() == second.counts.tolist()
    assert first.counts.tolist() == b.allocate([*ids, 99, 100], 120).counts.tolist()


def test_resume_from_file_is_identical(case: Case, tmp_path: Path) -> None:
    alloc = case.make()
    _train(alloc, 5, seed=3)
    path = tmp_path / "state.json"
    alloc.save(path)
    resumed = type(alloc).load(path)
    assert resumed.state_dict() == alloc.state_dict()
    ids = list(range(0, 40, 2))
    rng_a, rng_b = np.random.default_rng(5), np.random.default_rng(5)
    for _ in range(2):  # the next allocations, and the ones after another update
        x, y = alloc.allocate(ids, 200), resumed.allocate(ids, 200)
        assert x.counts.tolist() == y.counts.tolist()
        np.testing.assert_array_equal(x.pass_rates, y.pass_rates)
        alloc.update(*_rollouts(ids, x.counts.tolist(), rng_a))
        resumed.update(*_rollouts(ids, y.counts.tolist(), rng_b))


def test_resume_via_state_dict_in_a_fresh_object(case: Case) -> None:
    alloc = case.make()
    _train(alloc, 5, seed=4)
    fresh = case.make()
    fresh.load_state_dict(json.loads(json.dumps(alloc.state_dict())))
    ids = list(range(1, 40, 2))
    assert fresh.allocate(ids, 160).counts.tolist() == alloc.allocate(ids, 160).counts.tolist()
    assert fresh.state_dict() == alloc.state_dict()


def test_state_is_for_one_allocator_only(case: Case) -> None:
    others = [c for c in CASES if c.make().__class__ is not case.make().__class__]
    target = case.make()
    for other in others:
        with pytest.raises(ValueError, match="state is for"):
            target.load_state_dict(other.make().state_dict())


# -- bad input ---------------------------------------------------------------------------


def test_duplicate_ids(case: Case) -> None:
    with pytest.raises(ValueError, match="duplicate prompt id 3"):
        case.make().allocate([1, 3, 3], 12)


@pytest.mark.parametrize(
    ("budget", "error", "match"),
    [
        (-1, ValueError, "budget must be non-negative"),
        (12.0, TypeError, "budget must be an int"),
        ("12", TypeError, "budget must be an int"),
        (True, TypeError, "budget must be an int"),
    ],
)
def test_bad_budget(case: Case, budget: Any, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        case.make().allocate([1, 2, 3], budget)


def test_budget_on_empty_batch(case: Case) -> None:
    alloc = case.make()
    assert alloc.allocate([], 0).counts.tolist() == []
    with pytest.raises(ValueError, match="cannot be spent on an empty batch"):
        alloc.allocate([], 4)


def test_budget_above_capacity(case: Case) -> None:
    if case.max_budget_per_prompt is None:
        pytest.skip("this allocator accepts any budget (no per-prompt cap)")
    with pytest.raises(ValueError, match="exceeds M \\* n_up"):
        case.make().allocate([1, 2], 2 * N_UP + 1)


def test_bad_ids(case: Case) -> None:
    with pytest.raises(TypeError, match="all ints or all strings"):
        case.make().allocate([1, "a"], 8)
    with pytest.raises(TypeError, match="not a single str"):
        case.make().allocate("abc", 8)


def test_mismatched_lengths(case: Case) -> None:
    with pytest.raises(ValueError, match=r"same length .* got 3 ids and 2 rewards"):
        case.make().update([1, 1, 2], [1.0, 0.0])


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_rewards(case: Case, bad: float) -> None:
    alloc = case.make()
    with pytest.raises(ValueError, match=r"rewards\[1\] = .* is not finite"):
        alloc.update([1, 1], [1.0, bad])
    assert alloc.state_dict() == case.make().state_dict()


def test_mixed_id_kinds_across_steps(case: Case) -> None:
    alloc = case.make()
    alloc.update([1, 1], [1.0, 0.0])
    with pytest.raises(TypeError, match="holds int prompt ids; got str"):
        alloc.update(["a"], [1.0])


CORRUPTIONS: list[tuple[str, Callable[[dict[str, Any]], Any], str]] = [
    ("version", lambda d: d.update(version=99), "unsupported state version 99"),
    ("format", lambda d: d.update(format="other"), "not a coba-rl allocator state"),
    ("missing", lambda d: d.pop("step"), "has fields"),
    ("extra", lambda d: d.update(bonus=1), "has fields"),
    ("step", lambda d: d.update(step=-1), "step must be an int >= 0"),
    ("config", lambda d: d["config"].update(n_low="x"), "invalid config"),
    ("not-a-dict", lambda d: d.clear(), "not a coba-rl allocator state"),
]


@pytest.mark.parametrize(("what", "mutate", "match"), CORRUPTIONS, ids=[c[0] for c in CORRUPTIONS])
def test_corrupt_state_leaves_allocator_untouched(
    case: Case, what: str, mutate: Callable[[dict[str, Any]], Any], match: str
) -> None:
    source = case.make()
    _train(source, 2, seed=8)
    state = json.loads(json.dumps(source.state_dict()))
    mutate(state)
    target = case.make()
    _train(target, 1, seed=9)
    before = json.dumps(target.state_dict())
    with pytest.raises(ValueError, match=match):
        target.load_state_dict(state)
    assert json.dumps(target.state_dict()) == before


def test_corrupt_inner_state_leaves_allocator_untouched(case: Case) -> None:
    source = case.make()
    _train(source, 2, seed=8)
    state = plain_state(json.loads(json.dumps(source.state_dict())))
    inner = state.get("tracker") or state["history"]["index"]
    inner["ids"][1] = inner["ids"][0]  # a duplicated id
    target = case.make()
    before = json.dumps(target.state_dict())
    with pytest.raises(ValueError, match="duplicate ids"):
        target.load_state_dict(state)
    assert json.dumps(target.state_dict()) == before


def test_corrupt_file(case: Case, tmp_path: Path) -> None:
    alloc = case.make()
    _train(alloc, 1)
    path = tmp_path / "s.json"
    alloc.save(path)
    path.write_text(path.read_text()[:-10])
    with pytest.raises(ValueError, match="not valid JSON"):
        type(alloc).load(path)
    with pytest.raises(FileNotFoundError):
        type(alloc).load(tmp_path / "missing.json")


def test_config_mismatch_on_load(case: Case) -> None:
    alloc = case.make()
    other_cfg = alloc.config.model_copy(update={"success_reward": 0.5})
    other = type(alloc)(other_cfg)
    with pytest.raises(ValueError, match="different config \\(fields \\['success_reward'\\]\\)"):
        alloc.load_state_dict(other.state_dict())


@settings(max_examples=15)
@given(seed=st.integers(0, 2**32 - 1))
def test_stress_update_allocate_save_load(case: Case, seed: int) -> None:
    """Random steps with save/load round trips and the invariant check after each step."""
    rng = np.random.default_rng(seed)
    alloc = case.make()
    for _ in range(10):
        m = int(rng.integers(0, 12))
        ids = rng.choice(40, size=m, replace=False).tolist()
        budget = int(rng.integers(0, _budget_limit(case, m) + 1)) if m else 0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", coba_rl.BudgetWarning)
            a = alloc.allocate(ids, budget)
        assert int(a.counts.sum()) == budget
        alloc.update(*_rollouts(ids, a.counts.tolist(), rng))
        alloc._check()
        if rng.random() < 0.3:
            restored = type(alloc).from_state_dict(json.loads(json.dumps(alloc.state_dict())))
            restored._check()
            assert restored.state_dict() == alloc.state_dict()
            alloc = restored


def test_readable_repr() -> None:
    """Allocators show their config (fields off the default), tracked prompts and step."""
    coba = coba_rl.CoBAAllocator(coba_rl.CoBAConfig(n_up=16, window=2))
    coba.update([1, 1, 2, 2, 3], [1.0, 0.0, 1.0, 1.0, 0.0])  # F = 1 - (0.5 + 1 + 0) / 3 = 0.5
    assert repr(coba) == (
        "CoBAAllocator(step=1, prompts=3, alpha=5.5, beta=5.5, "
        "config=CoBAConfig(n_up=16, window=2))"
    )
    knap = coba_rl.KnapsackRLAllocator(coba_rl.KnapsackConfig(min_rollouts=4))
    knap.update([5, 5], [1.0, 0.0])
    knap.update([], [])
    assert repr(knap) == (
        "KnapsackRLAllocator(step=2, prompts=1, config=KnapsackConfig(min_rollouts=4))"
    )
    assert repr(coba_rl.UniformAllocator()) == (
        "UniformAllocator(step=0, prompts=0, config=UniformConfig())"
    )
    assert repr(coba.tracker) == "PassRateTracker(window=2, prompts=3)"
