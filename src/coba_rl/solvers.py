"""Exact solvers for the separable concave budget-allocation problem.

All three solvers take the same arguments and solve

.. math::

    \\max_{n} \\sum_i V_i(n_i) \\quad \\text{s.t.} \\quad \\sum_i n_i = B,
    \\quad n_{low} \\le n_i \\le n_{up}

where ``V_i`` is given through its marginal-gain table ``gains`` of shape
``(M, n_up - n_low)``: ``gains[i, j] = V_i(n_low + j + 1) - V_i(n_low + j)``.

* :func:`greedy_heap` is Algorithm 1 of the CoBA-RL paper, literally (a binary heap).
* :func:`greedy` returns **identical** counts without a per-unit loop.
* :func:`dp` is the exact dynamic program, the reference for the objective value.

When every row of ``gains`` is non-increasing the greedy is optimal, so all three reach
the same objective ([Rules: exact reference][rules-dp]).
"""

from __future__ import annotations

import heapq

import numpy as np
from numpy.typing import ArrayLike, NDArray

from coba_rl._validation import as_real_array, check_bounds

__all__ = ["dp", "greedy", "greedy_heap", "objective"]

IntArray = NDArray[np.int64]
FloatArray = NDArray[np.float64]


def _check(gains: ArrayLike, budget: int, n_low: int, n_up: int) -> FloatArray:
    """Validate the common solver arguments and return ``gains`` as a float64 array."""
    n_low, n_up = check_bounds(n_low, n_up)
    g = as_real_array(gains, "gains")
    if g.ndim != 2 or g.shape[1] != n_up - n_low:
        raise ValueError(
            f"gains must have shape (M, n_up - n_low) = (M, {n_up - n_low}), got {g.shape}"
        )
    if not np.isfinite(g).all():
        raise ValueError("gains must be finite (found NaN or inf)")
    if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)):
        raise TypeError(f"budget must be an int, got {type(budget).__name__}")
    m = g.shape[0]
    if not m * n_low <= budget <= m * n_up:
        raise ValueError(
            f"budget must lie in [M * n_low, M * n_up] = [{m * n_low}, {m * n_up}], got {budget}"
        )
    return g


def objective(gains: ArrayLike, counts: ArrayLike, n_low: int) -> float:
    """The objective ``sum_i (V_i(n_i) - V_i(n_low))`` of an allocation.

    Args:
      gains: the ``(M, n_up - n_low)`` marginal-gain table.
      counts: shape ``(M,)``, each in ``[n_low, n_up]``.
      n_low: the lower bound.

    Returns:
      The total gain over the all-``n_low`` allocation.

    Example:
      >>> objective([[3.0, 1.0], [2.0, 0.5]], [4, 3], n_low=2)
      6.0
    """
    g = as_real_array(gains, "gains")
    if g.ndim != 2:
        raise ValueError(f"gains must be a 2-D (M, n_up - n_low) table, got shape {g.shape}")
    if isinstance(n_low, (bool, np.bool_)) or not isinstance(n_low, (int, np.integer)):
        raise TypeError(f"n_low must be an int, got {type(n_low).__name__}")
    c = as_real_array(counts, "counts")
    if c.shape != (g.shape[0],) or not (c == np.round(c)).all():
        raise ValueError(f"counts must be {g.shape[0]} integers, got shape {c.shape}")
    if not ((c >= n_low) & (c <= n_low + g.shape[1])).all():
        raise ValueError(f"counts must lie in [n_low, n_low + {g.shape[1]}]")
    extra = c.astype(np.int64) - int(n_low)
    mask = np.arange(g.shape[1])[None, :] < extra[:, None]
    return float(np.sum(g, where=mask))


