r"""The token-budget greedy on CoBA-RL's value, without the gain table.

:mod:`coba_rl.tokens` ranks units (one more rollout of one prompt) by
``key = gain / w_i`` with ``w_i = c_i + nu``. For CoBA-RL's value each prompt's gains are,
in exact arithmetic, the geometric sequence ``g_i(j) = C_i e^{-k_i (n_low + j)}
(1 - e^{-k_i})`` (``C_i`` the Beta density, ``k_i = p_i (1 - p_i) / tau``), so the keys
``g_i(j) / w_i`` are geometric per prompt too: the number of a prompt's units above any
key threshold has a closed form. :class:`GeometricTokenRows` answers the questions the
solver of :mod:`coba_rl.tokens` asks of its table (the longest prefix of the ranking
that fits a budget, the units that still fit after it, the objective of counts), and
computes exact floating-point gains (the arithmetic of
:func:`coba_rl.value.marginal_gains`, then the row's running minimum) only in a narrow
band of columns around each prompt's crossing of the threshold. Every count is settled
on those exact keys; the closed form only says where to look. Where it cannot bracket
the answer (thresholds at the level of floating-point noise, every positive unit
fitting) it raises :class:`Fallback` and the caller ranks the table.

Complexity: O(M) to set up, O(M log M) per ranking (a sort of ``2 M`` breakpoints, a band
of a few columns per prompt, a sort of the keys inside the bracket) and O(M) memory,
independent of ``n_up - n_low``.

The error bound of a float gain against the exact one is
:data:`coba_rl.solvers.GAIN_ERROR` times the density (see :mod:`coba_rl.solvers`); a key
``fl(g / w)`` adds one rounding.
"""

from __future__ import annotations

import functools
import heapq
import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from coba_rl.solvers import (
    _GAIN_ERROR_ABS,
    GAIN_ERROR,
    _band_offsets,
    _band_select,
    _band_select_at,
    _split_ties,
)
from coba_rl.value import (
    _beta_pdf_and_logs,
    _beta_pdf_distinct,
    _beta_pdf_vector,
    _values_in_place,
    _vector_pdf_is_exact,
)

IntArray = NDArray[np.int64]
FloatArray = NDArray[np.float64]

#: Relative slack for one rounding of a key ``fl(g / w)`` (and of a product ``lam * w``).
_KEY_SLACK = 2.0**-49
#: Bracket widenings tried before giving up on the closed form.
_MAX_TRIES = 6
#: :meth:`GeometricTokenRows.relaxed_price` takes its last Newton step once the relaxed
#: size is within this many units (and costs) of its target: the step's own error is
#: then far below a unit.
_NEWTON_UNITS = 30.0
#: The first Newton step of :meth:`GeometricTokenRows.relaxed_price` from ``nu = 0`` is
#: stretched by this factor (it falls short by about a third at the paper's scale).
_FIRST_STRIDE = 1.5
#: Largest ``k = p (1 - p) / tau`` for which :class:`GeometricTokenRows` takes
#: ``log(1 - e^{-k})`` from its series to ``k^4``, and to ``k^6`` (the remainders, below
#: ``k^6 / 181440`` and ``k^8 / 9676800``, are below 1e-13 and 2e-15 there).
_SERIES_RATES = (0.05, 0.1)
#: Units :meth:`GeometricTokenRows.fill` adds one at a time before it merges by a heap.
_FILL_STEPS = 6
#: Band entries beyond which the table is cheaper (and memory stays bounded).
_MAX_BAND = 1 << 22
#: Newton steps of :meth:`GeometricTokenRows.sized_prefix_near` on the relaxed count.
_NEAR_STEPS = 2


#: ``-(j)`` for j = 0, 1, 2, as a column: the values of two gains.
_HEAD3 = -np.arange(3.0)[:, None]
_HEAD3.setflags(write=False)


_ARANGE: list[IntArray] = []


def _arange(m: int) -> IntArray:
    """``np.arange(m)``, read-only, kept for the last ``m`` asked (batches keep their size)."""
    got = _ARANGE[:1]  # one read: another thread may replace the entry
    if got and got[0].size == m:
        return got[0]
    a = np.arange(m)
    a.setflags(write=False)
    _ARANGE[:] = [a]
    return a


class Fallback(Exception):
    """The closed form cannot settle this instance: rank the gain table instead."""


@dataclass(slots=True)  # not frozen: built once or twice per ranking, never changed
class Prefix:
    """The longest prefix of a ranking that fits a budget.

    ``counts`` per prompt; ``fail`` the first unit left out (``None`` when every positive
    unit fits) and ``g_fail`` its gain; ``above`` the units ranked strictly above
    ``fail``'s key (the prefix less its ties with it).
    """

    counts: IntArray
    fail: tuple[int, int] | None
    above: IntArray
    g_fail: float = 0.0
    #: The gains of the prefix's units tied with ``fail``'s key (in ``counts``, not in
    #: ``above``); only :class:`GeometricTokenRows` fills it in.
    tie_gain: float = 0.0
    #: ``sum(unit)`` of the prefix and ``fail`` (what did not fit); only
    #: :class:`GeometricTokenRows` fills it in.
    over: float = math.inf
    #: The exact gains the prefix settled (:class:`_Band`), for the fill.
    band: _Band | None = None
    #: The ranked bracket the prefix was cut from, for :meth:`GeometricTokenRows.reprefix`.
    ranked: _Ranked | None = None
    #: ``sum(counts)`` where known (-1 otherwise), and how many of the bracket's units
    #: the prefix took (``sum(counts) = sum(ranked.a) + n_fit``).
    size: int = -1
    n_fit: int = 0


@dataclass(slots=True)
class _Ranked:
    """A settled bracket of the ranking by ``gain / w``: per prompt the units above it
    (``a``, every one with a float key above ``lam_hi``), and its units (prompt ``rows``,
    column ``cols``, key ``vals`` in ``[lam_lo, lam_hi]``, gain ``gains``; by prompt, then
    column) with their ranking ``order``; every other positive unit has a float key below
    ``lam_lo``."""

    w: FloatArray
    a: IntArray
    rows: IntArray
    cols: IntArray
    order: IntArray
    vals: FloatArray
    gains: FloatArray
    band: _Band
    lam_lo: float
    lam_hi: float
    #: ``sum(unit)`` over ``a`` for the ``unit`` the bracket was first cut with.
    cost_a: float = 0.0
    #: ``sum(a)``, once :meth:`GeometricTokenRows.reprice` needs it (-1 until then).
    n_a: int = -1


class _Band:
    """The exact gains (running minimum applied) a prefix settled, by active row: a dense
    block ``g[j - start[r], r]`` (one column of the block per row) or, with ``off``, flat
    segments ``g[off[r] + j - start[r]]``."""

    def __init__(self, start: IntArray, g: FloatArray, off: IntArray | None) -> None:
        self.start, self.g, self.off = start, g, off

    def get(self, r: int, col: int) -> float | None:
        """The gain of active row ``r`` at ``col``, or ``None`` outside its band."""
        k = col - int(self.start[r])
        if self.off is None:
            return float(self.g[k, r]) if 0 <= k < self.g.shape[0] else None
        start = int(self.off[r])
        end = int(self.off[r + 1]) - 1 if r + 1 < self.off.size else self.g.size
        return float(self.g[start + k]) if 0 <= k < end - start else None

    def at(self, r: IntArray, cols: IntArray) -> FloatArray:
        """Gains of active rows ``r`` at ``cols`` (inside their bands)."""
        if self.off is None:
            return np.asarray(self.g[cols - self.start[r], r], dtype=np.float64)
        return np.asarray(self.g[self.off[r] + cols - self.start[r]], dtype=np.float64)


