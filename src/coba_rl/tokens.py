r"""Allocation under a token budget: rank rollouts by value gained per token.

Generating a rollout costs tokens, and prompts differ by an order of magnitude in how
many. This module solves

.. math::

    \max_n \sum_i V_i(n_i) \quad \text{s.t.} \quad n_{low} \le n_i \le n_{up},\quad
    \sum_i c_i n_i \le T, \quad \text{optionally } \sum_i n_i \le B

where ``c_i > 0`` is the expected number of tokens of one rollout of prompt ``i``. As in
:mod:`coba_rl.solvers`, each ``V_i`` is given by its marginal-gain table ``gains`` of
shape ``(M, n_up - n_low)`` (or a table of distinct rows plus ``inverse``), rows
replaced by their running minimum so they are non-increasing.

* :func:`token_greedy` is the solver: it ranks every unit (one more rollout of one
  prompt) by ``gain / c_i``, takes the longest prefix that fits, then keeps adding the
  units that still fit, in the same order. The ranking never builds the
  ``M x (n_up - n_low)`` table of ratios.
* :func:`token_greedy_table` is the same rule written out over the full table, one unit
  at a time: the readable reference the fast solver is tested against.
* :func:`token_greedy_value` is the solver on CoBA-RL's own value without any table:
  each prompt's keys are geometric in exact arithmetic, so the closed form places every
  threshold and exact keys are computed in a band of a few columns per prompt
  (:mod:`coba_rl._token_rows`). ``allocate(..., token_budget=...)`` runs it.
* :func:`token_dp` is the exact dynamic program over tokens (integer costs), the
  reference optimum for small instances.
* :func:`resolve_costs` fills unknown costs (``NaN``).

**Order.** Units are taken in the order (key descending, prompt index ascending, unit
ascending): ties break by prompt position. ``V`` is increasing, so for CoBA-RL's value
every gain is non-negative up to rounding.

**Guarantee (token budget only).** Let ``S`` be the longest prefix of the order that fits
and ``u*`` the first unit that does not, with key ``k* = g* / c*``. For the dual
multiplier ``lambda = k*`` of the LP relaxation (fractional units), weak duality gives

.. math::

    \mathrm{OPT} \le \mathrm{OPT}_{LP} \le \lambda T' + \sum_u (g_u - \lambda c_u)^+
    = V(S) + k^* (T' - c(S)) < V(S) + k^* c^* = V(S) + g^*

because every unit ranked above ``u*`` is in ``S``, the others have ``g_u \le k^* c_u``,
and ``u*`` did not fit (``T' - c(S) < c^*``). ``T' = T - n_{low} \sum_i c_i`` is the budget
left above the floor. Filling only adds units of non-negative gain, so the returned
objective is within **one marginal gain** of the optimum: the next gain ``g*`` of the
prompt that stopped the ranking (which keeps its count, since it never fits again).

**Guarantee (tokens and rollouts).** With the rollout cap as well:

1. if the rollout-only allocation (:func:`coba_rl.solvers.greedy` with ``B``) fits in
   ``T``, it is returned unchanged: it is optimal for the rollout-only problem, a
   relaxation of this one (gap 0);
2. otherwise, if the token ranking stops on tokens before the rollout cap, the
   token-only guarantee above holds (the token-only problem is a relaxation);
3. otherwise both constraints bind. The units are ranked by ``g / (c_i + nu)``; for any
   ``nu >= 0`` the prefix ``S`` with first non-fitting unit of key ``k*`` gives the dual
   point ``(lambda, mu) = (k*, nu k*)`` and

   .. math::

       \mathrm{OPT} \le V(S) + k^* \bigl[(T' - c(S)) + \nu (B' - |S|)\bigr].

   ``nu`` is searched on the size of the token-only prefix, keeping a bracket between a
   ranking stopped by the rollout cap and one stopped by tokens: the first ``nu`` mixes
   the dual lines of the two one-budget solutions, then secant steps (regula falsi with
   the Illinois correction where a secant leaves the bracket). A step only sizes the
   prefix; a ranking is filled and certified once its prefix is within one unit of
   ``B'`` (or after 8 steps, at every step).
   When the ranking stops on tokens with at most one rollout to spare
   (``|S| >= B' - 1``) the bracket is below ``k* (c* + nu) = g*``; where a single pair
   of units swaps places at the crossing, one side of the swap is such a ranking.
   The solver returns the best allocation it evaluated with the smallest dual bound it
   met: :attr:`TokenSolution.gap` is a **certified** upper bound on ``OPT - objective``
   (exact in real arithmetic). The search stops once that bound is at most the marginal
   gain ``g*`` of the unit that stopped the current ranking, or after 60 steps (then
   the bracket's ends are certified too). What is proven is the certificate; that it
   ends within two marginal gains of the best open prompt is what the property tests
   check.

   On CoBA-RL's value without the table (:func:`token_greedy_value`) the search starts
   where the relaxed problem (fractional counts from the closed form of the rows) has
   both budgets binding, and aims at a token prefix of ``B' - 1`` units: at that size the
   certificate always holds (``T' - c(S) < c*``, one rollout left, ``k* (c* + nu) = g*``,
   barring ties at ``k*``). Its first prefix aims a little lower, at ``B' - 2.5``
   relaxed units (:data:`ROW_TARGET`): a ranking whose prefix stops on tokens up to
   :data:`ROW_ACCEPT` units short of ``B'`` is certified at once and returned if its
   certificate holds (it usually does: the fill spends what the tokens leave, and the
   few rollouts left cost ``nu k*`` each in the bound only where the fill leaves them).
   At the paper's scale that is one prefix in about four of five batches, else a cheap
   re-ranking or two of its settled bracket; the rollout-only allocation is not computed
   at all when a ranking stops on tokens short of ``B'`` (proof below).
   The rollout price found depends on where the search starts, so there the counts may
   differ from the table solver's: both are certified within their own gap.

**Skipping the rollout-only allocation.** Where both budgets may bind, any ranking whose
token prefix stops on tokens short of ``B'`` units proves that the rollout-only
allocation does not fit, so case 1 is settled without computing it. Take the ranking by key
``g / (c + nu)`` for any ``nu >= 0``, its token prefix ``S`` with ``|S| < B'``, and
``u*`` the unit that stopped it (key ``k*``; ``c(S) + c(u*) > T'``). Let ``R`` be the
top ``B'`` gains (the rollout-only allocation) and ``g_R`` the least of them. A unit
``a`` of ``S`` not in ``R`` has key ``>= k*`` and gain ``<= g_R``, so
``c(a) + nu <= g(a) / k* <= g_R / k*``. A unit ``b`` of ``R`` not in ``S`` is not
ranked before ``u*`` (every unit that is lies in ``S``), so its key is ``<= k*`` and
its gain ``>= g_R``: ``c(b) + nu >= g_R / k*``. Hence ``c(b) >= c(a)`` for every such
pair, and ``|R - S| >= |S - R| + 1`` since ``|R| > |S|``. If ``u*`` is in ``R``, pair
each unit of ``S - R`` with a unit of ``R - S`` other than ``u*``; if not, one unit
``b0`` of ``R - S`` is left unpaired, and ``c(b0) + nu >= g_R / k* >= g(u*) / k* =
c(u*) + nu``. Either way ``c(R) >= c(S) + c(u*) > T'``. With caps, ``R`` and the
rankings range over the units below the caps, and the argument is unchanged. Keys
are rounded once, so each inequality holds up to a few ulps of ``c + nu``: the skip
asks the overshoot ``c(S) + c(u*) - T'`` to exceed :data:`SKIP_MARGIN` times
``c(S) + c(u*) + B' nu``, far above that rounding and that of the sums.

Floating point: keys are ``gains / c_i`` in float64, ordered exactly as computed, so the
fast and the table solver rank units identically; their counts are identical wherever
partial sums of costs are exact (integer token counts) and could differ by a unit only
where two orders of summation round differently. Budgets hold up to the rounding of
the sum ``sum_i c_i n_i``. Case 1 above returns the rollout-only counts as they are;
elsewhere only units with a non-negative gain are added.

Reference: the greedy is the fractional-knapsack rule (Dantzig, 1957) applied to the
concave rows of CoBA-RL's value (arXiv 2602.03048, eq. 9); DUET (arXiv 2605.08441)
motivates controlling tokens rather than rollouts.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from coba_rl._token_rows import Fallback, GeometricTokenRows, Prefix, Relaxed, Repriced
from coba_rl._validation import as_real_array, check_bounds, check_real
from coba_rl.solvers import _greedy_extra_grouped, _running_min
from coba_rl.value import _unique_gains

__all__ = [
    "TokenSolution",
    "resolve_costs",
    "token_dp",
    "token_greedy",
    "token_greedy_table",
]

IntArray = NDArray[np.int64]
FloatArray = NDArray[np.float64]

Binding = Literal["tokens", "rollouts", "tokens+rollouts", "none"]

#: Whether :func:`token_greedy_value` ranks from the closed form of the rows (``False``:
#: always on the gain table; for benchmarks and tests that compare the two).
_CLOSED_FORM = True
#: Bisection steps of the two-constraint search, at most.
MAX_NU_STEPS = 60
#: Search steps that only size the token prefix, unless it lands within NEAR units of B'.
CHEAP_STEPS = 8
NEAR = 1


@dataclass(frozen=True)
class TokenSolution:
    """The result of :func:`token_greedy`.

    Attributes:
      counts: int64 rollouts per prompt, in ``[n_low, n_up]``.
      tokens: ``sum_i c_i n_i``, the expected tokens spent.
      bound: which constraint stopped the allocation: ``"tokens"`` (no further rollout
        of any prompt below its cap fits), ``"rollouts"`` (the rollout cap is reached),
        ``"tokens+rollouts"`` or ``"none"`` (every prompt is at ``n_up``, or no further
        rollout has a non-negative gain).
      gap: a certified upper bound on ``OPT - objective`` (0 when provably optimal).
      nu: the rollout price of the ranking ``gain / (c_i + nu)``, in tokens (0 for the
        pure token ranking, ``inf`` for the rollout-only allocation).
    """

    counts: IntArray
    tokens: float
    bound: Binding
    gap: float
    nu: float = 0.0

    def __post_init__(self) -> None:
        self.counts.setflags(write=False)


def resolve_costs(costs: ArrayLike, *, default: float | None = None) -> FloatArray:
    """Per-prompt token costs with every unknown (``NaN``) filled in.

    An unknown cost becomes the mean of the known ones: a prompt never seen before is
    assumed to be as long as the batch's average. If no cost is known, ``default`` is
    used for every prompt (a trainer would pass its response-length limit); without
    ``default`` that is an error, since a token budget cannot be spent on unknown costs.

    Args:
      costs: shape ``(M,)``, expected tokens per rollout; ``NaN`` marks unknown.
      default: the cost of every prompt when none is known; finite and positive.

    Returns:
      A read-only float64 array of positive finite costs.

    Raises:
      ValueError: a cost that is infinite, zero or negative; no cost known and no
        ``default``; a non-positive ``default``; not 1-D.

    Example:
      >>> resolve_costs([100.0, float("nan"), 300.0]).tolist()
      [100.0, 200.0, 300.0]
      >>> resolve_costs([float("nan")] * 2, default=512).tolist()
      [512.0, 512.0]
    """
    arr = np.array(as_real_array(costs, "costs"), dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"costs must be 1-D, got shape {arr.shape}")
    unknown = np.isnan(arr)
    bad = ~unknown & ~(np.isfinite(arr) & (arr > 0))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"costs[{i}] = {arr[i]}: tokens per rollout must be finite and positive "
            "(NaN marks unknown)"
        )
    if unknown.all() and arr.size:
        if default is None:
            raise ValueError(
                "no prompt has a known cost (all NaN) and no default was given; "
                "pass default=<tokens per rollout>, e.g. the response-length limit"
            )
        arr[:] = check_real(default, "default", lo=np.finfo(np.float64).tiny)
    elif unknown.any():
        arr[unknown] = float(np.mean(arr[~unknown]))
    arr.setflags(write=False)
    return arr


# --------------------------------------------------------------------------- checks


@dataclass(frozen=True)
class _Problem:
    """A validated problem in units above the floor."""

    g: FloatArray  # (U, K), running minimum applied
    inv: IntArray  # (M,)
    c: FloatArray  # (M,)
    t_total: float  # T
    t_spare: float  # T' = T - n_low * sum(c)
    b_spare: int | None  # B' = B - M n_low, or None
    n_low: int
    limit: IntArray  # (M,) units with a non-negative gain
    pos: IntArray  # (M,) units with a positive gain
    flat: FloatArray  # g.reshape(-1)
    base: IntArray  # inv * K: where each prompt's row starts in ``flat``
    cum: FloatArray  # (U, K + 1) cumulative gains, cum[:, 0] = 0
    capped: bool  # per-prompt caps below n_up were given
    # The rankings' parts that do not depend on the rollout price (see _row_model).
    memo: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def row_limit(self) -> IntArray:
        """:attr:`limit` (as :attr:`GeometricTokenRows.row_limit` names it)."""
        return self.limit


def _check_problem(
    gains: ArrayLike,
    costs: ArrayLike,
    token_budget: float,
    n_low: int,
    n_up: int,
    rollout_budget: int | None,
    inverse: ArrayLike | None,
    caps: ArrayLike | None = None,
) -> _Problem:
    n_low, n_up = check_bounds(n_low, n_up)
    g = as_real_array(gains, "gains")
    k = n_up - n_low
    if g.ndim != 2 or g.shape[1] != k:
        raise ValueError(f"gains must have shape (rows, n_up - n_low) = (rows, {k}), got {g.shape}")
    if not np.isfinite(g).all():
        raise ValueError("gains must be finite (found NaN or inf)")
    if inverse is None:
        inv = np.arange(g.shape[0], dtype=np.int64)
    else:
        inv_f = as_real_array(inverse, "inverse")
        if inv_f.ndim != 1 or not (inv_f == np.round(inv_f)).all():
            raise ValueError("inverse must be a 1-D array of row indices")
        inv = inv_f.astype(np.int64)
        if inv.size and (inv.min() < 0 or inv.max() >= g.shape[0]):
            raise ValueError(f"inverse must index rows of gains, in [0, {g.shape[0] - 1}]")
    m = inv.size
    c = as_real_array(costs, "costs")
    if c.shape != (m,):
        raise ValueError(f"costs must have shape ({m},) (one per prompt), got {c.shape}")
    bad = ~(np.isfinite(c) & (c > 0))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        hint = " (unknown: fill it with resolve_costs first)" if math.isnan(c[i]) else ""
        raise ValueError(
            f"costs[{i}] = {c[i]}: tokens per rollout must be finite and positive{hint}"
        )
    if isinstance(token_budget, (bool, np.bool_)):
        raise TypeError("token_budget must be a number of tokens, got a bool")
    t = check_real(token_budget, "token_budget")
    if t < 0:
        raise ValueError(f"token_budget must be non-negative, got {t}")
    floor = float(c @ np.full(m, n_low, dtype=np.int64))  # as the tokens of counts are summed
    if floor > t:
        raise ValueError(
            f"token_budget {t:g} is below the floor n_low * sum(costs) = {floor:g}: even "
            f"{n_low} rollout(s) per prompt do not fit; raise the token budget"
        )
    b_spare: int | None = None
    if rollout_budget is not None:
        if isinstance(rollout_budget, (bool, np.bool_)) or not isinstance(
            rollout_budget, (int, np.integer)
        ):
            raise TypeError(f"rollout_budget must be an int, got {type(rollout_budget).__name__}")
        if rollout_budget < m * n_low:
            raise ValueError(
                f"rollout_budget {rollout_budget} is below M * n_low = {m * n_low}: infeasible"
            )
        b_spare = int(rollout_budget) - m * n_low
    g = _running_min(np.ascontiguousarray(g, dtype=np.float64))
    limit = np.count_nonzero(g >= 0.0, axis=1).astype(np.int64)[inv]
    pos = np.count_nonzero(g > 0.0, axis=1).astype(np.int64)[inv]
    capped = caps is not None
    if caps is not None:
        cap_f = as_real_array(caps, "caps")
        if cap_f.shape != (m,) or not (cap_f == np.round(cap_f)).all():
            raise ValueError(f"caps must be {m} integers (one per prompt), got shape {cap_f.shape}")
        bad_cap = (cap_f < n_low) | (cap_f > n_up)
        if bad_cap.any():
            i = int(np.flatnonzero(bad_cap)[0])
            raise ValueError(
                f"caps[{i}] = {cap_f[i]:g} is outside [n_low, n_up] = [{n_low}, {n_up}]"
            )
        extra = cap_f.astype(np.int64) - n_low
        limit, pos = np.minimum(limit, extra), np.minimum(pos, extra)
    cum = np.zeros((g.shape[0], k + 1))
    np.cumsum(g, axis=1, out=cum[:, 1:])
    c_arr = np.asarray(c, dtype=np.float64)
    flat = g.reshape(-1)
    return _Problem(
        g, inv, c_arr, t, t - floor, b_spare, n_low, limit, pos, flat, inv * k, cum, capped
    )


# --------------------------------------------------------------- fast machinery


def _keys_at(p: _Problem, w: FloatArray, rows: IntArray, cols: IntArray) -> FloatArray:
    """The ranking keys ``gains / w`` of units ``(rows, cols)``, exactly as the table has them."""
    return np.asarray(p.flat[p.base[rows] + cols] / w[rows], dtype=np.float64)


def _exact_counts(
    p: _Problem, w: FloatArray, lam: float, guess: IntArray | None = None
) -> IntArray:
    """Per prompt, how many positive units have a key strictly above ``lam``.

    Starting from ``guess`` (the geometric model's count, usually exact or one off), the
    count is corrected a step at a time; otherwise, or if that does not settle within
    a few steps, a binary search over each row finds it. Rows are non-increasing, so
    the count is where the row crosses ``lam``.
    """
    rows = np.arange(p.inv.size)
    kmax = max(p.g.shape[1] - 1, 0)
    if guess is not None and kmax >= 0 and p.g.shape[1] > 0:
        e = np.minimum(guess, p.pos)
        for _ in range(4):
            down = (e > 0) & (_keys_at(p, w, rows, np.maximum(e - 1, 0)) <= lam)
            up = (e < p.pos) & (_keys_at(p, w, rows, np.minimum(e, kmax)) > lam)
            if not (down.any() or up.any()):
                return e
            e = e - down + up
    lo = np.zeros(p.inv.size, dtype=np.int64)
    hi = p.pos.copy()
    while True:
        active = lo < hi
        if not active.any():
            return lo
        mid = (lo + hi) // 2
        gt = _keys_at(p, w, rows, np.minimum(mid, kmax)) > lam
        lo = np.where(active & gt, mid + 1, lo)
        hi = np.where(active & ~gt, mid, hi)


def _prefix(p: _Problem, w: FloatArray, unit: FloatArray, cap: float) -> Prefix:
    """The longest prefix of the positive units, in key order, whose ``sum(unit)`` fits ``cap``.

    Returns the extra units per prompt, the first unit that does not fit (or None), and
    the units ranked strictly above that unit (the prefix less its ties with it).

    1. A threshold from the fractional relaxation of a geometric model of each row
       (``log key ~ a_i - j s_i``, the exact shape of CoBA-RL's gains): a piecewise
       linear equation, solved after sorting its ``2 M`` breakpoints.
    2. The exact set of units above that threshold, by correcting the model's counts
       on the real keys (binary search where the model is far off).
    3. The cut, found by sorting the next (or last) ``L`` units of every row: their
       merged order is the true order up to the first row whose ``L`` units run out;
       if the cut lies beyond that point, ``L`` grows and step 3 repeats.

    The model only decides how much work step 3 does, never the result.

    Complexity: O(M log M + M log K) for a model within a few units per row.
    """
    # Units whose key is positive (a tiny positive gain divided by w can round to 0).
    top = _exact_counts(p, w, 0.0, guess=p.pos)
    if float(unit @ top) <= cap:
        return Prefix(top, None, top)
    t_star, guess = _relaxed_threshold(p, w, unit, cap, top)
    e = _exact_counts(p, w, math.exp(min(t_star, 700.0)), guess=guess)
    layers = 2
    while True:
        done = _cut(p, w, unit, cap, e, top, layers)
        if done is not None:
            counts, fail = done
            above = _exact_counts(p, w, float(_keys_at(p, w, *_pair(fail))[0]), guess=counts)
            return Prefix(counts, fail, above, float(p.g[p.inv[fail[0]], fail[1]]))
        layers *= 4


def _pair(unit: tuple[int, int]) -> tuple[IntArray, IntArray]:
    return np.array([unit[0]], dtype=np.int64), np.array([unit[1]], dtype=np.int64)


def _relaxed_threshold(
    p: _Problem, w: FloatArray, unit: FloatArray, cap: float, top: IntArray
) -> tuple[float, IntArray]:
    """``t`` with ``sum_i unit_i clip((a_i - t) / s_i, 0, top_i) = cap``, and the model's counts."""
    idx, log_g0, slope, lim = _row_model(p, top)
    if p.g.shape[1] == 0 or idx.size == 0:
        return 0.0, top
    a = log_g0 - np.log(w[idx])
    u = unit[idx]
    # A row holds ceil((a_i - t) / s_i) units above t: about half a unit more than the
    # fraction, so the relaxation is centred on a_i + s_i / 2. Breakpoints: above the
    # centre the row adds nothing, below centre - lim_i s_i it is full.
    a = a + 0.5 * slope
    upper, lower = a, a - lim * slope
    pts = np.concatenate([upper, lower])
    rate = np.concatenate([u / slope, -u / slope])  # change of -d cost / dt below the point
    order = np.argsort(-pts, kind="stable")
    pts, rate = pts[order], np.cumsum(rate[order])
    seg = np.concatenate([[0.0], (pts[:-1] - pts[1:]) * rate[:-1]])
    cost_at = np.cumsum(seg)  # relaxed cost at each breakpoint (descending t)
    k = int(np.searchsorted(cost_at, cap, side="right")) - 1
    k = min(max(k, 0), pts.size - 1)
    t = float(pts[k] - (cap - cost_at[k]) / rate[k]) if rate[k] > 0 else float(pts[k])
    full = np.zeros_like(top)
    full[idx] = np.clip(np.round((a - t) / slope), 0.0, lim).astype(np.int64)
    return t, full


def _row_model(p: _Problem, top: IntArray) -> tuple[IntArray, FloatArray, FloatArray, FloatArray]:
    """The geometric model of the rows with units in ``top``: rows, log first gain, slope, length.

    Depends on the gains only, not on the ranking's weights, so it is kept per ``top``.
    """
    cached = p.memo.get("rows")
    if cached is not None and np.array_equal(cached[0], top):
        return cached[1]  # type: ignore[no-any-return]
    idx = np.flatnonzero(top > 0)
    row0 = p.base[idx]
    last = top[idx] - 1
    log_g0 = np.log(p.flat[row0])
    with np.errstate(divide="ignore", invalid="ignore"):
        slope = (log_g0 - np.log(p.flat[row0 + last])) / np.maximum(last, 1)
    slope = np.where(np.isfinite(slope) & (slope > 1e-12), slope, 1e-12)
    model = (idx, log_g0, slope, top[idx].astype(np.float64))
    p.memo["rows"] = (top.copy(), model)
    return model


def _cut(
    p: _Problem,
    w: FloatArray,
    unit: FloatArray,
    cap: float,
    e: IntArray,
    top: IntArray,
    layers: int,
) -> tuple[IntArray, tuple[int, int]] | None:
    """Step 3 of :func:`_prefix` from the exact prefix ``e``; None if ``layers`` is too few."""
    m = e.size
    cost = float(unit @ e)
    down = cost <= cap
    if down:  # the cut lies after e: merge the next units of every row
        lo, hi = e, np.minimum(e + layers, top)
        short = hi < top
    else:  # the cut lies inside e: merge the last units of every row, backwards
        lo, hi = np.maximum(e - layers, 0), e
        short = lo > 0
    d = hi - lo
    rows = np.repeat(np.arange(m, dtype=np.int64), d)
    starts = np.cumsum(d) - d
    cols = lo[rows] + (np.arange(rows.size, dtype=np.int64) - starts[rows])
    keys = _keys_at(p, w, rows, cols)
    if down:
        order = np.lexsort((cols, rows, -keys))
        edge = short[rows[order]] & (cols[order] == hi[rows[order]] - 1)
    else:
        order = np.lexsort((-cols, -rows, keys))
        edge = short[rows[order]] & (cols[order] == lo[rows[order]])
    # Positions up to the first row whose merged units run out are in the true order.
    valid = int(np.argmax(edge)) if edge.any() else rows.size - 1
    if down:
        cum = cost + np.cumsum(unit[rows[order]])
        pos = int(np.searchsorted(cum, cap, side="right"))  # candidates that fit
        if pos > valid or pos >= rows.size:
            return None
        taken = order[:pos]
        counts = e + np.bincount(rows[taken], minlength=m).astype(np.int64)
        f = int(order[pos])
    else:
        cum = cost - np.cumsum(unit[rows[order]])
        pos = int(np.argmax(cum <= cap)) if bool((cum <= cap).any()) else rows.size
        if pos > valid or pos >= rows.size:
            return None
        removed = order[: pos + 1]
        counts = e - np.bincount(rows[removed], minlength=m).astype(np.int64)
        f = int(order[pos])
    return counts, (int(rows[f]), int(cols[f]))


def _fill(p: _Problem, w: FloatArray, x: IntArray, b_left: float) -> IntArray:
    """Keep adding, in key order, the units that still fit (non-negative gains only).

    Runs of consecutive units of one prompt are taken at once, so the loop turns once
    per change of prompt in the order, not once per unit.
    """
    x = x.copy()
    while b_left > 0:
        t_left = p.t_spare - float(p.c @ x)
        idx = np.flatnonzero((x < p.limit) & (p.c <= t_left))
        if idx.size == 0:
            break
        nk = _keys_at(p, w, idx, x[idx])
        b = int(np.argmax(nk))
        i = int(idx[b])
        row = p.g[p.inv[i], x[i] : p.limit[i]] / w[i]
        if idx.size > 1:
            nk[b] = -np.inf
            b2 = int(np.argmax(nk))
            k2, r2 = float(nk[b2]), int(idx[b2])
            run = int(np.count_nonzero(row > k2))
            if i < r2:
                run += int(np.count_nonzero(row == k2))
            run = max(run, 1)
        else:
            run = int(row.size)
        q = int(t_left // p.c[i])
        while q > 0 and q * p.c[i] > t_left:
            q -= 1
        run = min(run, max(q, 1), int(min(b_left, 2**62)))
        x[i] += run
        b_left -= run
    return x


# --------------------------------------------------------------- table reference


def _scan_table(
    p: _Problem, w: FloatArray, b_left: float
) -> tuple[IntArray, tuple[int, int] | None, bool, int]:
    """The rule, literally: every unit in order; take it if it fits; note the first miss.

    Also says whether that first miss was on the rollout cap (rather than on tokens),
    and how many units were taken before it.
    """
    m, k = p.inv.size, p.g.shape[1]
    keys = p.g[p.inv] / w[:, None]
    rows, cols = np.divmod(np.arange(m * k, dtype=np.int64), k)
    order = np.lexsort((cols, rows, -keys.reshape(-1)))
    x = np.zeros(m, dtype=np.int64)
    first: tuple[int, int] | None = None
    on_rollouts = False
    n_first = -1
    t_used = 0.0
    for u in order.tolist():
        i, j = int(rows[u]), int(cols[u])
        if j >= p.limit[i] or j != x[i]:
            continue
        if t_used + p.c[i] <= p.t_spare and b_left >= 1:
            x[i] += 1
            t_used += float(p.c[i])
            b_left -= 1
        elif first is None and keys[i, j] > 0.0:
            first = (i, j)
            on_rollouts = b_left < 1
            n_first = int(x.sum())
    return x, first, on_rollouts, (n_first if first is not None else int(x.sum()))


# ------------------------------------------------------------------- the solver


@dataclass(slots=True)
class _Eval:
    x: IntArray
    value: float
    dual: float
    g_star: float
    on_rollouts: bool
    n_tokens: int  # units of the token-only prefix at this ranking
    t_left: float | None = None  # T' - c . x, where known


def _token_prefix_size(p: _Problem, w: FloatArray, fast: bool) -> int:
    """How many units the ranking by ``gains / w`` takes before one fails on tokens."""
    if fast:
        return int(_prefix(p, w, p.c, p.t_spare).counts.sum())
    return _scan_table(p, w, math.inf)[3]


def _value(p: _Problem, x: IntArray) -> float:
    """``sum_i G_i(x_i)``: the gain of ``x`` extra units (on the running-minimum rows)."""
    return float(p.cum.reshape(-1)[p.inv * (p.g.shape[1] + 1) + x].sum())


# The solver below runs on either engine: the gain table (:class:`_Problem`) or, for
# CoBA-RL's value, the closed form of its rows (:class:`GeometricTokenRows`).
_Engine = _Problem | GeometricTokenRows


def _engine_prefix(p: _Engine, w: FloatArray, unit: FloatArray, cap: float) -> Prefix:
    return p.prefix(w, unit, cap) if isinstance(p, GeometricTokenRows) else _prefix(p, w, unit, cap)


def _evaluate(
    p: _Engine,
    nu: float,
    fast: bool,
    pre: Prefix | None = None,
    need_value: bool = True,
    w: FloatArray | None = None,
) -> _Eval:
    """Rank by ``gain / (c + nu)``, take the prefix, fill, and certify with the dual bound.

    ``pre``: the token prefix of this ranking (:func:`_prefix`), if already computed.
    ``need_value=False``: only ``dual - value`` (the gap) is used; on the closed form,
    ``value`` is then 0 and ``dual`` the gap. ``w``: ``c + nu``, if the caller has it.
    """
    if w is None:
        w = p.c + nu
    b_cap = math.inf if p.b_spare is None else float(p.b_spare)
    if isinstance(p, GeometricTokenRows):
        return _evaluate_rows(p, w, nu, b_cap, pre, need_value)
    above: IntArray | None = None
    g_star = 0.0
    if fast:
        if pre is None:
            pre = _prefix(p, w, p.c, p.t_spare)
        n_tokens = int(pre.counts.sum())
        if n_tokens > b_cap:
            pre = _prefix(p, w, np.ones_like(p.c), b_cap)
        s, fail, above, g_star = pre.counts, pre.fail, pre.above, pre.g_fail
        # The first unit left out fails on the rollout cap (perhaps on tokens as well).
        on_rollouts = fail is not None and int(s.sum()) >= b_cap
        x = _fill(p, w, s, b_cap - float(s.sum()))
    else:
        x, fail, on_rollouts, _ = _scan_table(p, w, b_cap)
        n_tokens = _token_prefix_size(p, w, fast) if p.b_spare is not None else 0
        if fail is not None:
            g_star = float(p.g[p.inv[fail[0]], fail[1]])
    value = _value(p, x)
    if fail is None:  # every positive unit is taken: optimal
        return _Eval(x, value, _value(p, p.pos), 0.0, on_rollouts, n_tokens)
    i, _ = fail
    k_star = float(g_star / w[i])
    # Dual point (lambda, mu) = (k*, nu k*). Units ranked above k* contribute
    # g - k* (c + nu) > 0; every other unit contributes nothing.
    if above is None:
        above = _exact_counts(p, w, k_star)
    dual = _value(p, above) + k_star * (p.t_spare - float(p.c @ above))
    if p.b_spare is not None:
        dual += nu * k_star * (p.b_spare - float(above.sum()))
    return _Eval(x, value, dual, g_star, on_rollouts, n_tokens)


def _evaluate_rows(
    p: GeometricTokenRows,
    w: FloatArray,
    nu: float,
    b_cap: float,
    pre: Prefix | None,
    need_value: bool,
) -> _Eval:
    """:func:`_evaluate` on the closed form of the rows.

    The dual bound less the objective is summed where it lives: ``k* (T' - c . above)``
    (plus ``nu k* (B' - |above|)``) less the gains of the units taken beyond ``above``
    (ties with ``k*`` in the prefix, then the fill), all exact running-minimum gains.
    That is the table's ``dual - value`` in real arithmetic, without its cancellation.
    """
    if pre is None:
        pre = p.prefix(w, p.c, p.t_spare)
    n_tokens = n_s = pre.size if pre.size >= 0 else int(np.add.reduce(pre.counts))
    if n_tokens > b_cap:  # the same ranking, cut by the rollout cap
        pre = p.reprefix(pre, np.ones_like(p.c), b_cap)
        n_s = int(np.add.reduce(pre.counts))
    s, fail, above, g_star = pre.counts, pre.fail, pre.above, pre.g_fail
    assert fail is not None  # the closed form hands instances where every unit fits on
    on_rollouts = n_s >= b_cap
    spent = float(p.c @ s)
    x, fill_gain, t_left = p.fill(w, pre, b_cap - n_s, spent)
    k_star = float(g_star / w[fail[0]])
    gap = k_star * (p.t_spare - (spent if above is s else float(p.c @ above)))
    if p.b_spare is not None:
        gap += nu * k_star * (p.b_spare - (n_s if above is s else int(np.add.reduce(above))))
    gap -= pre.tie_gain + fill_gain
    value = p.value(x) if need_value else 0.0
    return _Eval(x, value, value + gap, g_star, on_rollouts, n_tokens, t_left)


#: Relative margin by which the token prefix must overshoot T' for case 1 to be skipped.
SKIP_MARGIN = 1e-9


def _solve(
    p: _Engine,
    fast: bool,
    rollout_extra: IntArray | None = None,
    rollout: Callable[[], IntArray] | None = None,
) -> TokenSolution:
    """Case 1, then the token ranking, then the search; ``rollout_extra`` is case 1's
    rollout-only allocation (extra units) when the caller already has it, ``rollout``
    computes it when called (on the closed form it defaults to the top ``B'`` gains, and
    is tried first by the rollout solver's band on the closed form's own densities and
    relaxed root, :func:`_band_first`).

    On the closed form with a rollout cap, the relaxed token ranking at ``nu = 0``
    (:meth:`GeometricTokenRows.relax`) decides what goes first:

    * its relaxed size is short of ``B' +`` :data:`ROW_EARLY`: the exact token ranking.
      If its prefix stops on tokens with fewer than ``B'`` units, the rollout-only
      allocation cannot fit (below) and is never computed: case 1 does not apply, and
      the ranking is case 2's answer unless its fill meets ``B'`` (then both bind). If
      the prefix holds ``B'`` units or more, both may bind.
    * where both may bind: if the relaxed rollout-only allocation is within a few costs
      of fitting (:func:`_search_start`), the rollout-only allocation goes first (case 1,
      returned if it fits); otherwise :func:`_search_rows`, from the relaxed problem's
      rollout price. Any of its rankings whose token prefix stops on tokens short of
      ``B'`` proves again that the rollout-only allocation cannot fit; only without such
      a proof is it computed (and returned if it fits).
    * where the rollout-only allocation went first and does not fit (the guess was near
      the boundary, or said nothing, as with straggler caps that fill rows at its root),
      :func:`_search_rows` runs again from its exact threshold and excess.

    Anything not settled so (and every instance on the table) takes the general search
    below. Only the order of the work depends on the relaxations; case 1 returns the
    rollout-only allocation exactly whenever it fits.

    The proof that such a prefix rules the rollout-only allocation out is in the module
    docstring ("Skipping the rollout-only allocation").
    """
    m = p.c.size
    xg = np.zeros(m, dtype=np.int64)
    early: tuple[int, Prefix | None] | None = None
    again: tuple[Relaxed, float] | None = None  # a search that settled nothing
    relaxed: Relaxed | None = None
    if isinstance(p, GeometricTokenRows) and p.b_spare is not None:
        rollout = _top_gains(p) if rollout is None else _band_first(p, rollout)
    if p.b_spare is not None and rollout_extra is None and rollout is not None:
        if isinstance(p, GeometricTokenRows):
            # Whichever is likely to settle it first: the token ranking when its relaxed
            # size is short of B', else the rollout-only allocation (which may fit).
            try:
                relaxed = p.relax(p.c, p.c, p.t_spare, spread=False)
            except Fallback:
                relaxed = None
            units = -1.0 if relaxed is None else p.relaxed_units(relaxed)
            search, proved = relaxed is not None, False
            if relaxed is not None and units < p.b_spare + ROW_EARLY:
                first = p.prefix(relaxed[0], p.c, p.t_spare, relaxed)
                early = int(first.counts.sum()), first
                search = early[0] >= p.b_spare
                if (
                    first.fail is not None
                    and early[0] < p.b_spare
                    and first.over - p.t_spare > SKIP_MARGIN * abs(first.over)
                ):
                    e0 = _evaluate(p, 0.0, fast, first, need_value=False)
                    if not e0.on_rollouts:  # case 2
                        return _solution(p, e0.x, max(e0.dual - e0.value, 0.0), 0.0, e0.t_left)
                    search = proved = True  # the fill met B': both bind after all
            if search and relaxed is not None:
                # Both budgets bind, unless the rollout-only allocation fits: guessed
                # from its relaxation, which then goes first.
                found = _search_rows(p, relaxed, units, rollout, proved)
                if found is not None:
                    return found
                again = relaxed, units  # if the rollout-only allocation does not fit
        rollout_extra = rollout()
    if p.b_spare is not None:
        if rollout_extra is not None:
            xg = rollout_extra
        else:
            assert isinstance(p, _Problem)  # the closed form computes it by ``rollout``
            xg = _table_rollout(p)
        if float(p.c @ (p.n_low + xg)) <= p.t_total:  # the tokens of the counts themselves
            return _solution(p, xg, 0.0, math.inf)
        if again is not None and isinstance(p, GeometricTokenRows) and rollout is not None:
            # It went first on a guess (near the boundary, or none) and does not fit:
            # search again from its exact threshold and excess.
            g_b = p.min_last_gain(xg) if (xg > 0).any() else 0.0
            if g_b > 0.0 and math.isfinite(g_b):
                exact = math.log(g_b), float(p.c @ xg) - p.t_spare
                found = _search_rows(p, *again, rollout, True, exact)
                if found is not None:
                    return found

    # The size of the token-only prefix of the ranking by gain / (c + nu): a search step
    # costs one prefix; rankings are filled and certified only near the crossing.
    def token_prefix(nu: float) -> tuple[int, Prefix | None]:
        w = p.c + nu
        if fast:
            if nu == 0.0 and relaxed is not None and isinstance(p, GeometricTokenRows):
                pre = p.prefix(relaxed[0], p.c, p.t_spare, relaxed)  # step 1 done above
            else:
                pre = _engine_prefix(p, w, p.c, p.t_spare)
            return int(pre.counts.sum()), pre
        assert isinstance(p, _Problem)
        return _token_prefix_size(p, w, fast), None

    n0, pre0 = early if early is not None else token_prefix(0.0)
    if p.b_spare is None or n0 < p.b_spare:  # the ranking stops on tokens (case 2)
        e0 = _evaluate(p, 0.0, fast, pre0, need_value=False)
        if not e0.on_rollouts or p.b_spare is None:
            return _solution(p, e0.x, max(e0.dual - e0.value, 0.0), 0.0, e0.t_left)
    b_spare = p.b_spare
    # Both constraints bind. Search the rollout price nu (s = nu / (nu + scale) in [0, 1])
    # for the ranking whose token-only prefix holds exactly B' units: h(s) = size - B'
    # is >= 0 at s = 0 (the ranking stops on the rollout cap) and < 0 at s = 1 (ranking
    # by gain alone, which does not fit in tokens). Regula falsi with the Illinois
    # correction; every step keeps a bracket, so it converges like bisection at worst.
    # A step only sizes the token prefix; a ranking is filled and certified when its
    # prefix is within NEAR units of B' (or after CHEAP_STEPS steps, at every step).
    scale = float(np.mean(p.c))
    best: _Eval | None = None
    best_nu, dual = 0.0, math.inf
    s_lo, h_lo = 0.0, float(n0 - b_spare)
    s_hi = 1.0
    # At s = 1 (ranking by gain alone) the first B' units are the rollout-only allocation,
    # which did not fit: h < 0 there. Its size is only used to interpolate, so it is
    # estimated (the share of those units the tokens pay for) rather than computed.
    h_hi = min(b_spare * (p.t_spare / max(float(p.c @ xg), p.t_spare)) - b_spare, -0.5)
    side = 0
    guess = _first_nu(p, xg, pre0, n0) if pre0 is not None else None
    last: list[tuple[float, float]] = [(0.0, float(n0 - b_spare))]
    for step in range(MAX_NU_STEPS):
        width = s_hi - s_lo
        margin = 0.01 * width
        s = s_lo + width * h_lo / (h_lo - h_hi) if h_lo > h_hi else 0.5 * (s_lo + s_hi)
        if step == 0 and guess is not None:
            s = guess / (guess + scale)
        elif len(last) == 2 and last[0][1] != last[1][1]:  # secant through the last two
            (nu1, h1), (nu2, h2) = last
            nu_sec = nu2 - h2 * (nu2 - nu1) / (h2 - h1)
            s_sec = nu_sec / (nu_sec + scale) if nu_sec > 0 else -1.0
            if s_lo < s_sec < s_hi:
                s = s_sec
                margin = 1e-6 * width
        s = min(max(s, s_lo + margin), s_hi - margin)
        if not s_lo < s < s_hi:
            break
        nu = scale * s / (1.0 - s)
        n, pre = token_prefix(nu)
        h = float(n - b_spare)
        last = [*last[-1:], (nu, h)]
        if abs(h) <= NEAR or step >= CHEAP_STEPS:
            e = _evaluate(p, nu, fast, pre)
            dual = min(dual, e.dual)
            if best is None or e.value > best.value:
                best, best_nu = e, nu
            if dual - best.value <= e.g_star:
                break
        if h >= 0:
            s_lo, h_lo = s, max(h, 0.0)
            h_hi = h_hi / 2.0 if side == -1 else h_hi
            side = -1
        else:
            s_hi, h_hi = s, min(h, -0.5)
            h_lo = h_lo / 2.0 if side == 1 else h_lo
            side = 1
    # Certify the ends of the bracket too if the search stopped without a good ranking.
    if best is None or dual - best.value > best.g_star:
        for s_end in (s_lo, s_hi):
            if s_end < 1.0:
                nu = scale * s_end / (1.0 - s_end)
                e = _evaluate(p, nu, fast)
                dual = min(dual, e.dual)
                if best is None or e.value > best.value:
                    best, best_nu = e, nu
    assert best is not None
    return _solution(p, best.x, max(dual - best.value, 0.0), best_nu)


#: Exact rankings (prefixes, or re-rankings of a settled bracket) :func:`_search_rows`
#: sizes before it hands over to the general search.
ROW_STEPS = 10
#: The relaxed prefix size the first ranking aims at, below ``B'`` (the middle of the
#: sizes certified at once, where the exact size lies within a few units of the relaxed
#: one at the paper's scale).
ROW_TARGET = 2.5
#: A ranking whose token prefix stops on tokens at most this many units short of ``B'``
#: (the rollout-only allocation then ruled out) is certified at once, and returned if
#: its certificate holds.
ROW_ACCEPT = 6
#: The prefix size, less ``B'``, that the steps after the first ranking aim at.
ROW_AIM = -2.0
#: Up to this share of ``B'`` beyond it, the relaxed token ranking at ``nu = 0`` starts
#: the price search itself; further, the mix of the one-budget solutions does.
ROW_NEAR = 0.1
#: Up to this many units beyond ``B'``, the relaxed size of the token ranking at
#: ``nu = 0`` is checked on the exact ranking before any search (the relaxed size is
#: within a few units of the exact one at the paper's scale).
ROW_EARLY = 8.0


def _table_rollout(p: _Problem) -> IntArray:
    """The rollout-only allocation of ``B'`` units on the table (under the caps, if any)."""
    assert p.b_spare is not None
    m = p.c.size
    if p.capped:
        cols = np.arange(p.g.shape[1])[None, :]
        keys = np.where(cols < p.limit[:, None], p.g[p.inv], -np.inf)
        return _greedy_extra_grouped(keys, np.arange(m), min(p.b_spare, int(p.limit.sum())))
    return _greedy_extra_grouped(p.g, p.inv, min(p.b_spare, m * p.g.shape[1]))


def _search_start(
    p: GeometricTokenRows,
    relaxed: Relaxed,
    units: float,
    exact: tuple[float, float] | None = None,
) -> tuple[float, float] | None:
    """Where :func:`_search_rows` starts ``(t, nu)``, or ``None`` where the rollout-only
    allocation probably fits (its relaxed spend is within four of the largest costs of
    ``T'``, or the relaxation says nothing): it then goes first. ``exact``: the rollout-only
    allocation's ``(log gB, E)`` when it has been computed and does not fit (then they
    replace the relaxed ones, and the search starts whatever the relaxation says).

    The first guess mixes the dual lines of the two relaxed one-budget solutions, as
    :func:`_first_nu` does with exact ones: the token ranking at ``nu = 0`` (``relaxed``:
    key threshold ``k0 = e^t0``, ``h0`` units beyond ``B'``) and the rollout-only
    allocation (gain threshold ``gB``, ``E`` tokens beyond ``T'``) give the line
    ``(1 - s) k0 c + s gB = k (c + nu)`` with ``s`` where ``h0 / B'`` and ``-E / T'``
    interpolate to zero: ``k = (1 - s) k0`` and ``nu = s gB / k``. Only where the search
    starts depends on it."""
    b_spare = p.b_spare
    assert b_spare is not None
    if exact is not None:
        t_b, excess = exact
    else:
        got = p.relaxed_rollout(float(b_spare))
        if got is None:
            return None
        t_b, spend = got
        excess = spend - p.t_spare
        if excess <= 4.0 * float(np.maximum.reduce(p.c)):
            return None
    f0 = (units - b_spare) / b_spare
    f1 = -excess / p.t_spare
    t0 = relaxed[2]
    if not f0 > 0.0:
        return t0, 0.0
    s = f0 / (f0 - f1)
    return t0 + math.log1p(-s), s / (1.0 - s) * math.exp(t_b - t0)


def _top_gains(p: GeometricTokenRows) -> Callable[[], IntArray]:
    """The rollout-only allocation on the closed form, computed once when first asked:
    the top ``B'`` gains (ties by prompt, then unit) are the prefix of the ranking by
    gain (the caps, if any, bound both)."""
    done: list[IntArray] = []

    def top() -> IntArray:
        if not done:
            assert p.b_spare is not None
            ones = np.ones(p.c.size)
            done.append(p.prefix(ones, ones, float(p.b_spare)).counts)
        return done[0]

    return top


def _band_first(p: GeometricTokenRows, rollout: Callable[[], IntArray]) -> Callable[[], IntArray]:
    """``rollout`` (the rollout-only allocation), computed first from the closed form's
    own densities and relaxed root (:meth:`GeometricTokenRows.rollout_band`, the same
    counts) and by ``rollout`` only where that cannot prove them."""

    def first() -> IntArray:
        got = p.rollout_band()
        return rollout() if got is None else got

    return first


def _as_prefix(got: Prefix | Repriced) -> Prefix:
    """The prefix of a sized ranking (built on demand for a re-ranking)."""
    return got if isinstance(got, Prefix) else got.prefix()


def _search_rows(
    p: GeometricTokenRows,
    relaxed: Relaxed,
    units: float,
    rollout: Callable[[], IntArray],
    proved: bool = False,
    exact: tuple[float, float] | None = None,
) -> TokenSolution | None:
    """Both budgets bind, on the closed form: a certified ranking whose token prefix
    stops on tokens just short of ``B'``, from the price of the relaxed problem
    (``exact``: the rollout-only allocation's threshold and excess, for
    :func:`_search_start`, once it is known not to fit).

    The relaxed prefix sizes (:meth:`GeometricTokenRows.relaxed_price`, Newton's method from
    ``nu = 0`` when the relaxed token ranking there is within :data:`ROW_NEAR` of ``B'``,
    else from :func:`_search_start`) give the price ``nu`` where the token prefix should
    hold ``B' -`` :data:`ROW_TARGET` units and the slope of that size in ``nu``. One exact
    prefix is cut there (sized only: its counts are built if it is the ranking evaluated).
    A ranking whose prefix stops on tokens 1 to :data:`ROW_ACCEPT` units short of ``B'``,
    once the rollout-only allocation is ruled out, is certified at once and, if its
    certificate holds (dual bound less objective at most the marginal gain ``g*`` of its
    stopping unit), returned (at the paper's scale the first prefix is, in about four
    batches of five). Otherwise steps on the exact size aim at ``B' +`` :data:`ROW_AIM`
    units (at ``B' - 1`` once a ranking has been refused): Newton's with the relaxed slope
    until a bracket of sized rankings holds the aim, then interpolation between its ends
    (bisection where a step leaves the bracket). Each is sized by re-ranking the settled
    bracket of units (:meth:`GeometricTokenRows.reprice`, its key ratios read at the
    cheapest and dearest prompts of ``w = c + nu``) or, where that cannot prove the cut,
    by a new prefix whose relaxed root is placed from the earlier bracket
    (:meth:`GeometricTokenRows.sized_prefix_near`, no sort). Where the steps end without an
    answer, of the rankings whose prefix holds ``B' - 1``, ``B'`` or ``B' - 2`` units (in
    that order, refused ones skipped) the first whose certificate holds is returned: at
    ``B' - 1`` units it always holds without ties at ``k*``, since ``T' - c(S) < c*``, one
    rollout is left and ``k* (c* + nu) = g*``. A prefix short of ``B'`` that stops on
    tokens proves that the rollout-only allocation does not fit (module docstring); only
    without such a proof (``proved``: one is known already) is that allocation computed,
    and returned if it fits. ``units``: the relaxed size of the token ranking at ``nu =
    0`` (``relaxed``). ``None``: the rollout-only allocation probably fits, or no ranking
    is certified (the general search then runs).
    """
    b_spare = p.b_spare
    assert b_spare is not None
    if b_spare <= 1 or p.t_spare <= 0:
        return None
    if units - b_spare <= ROW_NEAR * b_spare:
        # The token ranking at nu = 0 is near B': Newton from there, on its counts.
        found = p.relaxed_price(b_spare - ROW_TARGET, relaxed[2], 0.0, relaxed)
    else:  # far: start from the mix of the one-budget solutions (if both bind)
        start = _search_start(p, relaxed, units, exact)
        if start is None:
            return None
        found = p.relaxed_price(b_spare - ROW_TARGET, *start)
    if found is None:
        return None
    relaxed_nu, nu, slope = found
    c, t_spare = p.c, p.t_spare
    w = relaxed_nu[0] if p.all_active else c + nu  # the relaxation's c + nu
    base = p.sized_prefix(w, t_spare, relaxed_nu)
    cur: Prefix | Repriced = base
    size, over = base.size, base.over
    # By h in -2..0: the price, its c + nu and the prefix.
    near: dict[int, tuple[float, FloatArray, Prefix | Repriced]] = {}
    base_nu = nu  # the price of base
    refused: list[Prefix | Repriced] = []  # rankings whose certificate failed
    nu_lo, nu_hi = 0.0, math.inf  # h >= 0 at nu_lo, h < 0 (not -1) at nu_hi
    h_lo = h_hi = math.nan  # their sizes less B', once sized
    for _ in range(ROW_STEPS):
        h = size - b_spare
        if h < 0 and over - t_spare > SKIP_MARGIN * (abs(over) + b_spare * nu):
            proved = True
        if -2 <= h <= 0:
            near[h] = nu, w, cur
        if proved and -ROW_ACCEPT <= h <= -1:
            # Short of B' on tokens, the rollout-only allocation ruled out: the fill
            # usually takes what the tokens leave, and the certificate then holds (a
            # ranking that certifies is an answer; searching on for B' - 1 units costs
            # re-rankings).
            e = _evaluate(p, nu, True, _as_prefix(cur), need_value=False, w=w)
            if e.dual - e.value <= e.g_star:
                return _solution(p, e.x, max(e.dual - e.value, 0.0), nu, e.t_left)
            refused.append(cur)
        if h == -1 or (proved and 0 in near):
            break
        if h >= 0:
            nu_lo, h_lo = nu, float(h)
        else:
            nu_hi, h_hi = nu, float(h)
        # Aim inside the sizes certified at once; at B' - 1 (where the certificate
        # always holds) once a ranking short of B' has been refused.
        aim = -1.0 if refused else ROW_AIM
        if h_lo == h_lo and h_hi == h_hi:
            # Both ends sized: interpolate between them (the exact size moves in steps
            # of a few units where prompts share a rate and a cost).
            nxt = nu_lo + (h_lo - aim) / (h_lo - h_hi) * (nu_hi - nu_lo)
        else:
            nxt = nu - (h - aim) / slope
        if not nu_lo < nxt < nu_hi:
            nxt = 0.5 * (nu_lo + nu_hi) if math.isfinite(nu_hi) else 2.0 * nu_lo + 1.0
        if not nu_lo < nxt < nu_hi:
            break
        nu = nxt
        w = c + nu
        moved = p.reprice(base, w, t_spare, (base_nu, nu))
        if moved is None:
            cur = base = p.sized_prefix_near(base, w, t_spare)
            base_nu = nu
            size, over = base.size, base.over
        else:
            cur, size, over = moved, moved.size, moved.over
    for h in (-1, 0, -2):
        if h not in near or any(near[h][2] is r for r in refused):
            continue
        nu, w, got = near[h]
        pre = _as_prefix(got)
        e = _evaluate(p, nu, True, pre, need_value=False, w=w)
        if e.dual - e.value <= e.g_star:
            break
    else:
        return None
    if not proved:
        xg = rollout()
        if float(p.c @ (p.n_low + xg)) <= p.t_total:  # case 1
            return _solution(p, xg, 0.0, math.inf)
    return _solution(p, e.x, max(e.dual - e.value, 0.0), nu, e.t_left)


def _first_nu(p: _Engine, xg: IntArray, pre0: Prefix, n0: int) -> float | None:
    """A first guess of the rollout price, between the two one-budget solutions.

    The token ranking (``nu = 0``) stops at key ``k0`` with ``h0`` rollouts too many; the
    rollout-only allocation stops at gain ``gB`` with ``E`` tokens too many. Their dual
    lines ``g = k0 c`` and ``g = gB`` are mixed, ``(1 - t) k0 c + t gB``, with ``t`` where
    the relative excesses ``h0 / B'`` and ``-E / T'`` interpolate to zero; the line's
    price is ``nu = t gB / ((1 - t) k0)``. Only where the search starts depends on it.
    """
    fail = pre0.fail
    b_spare = p.b_spare
    if fail is None or b_spare is None or b_spare <= 0 or p.t_spare <= 0:
        return None
    k0 = float(pre0.g_fail / p.c[fail[0]])
    if not (xg > 0).any() or k0 <= 0:
        return None
    if isinstance(p, GeometricTokenRows):
        g_b = p.min_last_gain(xg)
    else:
        taken = np.flatnonzero(xg > 0)
        g_b = float(p.g[p.inv[taken], xg[taken] - 1].min())
    f0 = (n0 - b_spare) / b_spare
    f1 = -(float(p.c @ xg) - p.t_spare) / p.t_spare
    if not f0 > 0 > f1 or g_b <= 0:
        return None
    t = f0 / (f0 - f1)
    return t * g_b / ((1.0 - t) * k0) if t < 1.0 else None


def _solution(
    p: _Engine, x: IntArray, gap: float, nu: float, t_left: float | None = None
) -> TokenSolution:
    """The solution of extra units ``x`` (``t_left``: ``T' - c . x``, if known)."""
    counts = np.add(x, p.n_low, dtype=np.int64)
    if t_left is None:
        t_left = p.t_spare - float(p.c @ x)
    open_rows = x < p.row_limit
    # The cheapest open prompt's cost (inf when none is open) against the tokens left.
    if isinstance(p, GeometricTokenRows) and np.count_nonzero(open_rows) == open_rows.size:
        c_open = p.c_min  # every prompt open
    else:
        c_open = float(np.minimum.reduce(p.c, where=open_rows, initial=math.inf))
    tok = c_open > t_left and c_open < math.inf
    rol = p.b_spare is not None and c_open < math.inf and int(np.add.reduce(x)) >= p.b_spare
    bound: Binding = (
        "tokens+rollouts" if tok and rol else "tokens" if tok else "rollouts" if rol else "none"
    )
    return TokenSolution(counts, float(p.c @ counts), bound, gap, nu)


def token_greedy(
    gains: ArrayLike,
    costs: ArrayLike,
    token_budget: float,
    n_low: int,
    n_up: int,
    rollout_budget: int | None = None,
    *,
    inverse: ArrayLike | None = None,
    caps: ArrayLike | None = None,
) -> TokenSolution:
    """Spend a token budget (and optionally a rollout cap) by value gained per token.

    See the module docstring for the rule and the proof of its guarantee: with the
    token budget alone the objective is within one marginal gain of the optimum; with
    both budgets :attr:`TokenSolution.gap` certifies the distance to the optimum, and is
    0 whenever the rollout-only allocation fits in the token budget (it is then
    returned exactly as :func:`coba_rl.solvers.greedy` gives it).

    Args:
      gains: ``(M, n_up - n_low)`` marginal gains, or ``(U, n_up - n_low)`` distinct rows
        with ``inverse``; rows are replaced by their running minimum.
      costs: shape ``(M,)``, expected tokens per rollout, finite and positive (fill
        unknown ones with :func:`resolve_costs`).
      token_budget: ``T``, total tokens including the floor ``n_low * sum(costs)``.
      n_low, n_up: per-prompt bounds.
      rollout_budget: ``B``, an optional cap on the total rollouts (``>= M * n_low``).
      inverse: row of ``gains`` of each prompt (as :func:`coba_rl.value.unique_gains`).
      caps: optional per-prompt upper bounds in ``[n_low, n_up]`` (for example
        ``max_prompt_tokens // c_i``, so that no prompt's group delays a synchronous
        step); the rollout-only allocation of case 1 then obeys them too.

    Returns:
      A :class:`TokenSolution`.

    Raises:
      ValueError: malformed gains, a non-positive or NaN cost, a negative token budget,
        a token budget below the floor, or a rollout cap below ``M * n_low``.
      TypeError: a non-integer rollout cap.

    Example:
      >>> g = [[4.0, 2.0, 1.0], [3.0, 1.5, 0.7]]
      >>> sol = token_greedy(g, costs=[100.0, 10.0], token_budget=350.0, n_low=1, n_up=4)
      >>> sol.counts.tolist(), sol.tokens, sol.bound
      ([3, 4], 340.0, 'tokens')
      >>> token_greedy(g, [100.0, 10.0], 1e6, 1, 4, rollout_budget=5).counts.tolist()
      [3, 2]

    Complexity: O(U K) to check the ``U`` distinct rows, then O(M log M + M log K)
    for a ranking when the geometric model of the rows is within a few units per row
    (it is for CoBA-RL's gains; otherwise more units are merged, up to
    O(M K log(M K))). No ``M x K`` table of ratios is built. With both budgets, the
    rollout-only check costs what :func:`coba_rl.solvers.greedy` costs and the search
    sizes a ranking at most 60 times (3 to 5 at the paper's scale), filling and
    certifying one or two of them (on CoBA-RL's value without the table,
    :func:`token_greedy_value`, usually one prefix at that scale, and no rollout-only
    allocation).
    """
    p = _check_problem(gains, costs, token_budget, n_low, n_up, rollout_budget, inverse, caps)
    return _solve(p, fast=True)


def token_greedy_prepared(
    gains: FloatArray,
    inverse: IntArray,
    costs: FloatArray,
    token_budget: float,
    n_low: int,
    n_up: int,
    rollout_budget: int | None,
    caps: IntArray | None,
    rollout_extra: IntArray | None,
) -> TokenSolution:
    """:func:`token_greedy` for the library's own validated inputs (see :func:`_trusted_problem`).

    ``gains`` already hold their running minimum. ``rollout_extra`` (units above
    ``n_low``, uncapped problems only) is the rollout-only allocation for
    ``rollout_budget``; it is not recomputed.
    """
    p = _trusted_problem(gains, inverse, costs, token_budget, n_low, n_up, rollout_budget, caps)
    return _solve(p, fast=True, rollout_extra=rollout_extra)


def token_greedy_value(
    floor: float,
    p: FloatArray,
    alpha: float,
    beta: float,
    tau: float,
    n_low: int,
    n_up: int,
    smoothing: float,
    costs: FloatArray,
    token_budget: float,
    rollout_budget: int | None,
    caps: IntArray | None,
    rollout: Callable[[], IntArray] | None,
    clipped: FloatArray | None = None,
) -> TokenSolution:
    """:func:`token_greedy_prepared` on CoBA-RL's gains, without their table.

    Returns what :func:`token_greedy_prepared` returns on the table of
    :func:`coba_rl.value.marginal_gains` (``p``: validated pass rates with unseen prompts
    replaced; ``floor``: ``n_low * sum(costs)`` as :func:`_trusted_problem` sums it;
    ``clipped``: ``p`` clipped to ``[smoothing, 1 - smoothing]``, if the caller has it; the
    other arguments as there): the same rankings, prefixes and fills, and the same
    answer wherever the two-budget search does not run. Where both budgets bind, the
    search starts at the relaxed problem's rollout price (:func:`_search_rows`, usually
    one prefix at the paper's scale) rather than the table's, so the price and counts
    may differ; both are certified (:attr:`TokenSolution.gap`), and the general search
    takes over whenever this one certifies nothing.

    Each prompt's keys ``gain / (c_i + nu)`` are geometric in exact arithmetic, so the
    closed form locates every threshold and exact float keys (the table's arithmetic)
    are computed only in a band of a few columns per prompt
    (:class:`coba_rl._token_rows.GeometricTokenRows`). Only the objectives that the
    certificate and the two-budget search compare are summed differently: as
    ``V(n_low + x) - V(n_low)`` per prompt (exact in real arithmetic) instead of the
    table's running sums. Instances the closed form cannot settle (every unit fitting,
    thresholds at floating-point noise level, non-finite densities) are ranked on the
    table.

    Complexity: O(M log M) per ranking (a sort of ``2 M`` breakpoints and of the keys in
    the bracket) and O(M) memory, independent of ``n_up - n_low``; the fill adds
    O(F log M) for the F units it considers.
    """
    m = p.size
    if floor > token_budget:
        raise ValueError(
            f"token_budget {token_budget:g} is below the floor n_low * sum(costs) = "
            f"{floor:g}: even {n_low} rollout(s) per prompt do not fit; raise the token budget"
        )
    b_spare = None if rollout_budget is None else int(rollout_budget) - m * n_low
    done: list[IntArray] = []

    def rollout_once() -> IntArray:
        if not done:
            assert rollout is not None
            done.append(rollout())
        return done[0]

    if m and n_up > n_low and _CLOSED_FORM:
        try:
            with np.errstate(all="ignore"):
                rows = GeometricTokenRows(
                    p,
                    alpha,
                    beta,
                    tau,
                    n_low,
                    n_up,
                    smoothing,
                    costs,
                    token_budget,
                    token_budget - floor,
                    b_spare,
                    caps,
                    clipped,
                )
                return _solve(rows, True, rollout=None if rollout is None else rollout_once)
        except Fallback:
            pass
    rollout_extra = None if rollout is None or rollout_budget is None else rollout_once()
    gains_u, inverse = _unique_gains(p, alpha, beta, tau, n_low, n_up, smoothing)
    return token_greedy_prepared(
        _running_min(gains_u),
        inverse,
        costs,
        token_budget,
        n_low,
        n_up,
        rollout_budget,
        caps,
        rollout_extra,
    )


def _trusted_problem(
    g: FloatArray,
    inv: IntArray,
    c: FloatArray,
    t: float,
    n_low: int,
    n_up: int,
    rollout_budget: int | None,
    caps: IntArray | None,
) -> _Problem:
    """:func:`_check_problem` for inputs the library built itself (no re-validation).

    ``g``: finite rows with the running minimum applied; ``c``: positive costs; ``caps``:
    in ``[n_low, n_up]``; ``rollout_budget`` at least ``M n_low``. Only the floor, which
    depends on the token budget, is checked.
    """
    m, k = inv.size, n_up - n_low
    floor = float(c @ np.full(m, n_low, dtype=np.int64))
    if floor > t:
        raise ValueError(
            f"token_budget {t:g} is below the floor n_low * sum(costs) = {floor:g}: even "
            f"{n_low} rollout(s) per prompt do not fit; raise the token budget"
        )
    b_spare = None if rollout_budget is None else int(rollout_budget) - m * n_low
    limit = np.count_nonzero(g >= 0.0, axis=1).astype(np.int64)[inv]
    pos = np.count_nonzero(g > 0.0, axis=1).astype(np.int64)[inv]
    if caps is not None:
        extra = caps.astype(np.int64) - n_low
        limit, pos = np.minimum(limit, extra), np.minimum(pos, extra)
    cum = np.zeros((g.shape[0], k + 1))
    np.cumsum(g, axis=1, out=cum[:, 1:])
    flat = g.reshape(-1)
    return _Problem(
        g, inv, c, t, t - floor, b_spare, n_low, limit, pos, flat, inv * k, cum, caps is not None
    )


def token_greedy_table(
    gains: ArrayLike,
    costs: ArrayLike,
    token_budget: float,
    n_low: int,
    n_up: int,
    rollout_budget: int | None = None,
    *,
    inverse: ArrayLike | None = None,
    caps: ArrayLike | None = None,
) -> TokenSolution:
    """:func:`token_greedy` written out over the full table of keys, one unit at a time.

    Sorts every unit by (key descending, prompt ascending, unit ascending) and walks
    the order, taking each unit that fits. The reference the fast solver is tested
    against; same arguments and result.

    Example:
      >>> g = [[4.0, 2.0, 1.0], [3.0, 1.5, 0.7]]
      >>> token_greedy_table(g, [100.0, 10.0], 350.0, n_low=1, n_up=4).counts.tolist()
      [3, 4]

    Complexity: O(M K log(M K)) time and O(M K) memory, plus a Python loop per unit.
    """
    p = _check_problem(gains, costs, token_budget, n_low, n_up, rollout_budget, inverse, caps)
    return _solve(p, fast=False)


def token_dp(
    gains: ArrayLike,
    costs: ArrayLike,
    token_budget: int,
    n_low: int,
    n_up: int,
    rollout_budget: int | None = None,
    *,
    caps: ArrayLike | None = None,
) -> IntArray:
    """The exact optimum by dynamic programming over tokens (integer costs): the reference.

    ``best_i(t, b)`` is the best value of the first ``i`` prompts using ``t`` spare
    tokens and ``b`` spare rollouts; each prompt tries every count. Unlike the greedy
    it needs no monotone rows and may leave budget unspent.

    Args:
      gains: ``(M, n_up - n_low)`` marginal gains.
      costs: shape ``(M,)``, positive integers.
      token_budget: ``T``, an integer.
      n_low, n_up: per-prompt bounds.
      rollout_budget: optional cap ``B`` on total rollouts.
      caps: optional per-prompt upper bounds in ``[n_low, n_up]``.

    Returns:
      int64 counts of an optimal allocation.

    Example:
      >>> token_dp([[4.0, 2.0, 1.0], [3.0, 1.5, 0.7]], [100, 10], 350, 1, 4).tolist()
      [3, 4]

    Complexity: O(M K T' B') time and memory, ``T' = T - n_low sum(c)``, ``B'`` the spare
    rollouts (1 without a cap): small instances only.
    """
    p = _check_problem(gains, costs, token_budget, n_low, n_up, rollout_budget, None, caps)
    top = np.full(p.inv.size, p.g.shape[1]) if caps is None else np.asarray(caps) - n_low
    c = np.asarray(costs, dtype=np.float64)
    if not (c == np.round(c)).all():
        raise ValueError("token_dp needs integer costs")
    g = as_real_array(gains, "gains")
    m, k = g.shape
    ci = c.astype(np.int64)
    t_cap = math.floor(p.t_spare + 1e-9)
    b_dim = 1 if p.b_spare is None else min(p.b_spare, m * k) + 1
    cum = np.zeros((m, k + 1))
    np.cumsum(g, axis=1, out=cum[:, 1:])
    best = np.full((t_cap + 1, b_dim), -np.inf)
    best[0, 0] = 0.0
    choices = np.zeros((m, t_cap + 1, b_dim), dtype=np.int64)
    for i in range(m):
        new = np.full_like(best, -np.inf)
        pick = np.zeros(best.shape, dtype=np.int64)
        for x in range(int(top[i]) + 1):
            dt, db = int(ci[i]) * x, (x if p.b_spare is not None else 0)
            if dt > t_cap or db >= b_dim:
                break
            cand = np.full_like(best, -np.inf)
            cand[dt:, db:] = best[: t_cap + 1 - dt, : b_dim - db] + cum[i, x]
            better = cand > new
            new = np.where(better, cand, new)
            pick = np.where(better, x, pick)
        best, choices[i] = new, pick
    t, b = np.unravel_index(int(np.argmax(best)), best.shape)
    x_out = np.zeros(m, dtype=np.int64)
    for i in range(m - 1, -1, -1):
        x = int(choices[i, t, b])
        x_out[i] = x
        t -= int(ci[i]) * x
        b -= x if p.b_spare is not None else 0
    return n_low + x_out
