"""Token budgets at the paper's setting: ``allocate(..., token_budget=T)`` against ``allocate``.

Both paths are the public :func:`coba_rl.allocate` on the same batch (pass rates
``k_i / n_i`` with varying ``n_i``, per-prompt costs = mean response lengths that grow
with difficulty up to a length limit; see :func:`coba_rl.bench.token_batch`). ``spend``
is the tokens the rollout-only allocation of B rollouts spends on that batch. Cases:

* ``tokens, T = spend`` and ``tokens, T = spend / 2``: the token budget alone;
* ``tokens + rollouts, T = 0.9 spend`` (both budgets bind) and
  ``tokens + rollouts, T = spend / 2``: the token budget with the rollout budget B;
* ``tokens + rollouts, T = spend``: a token budget that does not bind (the rollout-only
  allocation fits and is returned unchanged).

Every call is timed interleaved with the rollout-only ``allocate`` on the same batch, so
drift on a loaded machine hits both alike; the ratio of medians is what compares.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from coba_rl.bench._inputs import LENGTH_LIMIT, token_batch
from coba_rl.bench._timing import timed
from coba_rl.coba import allocate
from coba_rl.config import CoBAConfig
from coba_rl.types import Allocation, BatchStats

__all__ = [
    "ROLLOUT_PATH",
    "TOKEN_CASES",
    "TOKEN_SETTING",
    "TokenCase",
    "format_token_table",
    "run_token_budget",
]

#: The setting of the stage (the paper's Table 4 setting).
TOKEN_SETTING = {"m": 512, "budget": 8192, "n_low": 2, "n_up": 128}
#: Per case: (share of ``spend`` given as the token budget, whether B binds too).
TOKEN_CASES: dict[str, tuple[float, bool]] = {
    "tokens, T = spend": (1.0, False),
    "tokens, T = spend / 2": (0.5, False),
    "tokens + rollouts, T = 0.9 spend": (0.9, True),
    "tokens + rollouts, T = spend / 2": (0.5, True),
    "tokens + rollouts, T = spend": (1.0, True),
}
#: The baseline path's name.
ROLLOUT_PATH = "rollouts (allocate)"
#: Relative slack on ``tokens <= T`` (floating-point sums of the costs).
TOKEN_RTOL = 1e-9


@dataclass
class TokenCase:
    """One case: timings (seconds) of the token path and of the interleaved baseline."""

    case: str
    share: float
    with_rollouts: bool
    times: dict[str, list[float]] = field(default_factory=dict)
    budget_held: bool = True
    rollouts_held: bool = True
    bounds_held: bool = True
    bindings: set[str] = field(default_factory=set)
    max_token_use: float = 0.0

    @property
    def agrees(self) -> bool:
        """Token budget held, rollouts <= B (when given), every count within bounds."""
        return self.budget_held and self.rollouts_held and self.bounds_held

    def ratio(self) -> float:
        """Median token-path time over median rollout-only time."""
        return statistics.median(self.times[self.case]) / statistics.median(
            self.times[ROLLOUT_PATH]
        )

    def to_json(self) -> dict[str, Any]:
        """JSON-ready timings (median/min/max/reps per path), ratio and checks."""
        return {
            "case": self.case,
            "token_share": self.share,
            "with_rollout_budget": self.with_rollouts,
            "paths": {
                k: {"median": statistics.median(v), "min": min(v), "max": max(v), "reps": len(v)}
                for k, v in self.times.items()
            },
            "ratio": self.ratio(),
            "budget_held": self.budget_held,
            "rollouts_held": self.rollouts_held,
            "bounds_held": self.bounds_held,
            "agrees": self.agrees,
            "binding": sorted(self.bindings),
            "max_token_use": self.max_token_use,
        }


def check_allocation(
    out: Allocation, token_budget: float, rollout_budget: int | None, n_low: int, n_up: int
) -> tuple[bool, bool, bool, float]:
    """``(token budget held, rollouts <= B, bounds held, tokens / T)`` of one result.

    The spent tokens are recomputed from the counts and the costs, not read from
    ``out.tokens`` alone, so a solver that misreports its spend is caught too.
    """
    counts = np.asarray(out.counts)
    costs = np.asarray(out.costs) if out.costs is not None else None
    spent = float(costs @ counts) if costs is not None else float("inf")
    reported = out.tokens if out.tokens is not None else float("inf")
    limit = token_budget * (1.0 + TOKEN_RTOL)
    budget = spent <= limit and reported <= limit
    rollouts = rollout_budget is None or int(counts.sum()) <= rollout_budget
    bounds = bool(((counts >= n_low) & (counts <= n_up)).all())
    return budget, rollouts, bounds, spent / token_budget


def _token_call(
    stats: BatchStats, rollouts: int | None, cfg: CoBAConfig, token_budget: float
) -> Callable[[], Allocation]:
    """``allocate(stats, rollouts, cfg, token_budget=token_budget)`` as a call to time."""
    return lambda: allocate(stats, rollouts, cfg, token_budget=token_budget)


def run_token_budget(
    reps: int = 20,
    batches: int = 5,
    seed: int = 0,
    m: int = TOKEN_SETTING["m"],
    budget: int = TOKEN_SETTING["budget"],
    n_low: int = TOKEN_SETTING["n_low"],
    n_up: int = TOKEN_SETTING["n_up"],
    progress: Callable[[str], None] | None = None,
) -> list[TokenCase]:
    """Time each token case against the rollout-only ``allocate``, checking the invariants.

    Per batch (``batches`` of them, drawn from ``seed``): the rollout-only allocation
    gives ``spend``; every case's result is checked (token budget held, rollouts <= B
    where B is given, counts within [n_low, n_up]); then ``reps`` rounds, each calling
    every case and, right before it, the rollout-only ``allocate``.

    Returns:
      One :class:`TokenCase` per entry of :data:`TOKEN_CASES`.
    """
    cfg = CoBAConfig(n_low=n_low, n_up=n_up)
    rng = np.random.default_rng(seed)
    results = {name: TokenCase(name, share, both) for name, (share, both) in TOKEN_CASES.items()}
    for b in range(batches):
        rates, costs = token_batch(rng, m, n_low, n_up)
        stats = BatchStats(pass_rates=rates)
        with_costs = BatchStats(pass_rates=rates, costs=costs)
        spend = float(costs @ allocate(stats, budget, cfg).counts)
        calls: dict[str, Callable[[], Allocation]] = {}
        for name, res in results.items():
            t_budget = res.share * spend
            b_rollouts = budget if res.with_rollouts else None
            calls[name] = _token_call(with_costs, b_rollouts, cfg, t_budget)
            out = calls[name]()
            held, rolled, bounded, use = check_allocation(out, t_budget, b_rollouts, n_low, n_up)
            res.budget_held &= held
            res.rollouts_held &= rolled
            res.bounds_held &= bounded
            res.max_token_use = max(res.max_token_use, use)
            if out.binding is not None:
                res.bindings.add(out.binding)
        for _ in range(reps):  # interleaved, so drift hits both paths alike
            for name, res in results.items():
                t_ref, _ = timed(lambda: allocate(stats, budget, cfg))  # noqa: B023
                t_tok, _ = timed(calls[name])
                res.times.setdefault(ROLLOUT_PATH, []).append(t_ref)
                res.times.setdefault(name, []).append(t_tok)
        if progress:
            progress(f"token budgets: batch {b + 1}/{batches}, {reps} rounds")
    return list(results.values())


def format_token_table(cases: list[dict[str, Any]]) -> str:
    """Markdown: per case, median/min of both paths, the ratio, the binding, the checks."""
    lines = [
        "| case | token path median (ms) | rollout-only median (ms) | ratio (medians) "
        "| ratio (minimums) | stopped by | tokens / T (max) | budgets and bounds held |",
        "|---|---:|---:|---:|---:|---|---:|---|",
    ]
    for c in cases:
        tok, ref = c["paths"][c["case"]], c["paths"][ROLLOUT_PATH]
        lines.append(
            f"| {c['case']} | {tok['median'] * 1e3:.3f} | {ref['median'] * 1e3:.3f} | "
            f"{c['ratio']:.2f}x | {tok['min'] / ref['min']:.2f}x | "
            f"{', '.join(c['binding']) or '-'} | {c['max_token_use']:.4f} | "
            f"{'yes' if c['agrees'] else 'NO'} |"
        )
    lines += [
        "",
        f"Response lengths up to {LENGTH_LIMIT:.0f} tokens; `spend` is what the rollout-only "
        "allocation spends on the same batch.",
    ]
    return "\n".join(lines)
