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

import heapq

import numpy as np
from numpy.typing import ArrayLike, NDArray

from coba_rl._validation import as_real_array, check_bounds, check_real
from coba_rl.value import _beta_pdf_distinct, _unique_gains

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
      [5, 7, 7, 5]
      >>> g = marginal_gains(p, 3.0, 3.0, 4.0, n_low=2, n_up=16)
      >>> greedy_heap(g, budget=24, n_low=2, n_up=16).tolist()
      [5, 7, 7, 5]

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
) -> IntArray:
    """Units above ``n_low`` per prompt for :func:`capability_greedy` (validated arguments).

    The hot path of ``allocate``. Complexity: O(M log M) time, O(M) memory.
    """
    m, k_cols = p.size, n_up - n_low
    if spare <= 0 or k_cols == 0:
        return np.zeros(m, dtype=np.int64)
    if spare >= m * k_cols:
        return np.full(m, k_cols, dtype=np.int64)
    uniq, inverse = np.unique(np.clip(p, smoothing, 1.0 - smoothing), return_inverse=True)
    inverse = inverse.reshape(-1)
    weight = np.bincount(inverse, minlength=uniq.size)
    rows = _GeometricRows(uniq, _beta_pdf_distinct(uniq, alpha, beta), tau, n_low, k_cols)
    found = rows.select(weight, spare)
    if found is None:
        # The threshold is at floating-point noise level: rank the table itself.
        gains_u, inv = _unique_gains(p, alpha, beta, tau, n_low, n_up, smoothing)
        return _greedy_extra_grouped(_running_min(gains_u), inv, spare)
    above, equal = found
    return _split_ties(above[inverse], equal[inverse], spare)


def _weighted_kth_largest(vals: FloatArray, wts: IntArray, k: int) -> float:
    """The ``k``-th largest of ``vals``, each counted ``wts`` times (``1 <= k <= sum``).

    Complexity: O(n) expected (pivot on the median, keep one side).
    """
    while vals.size > 64:
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
    order = np.argsort(-vals, kind="stable")
    cum = np.cumsum(wts[order])
    return float(vals[order[int(np.searchsorted(cum, k))]])


