"""Token budgets through the public API: allocate(token_budget=), the stateful allocator's
lengths, persistence of the lengths, the straggler cap, metrics and bad input."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import coba_rl
from coba_rl import Allocation, BatchStats, CoBAConfig, allocate
from coba_rl.tokens import token_dp
from coba_rl.value import marginal_gains

DATA = Path(__file__).parent / "data"
TOL = 1e-9


@st.composite
def token_case(draw: st.DrawFn, rollout_cap: bool | None = None) -> dict[str, Any]:
    """Pass rates k / G, integer costs, bounds, a token budget above the floor, maybe a cap."""
    m = draw(st.integers(1, 6))
    n_low = draw(st.integers(1, 3))
    n_up = draw(st.integers(n_low, n_low + 5))
    g = draw(st.sampled_from([4, 8, 16]))
    rates = [draw(st.integers(0, g)) / g for _ in range(m)]
    costs = [float(draw(st.integers(1, 12))) for _ in range(m)]
    floor = n_low * int(sum(costs))
    t = draw(st.integers(floor, floor + int(sum(costs)) * (n_up - n_low) + 5))
    use_cap = draw(st.booleans()) if rollout_cap is None else rollout_cap
    b = draw(st.integers(m * n_low, m * n_up)) if use_cap else None
    f = draw(st.one_of(st.none(), st.floats(0.05, 0.95)))
    return {
        "stats": BatchStats(pass_rates=rates, failure_rate=f, costs=costs),
        "config": CoBAConfig(n_low=n_low, n_up=n_up),
        "T": t,
        "B": b,
    }


def _objective(a: Allocation, cfg: CoBAConfig, counts: Any) -> float:
    """sum_i V(n_i) - V(n_low) from the same gain table as the allocation's."""
    assert a.alpha is not None and a.beta is not None and a.tau is not None
    g = marginal_gains(a.pass_rates, a.alpha, a.beta, a.tau, cfg.n_low, cfg.n_up, cfg.smoothing)
    cum = np.concatenate([np.zeros((g.shape[0], 1)), np.cumsum(g, axis=1)], axis=1)
    x = np.asarray(counts) - cfg.n_low
    return float(cum[np.arange(g.shape[0]), x].sum())


@settings(max_examples=150, deadline=None)
@given(token_case())
def test_budgets_and_bounds_hold(case: dict[str, Any]) -> None:
    cfg = case["config"]
    a = allocate(case["stats"], case["B"], cfg, token_budget=case["T"])
    c = case["stats"].costs
    assert (a.counts >= cfg.n_low).all() and (a.counts <= cfg.n_up).all()
    assert float(c @ a.counts) <= case["T"] * (1 + 1e-12)
    assert a.tokens == pytest.approx(float(c @ a.counts))
    assert a.budget == int(a.counts.sum())
    if case["B"] is not None:
        assert a.budget <= case["B"]
    assert a.token_budget == case["T"] and a.binding in (
        "tokens",
        "rollouts",
        "tokens+rollouts",
        "none",
    )
    assert a.gap is not None and a.gap >= 0.0


@settings(max_examples=150, deadline=None)
@given(token_case(rollout_cap=True), st.integers(0, 50))
def test_counts_are_the_rollout_only_counts_when_tokens_do_not_bind(
    case: dict[str, Any], slack: int
) -> None:
    cfg, stats = case["config"], case["stats"]
    rollout_only = allocate(stats, case["B"], cfg)
    needed = float(stats.costs @ rollout_only.counts)
    a = allocate(stats, case["B"], cfg, token_budget=needed + slack)
    assert a.counts.tolist() == rollout_only.counts.tolist()
    assert a.budget == rollout_only.budget and a.gap == 0.0
    assert a.binding in ("rollouts", "tokens+rollouts", "none")  # the rollout cap binds
    # and a token budget one token short of it changes the counts
    if needed - 1 >= cfg.n_low * float(stats.costs.sum()):
        tight = allocate(stats, case["B"], cfg, token_budget=needed - 1)
        assert float(stats.costs @ tight.counts) <= needed - 1


