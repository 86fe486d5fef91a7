"""DP versus heap versus vectorised greedy, at the paper's Table 4 setting.

The paper times a dynamic program (115.05 s) against its heap (0.124 s) at M = 512
prompts, B = 8192 rollouts and bounds [2, 128]. This module runs, on identical inputs:

* ``dp``: :func:`coba_rl.solvers.dp`, the exact DP, vectorised over the budget axis;
* ``reference heap``: Algorithm 1 as the released allocator runs it, evaluating
  ``V(n, p)`` in Python for every unit handed out (the paper's heap);
* ``heap (table)``: :func:`coba_rl.solvers.greedy_heap` over a precomputed gain table;
* ``allocate``: :func:`coba_rl.allocate` end to end (gain table plus vectorised greedy).

Absolute times depend on the machine; the ratios within one run are the comparable
figures.
"""

from __future__ import annotations

import heapq
import math
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from coba_rl.coba import allocate
from coba_rl.config import CoBAConfig
from coba_rl.solvers import dp, greedy, greedy_heap, objective
from coba_rl.types import BatchStats
from coba_rl.value import adaptive_tau, beta_shape, marginal_gains

__all__ = [
    "PAPER_TABLE4",
    "BenchResult",
    "machine_info",
    "paper_batch",
    "reference_heap",
    "run_paper_setting",
]

#: The paper's Table 4 (seconds), M = 512, B = 8192, [n_low, n_up] = [2, 128].
PAPER_TABLE4 = {"dp": 115.05, "heap": 0.124}

IntArray = NDArray[np.int64]
FloatArray = NDArray[np.float64]


def paper_batch(
    rng: np.random.Generator, m: int = 512, group: int = 16, tie_heavy: bool = False
) -> FloatArray:
    """Pass rates like a math-RLVR batch: ``k / group`` with mass at 0 and 1.

    A third of the prompts are unsolved, a tenth always solved, the rest spread, as
    reported at the start of math RLVR. ``tie_heavy`` puts every prompt on one of
    three rates, so nearly every gain ties with many others.

    Example:
      >>> p = paper_batch(np.random.default_rng(0), m=8)
      >>> p.shape, bool(((p * 16) % 1 == 0).all())
      ((8,), True)
    """
    if tie_heavy:
        return rng.choice(np.array([0.25, 0.5, 0.75]), size=m)
    latent = rng.beta(0.6, 0.9, size=m)
    rates = rng.binomial(group, latent) / group
    zero = rng.random(m) < 0.33
    one = ~zero & (rng.random(m) < 0.10)
    rates[zero], rates[one] = 0.0, 1.0
    return rates.astype(np.float64)


def reference_heap(
    pass_rates: FloatArray, budget: int, cfg: CoBAConfig, alpha: float, beta: float
) -> IntArray:
    """Algorithm 1 as the released allocator runs it: ``V`` evaluated per unit in Python.

    This is the paper's heap, the baseline of Table 4; it gives the same counts as
    :func:`coba_rl.allocate` (the tests check that).

    Complexity: O(M + R log M) heap operations, each with two Python evaluations of V.
    """
    tau = adaptive_tau(pass_rates, cfg.tau_min, cfg.tau_max, cfg.var_max, cfg.smoothing)
    s = cfg.smoothing

    lgamma_terms = math.lgamma(alpha) + math.lgamma(beta) - math.lgamma(alpha + beta)

    def value(p: float, n: int) -> float:
        # Per call, the same work as the released allocator's value function: two
        # scalar clips, the log-gamma Beta density and a scalar numpy exp.
        ps = np.clip(p, s, 1.0 - s)
        q = float(np.clip(ps, 1e-10, 1.0 - 1e-10))
        log_pdf = (alpha - 1) * math.log(q) + (beta - 1) * math.log(1 - q)
        pdf = math.exp(log_pdf - math.log(math.exp(lgamma_terms)))
        if not np.isfinite(pdf):
            pdf = 1e-10
        return float((1 - np.exp(-n / tau * ps * (1 - ps))) * pdf)

    m = pass_rates.size
    counts = [cfg.n_low] * m
    remaining = budget - m * cfg.n_low
    heap: list[tuple[float, int]] = []
    for i in range(m):
        if counts[i] < cfg.n_up:
            p = float(pass_rates[i])
            heapq.heappush(heap, (-(value(p, counts[i] + 1) - value(p, counts[i])), i))
    while remaining > 0 and heap:
        _, i = heapq.heappop(heap)
        counts[i] += 1
        remaining -= 1
        if counts[i] < cfg.n_up:
            p = float(pass_rates[i])
            heapq.heappush(heap, (-(value(p, counts[i] + 1) - value(p, counts[i])), i))
    return np.asarray(counts, dtype=np.int64)


def machine_info() -> dict[str, Any]:
    """CPU, core count and library versions, to store beside benchmark results."""
    import os
    from importlib.metadata import version

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": version("scipy"),
        "platform": platform.platform(),
    }


