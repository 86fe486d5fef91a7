"""The paper's Table 4 setting: DP, the paper's heap and the vectorised greedy, side by side.

The paper times a dynamic program (115.05 s) against its heap (0.124 s) at M = 512
prompts, B = 8192 rollouts and bounds [2, 128]. Here every path runs on the same batch:

* ``dp``: :func:`coba_rl.solvers.dp`, the exact DP, vectorised over the budget axis;
* ``reference heap``: :func:`coba_rl.bench.reference_heap`, the paper's heap as released;
* ``plain heap``: :func:`coba_rl.bench.plain_heap`, the same heap in plain Python;
* ``heap (table)``: :func:`coba_rl.solvers.greedy_heap` over a precomputed gain table;
* ``greedy (table)``: :func:`coba_rl.solvers.greedy` over the same table;
* ``allocate (table)``: ``allocate`` as it was with the gain-table solver, end to end;
* ``allocate``: :func:`coba_rl.allocate`, end to end (the threshold solver, no table).

Absolute times depend on the machine; the ratios within one run are what compares.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from coba_rl.bench._baselines import plain_heap, reference_heap, table_allocate
from coba_rl.bench._inputs import BATCH_KINDS, BatchKind, paper_batch
from coba_rl.bench._timing import timed
from coba_rl.coba import allocate
from coba_rl.config import CoBAConfig
from coba_rl.solvers import dp, greedy, greedy_heap, objective
from coba_rl.types import BatchStats
from coba_rl.value import beta_shape, marginal_gains

__all__ = [
    "PAPER_SETTING",
    "PAPER_TABLE4",
    "PATHS",
    "PaperCase",
    "format_paper_table",
    "run_paper_setting",
]

#: The paper's Table 4 (seconds).
PAPER_TABLE4 = {"dp": 115.05, "heap": 0.124}
#: The setting of the paper's Table 4.
PAPER_SETTING = {"m": 512, "budget": 8192, "n_low": 2, "n_up": 128}
#: Every timed path, slowest first.
PATHS = (
    "dp",
    "reference heap",
    "plain heap",
    "heap (table)",
    "greedy (table)",
    "allocate (table)",
    "allocate",
)
#: Largest relative gap between the DP's and the greedy's objective counted as equal.
OBJECTIVE_RTOL = 1e-9


@dataclass
class PaperCase:
    """Timings (seconds) of each path on one kind of batch, and the agreement checks."""

    case: str
    times: dict[str, list[float]] = field(default_factory=dict)
    counts_identical: bool = True
    dp_objective_equal: bool = True
    max_objective_gap: float = 0.0

    def summary(self) -> dict[str, dict[str, float]]:
        """Per path: ``median``, ``min`` and ``max`` seconds and the number of ``reps``."""
        return {
            k: {"median": statistics.median(v), "min": min(v), "max": max(v), "reps": len(v)}
            for k, v in self.times.items()
        }

    def to_json(self) -> dict[str, Any]:
        """JSON-ready summary and checks."""
        return {
            "case": self.case,
            "paths": self.summary(),
            "counts_identical": self.counts_identical,
            "dp_objective_equal": self.dp_objective_equal,
            "max_objective_gap": self.max_objective_gap,
        }


def objective_gap(gains: np.ndarray[Any, Any], a: Any, b: Any, n_low: int) -> float:
    """Relative gap between the objectives of two allocations of the same table."""
    v_a, v_b = objective(gains, a, n_low), objective(gains, b, n_low)
    return abs(v_a - v_b) / max(1.0, abs(v_a))


#: Calls per batch of the millisecond paths; their median is the batch's time.
FAST_CALLS = 5


def _fast(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Median time of :data:`FAST_CALLS` calls (one call of a sub-millisecond path is
    at the mercy of the scheduler on a loaded machine), and the first call's result."""
    runs = [timed(fn) for _ in range(FAST_CALLS)]
    return statistics.median(t for t, _ in runs), runs[0][1]