@settings(max_examples=120, deadline=None)
@given(token_case())
def test_objective_is_within_the_guarantee_of_the_exact_optimum(case: dict[str, Any]) -> None:
    cfg, stats = case["config"], case["stats"]
    a = allocate(stats, case["B"], cfg, token_budget=case["T"])
    assert a.alpha is not None and a.beta is not None and a.tau is not None
    g = marginal_gains(a.pass_rates, a.alpha, a.beta, a.tau, cfg.n_low, cfg.n_up, cfg.smoothing)
    assert (np.diff(g, axis=1) <= 1e-12).all()  # CoBA-RL's rows are concave already
    best = token_dp(g, stats.costs.astype(int), case["T"], cfg.n_low, cfg.n_up, case["B"])
    opt, got = _objective(a, cfg, best), _objective(a, cfg, a.counts)
    assert got <= opt + TOL
    assert a.gap is not None and opt - got <= a.gap + 1e-7  # the certificate holds
    if case["B"] is None:  # token budget alone: within one marginal gain
        x = a.counts - cfg.n_low
        open_ = x < g.shape[1]
        next_gain = float(g[open_, x[open_]].max()) if open_.any() else 0.0
        assert opt - got <= next_gain + 1e-7


def test_budget_none_spends_tokens_only_and_lengths_that_grow_shift_rollouts() -> None:
    rates = [0.1, 0.3, 0.5, 0.7, 0.9]
    stats = BatchStats(pass_rates=rates, failure_rate=0.5, costs=[1000, 800, 400, 200, 100])
    by_rollouts = allocate(stats, 40)
    by_tokens = allocate(stats, None, token_budget=float(stats.costs @ by_rollouts.counts))
    assert by_tokens.tokens is not None and by_tokens.tokens <= stats.costs @ by_rollouts.counts
    # the same tokens buy more rollouts, moved from the long (hard) prompts to short ones
    assert by_tokens.budget > 40
    assert by_tokens.counts[0] <= by_rollouts.counts[0]
    assert by_tokens.counts[-2] > by_rollouts.counts[-2]


def test_unknown_costs_are_the_mean_of_the_known_and_the_default_when_none_known() -> None:
    nan = float("nan")
    a = allocate(BatchStats(pass_rates=[0.5, 0.5], costs=[100, nan]), None, token_budget=1000)
    assert a.costs.tolist() == [100.0, 100.0]
    cfg = CoBAConfig(default_tokens_per_rollout=50)
    b = allocate(BatchStats(pass_rates=[0.5, 0.5]), None, cfg, token_budget=1000)
    assert b.costs.tolist() == [50.0, 50.0] and b.tokens is not None and b.tokens <= 1000
    with pytest.raises(ValueError, match="default_tokens_per_rollout"):
        allocate(BatchStats(pass_rates=[0.5, 0.5], costs=[nan, nan]), None, token_budget=1000)


def test_straggler_cap_bounds_each_prompt_but_never_the_floor() -> None:
    cfg = CoBAConfig(n_low=2, n_up=64, max_prompt_tokens=1000)
    stats = BatchStats(pass_rates=[0.5, 0.5, 0.5], failure_rate=0.5, costs=[100, 300, 700])
    a = allocate(stats, None, cfg, token_budget=1e6)
    assert a.counts.tolist() == [10, 3, 2]  # 1000 // 100, 1000 // 300, floor n_low (1400 > 1000)
    uncapped = allocate(stats, None, CoBAConfig(n_low=2, n_up=64), token_budget=1e6)
    assert uncapped.counts.max() > 10
    m = a.metrics()
    assert m["tokens/prompt_max"] == 1400.0  # the floor of the long prompt exceeds the cap
    # with a rollout budget that fits the tokens, the capped counts still respect the cap
    b = allocate(stats, 12, cfg, token_budget=1e6)
    assert (b.counts * stats.costs <= np.maximum(1000, 2 * stats.costs)).all()


def test_metrics_report_tokens_and_the_binding_constraint_as_finite_floats() -> None:
    stats = BatchStats(pass_rates=[0.2, 0.6, float("nan")], costs=[300, 100, 200])
    a = allocate(stats, 12, token_budget=1500)
    m = a.metrics(prefix="coba/")
    json.dumps(m, allow_nan=False)
    assert m["coba/tokens"] == a.tokens and m["coba/token_budget"] == 1500.0
    assert m["coba/tokens/used"] == pytest.approx(a.tokens / 1500)
    assert m["coba/bound/tokens"] == 1.0 and m["coba/gap"] == a.gap
    plain = allocate(stats, 12).metrics()
    assert not {"tokens", "token_budget", "gap", "bound/tokens"} & set(plain)


