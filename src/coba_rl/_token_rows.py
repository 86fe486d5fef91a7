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
the answer (thresholds at the level of floating-point noise, every unit fitting, a
non-finite density) it raises :class:`Fallback` and the caller ranks the table.

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

from coba_rl.solvers import GAIN_ERROR
from coba_rl.value import _beta_pdf_distinct

IntArray = NDArray[np.int64]
FloatArray = NDArray[np.float64]

#: Absolute part of the gain error bound (products that round in the subnormal range).
_GAIN_ERROR_ABS = 2.0**-1000
#: Relative slack for one rounding of a key ``fl(g / w)`` (and of a product ``lam * w``).
_KEY_SLACK = 2.0**-49
#: Bracket widenings tried before giving up on the closed form.
_MAX_TRIES = 6
#: Band entries beyond which the table is cheaper (and memory stays bounded).
_MAX_BAND = 1 << 22


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
    #: The settled band (start, offsets, running-minimum gains) of the active rows.
    band: tuple[IntArray, IntArray, FloatArray] | None = None


def _sorted_distinct(p: FloatArray) -> FloatArray:
    s = np.sort(p)
    keep = np.empty(s.size, dtype=bool)
    keep[:1] = True
    np.not_equal(s[1:], s[:-1], out=keep[1:])
    return s[keep]