class Repriced:
    """A token prefix found by :meth:`GeometricTokenRows.reprice` (or
    :meth:`GeometricTokenRows.sized_prefix`): its ``size`` (units) and ``over`` (tokens
    of the prefix and the unit that did not fit) at once, the :class:`Prefix` and its
    ranked bracket on demand."""

    def __init__(
        self,
        rows: GeometricTokenRows,
        moved: _Ranked,
        up_rows: IntArray,
        cum: FloatArray,
        n_fit: int,
    ) -> None:
        self._rows, self._moved, self._up, self._cum, self._n_fit = rows, moved, up_rows, cum, n_fit
        self.size = moved.n_a + n_fit
        self.over = float(cum[n_fit])

    @property
    def ranked(self) -> _Ranked:
        """The ranked bracket the prefix is cut from (as :attr:`Prefix.ranked`)."""
        moved = self._moved
        if self._up.size:
            a = moved.a + np.bincount(self._up, minlength=self._rows.m)
            self._up = self._up[:0]
            self._moved = moved = _Ranked(
                moved.w,
                a,
                moved.rows,
                moved.cols,
                moved.order,
                moved.vals,
                moved.gains,
                moved.band,
                moved.lam_lo,
                moved.lam_hi,
                moved.cost_a,
                moved.n_a,
            )
        return moved

    def prefix(self) -> Prefix:
        """The prefix (as :meth:`GeometricTokenRows.prefix` returns it). Complexity: O(M)."""
        return self._rows._cut_at(self.ranked, self._cum, self._n_fit)


class _UnitStats:
    """A cost vector's ``u / k`` and ``max(u)`` on the active rows (``u``), and (built
    when first asked) ``u^2`` and the rows ``(u / k, u^2)``."""

    __slots__ = ("_lin_w", "_sq", "u", "u_max", "uinv")

    def __init__(self, u: FloatArray, inv: FloatArray) -> None:
        self.u, self.uinv, self.u_max = u, u * inv, float(np.maximum.reduce(u))
        self._sq: FloatArray | None = None
        self._lin_w: FloatArray | None = None

    @property
    def sq(self) -> FloatArray:
        """``u^2``."""
        if self._sq is None:
            self._sq = np.multiply(self.u, self.u)
        return self._sq

    def lin_w(self) -> FloatArray:
        """The rows ``(u / k, u^2)``, shape ``(2, n)`` (``lin_w.dot(x)``: both sums of
        ``x`` in one matrix-vector product)."""
        if self._lin_w is None:
            lin_w = np.empty((2, self.uinv.size))
            lin_w[0] = self.uinv
            np.multiply(self.u, self.u, out=lin_w[1])
            self._lin_w = lin_w
        return self._lin_w


#: :meth:`GeometricTokenRows.relax`'s result: ``(w, y, t0, d, emax)`` on the active rows.
Relaxed = tuple[FloatArray, FloatArray, float, float, float]