def test_token_budget_none_is_todays_allocation() -> None:
    stats = BatchStats(pass_rates=[0.1, 0.5, 0.9, float("nan")], failure_rate=0.6, costs=[5] * 4)
    a = allocate(stats, 32, token_budget=None)
    assert a == allocate(BatchStats(pass_rates=stats.pass_rates, failure_rate=0.6), 32)
    assert a.tokens is None and a.binding is None and a.costs.size == 0


def test_even_split_cases_keep_the_even_split_when_it_fits() -> None:
    nan = float("nan")
    stats = BatchStats(pass_rates=[nan, nan, nan], costs=[10, 20, 30])
    a = allocate(stats, 12, token_budget=1000)
    assert a.counts.tolist() == [4, 4, 4] and a.method == "even_split"
    b = allocate(stats, 12, token_budget=150)  # the even split needs 240 tokens
    assert float(stats.costs @ b.counts) <= 150 and b.budget <= 12
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", coba_rl.BudgetWarning)
        with pytest.raises(ValueError, match="below M \\* n_low"):
            allocate(stats, 4, token_budget=10)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"token_budget": -1.0}, ValueError, "non-negative"),
        ({"token_budget": float("nan")}, ValueError, "finite"),
        ({"token_budget": float("inf")}, ValueError, "finite"),
        ({"token_budget": True}, TypeError, "number of tokens"),
        ({"token_budget": "100"}, TypeError, "number of tokens"),
        ({"token_budget": 10.0}, ValueError, "below the floor"),
        ({"budget": None}, TypeError, "no token_budget"),
        ({"config": CoBAConfig(variant="release"), "token_budget": 1e4}, ValueError, "paper"),
        ({"budget": 10**6, "token_budget": 1e4}, ValueError, "exceeds M \\* n_up"),
    ],
)
def test_bad_token_input_is_refused_with_a_clear_error(
    kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    stats = BatchStats(pass_rates=[0.2, 0.6], costs=[300, 100])
    args: dict[str, Any] = {"budget": 8, **kwargs}
    with pytest.raises(error, match=match):
        allocate(stats, args.pop("budget"), args.pop("config", None), **args)


def test_bad_costs_are_refused() -> None:
    with pytest.raises(ValueError, match="one value per prompt"):
        BatchStats(pass_rates=[0.2, 0.6], costs=[300])
    for bad in (0.0, -5.0, float("inf")):
        with pytest.raises(ValueError, match="finite and positive"):
            BatchStats(pass_rates=[0.2, 0.6], costs=[300, bad])
    with pytest.raises(TypeError):
        BatchStats(pass_rates=[0.2], costs=["long"])
    with pytest.raises(ValueError, match="1-D"):
        BatchStats(pass_rates=[0.2], costs=[[1.0]])


# -- the stateful allocator ----------------------------------------------------------------------


def test_mean_length_follows_the_pass_rate_window() -> None:
    alloc = coba_rl.CoBAAllocator(CoBAConfig(window=2, n_up=16))
    alloc.update([1, 1, 2], [1.0, 0.0, 1.0], lengths=[100, 300, 40])
    assert alloc.mean_lengths([1, 2, 3]).tolist()[:2] == [200.0, 40.0]
    assert math.isnan(alloc.mean_lengths([3])[0])
    alloc.update([1, 1, 1, 1], [0.0] * 4, lengths=[10, 10, 10, 10])
    assert alloc.mean_lengths([1])[0] == pytest.approx((400 + 40) / 6)
    alloc.update([1], [0.0], lengths=[1000])  # the first appearance leaves the window
    assert alloc.mean_lengths([1])[0] == pytest.approx((40 + 1000) / 5)
    alloc.update([1, 1], [0.0, 1.0])  # no lengths: this appearance is left out of the mean
    assert alloc.mean_lengths([1])[0] == 1000.0
    alloc.update([1], [0.0])  # the window holds no lengths for it any more
    assert math.isnan(alloc.mean_lengths([1])[0])
    assert alloc.mean_lengths([2])[0] == 40.0  # prompt 2 did not appear: its window stays
    alloc._check()


def test_stateful_token_allocation_equals_the_stateless_one() -> None:
    cfg = CoBAConfig(n_up=32, window=2)
    alloc = coba_rl.CoBAAllocator(cfg)
    rng = np.random.default_rng(0)
    ids = np.repeat(np.arange(6), 4)
    for _ in range(3):
        alloc.update(ids, rng.integers(0, 2, ids.size), lengths=rng.integers(10, 500, ids.size))
    keys = [0, 1, 2, 3, 4, 5, 9]
    got = alloc.allocate(keys, 40, token_budget=20_000)
    stats = BatchStats(
        pass_rates=alloc.pass_rates(keys),
        failure_rate=alloc.failure_rate,
        costs=alloc.mean_lengths(keys),
    )
    assert got == allocate(stats, 40, cfg, token_budget=20_000)
    assert got.costs[-1] == pytest.approx(np.mean(got.costs[:-1]))  # unseen: the mean
    assert alloc.allocate(keys, 40) == allocate(stats, 40, cfg)  # costs unused without tokens


def test_state_round_trip_keeps_the_lengths(tmp_path: Path) -> None:
    alloc = coba_rl.CoBAAllocator(CoBAConfig(window=3, n_up=16))
    alloc.update(["a", "a", "b"], [1.0, 0.0, 0.0], lengths=[12, 20, 7])
    alloc.update(["b", "c"], [1.0, 1.0])
    alloc.save(tmp_path / "s.json")
    back = coba_rl.CoBAAllocator.load(tmp_path / "s.json")
    assert back.state_dict() == alloc.state_dict()
    ids = ["a", "b", "c"]
    assert np.array_equal(back.mean_lengths(ids), alloc.mean_lengths(ids), equal_nan=True)
    assert back.allocate(ids, 12, token_budget=100) == alloc.allocate(ids, 12, token_budget=100)
    back.update(["a"], [1.0], lengths=[5])
    alloc.update(["a"], [1.0], lengths=[5])
    assert back.state_dict() == alloc.state_dict()


def test_states_without_lengths_keep_their_layout_and_load() -> None:
    plain = coba_rl.CoBAAllocator()
    plain.update([1, 2], [1.0, 0.0])
    state = plain.state_dict()
    assert "tokens" not in state["tracker"]  # layout of files written before token budgets
    back = coba_rl.CoBAAllocator.from_state_dict(state)
    assert np.isnan(back.mean_lengths([1, 2])).all()
    for name in ("coba-paper", "coba-release"):  # version 1 files
        old = coba_rl.CoBAAllocator.load(DATA / "state_v1" / f"{name}.json")
        assert np.isnan(
            old.mean_lengths(
                json.loads((DATA / "state_v1" / f"{name}.expected.json").read_text())["ids"]
            )
        ).all()


def test_corrupt_token_state_is_refused_and_bad_lengths_change_nothing() -> None:
    alloc = coba_rl.CoBAAllocator()
    alloc.update([1, 2], [1.0, 0.0], lengths=[3, 4])
    state = alloc.state_dict()
    bad = json.loads(json.dumps(state))
    bad["tracker"]["tokens"] = coba_rl._persist.encode_ints([[-2], [4]])
    with pytest.raises(ValueError, match="tokens"):
        coba_rl.CoBAAllocator.from_state_dict(bad)
    bad["tracker"]["tokens"] = coba_rl._persist.encode_ints([[3]])
    with pytest.raises(ValueError, match="tokens has shape"):
        coba_rl.CoBAAllocator.from_state_dict(bad)
    before = alloc.state_dict()
    for lengths, match in (([1], "same length"), ([1.5, 2], "whole number"), ([-1, 2], "whole")):
        with pytest.raises(ValueError, match=match):
            alloc.update([1, 2], [1.0, 1.0], lengths=lengths)
    with pytest.raises(ValueError, match="whole number"):
        alloc.update([1, 2], [1.0, 1.0], lengths=[float("nan"), 2])
    assert alloc.state_dict() == before


@pytest.mark.parametrize("cls", [coba_rl.KnapsackRLAllocator, coba_rl.UniformAllocator])
def test_rollout_only_allocators_take_lengths_and_refuse_token_budgets(cls: Any) -> None:
    alloc = cls()
    plain = cls()
    alloc.update([1, 1, 2], [1.0, 0.0, 1.0], lengths=[5, 6, 7])
    plain.update([1, 1, 2], [1.0, 0.0, 1.0])
    assert alloc.state_dict() == plain.state_dict()  # lengths are checked, then ignored
    with pytest.raises(ValueError, match="same length"):
        alloc.update([1], [1.0], lengths=[1, 2])
    with pytest.raises(ValueError, match="does not support token_budget"):
        alloc.allocate([1, 2], 8, token_budget=100)
    with pytest.raises(TypeError, match="rollout budget"):
        alloc.allocate([1, 2], None)
