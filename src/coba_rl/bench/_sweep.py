"""How allocation cost grows: time and peak memory of every path over M and over the bounds.

The size sweep runs M from 64 to 65,536 at B = 16 M and [n_low, n_up] = [2, 128], on realistic,
grid and continuous pass rates. A path whose time, extrapolated from the previous size, would
pass the cap is skipped at that size and above (the DP grows as M^2 and stops early). The
bounds sweep holds M fixed and grows n_up, to see the cost in ``n_up - n_low``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from coba_rl.bench._baselines import reference_heap
from coba_rl.bench._inputs import BatchKind, paper_batch
from coba_rl.bench._paper import OBJECTIVE_RTOL, objective_gap
from coba_rl.bench._timing import Measurement, estimate_seconds, measure, peak_memory
from coba_rl.coba import allocate
from coba_rl.config import CoBAConfig
from coba_rl.solvers import dp, greedy, greedy_heap
from coba_rl.types import BatchStats
from coba_rl.value import beta_shape, marginal_gains

__all__ = [
    "SWEEP_PATHS",
    "SWEEP_SIZES",
    "SweepPoint",
    "growth_exponents",
    "run_bounds_sweep",
    "run_size_sweep",
]

#: M values of the full sweep.
SWEEP_SIZES = (64, 256, 1024, 4096, 16384, 65536)
#: Paths of the sweep, fastest first.
SWEEP_PATHS = ("allocate", "greedy (table)", "heap (table)", "reference heap", "dp")
#: Exponent of M used to extrapolate each path's time to the next size.
GROWTH_GUESS = {"dp": 2.0}
DEFAULT_GROWTH_GUESS = 1.2
#: Rollouts per prompt on average (B = 16 M).
ROLLOUTS_PER_PROMPT = 16


@dataclass
class SweepPoint:
    """Every path at one (kind, M, bounds): measurements, skips and agreement checks."""

    kind: str
    m: int
    budget: int
    n_low: int
    n_up: int
    results: dict[str, Measurement]
    skipped: dict[str, str]
    counts_identical: bool
    dp_objective_gap: float | None

    @property
    def dp_objective_equal(self) -> bool | None:
        """Whether the DP reached the greedy's objective (``None`` if it did not run)."""
        if self.dp_objective_gap is None:
            return None
        return self.dp_objective_gap <= OBJECTIVE_RTOL

    def to_json(self) -> dict[str, Any]:
        """JSON-ready record."""
        return {
            "kind": self.kind,
            "m": self.m,
            "budget": self.budget,
            "n_low": self.n_low,
            "n_up": self.n_up,
            "paths": {k: v.summary() for k, v in self.results.items()},
            "skipped": dict(self.skipped),
            "counts_identical": self.counts_identical,
            "dp_objective_equal": self.dp_objective_equal,
            "dp_objective_gap": self.dp_objective_gap,
        }


def _run_point(
    kind: str,
    p: np.ndarray[Any, Any],
    budget: int,
    cfg: CoBAConfig,
    failure_rate: float,
    paths: Sequence[str],
    previous: dict[str, tuple[int, float]],
    cap_s: float,
    reps: int,
    rep_budget_s: float,
    memory_cap_s: float,
) -> SweepPoint:
    m = p.size
    a, b = beta_shape(failure_rate, cfg.kappa, cfg.gamma)
    alpha, beta = float(a), float(b)
    stats = BatchStats(pass_rates=p, failure_rate=failure_rate)
    # The table paths get the table precomputed, as in the paper setting.
    tau = allocate(stats, budget, cfg).tau
    assert tau is not None  # the paper variant's greedy always runs here
    gains = marginal_gains(p, alpha, beta, tau, cfg.n_low, cfg.n_up, cfg.smoothing)
    lo, up = cfg.n_low, cfg.n_up
    calls: dict[str, Callable[[], Any]] = {
        "allocate": lambda: allocate(stats, budget, cfg).counts,
        "greedy (table)": lambda: greedy(gains, budget, lo, up),
        "heap (table)": lambda: greedy_heap(gains, budget, lo, up),
        "reference heap": lambda: reference_heap(p, budget, cfg, alpha, beta),
        "dp": lambda: dp(gains, budget, lo, up),
    }
    results: dict[str, Measurement] = {}
    skipped: dict[str, str] = {}
    counts: dict[str, Any] = {}
    for path in paths:
        prev = previous.get(path)
        if prev is not None and prev[1] < 0:  # skipped at a smaller size already
            skipped[path] = f"skipped at a smaller M (cap {cap_s:g} s)"
            continue
        guess = estimate_seconds(prev, m, GROWTH_GUESS.get(path, DEFAULT_GROWTH_GUESS))
        if guess > cap_s:
            skipped[path] = f"estimated {guess:.0f} s > cap {cap_s:g} s"
            previous[path] = (m, -1.0)
            continue
        # A quick first call decides whether the repeated and traced calls are affordable.
        meas, out = measure(calls[path], reps, rep_budget_s, memory=False)
        median = meas.summary()["median"]
        if median <= memory_cap_s:
            meas.peak_bytes = peak_memory(calls[path])
        results[path] = meas
        counts[path] = out
        previous[path] = (m, median)
    count_paths = [k for k in counts if k != "dp"]
    identical = all(np.array_equal(counts[count_paths[0]], counts[k]) for k in count_paths)
    gap = None
    if "dp" in counts and count_paths:
        gap = objective_gap(gains, counts["dp"], counts[count_paths[0]], cfg.n_low)
    return SweepPoint(kind, m, budget, cfg.n_low, cfg.n_up, results, skipped, identical, gap)


