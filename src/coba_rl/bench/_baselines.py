"""The paper's heap, as the authors' released allocator runs it: the benchmark baseline."""

from __future__ import annotations

import heapq
import math

import numpy as np
from numpy.typing import NDArray

from coba_rl.config import CoBAConfig
from coba_rl.value import adaptive_tau

__all__ = ["reference_heap"]


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
