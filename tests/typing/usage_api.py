"""The public API as the docs use it, with the types a user's checker must infer."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from typing_extensions import assert_type

import coba_rl
from coba_rl import Allocation, Allocator, BatchStats, CoBAConfig

# -- configs: every field has a default, so any subset of keywords type-checks -----------------
cfg = CoBAConfig()
cfg = CoBAConfig(n_up=64)
cfg = CoBAConfig(variant="release", n_low=4, n_up=32, kappa=7.0, window=3, tau=6.0)
assert_type(cfg.kappa, float)
assert_type(cfg.n_up, int)
knap_cfg = coba_rl.KnapsackConfig(n_up=64, confidence=0.8, unseen_n=None)
uni_cfg = coba_rl.UniformConfig(window=2)

# -- BatchStats: lists, tuples and arrays in, a float64 array out ---------------------------------
s1 = BatchStats(pass_rates=[0.1, 0.5, float("nan")])
s2 = BatchStats(pass_rates=(0.0, 1.0), failure_rate=0.4)
s3 = BatchStats(pass_rates=np.array([0.25, 0.75]), failure_rate=None)
s4 = BatchStats(pass_rates=np.array([0, 1]))
s5 = BatchStats(pass_rates=[1, 0, 1])
assert_type(s1.pass_rates, NDArray[np.float64])
assert_type(s1.failure_rate, "float | None")
assert_type(s1.resolved_failure_rate(), "float | None")
assert_type(s1.num_prompts, int)

# -- stateless allocation -------------------------------------------------------------------------
a = coba_rl.allocate(s2, 8)
a = coba_rl.allocate(s2, 8, cfg)
a = coba_rl.allocate(s2, 8, {"n_up": 16})  # a plain dict (Hydra) is validated into a CoBAConfig
assert_type(a, Allocation)
assert_type(a.counts, NDArray[np.int64])
assert_type(a.budget, int)
assert_type(a.alpha, "float | None")
assert_type(a.tau, "float | None")
assert_type(a.failure_rate, "float | None")
assert_type(a.n_low, "int | None")
assert_type(a.metrics(), "dict[str, float]")
assert_type(a == a, bool)
k = coba_rl.knapsack_allocate(s3, 16, knap_cfg)
assert_type(k, Allocation)

# -- token budgets: costs per prompt (NaN unknown), a token budget with or without rollouts -------
cost_cfg = CoBAConfig(max_prompt_tokens=8192, default_tokens_per_rollout=1024.0)
s6 = BatchStats(pass_rates=[0.1, 0.5], costs=[300.0, float("nan")])
s7 = BatchStats(pass_rates=np.array([0.25, 0.75]), costs=np.array([120, 80]))
assert_type(s6.costs, "NDArray[np.float64] | None")
t1 = coba_rl.allocate(s6, None, cost_cfg, token_budget=4096)
t2 = coba_rl.allocate(s7, 8, token_budget=2000.0)
assert_type(t1, Allocation)
assert_type(t1.tokens, "float | None")
assert_type(t1.token_budget, "float | None")
assert_type(t1.binding, "str | None")
assert_type(t1.gap, "float | None")
assert_type(t2.costs, NDArray[np.float64])

# -- stateful allocators, all behind one protocol -------------------------------------------------
coba = coba_rl.CoBAAllocator(cfg)
knap = coba_rl.KnapsackRLAllocator(knap_cfg)
uni = coba_rl.UniformAllocator(uni_cfg)
allocators: list[Allocator] = [coba, knap, uni, coba_rl.CoBAAllocator()]
for alloc in allocators:
    counts = alloc.allocate(["a", "b"], 8).counts
    alloc.update(["a", "a", "b"], [1.0, 0.0, 1.0])
    alloc.update(["a", "b"], [1.0, 0.0], lengths=[412, 1024])
coba.update(["a", "b"], [1.0, 0.0], lengths=np.array([412, 1024]))
assert_type(coba.allocate(["a", "b"], 8, token_budget=4096.0), Allocation)
assert_type(coba.allocate(["a", "b"], None, token_budget=4096), Allocation)
assert_type(coba.mean_lengths(["a", "b"]), NDArray[np.float64])
assert_type(coba.failure_rate, "float | None")
assert_type(coba.alpha, float)
assert_type(coba.step, int)
assert_type(coba_rl.CoBAAllocator.load("state.json"), coba_rl.CoBAAllocator)
assert_type(coba_rl.KnapsackRLAllocator.load("state.json"), coba_rl.KnapsackRLAllocator)
assert_type(coba_rl.UniformAllocator.load("state.json"), coba_rl.UniformAllocator)

# -- misuse both checkers must flag (each ignore is required: an unneeded one is an error) --------
CoBAConfig(n_lo=2)  # type: ignore[call-arg]  # pyright: ignore[reportCallIssue]
CoBAConfig(n_up="64")  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
BatchStats(pass_rates=[[0.1]])  # type: ignore[list-item]  # pyright: ignore[reportArgumentType]
BatchStats(pass_rates="0.5")  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
coba_rl.allocate([0.1, 0.5], 8)  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
coba_rl.allocate(s1, 8, token_budget="4096")  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
BatchStats(pass_rates=[0.5], costs="300")  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
coba_rl.allocate(s1, 8, knap_cfg)  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
coba_rl.knapsack_allocate(s1, 8, cfg)  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
coba_rl.UniformAllocator(cfg)  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
coba_rl.KnapsackRLAllocator(cfg)  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
coba_rl.CoBAAllocator(knap_cfg)  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
