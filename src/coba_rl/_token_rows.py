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

import heapq
import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from coba_rl.solvers import _GAIN_ERROR_ABS, GAIN_ERROR, _band_offsets
from coba_rl.value import _beta_pdf_distinct, _beta_pdf_vector, _vector_pdf_is_exact

IntArray = NDArray[np.int64]
FloatArray = NDArray[np.float64]

#: Relative slack for one rounding of a key ``fl(g / w)`` (and of a product ``lam * w``).
_KEY_SLACK = 2.0**-49
#: Bracket widenings tried before giving up on the closed form.
_MAX_TRIES = 6
#: Band entries beyond which the table is cheaper (and memory stays bounded).
_MAX_BAND = 1 << 22


#: ``-(j)`` for j = 0, 1, 2, as a column: the values of two gains.
_HEAD3 = -np.arange(3.0)[:, None]
_HEAD3.setflags(write=False)


class Fallback(Exception):
    """The closed form cannot settle this instance: rank the gain table instead."""


@dataclass(frozen=True)
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


@dataclass(frozen=True)
class _Ranked:
    """A settled bracket of the ranking by ``gain / w``: per prompt the units above it
    (``a``), and its units (prompt ``rows``, column ``cols``, key ``vals``, gain
    ``gains``) with their ranking ``order``."""

    w: FloatArray
    a: IntArray
    rows: IntArray
    cols: IntArray
    order: IntArray
    vals: FloatArray
    gains: FloatArray
    band: _Band


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
    ) -> None:
        m, k = p.size, n_up - n_low
        ps = np.maximum(p, smoothing)
        np.minimum(ps, 1.0 - smoothing, out=ps)
        pop = np.empty((m, 3))  # rows (p, 1 - p, density): one gather serves a band
        pop[:, 0] = ps
        np.subtract(1, ps, out=pop[:, 1])
        if _vector_pdf_is_exact():
            pop[:, 2] = _beta_pdf_vector(ps, alpha, beta)
        else:  # one scalar density per distinct rate
            uniq, inverse = np.unique(ps, return_inverse=True)
            pop[:, 2] = _beta_pdf_distinct(uniq, alpha, beta)[inverse.reshape(-1)]
        self.pop = pop
        pdf = pop[:, 2]
        self.tau, self.n_low, self.k, self.m = tau, n_low, k, m
        self.c, self.t_total, self.t_spare, self.b_spare = c, t_total, t_spare, b_spare
        self._c_min = float(c.min())
        self.limit: IntArray = (
            np.full(m, k, dtype=np.int64) if caps is None else caps.astype(np.int64) - n_low
        )
        rate = ps * pop[:, 1]
        rate /= tau
        # log of the exact first gain C e^{-k n_low} (1 - e^{-k}); -inf or NaN on rows
        # whose float gains are all 0 (p in {0, 1}, a zero density).
        log_a = np.log(pdf)
        tail = np.negative(rate)
        np.expm1(tail, out=tail)
        np.negative(tail, out=tail)
        np.log(tail, out=tail)
        log_a += tail
        tail = rate * n_low
        log_a -= tail
        # Every row active (the common case) when the sum of the logs is finite.
        self.all_active = caps is None and math.isfinite(float(np.add.reduce(log_a)))
        if not self.all_active:
            active = np.isfinite(log_a)
            if caps is not None:
                active &= self.limit > 0
            self.all_active = bool(active.all())
        self.act: IntArray = np.arange(m) if self.all_active else np.flatnonzero(active)
        if not self.all_active:
            act = self.act
            pos_of = np.full(m, -1, dtype=np.int64)
            pos_of[act] = np.arange(act.size)
            self.pos_of = pos_of
            rate, log_a = rate[act], log_a[act]
        self.log_a = log_a
        self.rate = rate
        self.capped = caps is not None
        self.pop_act_t = np.ascontiguousarray((pop if self.all_active else pop[self.act]).T)
        self.inv_rate = 1.0 / rate
        half = 0.5 * rate
        half += log_a
        self._ts_base = np.concatenate((half, half))
        # Row lengths of the active rows: one number without caps (no array operations).
        self.lim_act: IntArray | int
        self.lim_f: FloatArray | float
        if caps is None:
            self.lim_act, self.lim_f = k, float(k)
        else:
            lim = self.limit if self.all_active else self.limit[self.act]
            self.lim_act, self.lim_f = lim, lim.astype(np.float64)
        self._ts_base[rate.size :] -= self.lim_f * rate
        self.lim_half = self.lim_f - 0.5
        self.lim_1 = self.lim_f - 1.0
        self._stats: list[tuple[FloatArray, tuple[FloatArray, FloatArray, float]]] = []
        pdf_act = pdf if self.all_active else pdf[self.act]
        # Twice the error bound of a float gain, per row and its largest.
        self._err2: FloatArray | None = None
        self._pdf_act = pdf_act
        top = float(pdf_act.max()) if pdf_act.size else 0.0
        self._err2_max = 2.0 * (top * GAIN_ERROR + _GAIN_ERROR_ABS)
        self._v0: FloatArray | None = None

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
        n /= self.tau
        n *= pop[:, 0]
        n *= pop[:, 1]
        np.exp(n, out=n)
        np.subtract(1, n, out=n)
        n *= pop[:, 2]
        return n

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
        if rows is None:
            pop = self.pop if self.all_active else self.pop[self.act]
        else:
            pop = self.pop[rows]
        q = pop.repeat(n_vals, axis=0)
        v /= self.tau
        v *= q[:, 0]
        v *= q[:, 1]
        np.exp(v, out=v)
        np.subtract(1, v, out=v)
        v *= q[:, 2]
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

    def relax(self, w: FloatArray, unit: FloatArray, cap: float) -> Relaxed:
        """Step 1 of :meth:`prefix`: the root ``t0`` of the relaxed count, each active
        row's continuous count ``y`` above ``e^t0``, the bracket's half-width ``d`` and the
        bound ``emax`` on ``2 err / w``. Complexity: O(M log M)."""
        whole = self.all_active
        act = self.act
        ww, u = (w, unit) if whole else (w[act], unit[act])
        n = self.rate.size
        if n == 0:
            raise Fallback("no row has positive gains")
        inv = self.inv_rate
        stats = self._unit_stats(unit, u)
        uinv2, u2, u_max = stats
        # Breakpoints of the relaxed count: where a row starts (log first key + k/2) and
        # where it is full (L k lower); log first key = log_a - log w.
        log_w = np.log(ww)
        ts = self._ts_base - np.concatenate((log_w, log_w))
        order = ts.argsort()[::-1]
        ts = ts[order]
        run = uinv2[order].cumsum()
        gaps = ts[:-1] - ts[1:]
        gaps *= run[:-1]
        level = gaps.cumsum()  # level[j]: the relaxed count at ts[j + 1]
        i = int(level.searchsorted(cap)) + 1
        if i >= ts.size or not math.isfinite(float(level[-1])):
            raise Fallback("every positive unit fits")
        done = float(level[i - 2]) if i >= 2 else 0.0
        s = float(run[i - 1])
        t0 = float(ts[i - 1]) - (cap - done) / s if s > 0 else float(ts[i])
        y = self._ts_base[:n] - log_w
        y -= t0
        y *= inv
        y -= 0.5  # columns above e^t0, continuous
        lin = y > -0.5
        lin &= y < self.lim_half
        s_lin = float(uinv2[:n] @ lin)
        spread = 3.0 * math.sqrt(float(u2 @ lin)) + 2.0 * u_max
        d = spread / s_lin if s_lin > 0 else float(self.rate.min())
        d += 1e-12 * (1.0 + abs(t0))
        # 2 err / w bounded by one number (the proofs only need an upper bound).
        emax = self._err2_max / float(ww.min()) * (1.0 + 4 * _KEY_SLACK)
        return ww, y, t0, d, emax

    def relaxed_units(self, relaxed: Relaxed) -> float:
        """The number of units the relaxed count puts above its root (an estimate of a
        prefix's size, within a few units per prompt). Complexity: O(M)."""
        y = relaxed[1] + 0.5
        np.maximum(y, 0.0, out=y)
        np.minimum(y, self.lim_f, out=y)
        return float(np.add.reduce(y))

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
        if relaxed is None:
            relaxed = self.relax(w, unit, cap)
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
            # The bracket's units in ranking order: key descending, prompt, then column.
            rows = ridx if whole else act[ridx]
            order = np.lexsort((cols, rows, -vals))
            ranked = _Ranked(w, a, rows, cols, order, vals, gains, band)
            out = self._cut(ranked, unit, cap, cost_a)
            if out is None:
                d_lo *= 4.0
                continue
            return out
        raise Fallback("no bracket found")

    def _cut(self, ranked: _Ranked, unit: FloatArray, cap: float, cost_a: float) -> Prefix | None:
        """The prefix from a ranked bracket: ``unit`` summed over the bracket's units in
        order onto ``cost_a`` (what lies above it); ``None`` if the bracket all fits.
        Complexity: O(M + bracket)."""
        a, rows, order, vals, gains = ranked.a, ranked.rows, ranked.order, ranked.vals, ranked.gains
        r_sorted = rows[order]
        cum = unit[r_sorted].cumsum()
        cum += cost_a
        n_fit = int(cum.searchsorted(cap, side="right"))
        if n_fit >= order.size:
            return None
        m = self.m
        counts = a + np.bincount(r_sorted[:n_fit], minlength=m)
        f = int(order[n_fit])
        k_star = vals[f]
        above = a + np.bincount(rows[vals > k_star], minlength=m)
        tie_gain = 0.0
        if n_fit and vals[order[n_fit - 1]] == k_star:  # taken units tied with k*
            taken = order[:n_fit]
            tie_gain = float(np.add.reduce(gains[taken[vals[taken] == k_star]]))
        return Prefix(
            counts,
            (int(rows[f]), int(ranked.cols[f])),
            above,
            float(gains[f]),
            tie_gain=tie_gain,
            over=float(cum[n_fit]),
            band=ranked.band,
            ranked=ranked,
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
            out = self._cut(ranked, unit, cap, cost_a)
            if out is not None:
                return out
        return self.prefix(ranked.w, unit, cap)

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
        ``[lam_lo, lam_hi]`` with their active row, column and gain, and the band (gains
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
        w1 = max(int(span.max()), 0) + 1
        if w1 <= 8 or w1 * n <= 2 * int(np.add.reduce(span)) + 2 * n + 4096:
            if w1 > _MAX_BAND // max(n, 1):
                raise Fallback("band too wide")
            # Shift a band left where it would pass the row's end (a column further left
            # proves more).
            last = self.lim_f - w1  # the start of a band that ends at the row's end
            np.minimum(start_f, last, out=start_f)
            np.maximum(start_f, 0.0, out=start_f)
            # One column of the block per row (contiguous along the rows).
            g = self._dense_gains(start_f, w1)
            if w1 > 1 and bool((g[1:] > g[:-1]).any()):
                np.minimum.accumulate(g, axis=0, out=g)
            lim = self.lim_act
            if not isinstance(lim, int) and bool((lim < w1).any()):
                g[np.arange(w1)[:, None] >= lim[None, :]] = -np.inf  # beyond the row's end
            keys = g / ww
            ok = keys[0] > lam_hi * (1.0 + 2 * _KEY_SLACK) + emax
            ok |= start_f == 0.0
            end = keys[-1] < lam_lo
            end |= start_f >= last
            ok &= end
            if not ok.all():  # the first gain against its own error bound
                ok = g[0] - self.err2 > ww * (lam_hi * (1.0 + _KEY_SLACK))
                ok |= start_f == 0.0
                ok &= end
            if ok.all():
                above = keys > lam_hi
                start = start_f.astype(np.int64)
                a = np.add.reduce(above, axis=0, dtype=np.int64)
                a += start
                within = keys >= lam_lo
                within ^= above
                k_in, r_in = np.nonzero(within)
                return (
                    self._scatter(a),
                    keys[k_in, r_in],
                    r_in,
                    start[r_in] + k_in,
                    g[k_in, r_in],
                    _Band(start, g, None),
                )
        return self._settle_segments(
            ww, start_f.astype(np.int64), stop_f.astype(np.int64), lam_lo, lam_hi
        )

    def _unit_stats(self, unit: FloatArray, u: FloatArray) -> tuple[FloatArray, FloatArray, float]:
        """For a cost vector ``unit`` (``u``: its active rows): ``(u / k, -u / k)`` joined,
        ``u ** 2`` and ``max(u)``, kept per vector (a search ranks by the same ones)."""
        for ref, stats in self._stats:
            if ref is unit:
                return stats
        uinv = u * self.inv_rate
        stats = (np.concatenate((uinv, -uinv)), u * u, float(u.max()))
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
        pa = self.pop_act_t
        # -(n_low + j), j = 0 .. w1, as a column: the rollout solver's cached offsets.
        v = _band_offsets(w1, self.n_low) - start_f
        v /= self.tau
        v *= pa[0]
        v *= pa[1]
        np.exp(v, out=v)
        np.subtract(1, v, out=v)
        v *= pa[2]
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

    def fill(self, w: FloatArray, pre: Prefix, b_left: float) -> tuple[IntArray, float]:
        """Keep adding, in key order, the units that still fit (what
        :func:`coba_rl.tokens._fill` does on the table), after the prefix ``pre`` of the
        ranking by ``gain / w``.

        The next units of the prompts that still fit, ranked by key (ties: lower prompt
        first), are merged with a heap of the units after those taken; a prompt whose
        unit does not fit is dropped for good (the tokens left only shrink). Next keys
        come from the prefix's band, or from a few more exact columns where a prompt
        runs past it. Returns the counts and the sum of the gains added.
        Complexity: O(M + F log F) for F units considered.
        """
        x = pre.counts.copy()
        c = self.c
        t_left = self.t_spare - float(c @ x)
        if b_left <= 0 or not t_left >= self._c_min:
            return x, 0.0
        cand = np.flatnonzero((x < self.limit) & (c <= t_left))
        band = pre.band
        if cand.size == 0 or band is None:
            return x, 0.0
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
        order = np.argsort(-keys0, kind="stable")
        s_keys = (-keys0[order]).tolist()
        s_rows = cand[order].tolist()
        s_gain = g0[order].tolist()
        s_ridx = ridx[order].tolist()
        cost = c.tolist()
        limit = self.limit
        w_list = w.tolist()
        c_min = self._c_min
        extra: dict[int, list[float]] = {}  # exact gains past the band, by prompt
        heap: list[tuple[float, int, float, int]] = []
        pop, push = heapq.heappop, heapq.heappush
        k = 0
        n = len(s_rows)
        added = 0.0
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
            if j < limit[i]:
                g = 0.0 if r < 0 else self._next_gain(band, r, i, j, g_prev, extra)
                push(heap, (-(g / w_list[i]), i, g, r))
        return x, added

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
        pt = self.pop[rows].T
        v = _HEAD3 - (start + self.n_low)
        v /= self.tau
        v *= pt[0]
        v *= pt[1]
        np.exp(v, out=v)
        np.subtract(1, v, out=v)
        v *= pt[2]
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
