"""Timing and peak-memory measurement shared by every benchmark stage.

Time is ``time.perf_counter`` around one call, with the garbage collector paused (as
:mod:`timeit` does). Peak memory is the :mod:`tracemalloc` peak of one separate call:
it counts Python objects and numpy buffers (numpy reports its allocations to
``tracemalloc``), not the interpreter's baseline, so it is the extra memory a path needs.
Timed calls never run under ``tracemalloc``, which slows Python code down.
"""

from __future__ import annotations

import gc
import statistics
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Measurement", "estimate_seconds", "measure", "peak_memory", "timed"]


@dataclass
class Measurement:
    """Wall-clock times (seconds) of repeated calls, and the peak memory of one call."""

    times: list[float] = field(default_factory=list)
    peak_bytes: int | None = None

    def summary(self) -> dict[str, Any]:
        """``median``, ``min``, ``max`` (seconds), ``reps`` and ``peak_bytes``."""
        return {
            "median": statistics.median(self.times),
            "min": min(self.times),
            "max": max(self.times),
            "reps": len(self.times),
            "peak_bytes": self.peak_bytes,
        }


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """``(seconds, result)`` of one call of ``fn``, with the garbage collector paused."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        t0 = time.perf_counter()
        out = fn()
        elapsed = time.perf_counter() - t0
    finally:
        if enabled:
            gc.enable()
    return elapsed, out


def peak_memory(fn: Callable[[], Any]) -> int:
    """The :mod:`tracemalloc` peak (bytes) of one call of ``fn``, above what was live before."""
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        fn()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return int(peak - base)


def measure(
    fn: Callable[[], Any], reps: int, budget_s: float, memory: bool = True
) -> tuple[Measurement, Any]:
    """Time ``fn`` up to ``reps`` times (at least once, fewer once ``budget_s`` is spent).

    Returns the measurement and the result of the first call. With ``memory``, one more
    call runs under :func:`peak_memory`.
    """
    out: Any = None
    m = Measurement()
    gc.collect()  # once per measurement: a full collection can cost milliseconds
    spent = 0.0
    for r in range(reps):
        t, res = timed(fn)
        if r == 0:
            out = res
        m.times.append(t)
        spent += t
        if spent >= budget_s:
            break
    if memory:
        m.peak_bytes = peak_memory(fn)
    return m, out


def estimate_seconds(previous: tuple[int, float] | None, size: int, exponent: float) -> float:
    """Extrapolate a time from ``(previous_size, seconds)`` as ``seconds * ratio ** exponent``.

    Example:
      >>> estimate_seconds((512, 0.5), 1024, exponent=2.0)
      2.0
      >>> estimate_seconds(None, 1024, exponent=2.0)
      0.0
    """
    if previous is None:
        return 0.0
    prev_size, prev_s = previous
    return float(prev_s * (size / prev_size) ** exponent)