class GeometricTokenRows:
    """One row of gains per prompt (CoBA-RL's value), evaluated only where asked.

    Construction: O(M log M) (the distinct pass rates, one density each). Call the
    methods under ``np.errstate(all="ignore")``: logarithms of 0 are expected.

    Args:
      p: pass rates with unseen prompts already replaced, shape ``(M,)``.
      alpha, beta, tau, n_low, n_up, smoothing: the value's constants.
      c: positive costs; ``t_total``: the token budget (above the floor);
      b_spare: spare rollouts above ``M n_low`` or ``None``; ``caps``: per-prompt upper
      bounds in ``[n_low, n_up]`` or ``None``.
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
        raw = _sorted_distinct(p)
        uniq = np.minimum(np.maximum(raw, smoothing), 1.0 - smoothing)
        pdf_u = _beta_pdf_distinct(uniq, alpha, beta)
        if not np.isfinite(pdf_u).all():
            raise Fallback
        if raw.size == m and raw.size > 1 and bool((p[1:] > p[:-1]).all()):
            ps, pdf = uniq, pdf_u
        else:
            inverse = raw.searchsorted(p)
            ps, pdf = uniq[inverse], pdf_u[inverse]
        self.ps, self.pdf, self.tau, self.n_low, self.k = ps, pdf, tau, n_low, k
        self.om = 1 - ps
        self.c, self.t_total, self.t_spare, self.b_spare = c, t_total, t_spare, b_spare
        self.m = m
        self.capped = caps is not None
        self.limit: IntArray = (
            np.full(m, k, dtype=np.int64) if caps is None else caps.astype(np.int64) - n_low
        )
        rate = ps * self.om
        rate /= tau
        active = (rate > 0) & (pdf > 0) & (rate < np.inf) & (self.limit > 0)
        self.all_active = bool(active.all())
        self.act = np.arange(m) if self.all_active else np.flatnonzero(active)
        if not self.all_active:
            rate = np.where(active, rate, 1.0)
        self.rate = rate
        self.inv_rate = 1.0 / rate
        log_a = np.log(pdf)
        log_a -= rate * n_low
        tail = np.log(-np.expm1(-rate))
        log_a += tail
        self.log_a = log_a
        err = pdf * GAIN_ERROR
        err += _GAIN_ERROR_ABS
        self.err = err
        self.lim_f = self.limit.astype(np.float64)
        self._v0: FloatArray | None = None
        if not self.all_active:
            pos_of = np.full(m, -1, dtype=np.int64)
            pos_of[self.act] = np.arange(self.act.size)
            self.pos_of = pos_of

    # -- exact float gains ----------------------------------------------------------------

    def _values(self, rows: IntArray | None, n: FloatArray) -> FloatArray:
        """``V(n)`` of ``rows`` (``None``: every prompt, in order), in the arithmetic of
        :func:`coba_rl.value.marginal_gains`: ``(1 - exp(((-n) / tau) p (1 - p))) C``."""
        if rows is None:
            ps, om, pdf = self.ps, self.om, self.pdf
        else:
            ps, om, pdf = self.ps[rows], self.om[rows], self.pdf[rows]
        v = np.negative(n)
        v /= self.tau
        v *= ps
        v *= om
        np.exp(v, out=v)
        np.subtract(1, v, out=v)
        v *= pdf
        return v

    def _band_gains(
        self, rows: IntArray, start: IntArray, width: IntArray, whole: bool
    ) -> tuple[FloatArray, IntArray]:
        """Running-minimum-free float gains of ``rows`` at ``start .. start + width - 1``
        (every width >= 1), flat, and each segment's offset. Complexity: O(sum widths)."""
        n_vals = width + 1
        off_v = n_vals.cumsum()
        off_v -= n_vals
        n = (start + self.n_low - off_v).astype(np.float64).repeat(n_vals)
        n += np.arange(n.size)
        if whole:
            ps, om, pdf = self.ps.repeat(n_vals), self.om.repeat(n_vals), self.pdf.repeat(n_vals)
        else:
            at = rows.repeat(n_vals)
            ps, om, pdf = self.ps[at], self.om[at], self.pdf[at]
        np.negative(n, out=n)
        n /= self.tau
        n *= ps
        n *= om
        np.exp(n, out=n)
        np.subtract(1, n, out=n)
        n *= pdf
        keep = np.ones(n.size - 1, dtype=bool)
        keep[off_v[1:] - 1] = False
        g = np.subtract(n[1:], n[:-1])[keep]
        off_v -= np.arange(rows.size)
        return g, off_v

    @staticmethod
    def _running_min(g: FloatArray, off: IntArray) -> None:
        """Segmented running minimum of ``g`` in place (segments start at ``off``)."""
        up = g[1:] > g[:-1]
        up[off[1:] - 1] = False
        if up.any():
            rise = np.flatnonzero(up) + 1
            new_seg = np.zeros(g.size, dtype=bool)
            new_seg[off] = True
            while rise.size:
                g[rise] = g[rise - 1]
                nxt = rise + 1
                nxt = nxt[nxt < g.size]
                nxt = nxt[~new_seg[nxt]]
                rise = nxt[g[nxt] > g[nxt - 1]]

    # -- the closed form --------------------------------------------------------------------

    def _relaxed(self, lt: FloatArray, unit: FloatArray, cap: float) -> tuple[float, float, float]:
        """A log-key ``t`` where about ``cap`` of ``unit`` is spent on keys above ``exp(t)``,
        and the half-widths of the bracket to try first.

        ``S(t) = sum_i unit_i clip((lt_i - t) / k_i, 0, L_i)`` is piecewise linear; its
        ``2 M`` breakpoints are sorted, then Newton steps on the integer count
        ``sum_i unit_i clip(ceil((lt_i - t) / k_i), 0, L_i)``. Complexity: O(M log M).
        """
        act = self.act
        if self.all_active:
            top, rate, inv, u, lim = lt, self.rate, self.inv_rate, unit, self.lim_f
        else:
            top, rate, inv = lt[act], self.rate[act], self.inv_rate[act]
            u, lim = unit[act], self.lim_f[act]
        n = top.size
        if n == 0:
            raise Fallback
        ts = np.empty(2 * n)
        ts[:n] = top
        np.subtract(top, lim * rate, out=ts[n:])
        ds = np.empty(2 * n)
        np.multiply(u, inv, out=ds[:n])
        np.negative(ds[:n], out=ds[n:])
        order = ts.argsort()[::-1]
        ts, ds = ts[order], ds[order]
        run = ds.cumsum()
        gaps = ts[:-1] - ts[1:]
        gaps *= run[:-1]
        level = gaps.cumsum()
        i = int(level.searchsorted(cap)) + 1
        if i >= ts.size or not math.isfinite(float(level[-1])):
            raise Fallback  # (about) every unit fits
        done = float(level[i - 2]) if i >= 2 else 0.0
        s = float(run[i - 1])
        t0 = float(ts[i - 1]) - (cap - done) / s if s > 0 else float(ts[i])
        add = np.add.reduce
        spread = 0.0
        miss = 0.0
        s_lin = 1.0
        for _ in range(3):
            x = top - t0
            x *= inv
            lin = x > 0
            lin &= x < lim
            ul = u * lin
            s_lin = float(add(ul * inv))
            if s_lin <= 0:
                d = float(rate.min())
                return t0, d, d
            np.maximum(x, 0, out=x)
            np.ceil(x, out=x)
            np.minimum(x, lim, out=x)
            x *= u
            miss = float(add(x)) - cap
            t0 += miss / s_lin
            ul *= ul
            spread = 3.0 * math.sqrt(float(add(ul))) + 3.0 * float(u.max())
            if abs(miss) <= spread:
                break
        d = (spread + 0.05 * abs(miss)) / s_lin
        return t0, d, d

    def _columns(
        self, lt: FloatArray, w: FloatArray, lam_lo: float, lam_hi: float
    ) -> tuple[IntArray, IntArray]:
        """Per active row, the band of columns that can hold keys in ``[lam_lo, lam_hi]``
        with a proof at its left end (see :meth:`_settle`). Complexity: O(M)."""
        whole = self.all_active
        act = self.act
        inv = self.inv_rate if whole else self.inv_rate[act]
        top = lt if whole else lt[act]
        err = self.err if whole else self.err[act]
        ww = w if whole else w[act]
        lim = self.limit if whole else self.limit[act]
        # Exact gain at the start column above lam_hi w (1 + slack) + 3 err: its float
        # gain then proves every column left of it (log(x + e) <= log x + e / x).
        x_hi = (top - math.log(lam_hi)) * inv
        x_hi -= (3.0 * err / (lam_hi * ww) + 4 * _KEY_SLACK) * inv
        start = np.minimum(np.maximum(np.ceil(x_hi) - 1, 0), lim - 1).astype(np.int64)
        eps = 3.0 * err / (lam_lo * ww) + 4 * _KEY_SLACK
        x_lo = (top - math.log(lam_lo)) * inv
        with np.errstate(divide="ignore"):
            x_lo += (eps / (1.0 - eps)) * inv
        x_lo = np.where(eps < 0.5, x_lo, lim)
        stop = np.minimum(np.maximum(np.ceil(x_lo), start), lim - 1).astype(np.int64)
        return start, stop

    def _settle(
        self, w: FloatArray, start: IntArray, stop: IntArray, lam_lo: float, lam_hi: float
    ) -> tuple[IntArray, IntArray, IntArray, FloatArray, FloatArray, IntArray, IntArray]:
        """Exact keys of the active rows on their bands; per row ``a`` (keys > lam_hi) and
        ``b`` (keys >= lam_lo). Rows whose band cannot prove both are computed in full.

        Returns ``a``, ``b`` (every prompt), the band's start and offsets, its gains
        (running minimum applied), and the bracket's keys with their flat positions.
        Complexity: O(sum of band widths).
        """
        act = self.act
        whole = self.all_active
        ww = w if whole else w[act]
        lim = self.limit if whole else self.limit[act]
        err2 = 2.0 * (self.err if whole else self.err[act])
        for attempt in range(2):
            width = stop - start + 1
            if int(np.add.reduce(width)) > _MAX_BAND:
                raise Fallback
            g, off = self._band_gains(act, start, width, whole)
            first = g[off]
            self._running_min(g, off)
            keys = g / ww.repeat(width)
            above = keys > lam_hi
            within = keys >= lam_lo
            a = np.add.reduceat(above, off, dtype=np.int64)
            a += start
            b = np.add.reduceat(within, off, dtype=np.int64)
            b += start
            ok = start == 0
            ok |= first - err2 > lam_hi * ww * (1.0 + _KEY_SLACK)
            ok &= np.minimum(b, lim - 1) <= stop
            if ok.all():
                break
            if attempt:
                raise Fallback
            bad = ~ok
            start = np.where(bad, 0, start)
            stop = np.where(bad, lim - 1, stop)
        within ^= above
        inside = np.flatnonzero(within)
        if not whole:
            a_all = np.zeros(self.m, dtype=np.int64)
            b_all = np.zeros(self.m, dtype=np.int64)
            a_all[act], b_all[act] = a, b
            a, b = a_all, b_all
        return a, b, start, off, g, keys[inside], inside

    def prefix(self, w: FloatArray, unit: FloatArray, cap: float) -> Prefix:
        """The longest prefix of the ranking by ``gain / w`` (key descending, prompt
        ascending, unit ascending) whose ``sum(unit)`` fits ``cap``.

        The closed form brackets the key of the first unit that does not fit; the exact
        keys in the bracket are ranked and summed. Raises :class:`Fallback` if every
        positive unit fits or the bracket cannot be found. Complexity: O(M log M + sum of
        band widths), the band a few columns per prompt.
        """
        lt = self.log_a - np.log(w)
        t0, d_hi, d_lo = self._relaxed(lt, unit, cap)
        d_lo += 1e-12 * (1.0 + abs(t0))
        d_hi += 1e-12 * (1.0 + abs(t0))
        whole = self.all_active
        act = self.act
        for _ in range(_MAX_TRIES):
            if t0 - d_lo < -700.0 or t0 + d_hi > 700.0:
                raise Fallback
            lam_hi = math.exp(t0 + d_hi)
            lam_lo = math.exp(t0 - d_lo)
            start, stop = self._columns(lt, w, lam_lo, lam_hi)
            a, _, start, off, g, vals, pos = self._settle(w, start, stop, lam_lo, lam_hi)
            cost_a = float(unit @ a)
            if cost_a > cap:
                d_hi *= 4.0
                continue
            # The bracket's units in ranking order: flat positions are (row, column)
            # ordered, so a stable sort on the key descending is the ranking.
            seg = off.searchsorted(pos, side="right") - 1
            rows = seg if whole else act[seg]
            order = np.argsort(-vals, kind="stable")
            r_sorted = rows[order]
            cum = np.cumsum(unit[r_sorted])
            cum += cost_a
            n_fit = int(cum.searchsorted(cap, side="right"))
            if n_fit >= order.size:
                d_lo *= 4.0
                continue
            m = self.m
            counts = a + np.bincount(r_sorted[:n_fit], minlength=m)
            f = int(order[n_fit])
            k_star = vals[f]
            fi = int(rows[f])
            fj = int(start[seg[f]] + (pos[f] - off[seg[f]]))
            above = a + np.bincount(rows[vals > k_star], minlength=m)
            return Prefix(counts, (fi, fj), above, float(g[pos[f]]), (start, off, g))
        raise Fallback

    # -- after the prefix ---------------------------------------------------------------------

    def fill(self, w: FloatArray, pre: Prefix, b_left: float) -> IntArray:
        """Keep adding, in key order, the units that still fit (as
        :func:`coba_rl.tokens._fill` on the table), after the prefix ``pre`` of the
        ranking by ``gain / w``. Complexity: O(M + F log M) for F units considered, plus
        one band of at most ``t_left / c_i`` columns per prompt that fits.
        """
        x = pre.counts.copy()
        if b_left <= 0:
            return x
        c = self.c
        t_left = self.t_spare - float(c @ x)
        cand = np.flatnonzero((x < self.limit) & (c <= t_left))
        if cand.size == 0:
            return x
        if pre.band is None:
            raise Fallback  # pragma: no cover - every prefix of this class has its band
        # Units of a prompt that could still fit: at most t_left / c_i of them.
        q = np.floor(t_left / c[cand])
        width = np.minimum(np.minimum(q + 1, self.limit[cand] - x[cand]), b_left + 1)
        width = width.astype(np.int64)
        g, off = self._band_gains(cand, x[cand], width, False)
        # The running minimum continues from column x_i: its value there is the prefix
        # band's (exact at or below its bracket), and 0 on rows without gains.
        seed = np.zeros(cand.size)
        start_b, off_b, g_b = pre.band
        if self.all_active:
            seed = g_b[off_b[cand] + x[cand] - start_b[cand]]
        else:
            rows_b = self.pos_of[cand]
            has = rows_b >= 0
            rb = rows_b[has]
            seed[has] = g_b[off_b[rb] + x[cand[has]] - start_b[rb]]
        np.minimum(g[off], seed, out=seed)
        g[off] = seed
        self._running_min(g, off)
        keys = (g / w[cand].repeat(width)).tolist()
        offs = off.tolist()
        widths = width.tolist()
        rows = cand.tolist()
        heap = [(-keys[offs[r]], rows[r], r) for r in range(len(rows))]
        heapq.heapify(heap)
        c_list = c.tolist()
        taken = [0] * len(rows)
        pop, push = heapq.heappop, heapq.heappush
        while heap and b_left > 0:
            _, i, r = pop(heap)
            if c_list[i] > t_left:
                continue  # never fits again: t_left only decreases
            x[i] += 1
            b_left -= 1
            t_left = self.t_spare - float(c @ x)
            taken[r] += 1
            if taken[r] < widths[r]:
                push(heap, (-keys[offs[r] + taken[r]], i, r))
        return x

    def value(self, x: IntArray) -> float:
        """``sum_i V_i(n_low + x_i) - V_i(n_low)``: the objective of ``x`` extra units
        (the telescoped sum of the row's gains). Complexity: O(M)."""
        if self._v0 is None:
            self._v0 = self._values(None, np.full(self.m, float(self.n_low)))
        v = self._values(None, (x + self.n_low).astype(np.float64))
        v -= self._v0
        return float(np.add.reduce(v))

    def min_last_gain(self, x: IntArray) -> float:
        """``min`` over prompts with ``x_i > 0`` of the running-minimum gain at column
        ``x_i - 1``: the smallest gain taken. Complexity: O(M)."""
        rows = np.flatnonzero(x > 0)
        if rows.size == 0:
            raise Fallback
        last = x[rows] - 1
        start = np.maximum(last - 1, 0)
        width = last - start + 1
        g, off = self._band_gains(rows, start, width, False)
        first = g[off]
        self._running_min(g, off)
        ends = off + width - 1
        low = g[ends]
        # Columns left of the band hold float gains >= first - 2 err: they cannot lower
        # the running minimum unless that bound is below it.
        unsure = (start > 0) & (first - 2.0 * self.err[rows] <= low)
        if unsure.any():
            bad = np.flatnonzero(unsure)
            z = np.zeros(bad.size, dtype=np.int64)
            g2, off2 = self._band_gains(rows[bad], z, last[bad] + 1, False)
            self._running_min(g2, off2)
            low[bad] = g2[off2 + last[bad]]
        return float(low.min())
