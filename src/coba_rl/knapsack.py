"""Knapsack-RL, the budget-allocation baseline, reproduced rule for rule and solved exactly.

Knapsack-RL (Li et al., arXiv 2509.25849) values ``N`` rollouts on a prompt of pass rate
``p`` as

.. math::

    V(N, p) = \\bigl(1 - p^N - (1 - p)^N\\bigr)\\, p (1 - p)^2

(the chance that a group of ``N`` has both outcomes, times an "information gain" that
peaks at ``p = 1/3``), and spends the budget by a knapsack over the prompts with
``0 < p < 1``. :func:`knapsack_allocate` follows the released
``sampling_budget_by_knapsack`` ([Rules: Knapsack-RL][rules-knapsack]), with one defect fixed; the
knapsack itself is solved by the exact greedy of :mod:`coba_rl.solvers` instead of a DP.
:class:`KnapsackRLAllocator` adds Knapsack-RL's rollout-level pass-rate estimator.
"""

from __future__ import annotations

import math
import sys
import warnings
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray
from pydantic import BaseModel, ConfigDict, Field, model_validator

from coba_rl._persist import (
    Persistent,
    config_summary,
    decode_ints,
    encode_ints,
    make_envelope,
    open_envelope,
    parse_config,
    parse_step,
)
from coba_rl._sync import Lockable, synchronized
from coba_rl._validation import (
    MAX_N_UP,
    BudgetWarning,
    as_id_array,
    as_real_array,
    check_bounds,
    check_budget,
    check_config,
    check_instance,
    check_lengths,
    check_rewards,
    check_unique_ids,
    even_split,
    rollouts_only,
)
from coba_rl.rewards import success_mask, warn_graded_rewards
from coba_rl.solvers import _greedy_extra_grouped, _running_min
from coba_rl.tracker import MAX_COUNT, PassRateTracker
from coba_rl.types import Allocation, BatchStats, _owned

__all__ = [
    "KnapsackConfig",
    "KnapsackRLAllocator",
    "RolloutHistory",
    "knapsack_allocate",
    "knapsack_gains",
    "knapsack_value",
]

IntArray = NDArray[np.int64]
FloatArray = NDArray[np.float64]