def run_paper_setting(
    reps: int = 5,
    dp_reps: int = 1,
    seed: int = 0,
    m: int = PAPER_SETTING["m"],
    budget: int = PAPER_SETTING["budget"],
    n_low: int = PAPER_SETTING["n_low"],
    n_up: int = PAPER_SETTING["n_up"],
    failure_rate: float = 0.6,
    cases: tuple[BatchKind, ...] = BATCH_KINDS,
    progress: Callable[[str], None] | None = None,
) -> list[PaperCase]:
    """Time every path on fresh batches of each kind, checking that they agree.

    Each repetition draws a new batch (from ``seed``) and every path sees that batch (the
    millisecond paths, ``allocate``, ``allocate (table)`` and ``greedy (table)``, are
    called :data:`FAST_CALLS` times on it and their median kept). The
    DP, the slow path, runs on the first ``dp_reps`` batches only. Counts of the two
    Python heaps, the table heap, the vectorised greedy, the table ``allocate`` and
    :func:`coba_rl.allocate` must be identical; the DP's objective must equal the
    greedy's (relative gap <= 1e-9).

    Returns:
      One :class:`PaperCase` per entry of ``cases``.
    """
    cfg = CoBAConfig(n_low=n_low, n_up=n_up)
    a, b = beta_shape(failure_rate, cfg.kappa, cfg.gamma)
    alpha, beta = float(a), float(b)
    rng = np.random.default_rng(seed)
    results = []
    for kind in cases:
        res = PaperCase(kind)
        for r in range(reps):
            p = paper_batch(rng, m, kind=kind)
            stats = BatchStats(pass_rates=p, failure_rate=failure_rate)
            t_alloc, alloc = _fast(lambda: allocate(stats, budget, cfg))  # noqa: B023
            gains = marginal_gains(p, alpha, beta, alloc.tau, n_low, n_up, cfg.smoothing)
            t_table, table = _fast(lambda: table_allocate(stats, budget, cfg))  # noqa: B023
            t_ref, ref = timed(lambda: reference_heap(p, budget, cfg, alpha, beta))  # noqa: B023
            t_plain, plain = timed(lambda: plain_heap(p, budget, cfg, alpha, beta))  # noqa: B023
            t_heap, heap = timed(lambda: greedy_heap(gains, budget, n_low, n_up))  # noqa: B023
            t_vec, vec = _fast(lambda: greedy(gains, budget, n_low, n_up))  # noqa: B023
            for key, t in (
                ("reference heap", t_ref),
                ("plain heap", t_plain),
                ("heap (table)", t_heap),
                ("greedy (table)", t_vec),
                ("allocate (table)", t_table),
                ("allocate", t_alloc),
            ):
                res.times.setdefault(key, []).append(t)
            others = (plain, heap, vec, table.counts, alloc.counts)
            same = all(np.array_equal(ref, c) for c in others)
            res.counts_identical &= bool(same)
            if r < dp_reps:
                if progress:
                    progress(f"paper setting, {kind}: DP {r + 1}/{dp_reps}")
                t_dp, opt = timed(lambda: dp(gains, budget, n_low, n_up))  # noqa: B023
                res.times.setdefault("dp", []).append(t_dp)
                gap = objective_gap(gains, opt, vec, n_low)
                res.max_objective_gap = max(res.max_objective_gap, gap)
                res.dp_objective_equal &= gap <= OBJECTIVE_RTOL
        if progress:
            progress(f"paper setting, {kind}: {reps} repetitions done")
        results.append(res)
    return results


def format_paper_table(results: list[PaperCase]) -> str:
    """Markdown: per case and path, median/min/max in ms, speed-up, agreement, the paper."""
    lines = [
        "| case | path | median (ms) | min (ms) | max (ms) | reps | speed-up vs paper's heap |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for res in results:
        summ = res.summary()
        ref = summ["reference heap"]["median"]
        for path in PATHS:
            if path in summ:
                s = summ[path]
                lines.append(
                    f"| {res.case} | {path} | {s['median'] * 1e3:.3f} | {s['min'] * 1e3:.3f} | "
                    f"{s['max'] * 1e3:.3f} | {s['reps']:.0f} | {ref / s['median']:.1f}x |"
                )
    lines += [
        "",
        "| case | both Python heaps, table heap, greedy, both allocates: same counts "
        "| DP objective equal (max relative gap) |",
        "|---|---|---|",
    ]
    for res in results:
        lines.append(
            f"| {res.case} | {'yes' if res.counts_identical else 'NO'} | "
            f"{'yes' if res.dp_objective_equal else 'NO'} ({res.max_objective_gap:.1e}) |"
        )
    lines += ["", format_paper_comparison(results)]
    return "\n".join(lines)


def format_paper_comparison(results: list[PaperCase]) -> str:
    """Markdown table of the paper's Table 4 beside this run (first case), with ratios."""
    summ = results[0].summary()
    paper_dp, paper_heap = PAPER_TABLE4["dp"], PAPER_TABLE4["heap"]
    ref = summ["reference heap"]["median"]
    lines = [
        f"| figure ({results[0].case} batch) | paper's Table 4 | this run |",
        "|---|---:|---:|",
        f"| DP | {paper_dp:.2f} s | "
        + (f"{summ['dp']['median']:.3f} s |" if "dp" in summ else "not run |"),
        f"| heap (the paper's) | {paper_heap:.3f} s | {ref:.4f} s |",
    ]
    if "dp" in summ:
        lines.append(
            f"| DP / heap | {paper_dp / paper_heap:.0f}x | {summ['dp']['median'] / ref:.1f}x |"
        )
    lines.append(
        f"| heap / allocate | (not in the paper) | {ref / summ['allocate']['median']:.0f}x |"
    )
    if "plain heap" in summ:
        plain = summ["plain heap"]["median"] / summ["allocate"]["median"]
        lines.append(f"| plain-Python heap / allocate | (not in the paper) | {plain:.0f}x |")
    dp_vs_alloc = (
        f"{summ['dp']['median'] / summ['allocate']['median']:.0f}x" if "dp" in summ else "-"
    )
    lines.append(f"| DP / allocate | (not in the paper) | {dp_vs_alloc} |")
    return "\n".join(lines)
