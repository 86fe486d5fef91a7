"""The benchmark's baselines: the paper's heap as released, in plain Python, and the table path.

* :func:`reference_heap`: Algorithm 1 as the authors' released allocator runs it;
* :func:`plain_heap`: the same heap, re-implemented in plain Python (about 2x faster);
* :func:`table_allocate`: ``allocate`` with the gain-table solver it used before.
"""

from __future__ import annotations

import heapq
import math

import numpy as np
from numpy.typing import NDArray

from coba_rl.config import CoBAConfig
from coba_rl.solvers import _greedy_extra_grouped, _running_min
from coba_rl.types import Allocation, BatchStats
from coba_rl.value import (
    _adaptive_tau,
    _beta_pdf_scalar_path,
    _saturation,
    adaptive_tau,
    beta_shape,
)

__all__ = ["plain_heap", "reference_heap", "table_allocate"]


def reference_heap(
    pass_rates: NDArray[np.float64], budget: int, cfg: CoBAConfig, alpha: float, beta: float
) -> NDArray[np.int64]:
    r"""Algorithm 1 as the released allocator runs it: ``V`` evaluated per unit in Python.

    .. math::

        i^\star = \arg\max_i\ V(n_i + 1, p_i) - V(n_i, p_i), \qquad n_{i^\star} \gets
        n_{i^\star} + 1 \quad (B - M n_{low} \text{ times})

    Every prompt starts at ``n_low``; each of the spare units goes to the top of a max-heap
    of marginal gains, and the prompt's next gain is pushed back, evaluating ``V`` twice
    in Python per unit (log-gamma Beta density, scalar numpy clips and exp, as the
    released code does). This is the paper's heap, the baseline of its Table 4. It gives
    the same counts as :func:`coba_rl.allocate` (the tests check that).

    Args:
      pass_rates: shape ``(M,)``, in [0, 1], none unseen.
      budget: ``B`` with ``M * n_low <= B <= M * n_up``.
      cfg: bounds, smoothing and the adaptive-tau constants.
      alpha, beta: the Beta shape.

    Returns:
      int64 counts of shape ``(M,)`` summing to ``budget``.

    Example:
      >>> counts = reference_heap(np.array([0.25, 0.5]), 8, CoBAConfig(n_up=8), 3.0, 3.0)
      >>> int(counts.sum())
      8

    Complexity: O(M + R log M) heap operations, ``R = B - M n_low``, each with two Python
    evaluations of ``V``.

    Reference: arXiv 2602.03048, Algorithm 1 and Table 4.
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


def plain_heap(
    pass_rates: NDArray[np.float64], budget: int, cfg: CoBAConfig, alpha: float, beta: float
) -> NDArray[np.int64]:
    """:func:`reference_heap` rewritten in plain Python: floats and :mod:`math` only.

    The same heap and the same value function, operation for operation, without numpy
    scalars (the released code's ``np.clip`` and ``np.exp`` on single numbers cost more
    than the arithmetic). A faithful re-implementation that a careful engineer would
    write: the baseline that is not slowed down by incidental overhead.

    Example:
      >>> counts = plain_heap(np.array([0.25, 0.5]), 8, CoBAConfig(n_up=8), 3.0, 3.0)
      >>> counts.tolist() == reference_heap(np.array([0.25, 0.5]), 8, CoBAConfig(n_up=8),
      ...                                   3.0, 3.0).tolist()
      True

    Complexity: O(M + R log M), ``R = B - M n_low``, two Python evaluations of ``V`` per unit.
    """
    tau = adaptive_tau(pass_rates, cfg.tau_min, cfg.tau_max, cfg.var_max, cfg.smoothing)
    s = cfg.smoothing
    lgamma_terms = math.lgamma(alpha) + math.lgamma(beta) - math.lgamma(alpha + beta)

    def value(p: float, n: int) -> float:
        # Per call the same work as reference_heap's value function, in Python floats.
        ps = min(max(p, s), 1.0 - s)
        q = min(max(ps, 1e-10), 1.0 - 1e-10)
        log_pdf = (alpha - 1) * math.log(q) + (beta - 1) * math.log(1 - q)
        try:
            pdf = math.exp(log_pdf - math.log(math.exp(lgamma_terms)))
        except OverflowError:
            pdf = 1e-10
        return (1 - math.exp(-n / tau * ps * (1 - ps))) * pdf

    n_low, n_up = cfg.n_low, cfg.n_up
    rates = pass_rates.tolist()
    counts = [n_low] * len(rates)
    remaining = budget - len(rates) * n_low
    heap = [(value(p, n_low) - value(p, n_low + 1), i) for i, p in enumerate(rates)]
    if n_up == n_low:
        heap = []
    heapq.heapify(heap)
    while remaining > 0 and heap:
        _, i = heapq.heappop(heap)
        counts[i] += 1
        remaining -= 1
        if counts[i] < n_up:
            p, n = rates[i], counts[i]
            heapq.heappush(heap, (value(p, n) - value(p, n + 1), i))
    return np.asarray(counts, dtype=np.int64)


def table_allocate(stats: BatchStats, budget: int, cfg: CoBAConfig) -> Allocation:
    """:func:`coba_rl.allocate` (paper variant) as it was before the threshold solver.

    The same steps end to end: the Beta shape, the adaptive tau, the scalar Beta density
    per distinct rate, the ``(U, n_up - n_low)`` gain table and the grouped greedy over
    it, then the :class:`~coba_rl.Allocation`. The baseline for "no slower than before".

    Example:
      >>> from coba_rl import allocate
      >>> s = BatchStats(pass_rates=[0.1, 0.5, 0.9], failure_rate=0.6)
      >>> table_allocate(s, 30, CoBAConfig()).counts.tolist() == allocate(s, 30).counts.tolist()
      True

    Complexity: O(M log M + U (n_up - n_low)) time and O(U (n_up - n_low)) memory.
    """
    f_bar = stats.resolved_failure_rate()
    assert f_bar is not None, "the baseline needs a known failure rate"
    a, b = beta_shape(f_bar, cfg.kappa, cfg.gamma)
    alpha, beta = float(a), float(b)
    p = stats.pass_rates
    tau = _adaptive_tau(p, cfg.tau_min, cfg.tau_max, cfg.var_max, cfg.smoothing)
    uniq, inverse = np.unique(p, return_inverse=True)
    p_s = np.clip(uniq, cfg.smoothing, 1.0 - cfg.smoothing)
    n = np.arange(cfg.n_low, cfg.n_up + 1, dtype=np.float64)
    values = (
        _saturation(n[None, :], p_s[:, None], tau)
        * (_beta_pdf_scalar_path(p_s, alpha, beta)[:, None])
    )
    gains = values[:, 1:] - values[:, :-1]
    spare = budget - p.size * cfg.n_low
    counts = cfg.n_low + _greedy_extra_grouped(_running_min(gains), inverse.reshape(-1), spare)
    return Allocation(
        counts=counts,
        budget=budget,
        alpha=alpha,
        beta=beta,
        tau=tau,
        pass_rates=p,
        method="greedy",
        failure_rate=f_bar,
    )