def greedy_heap(gains: ArrayLike, budget: int, n_low: int, n_up: int) -> IntArray:
    """Algorithm 1 of the CoBA-RL paper, literally: a max-heap of marginal gains.

    Every prompt starts at ``n_low``. The ``R = B - M * n_low`` spare units are handed
    out one at a time to the prompt whose next marginal gain is largest; ties go to the
    lowest prompt index (``heapq`` on ``(-gain, i)``).

    Args:
      gains: ``(M, n_up - n_low)`` marginal gains, non-increasing along each row.
      budget: the total ``B``, with ``M * n_low <= B <= M * n_up``.
      n_low, n_up: per-prompt bounds.

    Returns:
      int64 counts of shape ``(M,)`` summing to ``budget``.

    Raises:
      ValueError: on a malformed table, bounds or an infeasible budget.
      TypeError: on a non-integer budget.

    Example:
      >>> greedy_heap([[3.0, 1.0], [2.0, 0.5]], budget=6, n_low=2, n_up=4).tolist()
      [3, 3]

    Complexity: O(M + R log M) time, O(M) extra memory.

    Reference: arXiv 2602.03048, Algorithm 1.
    """
    g = _check(gains, budget, n_low, n_up)
    m, k = g.shape
    counts = np.full(m, n_low, dtype=np.int64)
    remaining = int(budget) - m * n_low
    rows = g.tolist()
    heap = [(-rows[i][0], i) for i in range(m)] if k > 0 else []
    heapq.heapify(heap)
    taken = [0] * m
    while remaining > 0 and heap:
        _, i = heapq.heappop(heap)
        taken[i] += 1
        remaining -= 1
        if taken[i] < k:
            heapq.heappush(heap, (-rows[i][taken[i]], i))
    counts += np.asarray(taken, dtype=np.int64)
    return counts


def _running_min(gains: FloatArray) -> FloatArray:
    """Each row replaced by its running minimum (a no-op for non-increasing rows)."""
    if gains.shape[1] < 2 or bool(np.all(gains[:, 1:] <= gains[:, :-1])):
        return gains
    return np.minimum.accumulate(gains, axis=1)


def _greedy_extra(keys: FloatArray, spare: int) -> IntArray:
    """Extra units per row of the top-``spare`` entries of ``keys``.

    ``keys`` must be non-increasing along rows. Entries are ordered by (value
    descending, row ascending, column ascending).
    """
    m, k = keys.shape
    if spare <= 0 or k == 0:
        return np.zeros(m, dtype=np.int64)
    if spare >= keys.size:
        return np.full(m, k, dtype=np.int64)
    flat = keys.reshape(-1)
    # The spare-th largest value: every entry strictly above it is taken; the rest
    # of the spare goes to entries equal to it, lowest row (then column) first.
    threshold = np.partition(flat, flat.size - spare)[flat.size - spare]
    above = np.count_nonzero(keys > threshold, axis=1).astype(np.int64)
    equal = np.count_nonzero(keys == threshold, axis=1).astype(np.int64)
    return _split_ties(above, equal, spare)


def _split_ties(above: IntArray, equal: IntArray, spare: int) -> IntArray:
    """``above`` plus the rest of ``spare`` handed to ``equal`` entries in row order."""
    need = spare - int(above.sum())
    before = np.cumsum(equal) - equal
    take = np.clip(need - before, 0, equal)
    return np.asarray(above + take, dtype=np.int64)


def _greedy_extra_grouped(keys_u: FloatArray, inverse: IntArray, spare: int) -> IntArray:
    """:func:`_greedy_extra` of the table ``keys_u[inverse]``, without building it.

    Prompts with equal pass rates share one row of gains. With few distinct rows the
    threshold is found on the small table weighted by multiplicity: O(U K log(U K) + M).
    """
    u, k = keys_u.shape
    m = inverse.size
    if spare <= 0 or k == 0:
        return np.zeros(m, dtype=np.int64)
    if spare >= m * k:
        return np.full(m, k, dtype=np.int64)
    if 4 * u > m:
        return _greedy_extra(keys_u[inverse], spare)
    flat = keys_u.reshape(-1)
    weight = np.repeat(np.bincount(inverse, minlength=u), k)
    order = np.argsort(-flat, kind="stable")
    cum = np.cumsum(weight[order])
    threshold = flat[order[int(np.searchsorted(cum, spare))]]
    above = np.count_nonzero(keys_u > threshold, axis=1).astype(np.int64)[inverse]
    equal = np.count_nonzero(keys_u == threshold, axis=1).astype(np.int64)[inverse]
    return _split_ties(above, equal, spare)


