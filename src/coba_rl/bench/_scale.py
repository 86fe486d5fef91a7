"""Allocation at scale: a million distinct pass rates, and a cap of 65,536 rollouts.

Two cases that a gain table of shape ``(distinct rates, n_up - n_low)`` cannot serve:

* ``M = 10^6`` prompts, every pass rate distinct, ``B = 16 M``, bounds [2, 128];
* ``M = 4,096`` distinct pass rates with ``n_up = 65,536``, ``B = 16 M`` (the table would
  hold 4,096 x 65,534 gains, 2.1 GB).

Each is timed (``allocate`` end to end) and its ``tracemalloc`` peak traced in a separate
call; a ``MemoryError`` is recorded, not raised.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

import numpy as np

from coba_rl.bench._timing import peak_memory, timed
from coba_rl.coba import allocate
from coba_rl.config import CoBAConfig
from coba_rl.types import BatchStats

__all__ = ["SCALE_CASES", "run_scale"]

#: (name, M, n_up) of each case; B = 16 M, n_low = 2, continuous (all distinct) rates.
SCALE_CASES: tuple[tuple[str, int, int], ...] = (
    ("distinct", 10**6, 128),
    ("wide bounds", 4096, 65536),
)
ROLLOUTS_PER_PROMPT = 16


def run_scale(
    cases: tuple[tuple[str, int, int], ...] | None = None,
    reps: int = 3,
    seed: int = 2,
    progress: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """Time ``allocate`` ``reps`` times per case and trace its peak memory once.

    ``cases`` defaults to :data:`SCALE_CASES`.

    Returns:
      One JSON-ready dict per case: ``case``, ``m``, ``n_up``, ``budget``, ``distinct``,
      ``median_s``, ``min_s``, ``peak_bytes`` and ``error`` (``None``, or the exception's
      name, e.g. ``"MemoryError"``).

    Complexity: ``reps + 1`` allocations per case.
    """
    rng = np.random.default_rng(seed)
    rows = []
    for name, m, n_up in cases if cases is not None else SCALE_CASES:
        # Every rate distinct: the latent Beta(0.6, 0.9) rates, without the masses at 0 and 1.
        p = rng.beta(0.6, 0.9, size=m)
        stats = BatchStats(pass_rates=p, failure_rate=0.6)
        cfg = CoBAConfig(n_low=2, n_up=n_up)
        budget = ROLLOUTS_PER_PROMPT * m
        row: dict[str, Any] = {
            "case": name,
            "m": m,
            "n_up": n_up,
            "budget": budget,
            "distinct": int(np.unique(p).size),
            "median_s": None,
            "min_s": None,
            "peak_bytes": None,
            "error": None,
        }
        try:
            times = [timed(lambda: allocate(stats, budget, cfg))[0] for _ in range(reps)]  # noqa: B023
            row["median_s"], row["min_s"] = statistics.median(times), min(times)
            row["peak_bytes"] = peak_memory(lambda: allocate(stats, budget, cfg))  # noqa: B023
        except MemoryError as exc:
            row["error"] = type(exc).__name__
        rows.append(row)
        if progress:
            done = "MemoryError" if row["error"] else f"{row['median_s'] * 1e3:.1f} ms"
            progress(f"scale, {name} (M={m}, n_up={n_up}): {done}")
    return rows