class GeometricTokenRows:
    """One row of gains per prompt (CoBA-RL's value), evaluated only where asked.

    The interface of the gain table that :func:`coba_rl.tokens._solve` uses: ``c``,
    ``t_total``, ``t_spare``, ``b_spare``, ``n_low``, ``limit``, and the methods
    :meth:`prefix`, :meth:`fill`, :meth:`value` and :meth:`min_last_gain`. Construction
    costs O(M) (one density per prompt, or per distinct rate where the density is
    evaluated one rate at a time). Call it under ``np.errstate(all="ignore")``.

    Args:
      p: pass rates with unseen prompts already replaced, shape ``(M,)``.
      alpha, beta, tau, n_low, n_up, smoothing: the value's constants (``n_up > n_low``).
      c: positive costs; t_total: the token budget; t_spare: what is left above the
        floor ``n_low * sum(c)``; b_spare: spare rollouts above ``M n_low``, or ``None``;
      caps: per-prompt upper bounds in ``[n_low, n_up]``, or ``None``.
    """

    def __init__(
        self,
        p: FloatArray,
        alpha: float,
        beta: float,
        tau: float,
        n_low: int,
        n_up: int,
        smoothing: float,
        c: FloatArray,
        t_total: float,
        t_spare: float,
        b_spare: int | None,
        caps: IntArray | None,
        clipped: FloatArray | None = None,
    ) -> None:
        m, k = p.size, n_up - n_low
        if clipped is None:
            ps = np.maximum(p, smoothing)
            np.minimum(ps, 1.0 - smoothing, out=ps)
        else:
            ps = clipped  # only read
        log_pdf: FloatArray | None = None
        log_pq: FloatArray | None = None
        exact = _vector_pdf_is_exact()
        got = _beta_pdf_and_logs(ps, alpha, beta) if exact and smoothing >= 1e-10 else None
        om: FloatArray
        if got is not None:  # the density, 1 - p and the logs at once
            pdf, om, log_pq, log_pdf = got
        else:
            om = np.subtract(1, ps)
            if exact:
                pdf = np.asarray(_beta_pdf_vector(ps, alpha, beta), dtype=np.float64)
            else:  # one scalar density per distinct rate
                uniq, inverse = np.unique(ps, return_inverse=True)
                pdf = _beta_pdf_distinct(uniq, alpha, beta)[inverse.reshape(-1)]
        # A band's factors p, 1 - p and the density (stacked into ``pop`` when asked).
        self._factors = ps, om, pdf
        self._pop: FloatArray | None = None
        self.tau, self.n_low, self.k, self.m = tau, n_low, k, m
        self.c, self.t_total, self.t_spare, self.b_spare = c, t_total, t_spare, b_spare
        self._c_min = float(np.minimum.reduce(c))
        self._caps = caps
        self._limit: IntArray | None = None
        rate = ps * om
        rate /= tau
        # Where each row's relaxed count starts (log w = 0): log of the exact first gain
        # C e^{-k n_low} (1 - e^{-k}), plus k/2; -inf or NaN on rows whose float gains
        # are all 0 (p in {0, 1}, a zero density). Only where the relaxed counts place the
        # bands depends on it: the log density within an ulp where it came with the
        # density, and log(1 - e^{-k}) = log k - k/2 + k^2/24 - k^4/2880 + k^6/181440 -
        # ... by its series where every k <= 1/(4 tau) is small (_SERIES_RATES: the rest
        # below 1e-13).
        if log_pq is not None and log_pdf is not None and 0.25 / tau <= _SERIES_RATES[1]:
            k2 = rate * rate
            if 0.25 / tau <= _SERIES_RATES[0]:  # to k^4
                top = k2 * (-1.0 / 2880.0)
            else:  # to k^6
                top = k2 * (1.0 / 181440.0)
                top -= 1.0 / 2880.0
                top *= k2
            top += 1.0 / 24.0
            top *= rate
            top -= float(n_low)
            top *= rate  # k^2/24 - k^4/2880 (+ k^6/181440) - k n_low
            top += log_pq
            top += log_pdf
            top -= math.log(tau)  # log k = log p + log(1 - p) - log tau
        else:
            top = np.log(pdf) if log_pdf is None else log_pdf
            tail = np.negative(rate)
            np.expm1(tail, out=tail)
            np.negative(tail, out=tail)
            np.log(tail, out=tail)
            top += tail
            tail = rate * (0.5 - n_low)
            top += tail
        # Every row active (the common case) when the sum of the squared logs is finite (a
        # dot product, cheaper than a sum; one that overflows only sends every row through
        # the check below).
        self.all_active = caps is None and math.isfinite(float(top.dot(top)))
        if not self.all_active:
            active = np.isfinite(top)
            if caps is not None:
                active &= self.limit > 0
            self.all_active = bool(active.all())
        self.act: IntArray = _arange(m) if self.all_active else np.flatnonzero(active)
        if not self.all_active:
            act = self.act
            pos_of = np.full(m, -1, dtype=np.int64)
            pos_of[act] = np.arange(act.size)
            self.pos_of = pos_of
            rate, top = rate[act], top[act]
        self.rate = rate
        self.capped = caps is not None
        self._pop_act: FloatArray | None = None
        self._factors_act = (
            self._factors if self.all_active else (ps[self.act], om[self.act], pdf[self.act])
        )
        self.inv_rate = 1.0 / rate
        self._ts_top = top  # where each row's relaxed count starts (log w = 0)
        # Row lengths of the active rows: one number without caps (no array operations).
        self.lim_act: IntArray | int
        self.lim_f: FloatArray | float
        if caps is None:
            self.lim_act, self.lim_f = k, float(k)
        else:
            lim = self.limit if self.all_active else self.limit[self.act]
            self.lim_act, self.lim_f = lim, lim.astype(np.float64)
        # L k: a full row's count in log keys (its relaxed count is full below
        # _ts_top - L k - log w).
        self._lim_rate = self.lim_f * rate
        self.lim_half = self.lim_f - 0.5
        self.lim_1 = self.lim_f - 1.0
        self._stats: list[tuple[FloatArray, _UnitStats]] = []
        pdf_act = pdf if self.all_active else pdf[self.act]
        # Twice the error bound of a float gain, per row and its largest.
        self._err2: FloatArray | None = None
        self._pdf_act = pdf_act
        pdf_max = float(np.maximum.reduce(pdf_act)) if pdf_act.size else 0.0
        self._err2_max = 2.0 * (pdf_max * GAIN_ERROR + _GAIN_ERROR_ABS)
        self._v0: FloatArray | None = None
        # relaxed_units' clipped counts (in work rows), and whether no row is full there.
        self._units_of: tuple[Relaxed, FloatArray, bool] | None = None
        # relax()'s counts in log keys, and whether no row is full there.
        self._log_counts: tuple[Relaxed, FloatArray, bool] | None = None
        # relaxed_rollout's (target, root), for rollout_band.
        self._rollout_root: tuple[float, float] | None = None

    @functools.cached_property
    def _cost_range(self) -> tuple[float, float]:
        """The smallest and largest cost."""
        return self._c_min, float(self.c[self.c.argmax()])

    @property
    def c_min(self) -> float:
        """The smallest cost."""
        return self._c_min

    @property
    def pop(self) -> FloatArray:
        """Rows ``p``, ``1 - p`` and the density of every prompt, shape ``(3, M)``
        (contiguous: a band's factors)."""
        if self._pop is None:
            self._pop = np.stack(self._factors)
        return self._pop

    @property
    def pop_act(self) -> FloatArray:
        """:attr:`pop` of the active rows."""
        if self._pop_act is None:
            self._pop_act = self.pop if self.all_active else np.stack(self._factors_act)
        return self._pop_act

    @property
    def limit(self) -> IntArray:
        """Each prompt's row length ``cap - n_low`` (``n_up - n_low`` without caps)."""
        if self._limit is None:
            caps = self._caps
            self._limit = (
                np.full(self.m, self.k, dtype=np.int64)
                if caps is None
                else caps.astype(np.int64) - self.n_low
            )
        return self._limit

    @property
    def row_limit(self) -> IntArray | int:
        """:attr:`limit` to compare counts against: one number, ``n_up - n_low``, without
        caps (no array built)."""
        return self.k if self._caps is None else self.limit

    @property
    def err2(self) -> FloatArray:
        """Twice the error bound of each active row's float gains (the slow tests only)."""
        if self._err2 is None:
            err = self._pdf_act * GAIN_ERROR
            err += _GAIN_ERROR_ABS
            err *= 2.0
            self._err2 = err
        return self._err2

    # -- exact float gains ----------------------------------------------------------------

    def _values(self, n: FloatArray) -> FloatArray:
        """``V(n_low + x)`` of every prompt for ``n`` = ``-(n_low + x)``, in place, in the
        arithmetic of :func:`coba_rl.value.marginal_gains`:
        ``(1 - exp(((-n) / tau) p (1 - p))) C``. Complexity: O(M)."""
        pop = self.pop
        return _values_in_place(n, self.tau, pop[0], pop[1], pop[2])

    def _gains(
        self, rows: IntArray | None, start: IntArray, width: IntArray
    ) -> tuple[FloatArray, IntArray]:
        """Float gains of ``rows`` (``None``: the active rows) at columns
        ``start .. start + width - 1`` (every width >= 1), without the running minimum.

        Flat: segment ``i`` is ``g[off[i] : off[i] + width[i]]``, followed by one ``-inf``
        between segments. Complexity: O(sum of widths).
        """
        n_vals = width + 1
        off = n_vals.cumsum()
        total = int(off[-1])
        if total > _MAX_BAND:
            raise Fallback("too many band entries")
        off -= n_vals
        base = start - off
        base += self.n_low
        n_int = base.repeat(n_vals)
        n_int += np.arange(total)
        v = np.negative(n_int, dtype=np.float64)
        pop = self.pop_act if rows is None else self.pop[:, rows]
        q = pop.repeat(n_vals, axis=1)
        _values_in_place(v, self.tau, q[0], q[1], q[2])
        g = v[1:] - v[:-1]
        if off.size > 1:
            g[off[1:] - 1] = -np.inf
        return g, off

    @staticmethod
    def _running_min(g: FloatArray, off: IntArray) -> None:
        """Each segment of :meth:`_gains` replaced by its running minimum, in place
        (rises are rare ulp-level blips: a few passes)."""
        up = g[1:] > g[:-1]
        if off.size > 1:
            up[off[1:] - 1] = False  # a segment's first gain follows the separator
        if up.any():
            rise = np.flatnonzero(up) + 1
            while rise.size:
                # Lowering g[j] can only make g[j + 1] rise; separators never rise.
                g[rise] = g[rise - 1]
                nxt = rise + 1
                nxt = nxt[nxt < g.size]
                rise = nxt[g[nxt] > g[nxt - 1]]

    # -- the longest prefix that fits -----------------------------------------------------

    def relax(
        self,
        w: FloatArray,
        unit: FloatArray,
        cap: float,
        root: float | None = None,
        spread: bool = True,
    ) -> Relaxed:
        """Step 1 of :meth:`prefix`: the root ``t0`` of the relaxed count, each active
        row's continuous count ``y`` above ``e^t0``, the bracket's half-width ``d`` and the
        bound ``emax`` on ``2 err / w``. ``root``: the root if already known (from
        :meth:`relaxed_price`; only where the bracket lies depends on it). ``spread=False``:
        ``d`` and ``emax`` are left ``NaN`` (:meth:`prefix` computes them if it is given
        this relaxation). Complexity: O(M log M), O(M) with ``root``."""
        whole = self.all_active
        act = self.act
        ww, u = (w, unit) if whole else (w[act], unit[act])
        n = self.rate.size
        if n == 0:
            raise Fallback("no row has positive gains")
        inv = self.inv_rate
        uinv = self._unit_stats(unit, u).uinv
        # Breakpoints of the relaxed count: where a row starts (log first key + k/2) and
        # where it is full (L k lower); log first key = log_a - log w.
        log_w = np.log(ww)
        y = self._ts_top - log_w  # becomes the counts below
        none_full = False  # no row full at the root, beyond rounding
        if root is None:
            found = self._uncapped_root(y, uinv, cap)
            if found is not None:
                root, full = found
                # Every full breakpoint lies below root by more than the rounding of
                # y - L k and of y - root: each count in log keys is below L k.
                none_full = root - full > 1e-12 * (1.0 + abs(root) + abs(full))
        if root is None:
            ts = np.concatenate((y, y - self._lim_rate))
            order = ts.argsort()[::-1]
            ts = ts[order]
            run = np.concatenate((uinv, -uinv))[order].cumsum()
            gaps = ts[:-1] - ts[1:]
            gaps *= run[:-1]
            level = gaps.cumsum()  # level[j]: the relaxed count at ts[j + 1]
            i = int(level.searchsorted(cap)) + 1
            if i >= ts.size or not math.isfinite(float(level[-1])):
                raise Fallback("every positive unit fits")
            done = float(level[i - 2]) if i >= 2 else 0.0
            s = float(run[i - 1])
            t0 = float(ts[i - 1]) - (cap - done) / s if s > 0 else float(ts[i])
        else:
            t0 = root
        y -= t0  # the counts in log keys (k times the columns above e^t0, unclipped)
        counts = y * inv
        counts -= 0.5  # columns above e^t0, continuous
        relaxed = ww, counts, t0, math.nan, math.nan
        self._log_counts = relaxed, y, none_full  # for relaxed_units(relaxed)
        if not spread:
            return relaxed
        return self._spread(relaxed, unit)

    def _spread(self, relaxed: Relaxed, unit: FloatArray) -> Relaxed:
        """:meth:`relax`'s bracket half-width ``d`` and bound ``emax``, filled in."""
        ww, y, t0 = relaxed[:3]
        stats = self._unit_stats(unit, unit if self.all_active else unit[self.act])
        lin_w, u_max = stats.lin_w(), stats.u_max
        lin = y > -0.5
        lin &= y < self.lim_half
        s_lin, u2_lin = lin_w.dot(lin).tolist()  # sums of u / k and u^2 over lin rows
        spread = 3.0 * math.sqrt(u2_lin) + 2.0 * u_max
        d = spread / s_lin if s_lin > 0 else float(self.rate.min())
        d += 1e-12 * (1.0 + abs(t0))
        # 2 err / w bounded by one number (the proofs only need an upper bound).
        w_min = self._c_min if ww is self.c else float(np.minimum.reduce(ww))
        emax = self._err2_max / w_min * (1.0 + 4 * _KEY_SLACK)
        return ww, y, t0, d, emax

    def relaxed_rollout(self, target: float) -> tuple[float, float] | None:
        """The relaxed rollout-only allocation of ``target`` units (the ranking by gain
        alone, relaxed as in :meth:`relax`): its root ``t`` (``e^t`` the gain threshold)
        and its token spend; ``None`` where a row would be full at the root. A guess of
        whether that allocation fits and of where the rollout price lies, never a proof.
        Complexity: O(M log M)."""
        if self.rate.size == 0:
            return None
        # The root over the breakpoints where rows start (keys are the gains: w = 1, so
        # the weights are 1 / k), valid if every row's full breakpoint lies below it.
        top, inv = self._ts_top, self.inv_rate
        got = self._uncapped_root(top, inv, target)
        if got is None:
            return None
        t, full = got
        self._rollout_root = target, t
        rows = (top > full).nonzero()[0]  # the only rows with units at t
        y = top[rows] - t
        y *= inv[rows]
        np.maximum(y, 0.0, out=y)
        c = self.c if self.all_active else self.c[self.act]
        return t, float(c[rows] @ y)

    def rollout_band(self) -> IntArray | None:
        """The rollout-only allocation of ``B'`` units above ``n_low``, exactly as
        :func:`coba_rl.solvers.greedy` gives it (the top ``B'`` gains, ties by prompt).

        The rollout solver's fixed band (:func:`coba_rl.solvers._band_select_at`: exact
        float gains of a few columns per row around the relaxed root, the threshold among
        them and its proof), on this object's densities and the root of
        :meth:`relaxed_rollout` (computed here if not yet): no deduplication, density or
        sort of its own where that root is known (else the rollout solver's band finds its
        own root). ``None`` where it does not apply (straggler caps, rows
        without positive gains, every unit or none) or its proof fails: the caller then
        runs the rollout solver. Complexity: O(M) with the root known, else O(M log M).
        """
        b = self.b_spare
        if b is None or b <= 0 or b >= self.m * self.k or self.capped or not self.all_active:
            return None
        got = self._rollout_root
        if (got is None or got[0] != b) and self.relaxed_rollout(float(b)) is not None:
            got = self._rollout_root
        ps, om, pdf = self._factors
        m, tau, n_low, k = self.m, self.tau, self.n_low, self.k
        if got is not None and got[0] == b:
            x = self._ts_top - got[1]
            x *= self.inv_rate  # each row's relaxed count at the root
            found = _band_select_at(x, ps, om, pdf, None, m, tau, n_low, k, b)
        else:  # rows full at the root: the rollout solver's band finds its own
            ones = np.ones(m, dtype=np.int64)
            found = _band_select(ps, om, self.rate, self._ts_top, pdf, ones, m, tau, n_low, k, b)
        if found is None:
            return None
        return _split_ties(found[0], found[1], b)

    def _uncapped_root(
        self, top: FloatArray, uinv: FloatArray, cap: float
    ) -> tuple[float, float] | None:
        """:meth:`relax`'s root when no row is full there (the common case), and the
        highest breakpoint where a row is full (below the root): sorting the breakpoints
        where rows start (``top``, not changed) above that one suffices (the count goes on
        with its last slope below them). ``None`` where a row would be full at that root
        (then the ``2 n`` breakpoints are sorted). Complexity: O(n log n)."""
        # The root lies above every full breakpoint iff the uncapped count there exceeds
        # cap (checked first: a sort that cannot serve is skipped).
        full = float(np.maximum.reduce(top - self._lim_rate))
        if not math.isfinite(full):
            return None
        # Only the rows that start above ``full`` count there and at a root above it:
        # their breakpoints, highest first, are the first ones of all rows'.
        rows = (top > full).nonzero()[0]
        top_r = top[rows]
        u_r = uinv[rows]
        if not float(u_r.dot(top_r - full)) > cap:
            return None
        order = top_r.argsort()[::-1]
        ts = top_r[order]
        run = u_r[order].cumsum()
        gaps = ts[:-1] - ts[1:]
        gaps *= run[:-1]
        level = gaps.cumsum()  # level[j]: the relaxed count at ts[j + 1]
        i = int(level.searchsorted(cap)) + 1
        done = float(level[i - 2]) if i >= 2 else 0.0
        s = float(run[i - 1])
        if not s > 0:
            return None
        t0 = float(ts[i - 1]) - (cap - done) / s
        # No row full at t0: every row's full breakpoint lies below it (as checked
        # above, up to rounding).
        if not (math.isfinite(t0) and full < t0):
            return None
        return t0, full

    def relaxed_units(self, relaxed: Relaxed) -> float:
        """The number of units the relaxed count puts above its root (an estimate of a
        prefix's size, within a few units per prompt). Complexity: O(M)."""
        work = np.empty((4, relaxed[1].size))
        z = work[0]  # the clipped counts in log keys (k times the columns)
        logged = self._log_counts
        none_full = False
        if logged is not None and logged[0] is relaxed:
            np.maximum(logged[1], 0.0, out=z)
            none_full = logged[2]  # then each count is below L k already
        else:
            np.add(relaxed[1], 0.5, out=z)
            z *= self.rate
            np.maximum(z, 0.0, out=z)
        if not none_full:
            np.minimum(z, self._lim_rate, out=z)
        # In the first of relaxed_price's work rows, for relaxed_price(start=relaxed).
        self._units_of = relaxed, work, none_full
        return float(z.dot(self.inv_rate))

    def relaxed_price(
        self, target: float, t0: float, nu0: float, start: Relaxed | None = None
    ) -> tuple[Relaxed, float, float] | None:
        """The rollout price ``nu >= 0`` at which the relaxed token prefix holds ``target``
        units: :meth:`relax` of the token budget at ``w = c + nu`` (the active rows),
        ``nu``, and the slope of the relaxed size in ``nu`` there; ``None`` if not found.

        Each active row's relaxed count ``y_i = clip((lt_i - log(c_i + nu) - t) / k_i +
        1/2, 0, L_i)`` (``lt_i`` the log first gain, as :meth:`relax`) must meet both
        ``sum_i c_i y_i = T'`` and ``sum_i y_i = target``: Newton's method in ``(t, nu)``
        from ``(t0, nu0)`` (``start``: :meth:`relax` there, whose counts serve the first
        step), on the rows inside their linear pieces; its last step, taken within
        :data:`_NEWTON_UNITS` units (and as many largest costs) of the targets, is not
        evaluated again (:meth:`relax`'s counts are carried to it to first order). Only
        where the search starts depends on it. Complexity: O(M) per step, a few steps.
        """
        n = self.rate.size
        base = self._ts_top
        inv = self.inv_rate
        c = self.c if self.all_active else self.c[self.act]
        cap = self.t_spare
        stats = self._unit_stats(self.c, c)
        c_max = stats.u_max
        # Rows: the clipped counts in log keys (``k`` times the columns), the indicator of
        # the rows inside their linear pieces, and it over w; two products (by c / k and
        # by 1 / k) sum them all. ``zr``: the counts in log keys before they are clipped.
        uinv = stats.uinv
        lim_rate = self._lim_rate
        cached = self._units_of if start is not None else None
        self._units_of = None  # its work rows are overwritten below
        if cached is not None and cached[0] is not start:
            cached = None
        work = np.empty((4, n)) if cached is None else cached[1]
        z, lf, lfw, zr = work
        rows3 = work[:3]
        w = c
        w_buf = np.empty(n)
        t, nu = t0, nu0
        for step_no in range(12):
            # At step 0 from start, relaxed_units(start) clipped its counts into z already.
            raw = step_no > 0 or cached is None
            if raw:
                if step_no == 0 and start is not None:
                    w = start[0]
                    np.add(start[1], 0.5, out=zr)  # the counts at (t0, nu0)
                    zr *= self.rate
                else:
                    w = np.add(c, nu, out=w_buf)
                    np.log(w, out=zr)
                    np.subtract(base, zr, out=zr)
                    zr -= t
                np.maximum(zr, 0.0, out=z)
                np.minimum(z, lim_rate, out=z)
            else:
                assert start is not None and cached is not None
                w = start[0]
            # 1 on the linear rows (0 < z < L k), else 0 (z in [0, L k]; NaN in neither).
            if raw or cached is None or not cached[2]:
                np.subtract(lim_rate, z, out=lf)
                lf *= z
                np.sign(lf, out=lf)
            else:  # no row full: z in [0, L k)
                np.sign(z, out=lf)
            np.divide(lf, w, out=lfw)
            # c z = (c / k) (k z), sum(z) = (1 / k) (k z)
            f1, j11, j12 = rows3.dot(uinv).tolist()
            f2, j21, j22 = rows3.dot(inv).tolist()
            f1 -= cap
            f2 -= target
            det = j11 * j22 - j12 * j21
            if not (det > 0.0 and j11 > 0.0):
                return None
            slope = -det / j11  # d size / d nu with the tokens held at T'
            dt = (f1 * j22 - f2 * j12) / det
            step = (j11 * f2 - j21 * f1) / det
            if not (math.isfinite(step) and math.isfinite(dt)) or nu + step > 1e6 * c_max:
                return None
            if nu + step < 0.0:
                if nu == 0.0:  # twice below 0: the relaxed size at nu = 0 is short
                    return None
                step = -nu
            if step_no == 0 and nu0 == 0.0:
                # From nu = 0 the size is convex in nu and the first step falls short.
                dt *= _FIRST_STRIDE
                step *= _FIRST_STRIDE
            t += dt
            nu += step
            if abs(f2) < _NEWTON_UNITS and abs(f1) < _NEWTON_UNITS * c_max:
                # Within a few dozen units Newton's step lands within a unit. relax()'s
                # counts there to first order (they only place the bands; the bracket's
                # half-width and error bound as at the last evaluation, w to its price):
                # y = (zr - dt - step / w) / k - 1/2.
                y = np.divide(step, w)
                y += dt
                if raw:
                    np.subtract(zr, y, out=y)
                    y *= inv
                    y -= 0.5
                else:
                    assert start is not None
                    y *= inv
                    np.subtract(start[1], y, out=y)  # start[1] = zr / k - 1/2
                c2 = float(lf.dot(stats.sq))  # sum of c^2 over the linear rows
                d = (3.0 * math.sqrt(c2) + 2.0 * c_max) / j11
                d += 1e-12 * (1.0 + abs(t))
                w_new = c + nu
                # min(fl(c + nu)) = fl(min(c) + nu): rounding is monotone.
                w_min = self._c_min + nu if self.all_active else float(np.minimum.reduce(w_new))
                emax = self._err2_max / w_min * (1.0 + 4 * _KEY_SLACK)
                return (w_new, y, t, d, emax), nu, slope
        return None

    def prefix(
        self, w: FloatArray, unit: FloatArray, cap: float, relaxed: Relaxed | None = None
    ) -> Prefix:
        """The longest prefix of the ranking by ``gain / w`` (key descending, prompt
        ascending, unit ascending) whose ``sum(unit)`` fits ``cap``.

        1. The relaxed count ``sum_i unit_i clip((lt_i - t) / k_i + 1/2, 0, L_i)`` of keys
           above ``e^t`` (``lt_i`` the log of the exact first key) is piecewise linear in
           ``t``: its ``2 M`` breakpoints are sorted and its root ``t0`` read off; the
           bracket ``[t0 - d, t0 + d]`` allows three spreads of the rounding up of counts.
        2. Each prompt's band: from a column whose float gain proves every column left
           of it above the bracket, to one below it. Exact keys there (the table's
           arithmetic, the running minimum, ``/ w``) give the units above the bracket and
           the units inside it.
        3. The units inside are ranked and their ``unit`` summed onto what lies above:
           the first one that does not fit is the answer. If the bracket missed it, it
           is widened (four times wider per try).

        Raises :class:`Fallback` when every positive unit fits, or the bracket is not
        found (thresholds at floating-point noise level). Complexity: O(M log M + sum of
        band widths), a few columns per prompt. ``relaxed``: step 1, if done already
        (:meth:`relax` with the same arguments).
        """
        return self._cut_at(*self._bracket_cut(w, unit, cap, relaxed))

    def sized_prefix(self, w: FloatArray, cap: float, relaxed: Relaxed | None = None) -> Repriced:
        """:meth:`prefix` with ``unit = c`` (the token prefix), as a :class:`Repriced`: its
        size and ``over`` at once, the :class:`Prefix` only if asked for (a search that
        re-prices the ranking needs only its ranked bracket). Complexity: as
        :meth:`prefix`."""
        ranked, cum, n_fit = self._bracket_cut(w, self.c, cap, relaxed)
        if ranked.n_a < 0:
            ranked.n_a = int(np.add.reduce(ranked.a))
        return Repriced(self, ranked, ranked.rows[:0], cum, n_fit)

    def sized_prefix_near(self, pre: Repriced, w: FloatArray, cap: float) -> Repriced:
        """:meth:`sized_prefix` at ``w`` for a ranking whose relaxed root is near that of
        ``pre`` (a search's earlier token prefix, at a nearby price): from the middle of
        ``pre``'s bracket, Newton steps on the relaxed token count (piecewise linear in
        the root) place it, so no breakpoints are sorted. The root only says where the
        bracket lies (:meth:`prefix` widens a bracket that misses the cut); where this
        cannot serve (:class:`Fallback`) the root is found as :meth:`relax` finds it.
        Complexity: O(M) before :meth:`prefix`'s bands."""
        ranked = pre.ranked
        try:
            t = 0.5 * (math.log(ranked.lam_lo) + math.log(ranked.lam_hi))
            whole = self.all_active
            c = self.c if whole else self.c[self.act]
            stats = self._unit_stats(self.c, c)
            top = self._ts_top - np.log(w if whole else w[self.act])
            lim = self.lim_f
            for _ in range(_NEAR_STEPS):
                y = top - t
                y *= self.inv_rate  # the rows' relaxed counts at t, before clipping
                lin = y > 0.0
                lin &= y < lim
                np.clip(y, 0.0, lim, out=y)
                slope = float(stats.uinv @ lin)  # - d(tokens)/dt
                if not slope > 0.0:
                    raise Fallback("no row in its linear piece")
                t += (float(c @ y) - cap) / slope
            if not math.isfinite(t):
                raise Fallback("no root near")
            return self.sized_prefix(w, cap, self.relax(w, self.c, cap, root=t))
        except Fallback:
            return self.sized_prefix(w, cap)

    def _bracket_cut(
        self, w: FloatArray, unit: FloatArray, cap: float, relaxed: Relaxed | None
    ) -> tuple[_Ranked, FloatArray, int]:
        """:meth:`prefix`'s ranked bracket, the running sums of ``unit`` over it (from
        ``cost_a``) and the place of the first unit that does not fit."""
        if relaxed is None:
            relaxed = self.relax(w, unit, cap)
        elif math.isnan(relaxed[3]):
            relaxed = self._spread(relaxed, unit)
        ww, y, t0, d, emax = relaxed
        whole = self.all_active
        act = self.act
        inv = self.inv_rate
        d_hi = d_lo = d

        for _ in range(_MAX_TRIES):
            if not -700.0 < t0 - d_lo < t0 + d_hi < 700.0:
                raise Fallback("threshold beyond the float range")
            lam_hi = math.exp(t0 + d_hi)
            lam_lo = math.exp(t0 - d_lo)
            # Start: the exact gain exceeds lam_hi w (1 + 4 slack) + 3 err, so its float
            # gain (within err) proves the columns left of it (log(x + e) <= log x + e/x).
            e_hi, e_lo = 1.5 * emax / lam_hi, 1.5 * emax / lam_lo
            if e_lo < 0.25:  # one bound for every row (the common case)
                eps = e_lo + 4 * _KEY_SLACK
                start_f = y - (d_hi + e_hi + 4 * _KEY_SLACK) * inv
                stop_f = y + (d_lo + eps / (1.0 - eps)) * inv
            else:  # per row; rows whose error reaches the bracket are computed whole
                ew = (1.5 * self.err2) / ww
                start_f = y - (d_hi + ew / lam_hi + 4 * _KEY_SLACK) * inv
                eps_r = ew / lam_lo + 4 * _KEY_SLACK
                stop_f = np.where(eps_r < 0.5, y + (d_lo + eps_r / (1.0 - eps_r)) * inv, self.lim_f)
            np.ceil(start_f, out=start_f)
            start_f -= 1.0
            np.ceil(stop_f, out=stop_f)
            a, vals, ridx, cols, gains, band = self._settle(
                ww, start_f, stop_f, lam_lo, lam_hi, emax
            )
            cost_a = float(unit @ a)
            if cost_a > cap:
                d_hi *= 4.0
                continue
            # The bracket's units in ranking order: key descending, prompt, then column
            # (they come by prompt, then column: a stable sort of the keys suffices).
            rows = ridx if whole else act[ridx]
            order = np.negative(vals).argsort(kind="stable")
            ranked = _Ranked(w, a, rows, cols, order, vals, gains, band, lam_lo, lam_hi, cost_a)
            cut = self._cut_sums(ranked, unit, cap, cost_a)
            if cut is None:
                d_lo *= 4.0
                continue
            return (ranked, *cut)
        raise Fallback("no bracket found")

    def _cut_sums(
        self, ranked: _Ranked, unit: FloatArray, cap: float, cost_a: float
    ) -> tuple[FloatArray, int] | None:
        """``unit`` summed over a ranked bracket's units in order onto ``cost_a`` (what
        lies above it), and the place of the first unit that does not fit; ``None`` if
        the bracket all fits. Complexity: O(bracket)."""
        cum = unit[ranked.rows[ranked.order]].cumsum()
        cum += cost_a
        n_fit = int(cum.searchsorted(cap, side="right"))
        if n_fit >= ranked.order.size:
            return None
        return cum, n_fit

    def _cut_at(self, ranked: _Ranked, cum: FloatArray, n_fit: int) -> Prefix:
        """The prefix from a ranked bracket once the first unit that does not fit
        (``n_fit``-th of the bracket in order; ``cum`` the running sums,
        :meth:`_cut_sums`) is known. Complexity: O(M + bracket)."""
        a, rows, order, vals, gains = ranked.a, ranked.rows, ranked.order, ranked.vals, ranked.gains
        counts = a + np.bincount(rows[order[:n_fit]], minlength=self.m)
        f = int(order[n_fit])
        k_star = vals[f]
        # Every unit ranked before f is taken: those above k* are the prefix less its
        # units tied with k*.
        above = counts
        tie_gain = 0.0
        if n_fit and vals[order[n_fit - 1]] == k_star:  # taken units tied with k*
            taken = order[:n_fit]
            tied = taken[vals[taken] == k_star]
            above = counts - np.bincount(rows[tied], minlength=self.m)
            tie_gain = float(np.add.reduce(gains[tied]))
        return Prefix(
            counts,
            (int(rows[f]), int(ranked.cols[f])),
            above,
            float(gains[f]),
            tie_gain=tie_gain,
            over=float(cum[n_fit]),
            band=ranked.band,
            ranked=ranked,
            size=ranked.n_a + n_fit if ranked.n_a >= 0 else -1,
            n_fit=n_fit,
        )

    def reprefix(self, pre: Prefix, unit: FloatArray, cap: float) -> Prefix:
        """:meth:`prefix` of the same ranking as ``pre`` under another budget: from
        ``pre``'s ranked bracket when the new cut falls inside it (a search evaluates a
        ranking whose token prefix is within a unit of the rollout cap), else from
        scratch. Complexity: O(M + bracket) in the first case."""
        ranked = pre.ranked
        if ranked is None:
            raise Fallback("no ranked bracket")  # pragma: no cover - prefix() sets it
        cost_a = float(unit @ ranked.a)
        if cost_a <= cap:
            cut = self._cut_sums(ranked, unit, cap, cost_a)
            if cut is not None:
                return self._cut_at(ranked, *cut)
        return self.prefix(ranked.w, unit, cap)

    def reprice(
        self,
        pre: Prefix | Repriced,
        w: FloatArray,
        cap: float,
        prices: tuple[float, float] | None = None,
    ) -> Repriced | None:
        """The token prefix (``unit = c``) of the ranking by ``gain / w`` from the bracket
        of ``pre`` (:meth:`prefix` with ``unit = c`` for another ``w0``: a nearby rollout
        price), or ``None`` where that bracket cannot prove the cut.

        A key moves by the factor ``w0_i / w_i`` of its prompt, within ``[r_lo, r_hi]``
        over all prompts: a unit above the old bracket keeps a float key above
        ``lam_hi r_lo``, one below it a float key below ``lam_lo r_hi`` (each with a few
        roundings of slack, :data:`_KEY_SLACK`). Between these the bracket's own units
        are keyed anew (``fl(g / w)``, the table's key) and ranked; the cut stands if it
        falls among them. Only the size is computed here; :meth:`Repriced.prefix` gives
        the prefix.

        ``prices``: ``(nu0, nu)`` where ``w0 = c + nu0`` and ``w = c + nu`` (as computed
        in floating point). The exact ratio ``(c + nu0) / (c + nu)`` is monotone in ``c``,
        and each float ``w`` is within one rounding of it, so ``[r_lo, r_hi]`` is read at
        the cheapest and dearest prompts, within four more roundings (far inside the
        slack). Complexity: O(M) for the key ratios (O(1) with ``prices``), then
        O(bracket).
        """
        ranked = pre.ranked
        if ranked is None:
            return None  # pragma: no cover - prefix() sets it
        if prices is None:
            ratio = ranked.w / w  # NaN-free: w and ranked.w are positive
            r_lo, r_hi = float(ratio[ratio.argmin()]), float(ratio[ratio.argmax()])
        else:
            nu0, nu = prices
            c_lo, c_hi = self._cost_range
            r_lo, r_hi = sorted(((c_lo + nu0) / (c_lo + nu), (c_hi + nu0) / (c_hi + nu)))
        slack = 1.0 + 8 * _KEY_SLACK
        hi = ranked.lam_hi * r_lo / slack
        lo = ranked.lam_lo * r_hi * slack
        if not lo < hi:
            return None
        rows = ranked.rows
        vals = ranked.gains / w[rows]
        up = vals > hi
        keep = vals >= lo
        keep ^= up  # lo < hi: the units above hi are among those from lo
        c = self.c
        if np.count_nonzero(up):
            up_rows = rows[up]
            cost_a = ranked.cost_a + float(np.add.reduce(c[up_rows]))
        else:  # nothing moved above the bracket (adding the empty sum, 0, changes nothing)
            up_rows, cost_a = rows[:0], ranked.cost_a
        if cost_a > cap:
            return None
        rows, vals = rows[keep], vals[keep]
        cols = ranked.cols[keep]
        order = np.negative(vals).argsort(kind="stable")  # still by prompt, then column
        cum = c[rows[order]].cumsum()
        cum += cost_a
        n_fit = int(cum.searchsorted(cap, side="right"))
        if n_fit >= order.size:
            return None
        if ranked.n_a < 0:
            ranked.n_a = int(np.add.reduce(ranked.a))
        n_a = ranked.n_a + up_rows.size
        gains, band = ranked.gains[keep], ranked.band
        moved = _Ranked(w, ranked.a, rows, cols, order, vals, gains, band, lo, hi, cost_a, n_a)
        return Repriced(self, moved, up_rows, cum, n_fit)

    def _settle(
        self,
        ww: FloatArray,
        start_f: FloatArray,
        stop_f: FloatArray,
        lam_lo: float,
        lam_hi: float,
        emax: float,
    ) -> tuple[IntArray, FloatArray, IntArray, IntArray, FloatArray, _Band]:
        """Exact keys of the active rows on their bands ``start .. stop`` (clipped to the
        row; ``emax`` bounds ``2 err / w``).

        Returns per prompt ``a`` (units with keys > lam_hi), the keys in
        ``[lam_lo, lam_hi]`` with their active row, column and gain (ordered by row, then
        column), and the band (gains
        with the running minimum applied). A band proves its row when its first
        key, less ``emax``, is above the bracket (its float gain, less twice the error
        bound, then is: every column left of it is) or it starts at column 0, and its
        last key is below the bracket (or it reaches the row's end). Bands of one width
        (the widest, shifted left where a row ends), a dense block, when that costs at
        most about twice the exact widths; otherwise, or where a band proves nothing,
        segments of their own widths, with unproven rows computed in full.
        Complexity: O(sum of band widths).
        """
        lim_1 = self.lim_1
        # fmin/fmax: a NaN from the closed form (rates so small that 1 / k overflows)
        # becomes a row end; the proofs below then decide, as for any band.
        np.fmin(start_f, lim_1, out=start_f)
        np.fmax(start_f, 0.0, out=start_f)
        np.fmin(stop_f, lim_1, out=stop_f)
        np.fmax(stop_f, start_f, out=stop_f)
        span = stop_f - start_f
        n = start_f.size
        w1 = int(span[span.argmax()]) + 1  # span >= 0, NaN-free (fmin/fmax above)
        if w1 <= 8 or w1 * n <= 2 * int(np.add.reduce(span)) + 2 * n + 4096:
            if w1 > _MAX_BAND // max(n, 1):
                raise Fallback("band too wide")
            # Shift a band left where it would pass the row's end (a column further left
            # proves more).
            last = self.lim_f - w1  # the start of a band that ends at the row's end
            np.minimum(start_f, last, out=start_f)
            if not isinstance(last, float):  # one row length: last >= 0 (w1 <= it)
                np.maximum(start_f, 0.0, out=start_f)
            # One column of the block per row (contiguous along the rows).
            g = self._dense_gains(start_f, w1)
            if w1 > 1 and np.count_nonzero(g[1:] > g[:-1]):
                np.minimum.accumulate(g, axis=0, out=g)
            lim = self.lim_act
            if not isinstance(lim, int) and np.count_nonzero(lim < w1):
                g[np.arange(w1)[:, None] >= lim[None, :]] = -np.inf  # beyond the row's end
            keys = g / ww
            ok = keys[0] > lam_hi * (1.0 + 2 * _KEY_SLACK) + emax
            ok |= start_f == 0.0
            end = keys[-1] < lam_lo
            end |= start_f >= last
            ok &= end
            good = np.count_nonzero(ok) == n
            if not good:  # the first gain against its own error bound
                ok = g[0] - self.err2 > ww * (lam_hi * (1.0 + _KEY_SLACK))
                ok |= start_f == 0.0
                ok &= end
                good = np.count_nonzero(ok) == n
            if good:
                above = keys > lam_hi
                start = start_f.astype(np.int64)
                a = np.add.reduce(above, axis=0, dtype=np.int64)
                a += start
                within = keys >= lam_lo
                within ^= above
                # Flat places column * n + row, by column; the ranking's ties break by
                # row, then column: a stable sort by row.
                pos = within.ravel().nonzero()[0]
                k_in, r_in = np.divmod(pos, n)
                by_row = r_in.argsort(kind="stable")
                pos, r_in, k_in = pos[by_row], r_in[by_row], k_in[by_row]
                cols = start[r_in]
                cols += k_in
                return (
                    self._scatter(a),
                    keys.ravel()[pos],
                    r_in,
                    cols,
                    g.ravel()[pos],
                    _Band(start, g, None),
                )
        return self._settle_segments(
            ww, start_f.astype(np.int64), stop_f.astype(np.int64), lam_lo, lam_hi
        )

    def _unit_stats(self, unit: FloatArray, u: FloatArray) -> _UnitStats:
        """For a cost vector ``unit`` (``u``: its active rows): ``u / k``, ``max(u)``,
        ``u^2`` and the columns ``(u / k, u^2)``, kept per vector (a search ranks by the
        same ones)."""
        for ref, stats in self._stats:
            if ref is unit:
                return stats
        stats = _UnitStats(u, self.inv_rate)
        self._stats.append((unit, stats))
        return stats

    def _scatter(self, a: IntArray) -> IntArray:
        """Per active row to per prompt (0 on the others)."""
        if self.all_active:
            return a
        out = np.zeros(self.m, dtype=np.int64)
        out[self.act] = a
        return out

    def _dense_gains(self, start_f: FloatArray, w1: int) -> FloatArray:
        """Float gains of every active row at columns ``start .. start + w1 - 1``, as a
        ``(w1, rows)`` block (the arithmetic of :func:`coba_rl.value.marginal_gains`,
        element for element). Complexity: O(rows * w1)."""
        pa = self._factors_act
        # -(n_low + j), j = 0 .. w1, as a column: the rollout solver's cached offsets.
        v = _values_in_place(_band_offsets(w1, self.n_low) - start_f, self.tau, *pa)
        return np.subtract(v[1:], v[:-1])

    def _settle_segments(
        self, ww: FloatArray, start: IntArray, stop: IntArray, lam_lo: float, lam_hi: float
    ) -> tuple[IntArray, FloatArray, IntArray, IntArray, FloatArray, _Band]:
        """:meth:`_settle` on bands of their own widths (flat segments)."""
        for attempt in range(2):
            width = stop - start
            width += 1
            g, off = self._gains(None, start, width)
            first = g[off]
            self._running_min(g, off)
            keys = g / ww.repeat(width + 1)[:-1]
            above = keys > lam_hi
            within = keys >= lam_lo
            a = np.add.reduceat(above, off, dtype=np.int64)
            a += start
            b = np.add.reduceat(within, off, dtype=np.int64)
            b += start
            first -= self.err2
            ok = first > ww * (lam_hi * (1.0 + _KEY_SLACK))
            ok |= start == 0
            np.minimum(b, self.lim_act - 1, out=b)
            ok &= b <= stop
            if ok.all():
                break
            if attempt:
                raise Fallback(
                    "band without proof"
                )  # pragma: no cover - a whole row always proves itself
            bad = ~ok
            start = np.where(bad, 0, start)
            stop = np.where(bad, self.lim_act - 1, stop)
        within ^= above
        pos = np.flatnonzero(within)
        seg = off.searchsorted(pos, side="right")
        seg -= 1
        cols = start[seg] + pos - off[seg]
        return self._scatter(a), keys[pos], seg, cols, g[pos], _Band(start, g, off)

    # -- after the prefix -----------------------------------------------------------------

    def fill(
        self, w: FloatArray, pre: Prefix, b_left: float, spent: float | None = None
    ) -> tuple[IntArray, float, float]:
        """Keep adding, in key order, the units that still fit (what
        :func:`coba_rl.tokens._fill` does on the table), after the prefix ``pre`` of the
        ranking by ``gain / w``.

        The next units of the prompts that still fit, ranked by key (ties: lower prompt
        first), are merged with a heap of the units after those taken; a prompt whose
        unit does not fit is dropped for good (the tokens left only shrink). Next keys
        come from the prefix's band, or from a few more exact columns where a prompt
        runs past it (``spent``: ``c . counts`` of the prefix, if known). Returns the
        counts, the sum of the gains added and the tokens left (``T' - c . counts``).

        One unit left (``b_left <= 1``): the unit taken is the best next unit of the
        prompts that fit. Each prompt's next unit still in the prefix's ranked bracket
        comes first among its units there (by column), and every unit outside the
        bracket not taken has a key below it; so where a unit of the bracket after the
        cut fits, the first one in ranking order is that unit (its prompt first among
        equal keys, as the merge breaks ties).
        Complexity: O(M + F log F) for F units considered.
        """
        x = pre.counts
        c = self.c
        t_left = self.t_spare - (float(c @ x) if spent is None else spent)
        if b_left <= 0 or not t_left >= self._c_min:
            return x, 0.0, t_left
        ranked = pre.ranked
        if ranked is not None:
            walked = self._fill_bracket(pre, ranked, b_left, t_left)
            if walked is not None:
                return walked
        x = x.copy()
        cand = ((x < self.row_limit) & (c <= t_left)).nonzero()[0]
        band = pre.band
        if cand.size == 0 or band is None:
            return x, 0.0, t_left
        xc = x[cand]
        # Each candidate's next gain: the prefix band's (exact at or below the bracket),
        # and 0 on rows without gains.
        if self.all_active:
            ridx = cand
            g0 = band.at(cand, xc)
        else:
            ridx = self.pos_of[cand]
            has = ridx >= 0
            g0 = np.zeros(cand.size)
            g0[has] = band.at(ridx[has], xc[has])
        keys0 = g0 / w[cand]
        c_cand = c[cand]
        c_min = self._c_min
        extra: dict[int, list[float]] = {}  # exact gains past the band, by prompt
        added = 0.0
        # The first few units one at a time: the best key among the prompts that still
        # fit (ties: lower prompt, as cand ascends), a prompt that does not fit dropped
        # for good (the tokens left only shrink). Most fills end here.
        for step in range(_FILL_STEPS):
            if step == 0:  # every candidate fits (as chosen)
                pick = int(keys0.argmax())
            else:
                alive = c_cand <= t_left
                if not np.logical_or.reduce(alive):
                    return x, added, t_left
                pick = int(np.where(alive, keys0, -np.inf).argmax())
            i = int(cand[pick])
            x[i] += 1
            b_left -= 1
            g_prev = float(g0[pick])
            added += g_prev
            t_left = self.t_spare - float(c @ x)
            if b_left <= 0 or not t_left >= c_min:
                return x, added, t_left
            j = int(x[i])
            if j < self.limit[i]:
                r = int(ridx[pick])
                g = 0.0 if r < 0 else self._next_gain(band, r, i, j, g_prev, extra)
                g0[pick] = g
                keys0[pick] = g / w[i]
            else:
                c_cand[pick] = math.inf  # the prompt is full
        # The rest merged by a heap: the candidates in key order, then the units after
        # those taken.
        live = (c_cand <= t_left).nonzero()[0]
        order = live[np.argsort(-keys0[live], kind="stable")]
        s_keys = (-keys0[order]).tolist()
        s_rows = cand[order].tolist()
        s_gain = g0[order].tolist()
        s_ridx = ridx[order].tolist()
        cost = c.tolist()
        w_list = w.tolist()
        heap: list[tuple[float, int, float, int]] = []
        pop, push = heapq.heappop, heapq.heappush
        k = 0
        n = len(s_rows)
        while b_left > 0 and t_left >= c_min:
            if heap and (k >= n or heap[0][:2] < (s_keys[k], s_rows[k])):
                _, i, g_prev, r = pop(heap)
            elif k < n:
                i, g_prev, r = s_rows[k], s_gain[k], s_ridx[k]
                k += 1
            else:
                break
            if cost[i] > t_left:
                continue  # never fits again
            x[i] += 1
            b_left -= 1
            added += g_prev
            t_left = self.t_spare - float(c @ x)
            j = int(x[i])
            if j < self.limit[i]:
                g = 0.0 if r < 0 else self._next_gain(band, r, i, j, g_prev, extra)
                push(heap, (-(g / w_list[i]), i, g, r))
        return x, added, t_left

    def _fill_bracket(
        self, pre: Prefix, ranked: _Ranked, b_left: float, t_left: float
    ) -> tuple[IntArray, float, float] | None:
        """:meth:`fill` where it ends inside the prefix's ranked bracket: its units after
        the cut, in ranking order, each taken if it fits the tokens left, until the
        rollouts run out or no prompt fits (tokens left below the cheapest cost). ``None``
        where a unit below the bracket could still be next (no unit of the bracket after
        the last one taken fits, but the tokens left cover the cheapest cost) or more than
        :data:`_FILL_STEPS` units would be taken: the merge then runs.

        The order is the merge's: a prompt's units in the bracket come by column (keys
        are non-increasing along a row, ties by column), every unit above the bracket is
        in the prefix, and every unit below has a smaller key than any in it; a unit that
        does not fit never fits later (the tokens left only shrink), nor do its prompt's
        later units. Complexity: O(bracket) per unit taken."""
        rest = ranked.order[pre.n_fit :]
        if not rest.size:
            return None
        c = self.c
        rows = ranked.rows[rest]
        cost = c[rows]
        x = pre.counts
        added = 0.0
        at = 0
        for _ in range(_FILL_STEPS):
            fits = cost[at:] <= t_left
            u = int(fits.argmax())
            if not fits[u]:
                return None
            at += u
            if x is pre.counts:
                x = x.copy()
            x[rows[at]] += 1
            added += float(ranked.gains[rest[at]])
            at += 1
            b_left -= 1
            t_left = self.t_spare - float(c @ x)
            if b_left <= 0 or not t_left >= self._c_min:
                return x, added, t_left
            if at >= rest.size:
                return None
        return None

    def _next_gain(
        self, band: _Band, r: int, i: int, j: int, g_prev: float, extra: dict[int, list[float]]
    ) -> float:
        """The running-minimum gain of prompt ``i`` (active row ``r``) at column ``j``,
        given its value ``g_prev`` at ``j - 1``: from the band, or exact columns beyond."""
        g = band.get(r, j)
        if g is None:
            more = extra.get(i)
            if more is None or not more or more[0] != j:
                width = min(8, int(self.limit[i]) - j)
                gs, _ = self._gains(np.array([i]), np.array([j]), np.array([width]))
                more = [float(j), *gs.tolist()]
            g = more.pop(1)
            more[0] = j + 1.0
            extra[i] = more if len(more) > 1 else []
        return min(g, g_prev)

    def value(self, x: IntArray) -> float:
        """``sum_i V_i(n_low + x_i) - V_i(n_low)``: the objective of ``x`` extra units
        (the row's gains telescoped; the table sums them one by one). Complexity: O(M)."""
        if self._v0 is None:
            self._v0 = self._values(np.full(self.m, -float(self.n_low)))
        v = self._values(np.negative(x + self.n_low, dtype=np.float64))
        v -= self._v0
        return float(np.add.reduce(v))

    def min_last_gain(self, x: IntArray) -> float:
        """The smallest running-minimum gain at column ``x_i - 1`` over prompts with
        ``x_i > 0``: the last gain the counts ``x`` took. Complexity: O(M)."""
        rows = np.flatnonzero(x > 0)
        last = x[rows] - 1
        start = np.maximum(last - 1, 0)
        # The gains at columns start and start + 1 (the table's arithmetic), as a block.
        pt = self.pop[:, rows]
        v = _values_in_place(_HEAD3 - (start + self.n_low), self.tau, pt[0], pt[1], pt[2])
        g = v[1:] - v[:-1]
        first = g[0]
        low = np.where(last > start, np.minimum(first, g[1]), first)
        # Columns left of the band hold float gains >= first - 2 err (the exact row
        # falls): they lower the running minimum only if that bound is below it.
        err2 = pt[2] * (2 * GAIN_ERROR)
        err2 += 2 * _GAIN_ERROR_ABS
        unsure = np.flatnonzero((start > 0) & (first - err2 <= low))
        if unsure.size:
            g2, off2 = self._gains(rows[unsure], np.zeros(unsure.size, np.int64), x[rows[unsure]])
            self._running_min(g2, off2)
            low[unsure] = g2[off2 + last[unsure]]
        return float(low.min())