class _GeometricRows:
    """The distinct rows of the gain table, evaluated only where asked.

    Holds O(U) arrays for U distinct clipped pass rates.
    """

    def __init__(self, p_s: FloatArray, pdf: FloatArray, tau: float, n_low: int, k: int):
        self.p_s, self.pdf, self.tau, self.n_low, self.k = p_s, pdf, tau, n_low, k
        self.om = 1 - p_s
        with np.errstate(all="ignore"):
            rate = p_s * self.om / tau
            # Rows whose float gains are all exactly 0: p_s in {0, 1} or a zero density.
            self.active = (rate > 0) & (pdf > 0) & np.isfinite(rate)
            self.rate = np.where(self.active, rate, 1.0)
            # log of the exact first gain C e^{-k n_low} (1 - e^{-k}).
            self.log_a = np.where(
                self.active,
                np.log(np.where(self.active, pdf, 1.0))
                - self.rate * n_low
                + np.log(-np.expm1(-self.rate)),
                -np.inf,
            )
        self.err = pdf * GAIN_ERROR + _GAIN_ERROR_ABS

    # -- closed form ------------------------------------------------------------------------

    def relaxed_threshold(self, weight: IntArray, spare: int) -> tuple[float, float] | None:
        """``(t0, d)``: log-threshold where the continuous count equals ``spare``, and the
        shift of ``t`` that lowers it by 1.5x the weight of the rows crossing there.

        The count ``sum_u w_u clip((log_a_u - t) / k_u, 0, K)`` is piecewise linear in
        ``t``; its breakpoints are sorted once. Complexity: O(U log U).
        """
        act = np.flatnonzero(self.active & np.isfinite(self.log_a))
        if act.size == 0:
            return None
        slope = weight[act] / self.rate[act]
        top = self.log_a[act]
        bottom = top - self.k * self.rate[act]
        ts = np.concatenate([top, bottom])
        ds = np.concatenate([slope, -slope])
        order = np.argsort(-ts, kind="stable")
        ts, ds = ts[order], ds[order]
        run = np.cumsum(ds)
        level = np.concatenate([[0.0], np.cumsum(run[:-1] * (ts[:-1] - ts[1:]))])
        i = int(np.searchsorted(level, spare))
        if i >= ts.size or i == 0 or not np.isfinite(level[-1]):
            return None
        s = run[i - 1]
        t0 = float(ts[i - 1] - (spare - level[i - 1]) / s) if s > 0 else float(ts[i])
        lin = (top > t0) & (bottom < t0)
        w_lin = float(weight[act][lin].sum())
        s_lin = float(slope[lin].sum())
        if w_lin > 0 and s_lin > 0:
            d = 1.5 * w_lin / s_lin
        else:
            d = float(self.rate[act].min())
        return t0, d

    # -- exact float gains in bands --------------------------------------------------------

    def _band_gains(
        self, rows: IntArray, start: IntArray, width: IntArray
    ) -> tuple[FloatArray, IntArray, IntArray]:
        """Float gains of ``rows`` at columns ``start .. start + width - 1``, flat.

        The same arithmetic, element for element, as :func:`coba_rl.value.marginal_gains`.
        Returns the gains, the segment of each entry and each segment's offset.
        """
        seg = np.repeat(np.arange(rows.size), width)
        off = np.cumsum(width) - width
        r = rows[seg]
        n = (np.arange(seg.size) - off[seg] + start[seg] + self.n_low).astype(np.float64)
        ps, om, pdf = self.p_s[r], self.om[r], self.pdf[r]
        with np.errstate(over="ignore", under="ignore"):
            v0 = (1 - np.exp(-n / self.tau * ps * om)) * pdf
            v1 = (1 - np.exp(-(n + 1) / self.tau * ps * om)) * pdf
        return v1 - v0, seg, off

    def scan(
        self, rows: IntArray, start: IntArray, stop: IntArray, lam_lo: float, lam_hi: float
    ) -> tuple[IntArray, IntArray, NDArray[np.bool_], FloatArray, IntArray]:
        """Settle ``rows`` on columns ``start .. stop`` (inclusive) against the bracket.

        Returns per row ``a`` (keys > lam_hi), ``b`` (keys >= lam_lo), whether the band
        proves both (``ok``), and the keys in [lam_lo, lam_hi] with their row.
        Complexity: O(sum of widths).
        """
        width = stop - start + 1
        g, seg, off = self._band_gains(rows, start, width)
        first = g[off]
        # Segmented running minimum (rises are rare ulp-level blips: few passes).
        if g.size > 1:
            same = seg[1:] == seg[:-1]
            while True:
                rise = np.flatnonzero((g[1:] > g[:-1]) & same) + 1
                if rise.size == 0:
                    break
                g[rise] = g[rise - 1]
        a = start + np.add.reduceat((g > lam_hi).astype(np.int64), off)
        b = start + np.add.reduceat((g >= lam_lo).astype(np.int64), off)
        err = self.err[rows]
        proof_left = (start == 0) | (first > lam_hi + 2 * err)
        proof_right = (stop == self.k - 1) | (b <= stop)
        ok = proof_left & proof_right
        inside = (g <= lam_hi) & (g >= lam_lo) & ok[seg]
        return a, b, ok, g[inside], rows[seg[inside]]

    def select(self, weight: IntArray, spare: int) -> tuple[IntArray, IntArray] | None:
        """Per row: keys strictly above the ``spare``-th largest key, and keys equal to it.

        ``None`` when the closed form cannot bracket the threshold (it sits at the level
        of floating-point noise); the caller then ranks the table. Complexity: O(U b)
        time and O(U + chunk) memory.
        """
        relaxed = self.relaxed_threshold(weight, spare)
        if relaxed is None:
            return None
        t0, d = relaxed
        d_lo = 0.1 * d + 1e-12 * (1.0 + abs(t0))
        u = self.p_s.size
        act = np.flatnonzero(self.active)
        for _ in range(_MAX_TRIES):
            lam_hi = float(np.exp(t0 + d))
            lam_lo = float(np.exp(t0 - d_lo))
            res = self._settle(act, lam_lo, lam_hi)
            if res is None:
                return None
            a, b, vals, vrows = res
            # Rows whose float gains are all 0 (inactive) settle without evaluation.
            idle = ~self.active
            a[idle] = np.where(0.0 > lam_hi, self.k, 0)
            b[idle] = np.where(0.0 >= lam_lo, self.k, 0)
            n_above = int(weight @ a)
            n_within = int(weight @ b)
            if n_above >= spare:
                d *= 4.0
                continue
            if n_within < spare:
                d_lo *= 4.0
                continue
            spans = np.ones(vals.size, dtype=np.int64)
            if lam_lo <= 0.0 <= lam_hi and idle.any():
                zero_rows = np.flatnonzero(idle)
                vals = np.concatenate([vals, np.zeros(zero_rows.size)])
                vrows = np.concatenate([vrows, zero_rows])
                spans = np.concatenate([spans, np.full(zero_rows.size, self.k, dtype=np.int64)])
            lam = _weighted_kth_largest(vals, weight[vrows] * spans, spare - n_above)
            above = a + np.bincount(vrows, weights=spans * (vals > lam), minlength=u).astype(
                np.int64
            )
            equal = np.bincount(vrows, weights=spans * (vals == lam), minlength=u).astype(
                np.int64
            )
            return above, equal
        return None

    def _settle(
        self, act: IntArray, lam_lo: float, lam_hi: float
    ) -> tuple[IntArray, IntArray, FloatArray, IntArray] | None:
        """``a``, ``b`` for every row and the keys in the bracket, in bounded chunks."""
        u, k = self.p_s.size, self.k
        a = np.zeros(u, dtype=np.int64)
        b = np.zeros(u, dtype=np.int64)
        if act.size == 0:
            return a, b, np.empty(0), np.empty(0, dtype=np.int64)
        err = self.err[act]
        start = self.exact_above_rows(act, lam_hi + 3 * err) - 2
        stop = self.exact_above_rows(act, lam_lo - 3 * err) + 1
        np.clip(start, 0, k - 1, out=start)
        np.clip(stop, start, k - 1, out=stop)
        vals: list[FloatArray] = []
        vrows: list[IntArray] = []
        redo: list[IntArray] = []
        for lo, hi in _chunks(stop - start + 1):
            rows = act[lo:hi]
            ca, cb, ok, v, vr = self.scan(rows, start[lo:hi], stop[lo:hi], lam_lo, lam_hi)
            a[rows], b[rows] = ca, cb
            vals.append(v)
            vrows.append(vr)
            redo.append(rows[~ok])
        again = np.concatenate(redo)
        if again.size:
            # The band could not prove its answer for these rows: compute them in full.
            zero = np.zeros(again.size, dtype=np.int64)
            full = np.full(again.size, k - 1, dtype=np.int64)
            for lo, hi in _chunks(full - zero + 1):
                rows = again[lo:hi]
                ca, cb, ok, v, vr = self.scan(rows, zero[lo:hi], full[lo:hi], lam_lo, lam_hi)
                if not ok.all():  # pragma: no cover - a full row always proves itself
                    return None
                a[rows], b[rows] = ca, cb
                vals.append(v)
                vrows.append(vr)
        return a, b, np.concatenate(vals), np.concatenate(vrows)

    def exact_above_rows(self, rows: IntArray, lam: FloatArray) -> IntArray:
        """:meth:`exact_above` restricted to ``rows`` (thresholds aligned with ``rows``)."""
        with np.errstate(all="ignore"):
            x = np.ceil((self.log_a[rows] - np.log(np.where(lam > 0, lam, 1.0))) / self.rate[rows])
        x = np.nan_to_num(x, nan=0.0, posinf=self.k, neginf=0.0)
        out = np.clip(x, 0, self.k).astype(np.int64)
        out[lam <= 0] = self.k
        return out


def _chunks(width: IntArray) -> list[tuple[int, int]]:
    """Consecutive index ranges of ``width`` whose sums stay near :data:`_BAND_CHUNK`."""
    n = width.size
    if n == 0:
        return []
    total = int(width.sum())
    if total <= _BAND_CHUNK:
        return [(0, n)]
    ends = np.searchsorted(np.cumsum(width), np.arange(_BAND_CHUNK, total, _BAND_CHUNK))
    cuts = sorted({0, n, *(int(e) + 1 for e in ends if 0 < int(e) + 1 < n)})
    return list(zip(cuts[:-1], cuts[1:], strict=False))