class KnapsackConfig(BaseModel):
    """The constants of Knapsack-RL, with its released values as defaults.

    Attributes:
      n_low: ``min_n``, the floor of every estimated prompt (``>= 1``).
      n_up: ``max_n``, the knapsack's cap per prompt (at most 65536). The leftover step
        and the fallback may exceed it, as in the reference.
      confidence: ``alpha`` of the fallback's need estimate, in (0, 1).
      fallback: run the fallback (rule 3); the reference's ``allow_fallback``.
      unseen_n: the count of a prompt without an estimate; ``None`` means ``budget // M``
        (the uniform group size ``n`` of the reference). Must be ``>= n_low``.
      min_rollouts: :class:`KnapsackRLAllocator` only: recorded rollouts a prompt needs
        before it counts as estimated.
      recent_rollouts: :class:`KnapsackRLAllocator` only: a prompt's pass rate is the mean
        of its last visit, or of its last ``recent_rollouts`` rollouts when that visit
        had fewer.
      success_reward: :class:`KnapsackRLAllocator` only: a rollout succeeds when its
        reward equals this value.
      success_threshold: :class:`KnapsackRLAllocator` only: ``None`` (exact matching) or
        a number: a rollout succeeds when its reward is at least this value.

    Example:
      >>> KnapsackConfig(n_up=64).n_up
      64
      >>> KnapsackConfig(n_low=4, unseen_n=2)
      Traceback (most recent call last):
      ...
      pydantic_core._pydantic_core.ValidationError: 1 validation error for KnapsackConfig
        Value error, unseen_n (2) must be at least n_low (4) ...
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    n_low: int = Field(default=2, ge=1)
    n_up: int = Field(default=128, ge=1, le=MAX_N_UP)
    confidence: float = Field(default=0.9, gt=0.0, lt=1.0)
    fallback: bool = True
    unseen_n: int | None = Field(default=None, ge=1)
    min_rollouts: int = Field(default=8, ge=1)
    recent_rollouts: int = Field(default=16, ge=1, le=MAX_N_UP)
    success_reward: float = Field(default=1.0, allow_inf_nan=False)
    success_threshold: float | None = Field(default=None, allow_inf_nan=False)

    @model_validator(mode="after")
    def _bounds(self) -> KnapsackConfig:
        if self.n_low > self.n_up:
            raise ValueError(f"n_low ({self.n_low}) must not exceed n_up ({self.n_up})")
        if self.unseen_n is not None and self.unseen_n < self.n_low:
            raise ValueError(f"unseen_n ({self.unseen_n}) must be at least n_low ({self.n_low})")
        return self


# -- the value -----------------------------------------------------------------------------


def knapsack_value(n: ArrayLike, p: ArrayLike) -> FloatArray:
    r"""Knapsack-RL's value of ``n`` rollouts on a prompt of pass rate ``p``.

    .. math::

        V(n, p) = \bigl(1 - p^n - (1 - p)^n\bigr)\, p (1 - p)^2

    The first factor is the probability that a group of ``n`` holds both a success and a
    failure (a non-zero GRPO advantage); the second is the information gain, largest at
    ``p = 1/3``. ``V`` is zero at ``p = 0`` and ``p = 1`` and increasing, concave in ``n``.

    Args:
      n: rollout counts (``>= 0``); broadcast against ``p``.
      p: pass rates in [0, 1].

    Returns:
      ``V`` in float64, with the broadcast shape of ``n`` and ``p``.

    Example:
      >>> [round(float(v), 6) for v in knapsack_value([1, 2, 8], 1 / 3)]
      [0.0, 0.065844, 0.142345]

    Reference: Knapsack-RL, arXiv 2509.25849; [Rules: the value][rules-knapsack-value].
    """
    p_arr = _rates_in_unit_interval(p, "p")
    n_arr = as_real_array(n, "n")
    if not ((n_arr >= 0) & (n_arr < np.inf)).all():
        raise ValueError("n must be finite and non-negative")
    q = 1.0 - p_arr
    with np.errstate(under="ignore"):
        return (1.0 - p_arr**n_arr - q**n_arr) * p_arr * q**2


def _rates_in_unit_interval(p: ArrayLike, name: str) -> FloatArray:
    arr = as_real_array(p, name)
    if not ((arr >= 0.0) & (arr <= 1.0)).all():
        raise ValueError(f"{name} must lie in [0, 1] (no NaN)")
    return arr


def _value_table(p: FloatArray, n_from: int, n_to: int) -> FloatArray:
    """``V(n, p_i)`` for ``n = n_from .. n_to`` (rows: ``p``), as the reference rounds it.

    Pass rates enter as float32, as in the reference. Powers are running products, so the
    table is the same on every machine (no libm or SIMD ``pow``).
    """
    p32 = p.astype(np.float32).astype(np.float64)
    q32 = 1.0 - p32
    width = n_to - n_from + 1
    if width <= 0:
        return np.zeros((p.size, 0))
    p_pow = np.cumprod(np.broadcast_to(p32[:, None], (p.size, n_to)), axis=1)[:, n_from - 1 :]
    q_pow = np.cumprod(np.broadcast_to(q32[:, None], (p.size, n_to)), axis=1)[:, n_from - 1 :]
    return (1.0 - p_pow - q_pow) * p32[:, None] * (q32 * q32)[:, None]


def knapsack_gains(pass_rates: ArrayLike, n_low: int, n_up: int) -> FloatArray:
    r"""The marginal gains of Knapsack-RL's knapsack: zero extra rollouts score 0.

    .. math::

        g_{i,1} = V(n_{low} + 1, p_i), \qquad
        g_{i,k} = V(n_{low} + k, p_i) - V(n_{low} + k - 1, p_i), \quad 2 \le k \le K

    with ``K = n_up - n_low``. The reference scores ``k`` extra rollouts
    ``V(n_low + k)`` for ``k >= 1`` but ``0`` for ``k = 0`` (not ``V(n_low)``), hence
    the first column. Each row is non-increasing (``g_1 >= V(n_low+1) - V(n_low)``), so
    the greedy of :mod:`coba_rl.solvers` is exact on this table.

    Args:
      pass_rates: shape ``(M,)``, in (0, 1) for a meaningful table.
      n_low, n_up: the floor and the knapsack cap, ``1 <= n_low <= n_up``.

    Returns:
      float64 gains of shape ``(M, n_up - n_low)``, in ``solvers`` layout.

    Example:
      >>> g = knapsack_gains([0.5], n_low=2, n_up=5)
      >>> [round(float(x), 6) for x in g[0]]
      [0.09375, 0.015625, 0.007812]

    Complexity: O(M n_up).

    Reference: Knapsack-RL, arXiv 2509.25849; [Rules: the knapsack][rules-knapsack-knapsack].
    """
    n_low, n_up = check_bounds(n_low, n_up)
    p = _rates_in_unit_interval(pass_rates, "pass_rates").reshape(-1)
    return _gains_from_values(_value_table(p, n_low + 1, n_up))


def _gains_from_values(values: FloatArray) -> FloatArray:
    gains: FloatArray = values.copy()
    gains[:, 1:] = values[:, 1:] - values[:, :-1]
    return gains


# -- the allocation rule ---------------------------------------------------------------------


class _Rule(NamedTuple):
    counts: IntArray
    fallback: bool  # whether rule 3 moved budget to the candidates


def _spread(counts: IntArray, idx: IntArray, amount: int) -> None:
    """``amount`` evenly over ``idx``, the first ones one more (no cap)."""
    per, rem = divmod(amount, idx.size)
    counts[idx] += per
    counts[idx[:rem]] += 1


def _knapsack_rule(
    p: FloatArray, budget: int, cfg: KnapsackConfig, unseen_n: int, use_fallback: bool
) -> _Rule:
    """The released rules on clean input; the floors must fit in ``budget``."""
    m = p.size
    unseen = np.isnan(p)
    effective = ~unseen & (p > 0.0) & (p < 1.0)
    counts = np.where(unseen, unseen_n, cfg.n_low).astype(np.int64)  # rule 1
    spare = budget - int(counts.sum())
    eff = np.flatnonzero(effective)
    # The reference keeps its pass rates in a zero-initialised array, so prompts without
    # an estimate sit among the p = 0 prompts from here on.
    zero = np.flatnonzero(unseen | (p == 0.0))
    if eff.size == 0:  # rule 2
        if spare > 0:
            if zero.size:
                _spread(counts, zero, spare)
            else:
                counts = even_split(budget, m)
        return _Rule(counts, False)
    fallback = False
    if use_fallback:  # rule 3
        p_eff = p[eff]
        base = np.maximum(p_eff, 1.0 - p_eff)
        with np.errstate(divide="ignore"):
            need = math.log(1.0 - cfg.confidence) / np.log(base)
        # max(p, 1 - p) rounds to 1 when p is within an ulp of 0 or 1; the need tends to
        # +inf there (log(1) = 0 would give -inf and a garbage int): cap it at n_up.
        need = np.where(base < 1.0, need, np.inf)
        need32 = need.astype(np.float32).astype(np.float64)  # the reference stores float32
        estimated = int(np.minimum(need32, float(cfg.n_up)).astype(np.int64).sum())
        candidates = zero if zero.size else np.flatnonzero(~effective)
        # The reference divides by zero here when every prompt is effective; we skip.
        if estimated < spare and candidates.size:
            _spread(counts, candidates, spare - estimated)
            spare = estimated
            fallback = True
    if spare > 0:  # rule 4: the knapsack, solved by the exact greedy
        k = cfg.n_up - cfg.n_low
        uniq, inverse = np.unique(p[eff], return_inverse=True)
        gains_u = knapsack_gains(uniq, cfg.n_low, cfg.n_up)
        used = min(spare, eff.size * k)
        extra = _greedy_extra_grouped(_running_min(gains_u), inverse.reshape(-1), used)
        counts[eff] += extra
        if spare > used:  # rule 5: the uncapped leftover
            _spread(counts, eff, spare - used)
    return _Rule(counts, fallback)


def knapsack_allocate(
    batch_stats: BatchStats, budget: int, config: KnapsackConfig | Mapping[str, Any] | None = None
) -> Allocation:
    r"""Split ``budget`` rollouts over a batch with Knapsack-RL's released rules.

    .. math::

        \max_{k} \sum_{i:\,0<p_i<1} V(n_{low} + k_i, p_i)\,[k_i > 0]
        \quad \text{s.t.} \quad \sum_i k_i = R,\ 0 \le k_i \le n_{up} - n_{low}

    where ``R`` is the budget left after the floors and the fallback
    ([Rules: Knapsack-RL][rules-knapsack]):

    1. floors: a prompt without an estimate (``NaN``) gets ``unseen_n``, every other
       prompt ``n_low``;
    2. no prompt with ``0 < p < 1``: the spare budget goes evenly to the ``p = 0`` (and
       unestimated) prompts, else every prompt gets the even split;
    3. fallback: when ``sum_i int(min(n_up, ln(1-confidence) / ln(max(p, 1-p))))``
       over the effective prompts is below the spare budget, the excess goes evenly to
       the ``p = 0`` (and unestimated) prompts, else to the non-effective prompts;
       skipped when there are none (the reference crashes there);
    4. the knapsack above, solved exactly by the greedy on :func:`knapsack_gains`;
    5. what the caps leave goes evenly to the effective prompts, beyond ``n_up``.

    Evenly always means ``amount // count`` each, the first ones one more.

    Args:
      batch_stats: the pass rates; ``NaN`` means no estimate. ``failure_rate`` is unused.
      budget: the total ``B``, a non-negative int. Below ``M * n_low``, or below the
        floors of rule 1, the batch gets the even split with a :class:`BudgetWarning`.
      config: the constants; defaults to :class:`KnapsackConfig` ``()``. A plain dict of
        its fields is validated into one.

    Returns:
      An :class:`Allocation` with ``method="knapsack"`` (``"even_split"`` in the cases
      above) whose ``counts`` sum to exactly ``budget``; ``alpha``, ``beta``, ``tau`` and
      ``failure_rate`` are ``None``.

    Raises:
      ValueError: a negative budget, or a positive one with no prompts; a config dict
        with an unknown key or a bad value.
      TypeError: ``batch_stats`` not a :class:`BatchStats`, ``config`` another type
        (a :class:`coba_rl.CoBAConfig` included), a non-integer budget.

    Example:
      >>> stats = BatchStats(pass_rates=[0.0, 0.25, 0.5, 0.75, 1.0, float("nan")])
      >>> a = knapsack_allocate(stats, 6 * 8, KnapsackConfig(n_up=16))
      >>> a.counts.tolist(), int(a.counts.sum())
      ([8, 11, 7, 7, 2, 13], 48)

    Complexity: O(M log M + U n_up) for ``U`` distinct pass rates, whatever the budget
    (the reference's DP costs O(M R (n_up - n_low))).

    Reference: Knapsack-RL, arXiv 2509.25849 (``sampling_budget_by_knapsack``);
    [Rules: Knapsack-RL][rules-knapsack].
    """
    check_instance(batch_stats, BatchStats, "batch_stats")
    cfg = check_config(config, KnapsackConfig)
    return _allocate(batch_stats.pass_rates, budget, cfg)


def _allocate(p: FloatArray, budget: Any, cfg: KnapsackConfig) -> Allocation:
    """:func:`knapsack_allocate` on validated pass rates (the stateful allocator's path)."""
    m = int(p.size)
    # Knapsack-RL has no upper limit on the budget: rule 5 spends any excess.
    b = check_budget(budget, m, cfg.n_low, sys.maxsize)
    n_unseen = int(np.isnan(p).sum())
    common: dict[str, Any] = {
        "budget": b,
        "pass_rates": _owned(p),  # only read from here on
        "n_unseen": n_unseen,
        "n_low": cfg.n_low,
        "n_up": cfg.n_up,
    }
    if m == 0 or b < m * cfg.n_low:
        return Allocation(counts=_owned(even_split(b, m)), method="even_split", **common)
    unseen_n = cfg.unseen_n if cfg.unseen_n is not None else b // m
    floors = n_unseen * unseen_n + (m - n_unseen) * cfg.n_low
    if floors > b:
        warnings.warn(
            f"budget {b} is below the floors of the batch ({n_unseen} unseen prompts * "
            f"unseen_n {unseen_n} + {m - n_unseen} * n_low {cfg.n_low} = {floors}); "
            "using the even split (budget // M each, remainder to the first prompts)",
            BudgetWarning,
            stacklevel=3,
        )
        return Allocation(counts=_owned(even_split(b, m)), method="even_split", **common)
    rule = _knapsack_rule(p, b, cfg, unseen_n, cfg.fallback)
    return Allocation(counts=_owned(rule.counts), method="knapsack", **common)


# -- the stateful estimator -------------------------------------------------------------------


class RolloutHistory(Lockable):
    """Knapsack-RL's per-prompt estimate, from rollout-level history in flat arrays.

    A prompt counts as estimated once it has at least ``min_rollouts`` recorded rollouts.
    Its pass rate is the mean of its last visit (training step) when that visit had at
    least ``recent`` rollouts, else the mean of its last ``recent`` rollouts:

    .. math::

        \\hat p = \\begin{cases} \\bar r_{\\text{last visit}} & n_{\\text{last}} \\ge K \\\\
                  \\frac{1}{\\min(n, K)} \\sum_{\\text{last } \\min(n, K)} r & \\text{otherwise}
                  \\end{cases}

    Storage per prompt: a ring of the last ``K = recent`` outcomes (int8), the rollout
    count and the last visit's size, plus a :class:`coba_rl.PassRateTracker` (window 1)
    that keys the ids and holds the last visit's mean. Lookups never add ids. Safe to
    share between threads: every public method holds the history's lock.

    Args:
      recent: ``K``, the length of the ring (``>= 1``).

    Example:
      >>> h = RolloutHistory(recent=4)
      >>> h.record([5] * 3 + [6] * 8, [1.0, 0.0, 0.0] + [1.0] * 2 + [0.0] * 6)
      >>> h.record([5] * 2, [1.0, 1.0])
      >>> h.pass_rates([5, 6, 7], min_rollouts=4).tolist()  # 5: last 4 = 0, 0, 1, 1
      [0.5, 0.25, nan]
    """

    def __init__(self, recent: int = 16) -> None:
        if (
            isinstance(recent, bool)
            or not isinstance(recent, (int, np.integer))
            or not 1 <= recent <= MAX_N_UP
        ):
            raise ValueError(f"recent must be an int >= 1 and <= {MAX_N_UP}, got {recent!r}")
        self.recent = int(recent)
        self._index = PassRateTracker(window=1)
        self._ring: NDArray[np.int8] = np.zeros((0, self.recent), dtype=np.int8)
        self._n_rollouts: IntArray = np.zeros(0, dtype=np.int64)
        self._last_n: IntArray = np.zeros(0, dtype=np.int64)

    def __repr__(self) -> str:
        return f"RolloutHistory(recent={self.recent}, prompts={len(self)})"

    def __len__(self) -> int:
        return len(self._index)

    @synchronized
    def record(
        self,
        prompt_ids: Any,
        rewards: Any,
        success_reward: float = 1.0,
        success_threshold: float | None = None,
    ) -> None:
        """Record one visit's rollouts: one (id, reward) pair per rollout, in order.

        A rollout succeeds when its reward equals ``success_reward``, or is at least
        ``success_threshold`` when that is set (see :mod:`coba_rl.rewards`).

        Raises ``ValueError`` if ``rewards`` is not as long as ``prompt_ids`` or not finite.

        Complexity: O(n log n + N) for n rollouts and N tracked prompts.
        """
        ids = as_id_array(prompt_ids)
        r = check_rewards(rewards, ids.size)
        self._index.record(ids, r, success_reward, success_threshold)
        if ids.size == 0:
            return
        grow = len(self._index) - self._n_rollouts.size
        if grow:
            self._ring = np.concatenate([self._ring, np.zeros((grow, self.recent), np.int8)])
            self._n_rollouts = np.concatenate([self._n_rollouts, np.zeros(grow, np.int64)])
            self._last_n = np.concatenate([self._last_n, np.zeros(grow, np.int64)])
        slots = self._index.lookup(ids)
        by_slot = np.argsort(slots, kind="stable")  # each prompt's rollouts, in call order
        s = slots[by_slot]
        starts = np.flatnonzero(np.concatenate(([True], s[1:] != s[:-1])))
        sizes = np.diff(np.append(starts, s.size))
        rank = np.arange(s.size) - np.repeat(starts, sizes)
        visit = np.repeat(sizes, sizes)
        keep = rank >= visit - self.recent  # only the last `recent` of a visit survive
        pos = (self._n_rollouts[s] + rank) % self.recent
        outcome = success_mask(r[by_slot], success_reward, success_threshold).astype(np.int8)
        self._ring[s[keep], pos[keep]] = outcome[keep]
        visited = s[starts]
        self._n_rollouts[visited] += sizes
        self._last_n[visited] = sizes

    @synchronized
    def pass_rates(self, prompt_ids: Any, min_rollouts: int = 8) -> FloatArray:
        """Each id's estimate, ``NaN`` where it has fewer than ``min_rollouts`` rollouts.

        Complexity: O(n log N + n K) for n ids; never grows the state.
        """
        ids = as_id_array(prompt_ids)
        slots = self._index.lookup(ids)
        last_visit = self._index.pass_rates(ids)
        out = np.full(ids.size, np.nan)
        ok = slots >= 0
        s = slots[ok]
        n = self._n_rollouts[s]
        window = np.minimum(n, self.recent)
        recent_mean = self._ring[s].sum(axis=1) / np.maximum(window, 1)
        rate = np.where(self._last_n[s] >= self.recent, last_visit[ok], recent_mean)
        out[ok] = np.where(n >= min_rollouts, rate, np.nan)
        return out

    @synchronized
    def rollout_counts(self, prompt_ids: Any) -> IntArray:
        """How many rollouts each id has on record (0 if never seen)."""
        slots = self._index.lookup(prompt_ids)
        return np.where(slots >= 0, self._n_rollouts[np.maximum(slots, 0)], 0).astype(np.int64)

    @synchronized
    def state_dict(self) -> dict[str, Any]:
        """JSON-ready data (arrays stored compactly) that :meth:`from_state_dict` restores."""
        return {
            "recent": self.recent,
            "index": self._index.state_dict(),
            "ring": encode_ints(self._ring),
            "rollouts": encode_ints(self._n_rollouts),
            "last_visit": encode_ints(self._last_n),
        }

    @classmethod
    def from_state_dict(cls, state: Any) -> RolloutHistory:
        """Rebuild from :meth:`state_dict` output, validating every field.

        Raises:
          ValueError: a missing field, a wrong shape or an inconsistent value.
        """
        if not isinstance(state, dict):
            raise ValueError(f"history state must be a dict, got {type(state).__name__}")
        expected = {"recent", "index", "ring", "rollouts", "last_visit"}
        if set(state) != expected:
            raise ValueError(
                f"history state has fields {sorted(state)}, expected {sorted(expected)}"
            )
        recent = state["recent"]
        if isinstance(recent, bool) or not isinstance(recent, int) or recent < 1:
            raise ValueError(f"history state: recent must be an int >= 1, got {recent!r}")
        h = cls(recent)
        index = PassRateTracker.from_state_dict(state["index"])
        if index.window != 1:
            raise ValueError(f"history state: index window must be 1, got {index.window}")
        n = len(index)

        def int_array(name: str, shape: tuple[int, ...]) -> IntArray:
            arr = decode_ints(state[name], f"history state: {name}")
            arr = arr.reshape(shape) if arr.size == 0 else arr
            if arr.shape != shape:
                raise ValueError(f"history state: {name} has shape {arr.shape}, expected {shape}")
            if (np.abs(arr) > MAX_COUNT).any():
                raise ValueError(f"history state: {name} has entries above 2**53")
            return arr

        ring = int_array("ring", (n, recent))
        if not ((ring == 0) | (ring == 1)).all():
            raise ValueError("history state: ring outcomes must be 0 or 1")
        h._index = index
        h._ring = ring.astype(np.int8)
        h._n_rollouts = int_array("rollouts", (n,))
        h._last_n = int_array("last_visit", (n,))
        try:
            h._check()
        except AssertionError as exc:
            raise ValueError(f"history state is inconsistent: {exc}") from None
        return h

    @synchronized
    def _check(self) -> None:
        """Raise ``AssertionError`` if an invariant fails (cheap; stress tests run it).

        Besides shapes and ranges, the parts must agree: the index (window 1) holds each
        prompt's last visit, so its rollouts equal ``last_visit``; every visit had at least
        one rollout; and the ring's newest ``min(last_visit, recent)`` outcomes are that
        visit's last ones, so they hold its successes (all of them when the visit fit).
        """
        self._index._check()
        n = len(self._index)
        _require(self._ring.shape == (n, self.recent), "ring shape")
        _require(self._n_rollouts.shape == (n,), "rollouts shape")
        _require(self._last_n.shape == (n,), "last_visit shape")
        _require(self._ring.dtype == np.int8, "ring outcomes must be 0 or 1")
        _require(bool(((self._ring == 0) | (self._ring == 1)).all()), "ring outcomes must be 0/1")
        _require(bool((self._last_n >= 1).all()), "every tracked prompt has a visit")
        _require(bool((self._last_n <= self._n_rollouts).all()), "last visit exceeds rollouts")
        filled = np.minimum(self._n_rollouts, self.recent)
        _require(
            bool((self._ring.sum(axis=1) <= filled).all()), "more successes than recent rollouts"
        )
        unfilled = np.arange(self.recent)[None, :] >= filled[:, None]
        _require(not bool(self._ring[unfilled].any()), "unfilled ring entries must be 0")
        if n == 0:
            return
        visits = self._index._appearances
        last_total, last_succ = self._index._total[:, 0], self._index._succ[:, 0]
        _require(
            np.array_equal(last_total, self._last_n),
            "last_visit sizes disagree with the index's last visit",
        )
        _require(
            bool((self._n_rollouts >= self._last_n + visits - 1).all()),
            "fewer rollouts than visits (each visit has at least one rollout)",
        )
        # age 0 = the newest outcome; the last visit owns the newest min(last_n, K) slots
        newest = ((self._n_rollouts - 1) % self.recent).astype(np.int32)
        age = (newest[:, None] - np.arange(self.recent, dtype=np.int32)[None, :]) % self.recent
        own = age < np.minimum(self._last_n, self.recent)[:, None]
        in_ring = (self._ring * own).sum(axis=1)
        lost = np.maximum(self._last_n - self.recent, 0)  # outcomes the ring dropped
        _require(
            bool(((in_ring <= last_succ) & (in_ring >= last_succ - lost)).all()),
            "ring outcomes of the last visit disagree with its successes",
        )


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


class KnapsackRLAllocator(Persistent[KnapsackConfig]):
    """Knapsack-RL in a training loop: rollout history in, :func:`knapsack_allocate` out.

    Implements :class:`coba_rl.Allocator`. Prompts with fewer than
    ``config.min_rollouts`` recorded rollouts have no estimate (they get ``unseen_n``,
    by default ``budget // M``); see :class:`RolloutHistory` for the estimate.

    Safe to share between threads: ``allocate``, ``update``, ``state_dict``,
    ``load_state_dict`` and ``save`` hold the allocator's lock.

    Args:
      config: the constants; defaults to :class:`KnapsackConfig` ``()``. A plain dict of
        its fields is validated into one; another type raises ``TypeError``.

    Example:
      >>> alloc = KnapsackRLAllocator(KnapsackConfig(n_up=16))
      >>> alloc.allocate([10, 11, 12], 24).counts.tolist()  # nothing estimated yet
      [8, 8, 8]
      >>> ids = [10] * 8 + [11] * 8 + [12] * 8
      >>> alloc.update(ids, [1.0] * 2 + [0.0] * 6 + [1.0] * 8 + [0.0] * 8)
      >>> alloc.allocate([10, 11, 12], 24).counts.tolist()  # p = 0.25, 1, 0: fallback
      [10, 2, 12]
    """

    def __init__(self, config: KnapsackConfig | Mapping[str, Any] | None = None) -> None:
        self.config = check_config(config, KnapsackConfig)
        self._history = RolloutHistory(self.config.recent_rollouts)
        self._step = 0
        self._reward_warned = False

    @synchronized
    def __repr__(self) -> str:
        return (
            f"KnapsackRLAllocator(step={self._step}, prompts={len(self._history)}, "
            f"config={config_summary(self.config)})"
        )

    @property
    def step(self) -> int:
        """How many times :meth:`update` was called."""
        return self._step

    @property
    def history(self) -> RolloutHistory:
        """The rollout history (read it, do not modify it)."""
        return self._history

    def pass_rates(self, prompt_ids: Any) -> FloatArray:
        """Each id's estimate (``NaN`` if not yet estimated); does not grow the state."""
        return self._history.pass_rates(prompt_ids, self.config.min_rollouts)

    @synchronized
    def allocate(
        self, prompt_ids: Any, budget: int | None, token_budget: float | None = None
    ) -> Allocation:
        """Rollout counts for a batch of prompts, in the order of ``prompt_ids``.

        Args:
          prompt_ids: one stable id per prompt (ints or strings, no duplicates).
          budget: total rollouts ``B >= 0``.

        Returns:
          An :class:`Allocation` (``method="knapsack"``) summing to exactly ``budget``.

        Raises:
          ValueError: duplicate ids, a negative budget, or a token budget (this
            allocator counts rollouts only).
          TypeError: ids that are not all ints or all strings, a non-integer budget.

        Complexity: O(M log N + M log M + U n_up).
        """
        budget = rollouts_only(type(self).__name__, budget, token_budget)
        ids = as_id_array(prompt_ids)
        check_unique_ids(ids)
        return _allocate(self.pass_rates(ids), budget, self.config)

    @synchronized
    def update(self, prompt_ids: Any, rewards: Any, lengths: Any = None) -> None:
        """Record one training step: one (prompt id, reward) pair per rollout.

        ``lengths`` (response lengths, one per rollout) are checked and then ignored:
        this allocator counts rollouts only (it accepts them so that every
        :class:`coba_rl.Allocator` is driven the same way).

        Raises:
          ValueError: lengths differ, or a reward is NaN or infinite.
          TypeError: ids that are not all ints or all strings.
        """
        ids = as_id_array(prompt_ids)
        r = check_rewards(rewards, ids.size)
        if lengths is not None:
            check_lengths(lengths, ids.size)
        cfg = self.config
        self._history.record(ids, r, cfg.success_reward, cfg.success_threshold)
        if not self._reward_warned:
            self._reward_warned = warn_graded_rewards(r, cfg.success_reward, cfg.success_threshold)
        self._step += 1

    @synchronized
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume exactly: the config, the step and the history."""
        body = {"step": self._step, "history": self._history.state_dict()}
        return make_envelope(type(self).__name__, self.config, body)

    @classmethod
    def _parse_state(cls, state: Any) -> KnapsackRLAllocator:
        state = open_envelope(state, cls.__name__, ("step", "history"))
        config = parse_config(state, KnapsackConfig)
        new = cls(config)
        new._step = parse_step(state["step"])
        history = RolloutHistory.from_state_dict(state["history"])
        if history.recent != config.recent_rollouts:
            raise ValueError(
                f"allocator state: history keeps {history.recent} recent rollouts, config "
                f"says {config.recent_rollouts}"
            )
        visits = int(history._index._appearances.max()) if len(history) else 0
        if visits > new._step:
            raise ValueError(
                f"allocator state: the history is ahead of the step: a prompt was visited "
                f"{visits} times, but step is {new._step}"
            )
        new._history = history
        return new

    @synchronized
    def _check(self) -> None:
        """Raise ``AssertionError`` if an invariant fails (used by the stress tests)."""
        self._history._check()
        if self._history.recent != self.config.recent_rollouts:
            raise AssertionError("history ring length != config.recent_rollouts")
        if len(self._history) and int(self._history._index._appearances.max()) > self._step:
            raise AssertionError("a prompt was visited more often than update was called")