def greedy(gains: ArrayLike, budget: int, n_low: int, n_up: int) -> IntArray:
    """Vectorised Algorithm 1: the same counts as :func:`greedy_heap`, without a heap.

    Because each prompt's gains are non-increasing, the heap hands out exactly the
    top ``R`` entries of the gain table, ordered by (gain descending, prompt index
    ascending). This function finds that set directly: a linear-time selection of the
    ``R``-th largest gain, then a tie split in prompt order.

    Floating-point differences can make a computed row rise by an ulp where the exact
    sequence falls. The heap then takes the larger gain right after the one before it;
    replacing each row by its running minimum reproduces that, so the counts are
    identical to :func:`greedy_heap` on every input, ties included.

    Args:
      gains: ``(M, n_up - n_low)`` marginal gains.
      budget: the total ``B``, with ``M * n_low <= B <= M * n_up``.
      n_low, n_up: per-prompt bounds.

    Returns:
      int64 counts of shape ``(M,)`` summing to ``budget``.

    Raises:
      ValueError: on a malformed table, bounds or an infeasible budget.
      TypeError: on a non-integer budget.

    Example:
      >>> greedy([[3.0, 1.0], [2.0, 0.5]], budget=6, n_low=2, n_up=4).tolist()
      [3, 3]
      >>> greedy([[1.0, 1.0], [1.0, 1.0]], budget=5, n_low=2, n_up=4).tolist()  # ties
      [3, 2]

    Complexity: O(M (n_up - n_low)) time and memory, independent of the budget.

    Reference: arXiv 2602.03048, Algorithm 1; [Rules: the paper variant][rules-paper-variant].
    """
    g = _check(gains, budget, n_low, n_up)
    return n_low + _greedy_extra(_running_min(g), int(budget) - g.shape[0] * n_low)


def dp(gains: ArrayLike, budget: int, n_low: int, n_up: int) -> IntArray:
    """Exact dynamic program over (prompt, spare budget used): the reference optimum.

    ``best_i(b) = max_{0 <= x <= min(K, b)} best_{i-1}(b - x) + G_i(x)`` where
    ``G_i(x)`` is the sum of the first ``x`` gains of prompt ``i`` and ``K = n_up - n_low``.
    The recursion is vectorised over ``b``; the choices are kept for the backtrack.
    It does not need the gains to be monotone.

    Args:
      gains: ``(M, n_up - n_low)`` marginal gains.
      budget: the total ``B``, with ``M * n_low <= B <= M * n_up``.
      n_low, n_up: per-prompt bounds.

    Returns:
      int64 counts of shape ``(M,)`` summing to ``budget``.

    Raises:
      ValueError: on a malformed table, bounds or an infeasible budget.
      TypeError: on a non-integer budget.

    Example:
      >>> dp([[3.0, 1.0], [2.0, 0.5]], budget=6, n_low=2, n_up=4).tolist()
      [3, 3]

    Complexity: O(M R (n_up - n_low)) time and O(M R) memory, ``R = B - M n_low``;
    the paper's Table 4 times this against the heap.

    Reference: [Rules: exact reference][rules-dp]; Knapsack-RL (arXiv 2509.25849) solves its
    allocation this way.
    """
    g = _check(gains, budget, n_low, n_up)
    m, k = g.shape
    spare = int(budget) - m * n_low
    cum = np.zeros((m, k + 1), dtype=np.float64)
    np.cumsum(g, axis=1, out=cum[:, 1:])
    choice_dtype = np.int16 if k < 2**15 else np.int64
    choice = np.empty((m, spare + 1), dtype=choice_dtype)
    # padded[b + t] = best[b + t - k]; window t of row b is the choice x = k - t.
    padded = np.full(spare + 1 + k, -np.inf)
    padded[k] = 0.0
    take_value = cum[:, ::-1]  # take_value[i, t] = G_i(k - t)
    for i in range(m):
        windows = np.lib.stride_tricks.sliding_window_view(padded, k + 1)
        cand = windows + take_value[i]
        t_best = np.argmax(cand, axis=1)
        choice[i] = k - t_best
        padded[k:] = np.take_along_axis(cand, t_best[:, None], axis=1)[:, 0]
    counts = np.empty(m, dtype=np.int64)
    b = spare
    for i in range(m - 1, -1, -1):
        x = int(choice[i, b])
        counts[i] = n_low + x
        b -= x
    return counts
