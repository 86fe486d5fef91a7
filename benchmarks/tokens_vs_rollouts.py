"""Token-budget allocation against the rollout-only ``coba_rl.allocate``, at the paper's scale.

Run: ``python benchmarks/tokens_vs_rollouts.py [--reps N] [--batches N] [--seed S] [--scale]``.

Both paths are the public :func:`coba_rl.allocate` on the same batch statistics (Beta
shape, adaptive ``tau``, the gains of the distinct pass rates); the token path then spends
a token budget (``token_budget=``, with or without the rollout budget) with
:func:`coba_rl.tokens.token_greedy`'s rule instead of a rollout budget with the greedy of
Algorithm 1. Batches: M = 512 prompts, B = 8192 rollouts, bounds [2, 128],
pass rates ``k_i / n_i`` with group sizes ``n_i`` varying over [2, 128] (as a previous
CoBA-RL step leaves them), response lengths that grow with difficulty and stop at a
4096-token limit (:func:`coba_rl.bench.token_batch`, the batches of ``coba-rl bench``'s
token-budget stage). The token budget is half, and all, of what the rollout-only allocation
spends. Prints median times and the ratios token path / rollout path, measured in one
run with the calls interleaved; absolute times depend on the machine.

Each token case is timed twice: as ``allocate`` runs it (the gains' closed form, no
table) and with the gain table ("gain table" rows: the distinct-row table, its running
minimum and the table solver, the path the closed form replaces), so the two compare in
the same run. The counts of the two are checked to be identical, except where both budgets
bind: there each search may find a different certified ranking, and their values must lie
within the larger certified gap of each other.
"""

from __future__ import annotations

import argparse
import statistics
import tracemalloc
from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray

from coba_rl import Allocation, BatchStats, CoBAConfig, allocate
from coba_rl import tokens as tokens_module
from coba_rl.bench._inputs import token_batch
from coba_rl.bench._timing import timed
from coba_rl.solvers import _greedy_extra_grouped, _running_min
from coba_rl.tokens import TokenSolution, token_greedy
from coba_rl.value import _unique_gains, capability_value

M, B, N_LOW, N_UP = 512, 8192, 2, 128


def token_path(
    stats: BatchStats,
    costs: NDArray[np.float64],
    token_budget: float,
    cfg: CoBAConfig,
    rollout_budget: int | None = None,
) -> Allocation:
    """``allocate(stats, rollout_budget, cfg, token_budget=...)`` with the batch's costs."""
    with_costs = BatchStats(
        pass_rates=stats.pass_rates, failure_rate=stats.failure_rate, costs=costs
    )
    return allocate(with_costs, rollout_budget, cfg, token_budget=token_budget)


def on_table(fn: Callable[[], Allocation]) -> Callable[[], Allocation]:
    """``fn`` run with the gain table instead of the closed form."""

    def run() -> Allocation:
        tokens_module._CLOSED_FORM = False
        try:
            return fn()
        finally:
            tokens_module._CLOSED_FORM = True

    return run


def _paths(
    stats: BatchStats,
    costs: NDArray[np.float64],
    spend: float,
    gains_u: NDArray[np.float64],
    inverse: NDArray[np.int64],
    cfg: CoBAConfig,
) -> dict[str, Callable[[], Any]]:
    """The timed calls for one batch; ``spend`` is the rollout-only allocation's tokens."""
    g_run = _running_min(gains_u)
    cases: dict[str, Callable[[], Allocation]] = {
        "tokens, T = spend": lambda: token_path(stats, costs, spend, cfg),
        "tokens, T = spend / 2": lambda: token_path(stats, costs, spend / 2, cfg),
        "tokens + rollouts, T = spend": lambda: token_path(stats, costs, spend, cfg, B),
        "tokens + rollouts, T = 0.9 spend": lambda: token_path(stats, costs, 0.9 * spend, cfg, B),
        "tokens + rollouts, T = spend / 2": lambda: token_path(stats, costs, spend / 2, cfg, B),
    }
    return {
        "rollouts (allocate)": lambda: allocate(stats, B, cfg),
        **cases,
        **{f"{name} (gain table)": on_table(fn) for name, fn in cases.items()},
        "solver only: greedy (rollouts)": lambda: _greedy_extra_grouped(
            g_run, inverse, B - M * N_LOW
        ),
        "solver only: token_greedy, T = spend": lambda: token_greedy(
            gains_u, costs, spend, N_LOW, N_UP, inverse=inverse
        ),
    }


#: ``--scale`` cases: (M, n_up, rollouts per prompt, token share of ``spend``, with B).
SCALE_CASES = [
    (65_536, 128, 16, 0.5, False),
    (65_536, 128, 16, 0.9, True),
    (4_096, 65_536, 64, 0.5, False),
]


def agree(a: Allocation, b: Allocation, both: bool) -> bool:
    """The closed form's result against the gain table's: the same counts, or, with a
    rollout budget as well (``both``: the rollout price found depends on where each
    search starts, and either may stop a few rollouts short of B), values within the
    larger certified gap of each other (each is within its gap of the optimum).
    """
    if np.array_equal(a.counts, b.counts):
        return True
    if not both or a.gap is None or b.gap is None:
        return False
    alpha, beta, tau = a.alpha, a.beta, a.tau
    assert alpha is not None and beta is not None and tau is not None

    def total(x: Allocation) -> float:
        return float(np.sum(capability_value(x.counts, x.pass_rates, alpha, beta, tau)))

    tol = max(a.gap, b.gap) + 1e-9 * abs(total(a))
    return abs(total(a) - total(b)) <= tol


