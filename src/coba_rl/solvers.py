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
* :func:`capability_greedy` returns the counts of :func:`greedy_heap` on the table of
  :func:`coba_rl.value.marginal_gains`, without building that table: O(M) memory.

When every row of ``gains`` is non-increasing the greedy is optimal, so all three reach
the same objective ([Rules: exact reference][rules-dp]).
"""

from __future__ import annotations

import functools
import heapq
import itertools
import math

import numpy as np
from numpy.typing import ArrayLike, NDArray

from coba_rl._validation import as_real_array, check_bounds, check_real
from coba_rl.value import (
    _beta_pdf_and_logs,
    _beta_pdf_distinct,
    _saturation,
    _unique_gains,
    _values_in_place,
    _vector_pdf_is_exact,
)

__all__ = ["capability_greedy", "dp", "greedy", "greedy_heap", "objective"]

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
    need = max(spare - int(np.add.reduce(above)), 0)
    # Row i takes clip(need - c[i-1], 0, equal[i]) = min(c[i], need) - min(c[i-1], need),
    # with c the running count of equal entries.
    c = np.add.accumulate(equal)
    np.minimum(c, need, out=c)
    out = above + c
    out[1:] -= c[:-1]
    return np.asarray(out, dtype=np.int64)


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


# -- The threshold solver: Algorithm 1 on the capability value, without the gain table ------
#
# Row u of the table (one distinct clipped pass rate p, density C = f(p)) is, in floating
# point, g(j) = V(n_low + j + 1) - V(n_low + j) with V(n) = (1 - exp(((-n) / tau) p (1 - p))) C,
# and :func:`greedy` hands out the top R entries of the row-wise running minimum ("keys").
#
# * The number of keys above a threshold ``lam`` is the index of the first *gain* <= lam
#   (a running minimum drops to lam exactly where the first gain does). So each row is
#   settled by locating its first crossing; no prefix minimum over earlier columns is needed.
# * In exact arithmetic g is the non-increasing geometric sequence
#   C e^{-k (n_low + j)} (1 - e^{-k}), k = p (1 - p) / tau, and the floating-point gain is
#   within GAIN_ERROR * C of it: three roundings in the exponent move exp by at most
#   1.2 ulp (x e^{-x} <= 1/e), exp itself is within a few ulp, and 1 - E, the product
#   with C and the difference add one rounding each, so |error| <= (7.4 u + 2 rho) C,
#   u = 2^-53, rho = exp's relative error. GAIN_ERROR = 2^-36 leaves room for an exp
#   thousands of ulp off. Hence a float gain at column c above lam + 2 GAIN_ERROR C proves
#   that every float gain at columns <= c is above lam (the exact row is non-increasing):
#   columns left of c need never be computed.
# * The closed form places every row's crossing of a threshold; the exact float gains are
#   computed only in a band of columns around it, starting at a column that carries the
#   proof above. A row whose proof fails, or whose band misses the crossing, is computed
#   in full, so the result never depends on the closed form being accurate, only fast.
# * The R-th largest key is bracketed by [lam_lo, lam_hi] from the closed form, the bracket
#   is verified with the exact counts, and the keys inside it (O(M) of them) are searched.

#: Bound on |float gain - exact gain| relative to the row's density C (see above).
GAIN_ERROR = 2.0**-36
#: Absolute part of that bound (products that round in the subnormal range).
_GAIN_ERROR_ABS = 2.0**-1000
#: Band entries evaluated at once: bounds the solver's temporary memory (about 30 B each).
_BAND_CHUNK = 1 << 18
#: Bracket widenings tried before falling back to the table.
_MAX_TRIES = 8
#: Rows up to which the relaxed threshold sorts every breakpoint (above: sample + Newton).
_SORT_ROWS = 1 << 12


def capability_greedy(
    pass_rates: ArrayLike,
    alpha: float,
    beta: float,
    tau: float,
    budget: int,
    n_low: int,
    n_up: int,
    smoothing: float = 0.01,
) -> IntArray:
    """Algorithm 1 on the capability value, with O(M) memory: no gain table.

    Returns exactly ``greedy_heap(marginal_gains(pass_rates, alpha, beta, tau, n_low, n_up,
    smoothing), budget, n_low, n_up)``: the same floating-point gains decide, ties go to
    the lowest prompt index and rows whose float differences rise by an ulp are handled
    as the heap handles them. The table is never built: the closed form of the gains
    (a geometric sequence per prompt) locates the threshold, and exact gains are computed
    only in a narrow band of columns around each prompt's crossing of it.

    Args:
      pass_rates: shape ``(M,)``, finite.
      alpha, beta: the Beta shape.
      tau: saturation scale, positive.
      budget: the total ``B``, with ``M * n_low <= B <= M * n_up``.
      n_low, n_up: per-prompt bounds.
      smoothing: the clip applied to pass rates.

    Returns:
      int64 counts of shape ``(M,)`` summing to ``budget``.

    Raises:
      ValueError: non-finite or non-1-D pass rates, bad bounds, an infeasible budget.
      TypeError: a non-integer budget or non-numeric arguments.

    Example:
      >>> from coba_rl.value import marginal_gains
      >>> p = [0.1, 0.5, 0.5, 0.9]
      >>> capability_greedy(p, 3.0, 3.0, 4.0, budget=24, n_low=2, n_up=16).tolist()
      [2, 10, 10, 2]
      >>> g = marginal_gains(p, 3.0, 3.0, 4.0, n_low=2, n_up=16)
      >>> greedy_heap(g, budget=24, n_low=2, n_up=16).tolist()
      [2, 10, 10, 2]

    Complexity: O(M log M) time (the sort of the distinct pass rates; the rest is
    O(M + U b) with U distinct rates and b the band width, a few columns) and O(M) memory,
    independent of ``n_up - n_low``. Degenerate inputs whose threshold sits at the level of
    floating-point noise (the budget within noise of every prompt's cap) fall back to the
    table, O(U (n_up - n_low)).

    Reference: arXiv 2602.03048, Algorithm 1 and eq. 9.
    """
    n_low, n_up = check_bounds(n_low, n_up)
    p = as_real_array(pass_rates, "pass_rates")
    if p.ndim != 1:
        raise ValueError(f"pass_rates must be 1-D, got shape {p.shape}")
    if not np.isfinite(p).all():
        raise ValueError("pass_rates must be finite (found NaN or inf)")
    alpha, beta = check_real(alpha, "alpha"), check_real(beta, "beta")
    tau = check_real(tau, "tau", lo=np.finfo(np.float64).tiny)
    smoothing = check_real(smoothing, "smoothing", 0.0, 0.5)
    if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)):
        raise TypeError(f"budget must be an int, got {type(budget).__name__}")
    m = p.size
    if not m * n_low <= budget <= m * n_up:
        raise ValueError(
            f"budget must lie in [M * n_low, M * n_up] = [{m * n_low}, {m * n_up}], got {budget}"
        )
    extra = _capability_extra(p, alpha, beta, tau, n_low, n_up, smoothing, int(budget) - m * n_low)
    return n_low + extra


def _capability_extra(
    p: FloatArray,
    alpha: float,
    beta: float,
    tau: float,
    n_low: int,
    n_up: int,
    smoothing: float,
    spare: int,
    clipped: FloatArray | None = None,
) -> IntArray:
    """Units above ``n_low`` per prompt for :func:`capability_greedy` (validated arguments).

    ``clipped``: ``p`` clipped to ``[smoothing, 1 - smoothing]``, if the caller has it.
    The hot path of ``allocate``. Complexity: O(M log M) time, O(M) memory.
    """
    m, k_cols = p.size, n_up - n_low
    if spare <= 0 or k_cols == 0:
        return np.zeros(m, dtype=np.int64)
    if spare >= m * k_cols:
        return np.full(m, k_cols, dtype=np.int64)
    inverse: IntArray | None = None  # each prompt's row; None: one row per prompt
    if _mostly_distinct(p):
        # A large batch of mostly distinct rates: deduplicating costs more than it saves.
        # One row per prompt (equal rates get equal rows, so ties still split in prompt
        # order).
        uniq = np.minimum(np.maximum(p, smoothing), 1.0 - smoothing) if clipped is None else clipped
        weight = np.ones(m, dtype=np.int64)
    else:
        # A sort and a search: cheaper than np.unique's argsort when rates repeat. Rates
        # that clip to the same value share a row (their rows are equal).
        if clipped is None:
            clipped = np.minimum(np.maximum(p, smoothing), 1.0 - smoothing)
        uniq = _sorted_distinct(clipped)
        inverse = uniq.searchsorted(clipped)
        if uniq.size * k_cols <= _SMALL_TABLE:
            # A table this small (a grid batch: at most G + 1 rows) is cheaper to rank whole.
            return _small_table_extra(uniq, inverse, alpha, beta, tau, n_low, n_up, spare)
        weight = np.bincount(inverse, minlength=uniq.size)
    with np.errstate(all="ignore"):
        found = None
        if uniq.size <= _BAND_ROWS:
            pdf, om, rate, top = _band_parts(uniq, alpha, beta, tau, n_low, smoothing)
            found = _band_select(uniq, om, rate, top, pdf, weight, m, tau, n_low, k_cols, spare)
        else:
            pdf = _beta_pdf_distinct(uniq, alpha, beta)
        if found is None:
            rows = _GeometricRows(uniq, pdf, tau, n_low, k_cols)
            if uniq.size > _BAND_ROWS:
                found = rows.fixed_band(weight, spare)
            if found is None:
                found = rows.select(weight, spare)
    if found is None:
        # The threshold is at floating-point noise level: rank the table itself.
        gains_u, inv = _unique_gains(p, alpha, beta, tau, n_low, n_up, smoothing)
        return _greedy_extra_grouped(_running_min(gains_u), inv, spare)
    above, equal = found
    if inverse is None:
        return _split_ties(above, equal, spare)
    # Units still owed to the ties: none, or every tied unit (one tied key of one
    # prompt, the usual case), need no split in prompt order.
    owed = spare - int(np.dot(weight, above))
    if owed == 0:
        return above[inverse]
    if owed == int(np.dot(weight, equal)):
        return (above + equal)[inverse]
    return _split_ties(above[inverse], equal[inverse], spare)


#: Columns of the fixed band of :func:`_band_select` (its first guess; wider on retry).
_BAND_WIDTH = 4
#: Band units up to which :func:`_band_select` selects among repeated keys.
_REPEAT_KEYS = 1 << 16
#: Distinct rates up to which the fixed band is tried (above, the ragged band is faster).
_BAND_ROWS = 1 << 12


def _band_parts(
    p_s: FloatArray, alpha: float, beta: float, tau: float, n_low: int, smoothing: float
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """What :func:`_band_select` needs of the distinct clipped rates ``p_s``.

    Returns ``(pdf, 1 - p_s, rate, top)``: the exact Beta density (bit-identical to
    :func:`coba_rl.value._beta_pdf_distinct`), ``rate = p_s (1 - p_s) / tau`` and ``top``,
    each row's log gain at column ``x`` being about ``top - rate x``. The exact gains are
    ``C e^{-k n} (1 - e^{-k})`` at ``n = n_low, n_low + 1, ..``: their log at column ``x``
    is ``log C - k n_low + log(1 - e^{-k}) - k x``. Only the band's place depends on
    ``top`` (the proofs make the answer exact), so the cheaper ``log(1 - e^{-k}) ~ log k -
    k / 2`` serves (off by at most half a column), and ``top`` is that log less ``k / 2``:
    the count of gains above ``e^t``, ``ceil(x)``, is about ``x + 1/2``, so the root of the
    relaxed count of ``x + 1/2`` centres the band. Where the rates lie inside ``[1e-10,
    1 - 1e-10]`` (``smoothing >= 1e-10``) the density's own logs give ``log C`` and ``log
    k`` (no further logarithm). Non-finite ``top`` for degenerate rows. Call under
    ``np.errstate(all="ignore")``.

    Complexity: O(U), about 15 array operations.
    """
    parts = None
    if smoothing >= 1e-10 and _vector_pdf_is_exact():
        parts = _beta_pdf_and_logs(p_s, alpha, beta)
    if parts is None:
        pdf = _beta_pdf_distinct(p_s, alpha, beta)
        om = 1.0 - p_s
        rate = p_s * om
        rate /= tau
        top = np.log(pdf)
        top += np.log(rate)
    else:
        pdf, om, top, log_pdf = parts  # top: log(p_s (1 - p_s))
        rate = p_s * om
        rate /= tau
        top += log_pdf
        top -= math.log(tau)
    top -= rate * n_low
    return pdf, om, rate, top


def _band_select(
    p_s: FloatArray,
    om: FloatArray,
    rate: FloatArray,
    top: FloatArray,
    pdf: FloatArray,
    weight: IntArray,
    m: int,
    tau: float,
    n_low: int,
    k: int,
    spare: int,
) -> tuple[IntArray, IntArray] | None:
    """:meth:`_GeometricRows.select` in few array operations: one fixed-width band.

    ``om``, ``rate``, ``top`` and ``pdf`` are those of :func:`_band_parts`. The closed
    form places every row's crossing of the relaxed threshold; the exact float gains of
    a band of :data:`_BAND_WIDTH` columns around it (a ``(width, U)`` array, no ragged
    indexing) give the threshold ``lam`` of the ``spare``-th unit, and
    :func:`_band_counts` proves it. ``None`` where a proof fails or a row is degenerate:
    the caller then runs the general :meth:`_GeometricRows.select`. Call under
    ``np.errstate(all="ignore")``.

    Complexity: O(U log U) time (sorting the ``U`` top breakpoints, selecting among ``M *
    width`` band units), O(M) memory; about 40 array operations, whatever ``U``.
    """
    if not math.isfinite(float(np.add.reduce(top))):
        return None
    root = _uncapped_root(top, rate, weight, k, spare)
    if root is None:
        t0 = _relaxed_root(top, rate, weight, k, spare)
        if t0 is None or not math.isfinite(t0):
            return None
        x = top - t0
        x /= rate
    else:
        x = root[1]
    return _band_select_at(x, p_s, om, pdf, weight, m, tau, n_low, k, spare)


def _band_select_at(
    x: FloatArray,
    p_s: FloatArray,
    om: FloatArray,
    pdf: FloatArray,
    weight: IntArray | None,
    m: int,
    tau: float,
    n_low: int,
    k: int,
    spare: int,
) -> tuple[IntArray, IntArray] | None:
    """:func:`_band_select` once each row's relaxed count ``x`` at the root is known
    (overwritten): the band, the threshold among its keys and the proof.

    ``weight``: each row's multiplicity (``None``: one prompt per row, as the token
    path's rows are). Only where the bands lie depends on ``x``; ``None`` where a proof
    fails (the caller then ranks otherwise). Complexity: O(U width), selection included.
    """
    width = min(_BAND_WIDTH, k)
    x -= 0.5 + width // 2  # (log_a - t0) / k, less half the band
    start, g, last = _band_gains_2d(x, width, p_s, om, pdf, tau, n_low, k)
    # The (spare - units left of the bands)-th largest band key, each counted as often
    # as its rate occurs (the weights sum to m).
    need = spare - int(np.add.reduce(start) if weight is None else np.dot(weight, start))
    total = width * m
    if not 0 < need <= total:
        return None
    if weight is None or total <= _REPEAT_KEYS:
        # One prompt per row, or few units in all: each key repeated by its multiplicity,
        # selected in place.
        keys = g.reshape(-1).copy() if weight is None else g.repeat(weight, axis=1).reshape(-1)
        keys.partition(total - need)
        lam = float(keys[total - need])
    else:
        lam = _weighted_kth_largest(g.reshape(-1), np.tile(weight, width), need)
    return _band_counts(start, g, last, lam, float(np.maximum.reduce(pdf)), k)


def _band_gains_2d(
    x: FloatArray,
    width: int,
    p_s: FloatArray,
    om: FloatArray,
    pdf: FloatArray,
    tau: float,
    n_low: int,
    k: int,
) -> tuple[IntArray, FloatArray, FloatArray]:
    """Float gains of a band of ``width`` columns per row, starting at ``ceil(x)``.

    ``x`` is each row's crossing less ``width // 2``: the band starts that many columns
    before the first column whose exact gain is not above the threshold, moved to lie
    within ``[0, k)``. Returns ``start``, the gains as a ``(width, U)`` array with each
    row's running minimum applied from its band's start, and its last column (each
    row's least band gain: the exact gains right of the band are at most that float
    gain's exact value, so it bounds them as well as the last float gain does). ``x`` is
    overwritten. The arithmetic is
    :func:`coba_rl.value.marginal_gains`' own: ``V(n) = (1 - exp(((-n) / tau) p (1 - p)))
    C`` at ``width + 1`` values of ``n``, then ``V(n + 1) - V(n)``.

    Complexity: O(U width) time and memory, about 15 array operations.
    """
    np.ceil(x, out=x)
    np.maximum(x, 0, out=x)
    np.minimum(x, k - width, out=x)
    start = x.astype(np.int64)
    # -n = -(n_low + offset) - start: exact (integers), as marginal_gains' ``-n``.
    vals = _values_in_place(_band_offsets(width, n_low) - x, tau, p_s, om, pdf)
    g = np.subtract(vals[1:], vals[:-1])
    if bool(np.greater(g[1:], g[:-1]).any()):  # a float row that rises by an ulp
        np.minimum.accumulate(g, axis=0, out=g)  # (slow along this short axis: rare)
    return start, g, g[-1]


def _band_counts(
    start: IntArray, g: FloatArray, last: FloatArray, lam: float, pdf_max: float, k: int
) -> tuple[IntArray, IntArray] | None:
    """Per row, the keys above ``lam`` and equal to it, once the bands are proved to hold them.

    The proof: a float gain is within ``err = pdf GAIN_ERROR + abs`` of the exact one,
    which is non-increasing along the row. A band whose first float gain is above
    ``lam + 2 err`` has every gain to its left above ``lam``; one whose least band gain
    (its last, after the running minimum) is below ``lam - 2 err`` has every gain to its
    right below ``lam``. Rows failing a test
    must have their band at that end of the row (a zero dot product with the distance to
    it); otherwise ``None``. Complexity: O(U width).
    """
    width = g.shape[0]
    err2 = 2.0 * (pdf_max * GAIN_ERROR + _GAIN_ERROR_ABS)
    if int(np.dot(start, g[0] <= lam + err2)):
        return None
    if int(np.dot(k - width - start, last >= lam - err2)):
        return None
    above = np.add.reduce(g > lam, axis=0, dtype=np.int64)
    above += start
    equal = np.add.reduce(g == lam, axis=0, dtype=np.int64)
    return above, equal


@functools.lru_cache(maxsize=4096)
def _band_offsets(width: int, n_low: int) -> FloatArray:
    """``-n_low, .., -(n_low + width)`` as a read-only float column (shared by the token
    path, whose widths vary: the cache is bounded).

    Complexity: O(width), once per ``(width, n_low)``.
    """
    out = -np.arange(n_low, n_low + width + 1, dtype=np.float64)[:, None]
    out.flags.writeable = False
    return out


def _sorted_distinct(p: FloatArray) -> FloatArray:
    """``np.unique(p)`` of a NaN-free 1-D ``p`` (a sort and a mask, without its wrappers).

    Complexity: O(M log M).
    """
    s = np.sort(p)
    keep = np.empty(s.size, dtype=bool)
    keep[:1] = True
    np.not_equal(s[1:], s[:-1], out=keep[1:])
    return s[keep]


#: Gain tables up to this many entries are built and ranked whole (bounded memory).
_SMALL_TABLE = 1 << 10


def _small_table_extra(
    p_s: FloatArray,
    inverse: IntArray,
    alpha: float,
    beta: float,
    tau: float,
    n_low: int,
    n_up: int,
    spare: int,
) -> IntArray:
    """:func:`greedy` on the table of the distinct clipped rates ``p_s`` (at most
    :data:`_SMALL_TABLE` gains). Complexity: O(U (n_up - n_low) + M)."""
    n = np.arange(n_low, n_up + 1, dtype=np.float64)
    values = (
        _saturation(n[None, :], p_s[:, None], tau) * _beta_pdf_distinct(p_s, alpha, beta)[:, None]
    )
    return _greedy_extra_grouped(_running_min(values[:, 1:] - values[:, :-1]), inverse, spare)


#: Batches above this size are checked for mostly distinct rates before deduplicating.
_DEDUP_CHECK = 1 << 14
#: Share of distinct rates in that sample above which the batch is not deduplicated.
_DEDUP_FRAC = 0.5


def _mostly_distinct(q: FloatArray) -> bool:
    """Whether a strided sample of 4096 rates of a large batch is over 90% distinct.

    Complexity: O(1) (a sort of 4096 values); ``False`` below :data:`_DEDUP_CHECK`.
    """
    if q.size <= _DEDUP_CHECK:
        return False
    sample = q[:: q.size // 4096]
    return bool(np.unique(sample).size > _DEDUP_FRAC * sample.size)


def _weighted_kth_largest(vals: FloatArray, wts: IntArray, k: int) -> float:
    """The ``k``-th largest of ``vals``, each counted ``wts`` times (``1 <= k <= sum``).

    Complexity: O(n) expected (pivot on the median, keep one side; a sort below 4096).
    """
    while vals.size > 4096:
        pivot = np.partition(vals, vals.size // 2)[vals.size // 2]
        gt = vals > pivot
        n_gt = int(wts[gt].sum())
        if n_gt >= k:
            vals, wts = vals[gt], wts[gt]
            continue
        eq = vals == pivot
        n_eq = int(wts[eq].sum())
        if n_gt + n_eq >= k:
            return float(pivot)
        k -= n_gt + n_eq
        lt = ~(gt | eq)
        vals, wts = vals[lt], wts[lt]
    order = vals.argsort()[::-1]
    cum = wts[order].cumsum()
    return float(vals[order[int(cum.searchsorted(k))]])


class _GeometricRows:
    """The distinct rows of the gain table, evaluated only where asked.

    Holds O(U) arrays for U distinct clipped pass rates. Call under
    ``np.errstate(all="ignore")`` (logs of 0 and overflowing exponentials are expected).
    Construction: O(U) time and memory.
    """

    def __init__(self, p_s: FloatArray, pdf: FloatArray, tau: float, n_low: int, k: int):
        self.p_s, self.pdf, self.tau, self.n_low, self.k = p_s, pdf, tau, n_low, k
        self.om = 1 - p_s
        rate = p_s * self.om
        rate /= tau
        # Rows whose float gains are all exactly 0: p_s in {0, 1} or a zero density.
        active = rate > 0
        active &= pdf > 0
        active &= rate < np.inf
        self.all_active = bool(active.all())
        self.active = active
        if not self.all_active:
            rate = np.where(active, rate, 1.0)
        self.rate = rate
        # log of the exact first gain C e^{-k n_low} (1 - e^{-k}), in place.
        log_a = np.log(pdf)
        log_a -= rate * n_low
        tail = np.negative(rate)
        np.expm1(tail, out=tail)
        np.negative(tail, out=tail)
        np.log(tail, out=tail)
        log_a += tail
        self.log_a = log_a if self.all_active else np.where(active, log_a, -np.inf)
        self.inv_rate = 1.0 / rate

    # The error bounds of the ragged band, built on first use (the fixed band needs none).

    @functools.cached_property
    def err(self) -> FloatArray:
        """Per row, the bound on ``|float gain - exact gain|``."""
        err = self.pdf * GAIN_ERROR
        err += _GAIN_ERROR_ABS
        return err

    @functools.cached_property
    def err2(self) -> FloatArray:
        """Twice :attr:`err`."""
        return 2 * self.err

    @functools.cached_property
    def err_cols(self) -> FloatArray:
        """:attr:`err` in log-threshold columns."""
        return self.err * self.inv_rate

    # -- closed form ------------------------------------------------------------------------

    def relaxed_threshold(self, weight: IntArray, spare: int) -> tuple[float, float, float] | None:
        """``(t, d_hi, d_lo)``: a log-threshold where about ``spare`` exact gains lie above
        ``exp(t)``, and the bracket ``[t - d_lo, t + d_hi]`` to try first.

        The count ``S(t) = sum_u w_u clip((log_a_u - t) / k_u, 0, K)`` is piecewise linear
        in ``t``. Up to :data:`_SORT_ROWS` rows its breakpoints are sorted; above, a strided
        sample of the rows gives the start and Newton steps
        on the integer count finish. Complexity: O(U log U) up to that size, O(U) above.
        """
        if self.all_active:
            top, rate, w = self.log_a, self.rate, weight
        else:
            act = np.flatnonzero(self.active)
            if act.size == 0:
                return None
            top, rate, w = self.log_a[act], self.rate[act], weight[act]
        inv = self.inv_rate if self.all_active else self.inv_rate[act]
        if top.size <= _SORT_ROWS:
            t0 = _relaxed_root(top, rate, w, self.k, spare)
        else:
            t0 = _relaxed_root(*_sample_rows(top, rate, w), self.k, spare)
        if t0 is None or not math.isfinite(t0):
            return None
        # Newton steps on the integer count (entries above exp(t)). What is left after them
        # is of the order of the spread of a sum of fractional parts, sqrt(sum w^2), plus
        # the last step's own error (the count's slope is not quite s_lin): the bracket is
        # three spreads and 5% of the last step, each side.
        spread = 0.0
        # Products and sums, not ``@``: a BLAS dot may spin up threads, which costs
        # milliseconds on a loaded machine for a few thousand terms.
        add = np.add.reduce
        for _ in range(3):
            x = top - t0
            x *= inv
            lin = x > 0
            lin &= x < self.k
            wl = w * lin
            s_lin = float(add(wl * inv))
            if s_lin <= 0:
                d = float(rate.min())
                return t0, d, 0.05 * d
            np.maximum(x, 0, out=x)
            np.ceil(x, out=x)
            np.minimum(x, self.k, out=x)
            x *= w
            miss = float(add(x)) - spare
            t0 += miss / s_lin
            wl *= wl
            spread = 3.0 * math.sqrt(float(add(wl))) + 3.0
            if abs(miss) <= spread:
                break
        d = (spread + 0.05 * abs(miss)) / s_lin
        return t0, d, d

    def fixed_band(self, weight: IntArray, spare: int) -> tuple[IntArray, IntArray] | None:
        """:func:`_band_select` for many rows: the same fixed-width band and proofs, centred
        by :meth:`relaxed_threshold` (a sample of the rows, then Newton steps on the integer
        count), which also brackets the threshold, so that only the band keys inside the
        bracket are ranked. ``None`` where a row is degenerate, the bracket misses or a
        proof fails: :meth:`select` then answers.

        Complexity: O(U) time and memory (O(U log U) below :data:`_SORT_ROWS` rows), about
        40 array operations.
        """
        if not self.all_active:
            return None
        relaxed = self.relaxed_threshold(weight, spare)
        if relaxed is None:
            return None
        t0, d_hi, d_lo = relaxed
        lam_hi = math.exp(min(max(t0 + d_hi, -746.0), 709.0))
        lam_lo = math.exp(min(max(t0 - d_lo - 1e-12 * (1.0 + abs(t0)), -746.0), 709.0))
        width = min(_BAND_WIDTH, self.k)
        x = self.log_a - t0
        x *= self.inv_rate
        x -= width // 2
        start, g, last = _band_gains_2d(
            x, width, self.p_s, self.om, self.pdf, self.tau, self.n_low, self.k
        )
        # Units above the bracket (left of the bands or above lam_hi in them), then the
        # keys inside it, each with its row's multiplicity.
        above_hi = np.add.reduce(g > lam_hi, axis=0, dtype=np.int64)
        above_hi += start
        n_hi = int(np.dot(weight, above_hi))
        inside = g >= lam_lo
        inside &= g <= lam_hi
        at = np.flatnonzero(inside)
        wts = weight[at % g.shape[1]]
        if not n_hi < spare <= n_hi + int(np.add.reduce(wts)):
            return None
        lam = _weighted_kth_largest(g.reshape(-1)[at], wts, spare - n_hi)
        return _band_counts(start, g, last, lam, float(np.maximum.reduce(self.pdf)), self.k)

    def first_columns(
        self, rows: IntArray, lam_lo: float, lam_hi: float
    ) -> tuple[IntArray, IntArray]:
        """Band of each row, from the closed form: from the last column whose exact gain
        exceeds ``lam_hi + 3 err`` (its float gain proves every column left of it) to the
        first whose exact gain is at most ``lam_lo - 3 err`` (its float gain is below
        ``lam_lo``). A wrong guess costs time, never exactness: :meth:`scan` checks both.

        ``log(lam + e) <= log(lam) + e / lam`` and ``-log(1 - e) <= e / (1 - e)`` widen the
        band (never narrow it) without a logarithm per row. Complexity: O(len(rows)).
        """
        whole = rows.size == self.p_s.size  # every row: no gathers
        inv_rate = self.inv_rate if whole else self.inv_rate[rows]
        log_a = self.log_a if whole else self.log_a[rows]
        err_cols = self.err_cols if whole else self.err_cols[rows]
        if lam_hi > 0:
            x_hi = (log_a - math.log(lam_hi)) * inv_rate
            x_hi -= (3.0 / lam_hi) * err_cols
            start = np.minimum(np.maximum(np.ceil(x_hi) - 1, 0), self.k - 1).astype(np.int64)
        else:
            start = np.zeros(rows.size, dtype=np.int64)
        eps_max = 3.0 * float(self.err.max()) / lam_lo if lam_lo > 0 else math.inf
        if eps_max < 0.5:
            x_lo = (log_a - math.log(lam_lo)) * inv_rate
            x_lo += (3.0 / lam_lo / (1.0 - eps_max)) * err_cols
        elif lam_lo > 0:
            eps = 3.0 * self.err[rows] / lam_lo
            x_lo = (log_a - math.log(lam_lo)) * inv_rate + (eps / (1 - eps)) * inv_rate
            x_lo[eps >= 1] = self.k
        else:
            x_lo = np.full(rows.size, float(self.k))
        stop = np.minimum(np.maximum(np.ceil(x_lo), start), self.k - 1).astype(np.int64)
        return start, stop

    # -- exact float gains in bands --------------------------------------------------------

    def _band_gains(
        self, rows: IntArray, start: IntArray, width: IntArray
    ) -> tuple[FloatArray, IntArray]:
        """Float gains of ``rows`` at columns ``start .. start + width - 1``, flat.

        The same arithmetic, element for element, as :func:`coba_rl.value.marginal_gains`:
        ``V(n) = (1 - exp(((-n) / tau) p (1 - p))) C`` at ``width + 1`` values of ``n`` per
        row, then ``V(n + 1) - V(n)``. Returns the gains and each segment's offset.
        Complexity: O(sum of widths) time and memory.
        """
        n_vals = width + 1
        off_v = n_vals.cumsum()
        off_v -= n_vals
        n = (start + self.n_low - off_v).astype(np.float64).repeat(n_vals)
        n += np.arange(n.size)
        if rows.size == self.p_s.size:  # every row, in order: no gathers
            ps, om, pdf = self.p_s.repeat(n_vals), self.om.repeat(n_vals), self.pdf.repeat(n_vals)
        else:
            at = rows.repeat(n_vals)
            ps, om, pdf = self.p_s[at], self.om[at], self.pdf[at]
        np.negative(n, out=n)
        _values_in_place(n, self.tau, ps, om, pdf)
        # Drop the differences across two rows (last value of a row, first of the next).
        keep = np.ones(n.size - 1, dtype=bool)
        keep[off_v[1:] - 1] = False
        g = np.subtract(n[1:], n[:-1])[keep]
        off_v -= np.arange(rows.size)
        return g, off_v

    def scan(
        self, rows: IntArray, start: IntArray, stop: IntArray, lam_lo: float, lam_hi: float
    ) -> tuple[IntArray, IntArray, NDArray[np.bool_], FloatArray, IntArray]:
        """Settle ``rows`` on columns ``start .. stop`` (inclusive) against the bracket.

        Returns per row ``a`` (keys > lam_hi), ``b`` (keys >= lam_lo), whether the band
        proves both (``ok``), and the keys in [lam_lo, lam_hi] with their row.
        Complexity: O(sum of widths).
        """
        width = stop - start + 1
        g, off = self._band_gains(rows, start, width)
        first = g[off]
        # Segmented running minimum (rises are rare ulp-level blips: few passes).
        up = g[1:] > g[:-1]
        up[off[1:] - 1] = False  # a row's first gain is compared with nothing before it
        if up.any():
            rise = np.flatnonzero(up) + 1
            new_seg = np.zeros(g.size, dtype=bool)
            new_seg[off] = True
            while rise.size:
                # Lowering g[j] can only make g[j + 1] rise: check the successors.
                g[rise] = g[rise - 1]
                nxt = rise + 1
                nxt = nxt[nxt < g.size]
                nxt = nxt[~new_seg[nxt]]
                rise = nxt[g[nxt] > g[nxt - 1]]
        above = g > lam_hi
        within = g >= lam_lo
        a = np.add.reduceat(above, off, dtype=np.int64)
        a += start
        b = np.add.reduceat(within, off, dtype=np.int64)
        b += start
        err2 = self.err2 if rows.size == self.p_s.size else self.err2[rows]
        ok = start == 0
        ok |= first > lam_hi + err2
        # b <= stop + 1 always: "stop is the last column or b <= stop" in one comparison.
        ok &= np.minimum(b, self.k - 1) <= stop
        within ^= above  # the keys in [lam_lo, lam_hi] (above implies within)
        if not ok.all():
            within &= ok.repeat(width)
        inside = np.flatnonzero(within)
        # The row of each key in the bracket: the last segment starting at or before it.
        return a, b, ok, g[inside], rows[off.searchsorted(inside, side="right") - 1]

    def select(self, weight: IntArray, spare: int) -> tuple[IntArray, IntArray] | None:
        """Per row: keys strictly above the ``spare``-th largest key, and keys equal to it.

        ``None`` when the closed form cannot bracket the threshold (it sits at the level
        of floating-point noise); the caller then ranks the table. Complexity: O(U b)
        time and O(U + chunk) memory.
        """
        relaxed = self.relaxed_threshold(weight, spare)
        if relaxed is None:
            return None
        t0, d, d_lo = relaxed
        d_lo += 1e-12 * (1.0 + abs(t0))
        u = self.p_s.size
        act = np.arange(u) if self.all_active else np.flatnonzero(self.active)
        for _ in range(_MAX_TRIES):
            lam_hi = math.exp(min(max(t0 + d, -746.0), 709.0))
            lam_lo = math.exp(min(max(t0 - d_lo, -746.0), 709.0))
            a, b, vals, vrows = self._settle(act, lam_lo, lam_hi)
            spans = None
            if not self.all_active:
                # Rows whose float gains are all 0 settle without evaluation.
                idle = np.flatnonzero(~self.active)
                a[idle] = self.k if lam_hi < 0.0 else 0
                b[idle] = self.k if lam_lo <= 0.0 else 0
                if lam_lo <= 0.0 <= lam_hi:
                    vals = np.concatenate([vals, np.zeros(idle.size)])
                    spans = np.concatenate(
                        [np.ones(vrows.size, dtype=np.int64), np.full(idle.size, self.k)]
                    )
                    vrows = np.concatenate([vrows, idle])
            # Integer dot products: exact, and numpy runs them without BLAS.
            n_above = int(np.dot(weight, a))
            if n_above >= spare:
                d *= 4.0
                continue
            if int(np.dot(weight, b)) < spare:
                d_lo *= 4.0
                continue
            wts = weight[vrows] if spans is None else weight[vrows] * spans
            lam = _weighted_kth_largest(vals, wts, spare - n_above)
            gt, eq = vals > lam, vals == lam
            if spans is not None:
                gt, eq = gt * spans, eq * spans
            above = a + np.bincount(vrows, weights=gt, minlength=u).astype(np.int64)
            equal = np.bincount(vrows, weights=eq, minlength=u).astype(np.int64)
            return above, equal
        return None

    def _settle(
        self, act: IntArray, lam_lo: float, lam_hi: float
    ) -> tuple[IntArray, IntArray, FloatArray, IntArray]:
        """``a``, ``b`` for every row and the keys in the bracket, in bounded chunks.

        Complexity: O(U + sum of band widths) time; O(U + :data:`_BAND_CHUNK`) memory
        besides the keys in the bracket.
        """
        u, k = self.p_s.size, self.k
        if act.size == 0:
            a = np.zeros(u, dtype=np.int64)
            return a, a.copy(), np.empty(0), np.empty(0, dtype=np.int64)
        start, stop = self.first_columns(act, lam_lo, lam_hi)
        vals: list[FloatArray] = []
        vrows: list[IntArray] = []
        redo: list[IntArray] = []
        parts = _chunks(stop - start + 1)
        if len(parts) == 1 and act.size == u:
            # One chunk of every row (the common case): no scatter.
            a, b, ok, v, vr = self.scan(act, start, stop, lam_lo, lam_hi)
            if ok.all():
                return a, b, v, vr
            parts = []
            vals.append(v)
            vrows.append(vr)
            redo.append(act[~ok])
        else:
            a = np.zeros(u, dtype=np.int64)
            b = np.zeros(u, dtype=np.int64)
        for lo, hi in parts:
            rows = act[lo:hi]
            ca, cb, ok, v, vr = self.scan(rows, start[lo:hi], stop[lo:hi], lam_lo, lam_hi)
            a[rows], b[rows] = ca, cb
            vals.append(v)
            vrows.append(vr)
            if not ok.all():
                redo.append(rows[~ok])
        if redo:
            # The band could not prove its answer for these rows: compute them in full.
            again = np.concatenate(redo)
            zero = np.zeros(again.size, dtype=np.int64)
            full = np.full(again.size, k - 1, dtype=np.int64)
            for lo, hi in _chunks(full + 1):
                rows = again[lo:hi]
                ca, cb, _, v, vr = self.scan(rows, zero[lo:hi], full[lo:hi], lam_lo, lam_hi)
                a[rows], b[rows] = ca, cb  # a full row always proves itself
                vals.append(v)
                vrows.append(vr)
        if len(vals) == 1:
            return a, b, vals[0], vrows[0]
        return a, b, np.concatenate(vals), np.concatenate(vrows)


def _sample_rows(
    top: FloatArray, rate: FloatArray, w: IntArray
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """About :data:`_SORT_ROWS` rows standing for all of them in the relaxed count.

    Every heavy row (more than 8 times the mean weight: a rate many prompts share, such
    as 0) is kept with its weight; a strided sample of the others is scaled up to their
    total weight. Without the heavy rows kept, a sample that happened to miss a rate
    shared by a quarter of the batch would misplace the threshold by far.
    Complexity: O(U).
    """
    total = float(np.add.reduce(w))
    heavy = w > 8.0 * total / w.size
    keep = np.flatnonzero(heavy)
    light = np.flatnonzero(~heavy)
    light = light[:: -(-light.size // _SORT_ROWS)] if light.size else light
    w_heavy = float(np.add.reduce(w[keep]))
    w_light = float(np.add.reduce(w[light]))
    scale = (total - w_heavy) / w_light if w_light > 0 else 0.0
    rows = np.concatenate([keep, light])
    wts = np.concatenate([w[keep].astype(np.float64), w[light] * scale])
    return top[rows], rate[rows], wts


def _uncapped_root(
    top: FloatArray, rate: FloatArray, w: IntArray, k: int, spare: float
) -> tuple[float, FloatArray] | None:
    """:func:`_relaxed_root` when no row reaches its cap ``k`` at the root (the common
    case: the budget spread over many rows). Sorting the ``n`` top breakpoints suffices;
    ``None`` where a row would be capped there (then the full root is needed).

    Returns the root ``t`` and each row's relaxed count ``(top - t) / rate`` there.

    Complexity: O(n log n), half the sort of :func:`_relaxed_root`.
    """
    t = _breakpoint_root(top, w / rate, spare, beyond=True)
    if t is None or not math.isfinite(t):
        return None
    x = top - t
    x /= rate
    # Every row's count at t must be below its cap k.
    if not float(np.maximum.reduce(x)) < k:
        return None
    return t, x


def _relaxed_root(
    top: FloatArray, rate: FloatArray, w: IntArray | FloatArray, k: int, spare: float
) -> float | None:
    """Root of ``sum w clip((top - t) / rate, 0, k) = spare`` by sorting its breakpoints.

    ``None`` if ``spare`` is not below the total. Complexity: O(n log n).
    """
    n = top.size
    ts = np.empty(2 * n)
    ts[:n] = top
    np.subtract(top, k * rate, out=ts[n:])
    ds = np.empty(2 * n)
    np.divide(w, rate, out=ds[:n])
    np.negative(ds[:n], out=ds[n:])
    return _breakpoint_root(ts, ds, spare, beyond=False)


def _breakpoint_root(
    ts: FloatArray, slopes: FloatArray, spare: float, beyond: bool
) -> float | None:
    """Root of ``sum_j slopes_j max(ts_j - t, 0) = spare``, piecewise linear in ``t``, by
    sorting the breakpoints ``ts``.

    Below the lowest breakpoint the count goes on with the last slope if ``beyond``;
    otherwise there (or where the count is not finite) the answer is ``None``.
    Complexity: O(n log n).
    """
    order = ts.argsort()[::-1]
    ts, slopes = ts[order], slopes[order]
    run = np.add.accumulate(slopes)
    gaps = ts[:-1] - ts[1:]
    gaps *= run[:-1]
    level = np.add.accumulate(gaps)  # level[j]: the count at ts[j + 1]
    i = int(level.searchsorted(spare)) + 1
    if not beyond and (i >= ts.size or not math.isfinite(float(level[-1]))):
        return None
    done = float(level[i - 2]) if i >= 2 else 0.0
    s = float(run[i - 1])
    return float(ts[i - 1]) - (spare - done) / s if s > 0 else float(ts[i])


def _chunks(width: IntArray) -> list[tuple[int, int]]:
    """Consecutive index ranges of ``width`` whose sums stay near :data:`_BAND_CHUNK`.

    Complexity: O(len(width)).
    """
    n = width.size
    if int(np.add.reduce(width)) <= _BAND_CHUNK:
        return [(0, n)]
    cum = width.cumsum()
    total = int(cum[-1])
    ends = np.searchsorted(cum, np.arange(_BAND_CHUNK, total, _BAND_CHUNK))
    cuts = sorted({0, n, *(int(e) + 1 for e in ends if 0 < int(e) + 1 < n)})
    return list(itertools.pairwise(cuts))