@dataclass
class BenchResult:
    """Timings (seconds) of each path on one case, plus the agreement checks."""

    case: str
    times: dict[str, list[float]] = field(default_factory=dict)
    counts_identical: bool = True
    dp_objective_equal: bool = True
    max_objective_gap: float = 0.0

    def summary(self) -> dict[str, dict[str, float]]:
        return {
            k: {"median": statistics.median(v), "min": min(v), "max": max(v), "reps": len(v)}
            for k, v in self.times.items()
        }


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def run_paper_setting(
    reps: int = 5,
    dp_reps: int = 1,
    seed: int = 0,
    m: int = 512,
    budget: int = 8192,
    n_low: int = 2,
    n_up: int = 128,
    failure_rate: float = 0.6,
    progress: Callable[[str], None] | None = None,
) -> list[BenchResult]:
    """Time every path on a realistic batch and a tie-heavy batch, checking agreement.

    Each repetition draws a fresh batch (from ``seed``); every path sees the same one.
    The DP runs ``dp_reps`` times (it is the slow one).
    """
    cfg = CoBAConfig(n_low=n_low, n_up=n_up)
    a, b = beta_shape(failure_rate, cfg.kappa, cfg.gamma)
    alpha, beta = float(a), float(b)
    rng = np.random.default_rng(seed)
    results = []
    for case, tie_heavy in (("realistic", False), ("tie-heavy", True)):
        res = BenchResult(case)
        for r in range(reps):
            p = paper_batch(rng, m, tie_heavy=tie_heavy)
            stats = BatchStats(pass_rates=p, failure_rate=failure_rate)
            t_alloc, alloc = _timed(lambda: allocate(stats, budget, cfg))  # noqa: B023
            gains = marginal_gains(p, alpha, beta, alloc.tau, n_low, n_up)
            t_ref, ref = _timed(lambda: reference_heap(p, budget, cfg, alpha, beta))  # noqa: B023
            t_heap, heap = _timed(lambda: greedy_heap(gains, budget, n_low, n_up))  # noqa: B023
            t_vec, vec = _timed(lambda: greedy(gains, budget, n_low, n_up))  # noqa: B023
            for key, t in (
                ("allocate", t_alloc),
                ("reference heap", t_ref),
                ("heap (table)", t_heap),
                ("greedy (table)", t_vec),
            ):
                res.times.setdefault(key, []).append(t)
            same = (
                np.array_equal(ref, heap)
                and np.array_equal(heap, vec)
                and np.array_equal(vec, alloc.counts)
            )
            res.counts_identical &= bool(same)
            if r < dp_reps:
                if progress:
                    progress(f"{case}: DP repetition {r + 1}/{dp_reps}")
                t_dp, opt = _timed(lambda: dp(gains, budget, n_low, n_up))  # noqa: B023
                res.times.setdefault("dp", []).append(t_dp)
                v_dp, v_greedy = objective(gains, opt, n_low), objective(gains, vec, n_low)
                gap = abs(v_dp - v_greedy) / max(1.0, abs(v_dp))
                res.max_objective_gap = max(res.max_objective_gap, gap)
                res.dp_objective_equal &= gap <= 1e-9
            if progress:
                progress(f"{case}: repetition {r + 1}/{reps} done")
        results.append(res)
    return results


def format_paper_table(results: list[BenchResult]) -> str:
    """A Markdown table of the paper-setting results with speed-ups and the paper's figures."""
    lines = [
        "| case | path | median (ms) | min (ms) | max (ms) | reps | speed-up vs reference heap |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for res in results:
        summ = res.summary()
        ref = summ["reference heap"]["median"]
        for path in ("dp", "reference heap", "heap (table)", "greedy (table)", "allocate"):
            if path not in summ:
                continue
            s = summ[path]
            lines.append(
                f"| {res.case} | {path} | {s['median'] * 1e3:.3f} | {s['min'] * 1e3:.3f} | "
                f"{s['max'] * 1e3:.3f} | {s['reps']} | {ref / s['median']:.1f}x |"
            )
    lines.append("")
    lines.append("| case | heap, greedy and allocate counts identical | DP objective equal |")
    lines.append("|---|---|---|")
    for res in results:
        lines.append(
            f"| {res.case} | {'yes' if res.counts_identical else 'NO'} | "
            f"{'yes' if res.dp_objective_equal else 'NO'} "
            f"(max relative gap {res.max_objective_gap:.1e}) |"
        )
    paper_ratio = PAPER_TABLE4["dp"] / PAPER_TABLE4["heap"]
    realistic = results[0].summary()
    lines.append("")
    lines.append(
        f"Paper's Table 4: DP {PAPER_TABLE4['dp']:.2f} s, heap {PAPER_TABLE4['heap']:.3f} s "
        f"(DP/heap = {paper_ratio:.0f}x)."
    )
    if "dp" in realistic:
        ref = realistic["reference heap"]["median"]
        ours = realistic["dp"]["median"] / ref
        lines.append(
            f"This run: DP {realistic['dp']['median']:.2f} s, reference heap "
            f"{realistic['reference heap']['median']:.3f} s (DP/heap = {ours:.0f}x); "
            f"allocate is {ref / realistic['allocate']['median']:.0f}x "
            "faster than the reference heap."
        )
    lines.append("Absolute times depend on the machine; compare the ratios, measured in one run.")
    return "\n".join(lines)


def main_paper(reps: int = 5, dp_reps: int = 1, seed: int = 0, quiet: bool = False) -> int:
    """Run :func:`run_paper_setting` and print the table; non-zero exit if paths disagree."""

    def progress(msg: str) -> None:
        if not quiet:
            print(f"  [{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    info = machine_info()
    print(
        f"CoBA-RL allocation at the paper's setting (M=512, B=8192, [2, 128]) on "
        f"{info['cpu']} ({info['cores']} cores), Python {info['python']}, numpy {info['numpy']}"
    )
    results = run_paper_setting(reps=reps, dp_reps=dp_reps, seed=seed, progress=progress)
    print(format_paper_table(results))
    ok = all(r.counts_identical and r.dp_objective_equal for r in results)
    return 0 if ok else 1


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main_paper())