def run_size_sweep(
    sizes: Sequence[int] = SWEEP_SIZES,
    kinds: Sequence[BatchKind] = ("realistic", "grid", "continuous"),
    paths: Sequence[str] = SWEEP_PATHS,
    n_low: int = 2,
    n_up: int = 128,
    cap_s: float = 20.0,
    reps: int = 5,
    rep_budget_s: float = 2.0,
    memory_cap_s: float = 5.0,
    failure_rate: float = 0.6,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> list[SweepPoint]:
    """Time (and trace the peak memory of) every path for each M, at B = 16 M.

    Each path is called up to ``reps`` times per size, fewer once ``rep_budget_s`` is
    spent; its peak memory is traced in one extra call when its median is at most
    ``memory_cap_s``. A path is skipped from the size where its time, extrapolated from
    the previous size (M^2 for the DP, M^1.2 for the others), passes ``cap_s``.

    Returns:
      One :class:`SweepPoint` per (kind, M), kinds outermost.
    """
    cfg = CoBAConfig(n_low=n_low, n_up=n_up)
    rng = np.random.default_rng(seed)
    points = []
    for kind in kinds:
        previous: dict[str, tuple[int, float]] = {}
        for m in sorted(sizes):
            p = paper_batch(rng, m, kind=kind)
            point = _run_point(
                kind,
                p,
                ROLLOUTS_PER_PROMPT * m,
                cfg,
                failure_rate,
                paths,
                previous,
                cap_s,
                reps,
                rep_budget_s,
                memory_cap_s,
            )
            points.append(point)
            if progress:
                ran = ", ".join(
                    f"{k} {v.summary()['median'] * 1e3:.1f} ms" for k, v in point.results.items()
                )
                progress(f"sweep, {kind}, M={m}: {ran}")
    return points


def run_bounds_sweep(
    m: int = 16384,
    n_ups: Sequence[int] = (32, 64, 128, 256, 512),
    kinds: Sequence[BatchKind] = ("realistic", "grid", "continuous"),
    paths: Sequence[str] = ("allocate", "greedy (table)"),
    n_low: int = 2,
    reps: int = 5,
    rep_budget_s: float = 2.0,
    memory_cap_s: float = 5.0,
    failure_rate: float = 0.6,
    seed: int = 1,
    progress: Callable[[str], None] | None = None,
) -> list[SweepPoint]:
    """The fast paths at fixed M and B = 16 M while ``n_up`` (so ``n_up - n_low``) grows.

    Returns:
      One :class:`SweepPoint` per (kind, n_up).
    """
    rng = np.random.default_rng(seed)
    points = []
    for kind in kinds:
        p = paper_batch(rng, m, kind=kind)
        for n_up in sorted(n_ups):
            cfg = CoBAConfig(n_low=n_low, n_up=n_up)
            point = _run_point(
                kind,
                p,
                ROLLOUTS_PER_PROMPT * m,
                cfg,
                failure_rate,
                paths,
                {},
                math.inf,
                reps,
                rep_budget_s,
                memory_cap_s,
            )
            points.append(point)
            if progress:
                progress(f"bounds sweep, {kind}, M={m}, n_up={n_up}: done")
    return points


def growth_exponents(
    points: Sequence[SweepPoint], axis: Callable[[SweepPoint], float], min_axis: float = 0.0
) -> dict[str, dict[str, float | None]]:
    """Least-squares slope of log(fastest time) against log(axis), per kind and path.

    A slope of 1 is linear growth. The fastest of the repetitions is the least disturbed
    by other load on the machine, so it is what the fit uses. Points with
    ``axis < min_axis`` are left out when at least two others remain (small sizes are
    dominated by fixed overheads).

    Example:
      >>> m1 = Measurement([1.0]); m2 = Measurement([4.0])
      >>> pts = [SweepPoint("grid", m, 16 * m, 2, 128, {"dp": t}, {}, True, None)
      ...        for m, t in ((100, m1), (200, m2))]
      >>> growth_exponents(pts, axis=lambda q: q.m)
      {'grid': {'dp': 2.0}}
    """
    out: dict[str, dict[str, float | None]] = {}
    for kind in dict.fromkeys(q.kind for q in points):
        mine = [q for q in points if q.kind == kind]
        paths = dict.fromkeys(k for q in mine for k in q.results)
        out[kind] = {}
        for path in paths:
            xy = [(axis(q), min(q.results[path].times)) for q in mine if path in q.results]
            big = [(x, y) for x, y in xy if x >= min_axis]
            use = big if len(big) >= 2 else xy
            if len(use) < 2:
                out[kind][path] = None
                continue
            lx = np.log([x for x, _ in use])
            ly = np.log([y for _, y in use])
            slope = float(np.polyfit(lx, ly, 1)[0])
            out[kind][path] = round(slope, 3)
    return out