def _call(
    stats: BatchStats, b: int | None, cfg: CoBAConfig, token_budget: float | None
) -> Callable[[], Allocation]:
    """``allocate(stats, b, cfg, token_budget=...)`` as a call to time."""
    return lambda: allocate(stats, b, cfg, token_budget=token_budget)


def _median_time(fn: Callable[[], Any], reps: int) -> float:
    fn()  # warm
    return statistics.median(timed(fn)[0] for _ in range(reps))


def _peak_mb(fn: Callable[[], Any]) -> tuple[float, Any]:
    tracemalloc.start()
    try:
        out = fn()
        return tracemalloc.get_traced_memory()[1] / 1e6, out
    finally:
        tracemalloc.stop()


def scale(reps: int, seed: int) -> bool:
    """Large batches and a large ``n_up``: time and peak memory of the token path, of the
    same allocation on the gain table, and of the rollout-only ``allocate``."""
    ok = True
    print(
        "scale: median ms (peak MB); the gain-table path computes the same counts (with B: "
        "values within the certified gap)"
    )
    for m, n_up, per, share, both in SCALE_CASES:
        rates, costs = token_batch(np.random.default_rng(seed), m, N_LOW, 128)
        cfg = CoBAConfig(n_low=N_LOW, n_up=n_up)
        b = m * per
        stats = BatchStats(pass_rates=rates)
        spend = float(costs @ allocate(stats, b, cfg).counts)
        with_costs = BatchStats(pass_rates=rates, costs=costs)

        tok = _call(with_costs, b if both else None, cfg, share * spend)
        t_ref = _median_time(_call(stats, b, cfg, None), reps)
        t_tok = _median_time(tok, reps)
        mb_tok, out = _peak_mb(tok)
        t_tab = _median_time(on_table(tok), 1)
        mb_tab, out_tab = _peak_mb(on_table(tok))
        same = agree(out, out_tab, both)
        ok &= same
        print(
            f"M={m} n_up={n_up} B={b} T={share:g} spend{' + B' if both else ''}: "
            f"tokens {t_tok * 1e3:.1f} ({mb_tok:.1f}), gain table {t_tab * 1e3:.1f} "
            f"({mb_tab:.1f}), rollouts {t_ref * 1e3:.1f}; agree: {same}"
        )
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=30, help="timed calls per path and batch")
    parser.add_argument("--batches", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--scale",
        action="store_true",
        help="also time M = 65,536 and n_up = 65,536 (and the gain table's peak memory)",
    )
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    cfg = CoBAConfig(n_low=N_LOW, n_up=N_UP)
    times: dict[str, list[float]] = {}
    bounds: dict[str, set[str]] = {}
    ok = True
    for _ in range(args.batches):
        rates, costs = token_batch(rng, M, N_LOW, N_UP)
        stats = BatchStats(pass_rates=rates)
        base = allocate(stats, B, cfg)
        spend = float(costs @ base.counts)
        assert base.alpha is not None and base.beta is not None and base.tau is not None
        gains_u, inverse = _unique_gains(rates, base.alpha, base.beta, base.tau, N_LOW, N_UP, 0.01)
        paths = _paths(stats, costs, spend, gains_u, inverse, cfg)
        for name, fn in paths.items():
            out = fn()
            if name.endswith(" (gain table)"):  # the closed form must agree (see agree())
                fast = paths[name.removesuffix(" (gain table)")]()
                assert isinstance(out, Allocation) and isinstance(fast, Allocation)
                ok &= agree(fast, out, name.startswith("tokens + rollouts"))
            if isinstance(out, TokenSolution):
                bounds.setdefault(name, set()).add(out.bound)
                ok &= out.tokens <= spend and int(out.counts.sum()) >= M * N_LOW
            elif isinstance(out, Allocation) and out.binding is not None:
                bounds.setdefault(name, set()).add(out.binding)
                ok &= out.tokens is not None and out.tokens <= spend * (1 + 1e-12)
        for _ in range(args.reps):  # interleaved, so drift hits every path alike
            for name, fn in paths.items():
                times.setdefault(name, []).append(timed(fn)[0])
    ref = statistics.median(times["rollouts (allocate)"])
    ref_solver = statistics.median(times["solver only: greedy (rollouts)"])
    ref_min = min(times["rollouts (allocate)"])
    ref_solver_min = min(times["solver only: greedy (rollouts)"])
    print(f"M={M}, B={B}, [{N_LOW},{N_UP}], {args.batches} batches x {args.reps} reps")
    print("ratio: against allocate; the solver-only rows against the rollout greedy alone")
    print(f"{'path':<40} {'median ms':>10} {'ratio':>7} {'min ms':>8} {'ratio':>7}  bound")
    for name, ts in times.items():
        med = statistics.median(ts)
        tag = ",".join(sorted(bounds.get(name, {"-"})))
        solver = name.startswith("solver")
        base_t, base_min = (ref_solver, ref_solver_min) if solver else (ref, ref_min)
        low = min(ts)
        print(
            f"{name:<40} {med * 1e3:>10.3f} {med / base_t:>7.2f} "
            f"{low * 1e3:>8.3f} {low / base_min:>7.2f}  {tag}"
        )
    if args.scale:
        ok &= scale(max(1, min(args.reps, 5)), args.seed)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
