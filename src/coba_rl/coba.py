"""CoBA-RL allocation for one batch: the paper's Algorithm 1 and the released variant.

:func:`allocate` is the stateless entry point: pass rates and a failure rate in, counts
out. :class:`coba_rl.CoBAAllocator` wraps it with a pass-rate tracker for use in a
training loop.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray

from coba_rl._validation import check_budget, check_config, check_instance, even_split
from coba_rl.config import CoBAConfig
from coba_rl.solvers import _capability_extra
from coba_rl.types import Allocation, BatchStats, _owned
from coba_rl.value import _adaptive_tau, beta_shape

__all__ = ["allocate", "initial_shape"]

IntArray = NDArray[np.int64]
FloatArray = NDArray[np.float64]

#: Release-variant bucket edges: hard below, easy above (p in between is "explore").
HARD_BELOW = 0.05
EASY_ABOVE = 0.99
#: Release-variant explore share when the explore bucket is small or empty.
MIN_EXPLORE_RATIO = 0.6


def initial_shape(config: CoBAConfig) -> tuple[float, float]:
    """The Beta shape before the first update: ``(kappa - 2, 2)``.

    >>> initial_shape(CoBAConfig())
    (9.0, 2.0)
    """
    return config.kappa - 2.0, 2.0


def allocate(
    stats: BatchStats, budget: int, config: CoBAConfig | Mapping[str, Any] | None = None
) -> Allocation:
    """Split ``budget`` rollouts over a batch of prompts with CoBA-RL.

    The Beta shape comes from ``stats.failure_rate`` (eq. 6-7); each prompt's value is
    ``V(n, p)`` (eq. 9); the budget is spent by the greedy of Algorithm 1
    (``variant="paper"``) or by the authors' released rule (``variant="release"``).

    Edge cases ([Rules: budget below the floor][rules-even-split], [unseen][rules-unseen]):

    * every prompt unseen (all ``NaN``): the even split;
    * ``budget < M * n_low``: the even split, with a :class:`BudgetWarning`;
    * otherwise unseen prompts count as ``config.unseen_pass_rate`` (0.5).

    Args:
      stats: the batch's pass rates and (optionally) smoothed failure rate.
      budget: the total number of rollouts ``B``; ``0 <= B <= M * n_up``.
      config: the allocator constants; defaults to :class:`CoBAConfig` ``()``. A plain
        dict of its fields (a Hydra or YAML config) is validated into one.

    Returns:
      An :class:`Allocation` whose ``counts`` sum to exactly ``budget``.

    Raises:
      ValueError: budget negative or above ``M * n_up``, or positive with no prompts; a
        config dict with an unknown key or a bad value.
      TypeError: ``stats`` not a :class:`BatchStats`, ``config`` another type (another
        allocator's config included), a non-integer budget.

    Example:
      >>> stats = BatchStats(pass_rates=[0.1, 0.5, 0.9, float("nan")], failure_rate=0.6)
      >>> a = allocate(stats, 32)
      >>> a.counts.tolist(), int(a.counts.sum())
      ([2, 14, 2, 14], 32)

    Complexity: O(M log M) time and O(M) memory, whatever the budget and ``n_up``.

    Reference: arXiv 2602.03048, Algorithm 1; [Rules: the paper variant][rules-paper-variant]
    and [the release variant][rules-release-variant].
    """
    check_instance(stats, BatchStats, "stats")
    cfg = check_config(config, CoBAConfig)
    f_bar = stats.resolved_failure_rate()
    if f_bar is None:
        alpha, beta = initial_shape(cfg)
    else:
        a, b = beta_shape(f_bar, cfg.kappa, cfg.gamma)
        alpha, beta = float(a), float(b)
    return allocate_with_shape(stats.pass_rates, budget, cfg, alpha, beta, f_bar)


def allocate_with_shape(
    pass_rates: FloatArray,
    budget: int,
    cfg: CoBAConfig,
    alpha: float,
    beta: float,
    failure_rate: float | None = None,
) -> Allocation:
    """:func:`allocate` with the Beta shape given (the stateful allocator's path).

    ``pass_rates`` must already be validated (1-D, in [0, 1] or NaN).
    """
    m = int(pass_rates.size)
    b = check_budget(budget, m, cfg.n_low, cfg.n_up)
    unseen = np.isnan(pass_rates)
    n_unseen = int(unseen.sum())
    common: dict[str, Any] = {
        "budget": b,
        "alpha": alpha,
        "beta": beta,
        "failure_rate": failure_rate,
        "n_low": cfg.n_low,
        "n_up": cfg.n_up,
    }
    if m == 0 or n_unseen == m or b < m * cfg.n_low:
        return Allocation(
            counts=_owned(even_split(b, m)),
            pass_rates=_owned(pass_rates),
            method="even_split",
            n_unseen=n_unseen,
            **common,
        )
    p = np.where(unseen, cfg.unseen_pass_rate, pass_rates)
    tau: float | None
    if cfg.variant == "paper":
        counts, tau = _paper_counts(p, b, cfg, alpha, beta)
    else:
        counts, tau = _release_counts(p, b, cfg, alpha, beta)
    return Allocation(
        counts=_owned(counts),
        tau=tau,
        pass_rates=_owned(p),
        method="greedy",
        n_unseen=n_unseen,
        **common,
    )


def _tau(p: FloatArray, cfg: CoBAConfig) -> float:
    if cfg.tau == "adaptive":
        return _adaptive_tau(p, cfg.tau_min, cfg.tau_max, cfg.var_max, cfg.smoothing)
    return float(cfg.tau)


def _greedy_counts(
    p: FloatArray, spare: int, cfg: CoBAConfig, alpha: float, beta: float
) -> tuple[IntArray, float]:
    """Algorithm 1 on pass rates ``p`` with ``spare`` units above ``n_low`` (capped).

    The threshold solver: the counts of :func:`coba_rl.solvers.greedy_heap` on the gain
    table, in O(M log M) time and O(M) memory without building the table.
    """
    tau = _tau(p, cfg)
    extra = _capability_extra(p, alpha, beta, tau, cfg.n_low, cfg.n_up, cfg.smoothing, spare)
    return cfg.n_low + extra, tau


def _paper_counts(
    p: FloatArray, budget: int, cfg: CoBAConfig, alpha: float, beta: float
) -> tuple[IntArray, float]:
    return _greedy_counts(p, budget - p.size * cfg.n_low, cfg, alpha, beta)


def _release_counts(
    p: FloatArray, budget: int, cfg: CoBAConfig, alpha: float, beta: float
) -> tuple[IntArray, float | None]:
    """The authors' released ``BetaAllocator.allocate`` ([Rules][rules-release-variant])."""
    m = p.size
    n_low, n_up = cfg.n_low, cfg.n_up
    counts = np.full(m, n_low, dtype=np.int64)
    remaining = budget - m * n_low
    tau: float | None = None  # the explore greedy may not run
    if remaining == 0:
        return counts, tau
    hard = np.flatnonzero(p < HARD_BELOW)
    easy = np.flatnonzero(p > EASY_ABOVE)
    explore = np.flatnonzero((p >= HARD_BELOW) & (p <= EASY_ABOVE))
    n_explore = explore.size
    if n_explore > m / 2:
        ratio = cfg.exploration_budget_ratio
    elif n_explore > 0:
        ratio = MIN_EXPLORE_RATIO + (cfg.exploration_budget_ratio - MIN_EXPLORE_RATIO) * (
            n_explore / m * 2
        )
    else:
        ratio = MIN_EXPLORE_RATIO
    explore_budget = int(remaining * ratio)
    if n_explore > 0 and explore_budget > 0:
        capacity = n_explore * (n_up - n_low)
        sub, tau = _greedy_counts(p[explore], min(explore_budget, capacity), cfg, alpha, beta)
        counts[explore] = sub
        remaining -= int(sub.sum()) - n_explore * n_low
    for bucket in (hard, explore, easy):
        if remaining <= 0:
            break
        if bucket.size:
            remaining = _spread_leftover(remaining, bucket, p, counts, cfg)
    # Documented rule beyond the reference: the reference can leave budget unspent when
    # the caps stop its single spreading pass. We keep spreading evenly, first prompts
    # first, over every prompt still below n_up until the budget is spent exactly.
    while remaining > 0:
        remaining = _spread_uniform(remaining, np.arange(m), counts, n_up)
    return counts, tau


def _spread_uniform(remaining: int, idx: IntArray, counts: IntArray, n_up: int) -> int:
    """Even spread over ``idx`` below the cap, first ones first, each capped by its room."""
    avail = idx[counts[idx] < n_up]
    if avail.size == 0:
        return remaining
    per, rem = divmod(remaining, avail.size)
    share = np.full(avail.size, per, dtype=np.int64)
    share[:rem] += 1
    give = np.minimum(share, n_up - counts[avail])
    counts[avail] += give
    return remaining - int(give.sum())


def _spread_leftover(
    remaining: int, idx: IntArray, p: FloatArray, counts: IntArray, cfg: CoBAConfig
) -> int:
    """The reference's ``_allocate_remaining_budget`` for one bucket."""
    if cfg.fallback == "uniform":
        return _spread_uniform(remaining, idx, counts, cfg.n_up)
    avail = idx[counts[idx] < cfg.n_up]
    if avail.size == 0:
        return remaining
    p_s = np.clip(p[avail], 1e-6, 1.0 - 1e-6)
    one_minus = 1.0 - p_s
    if cfg.weight_alpha == 1.0:
        weights = one_minus.tolist()
    else:
        weights = [float(np.float64(x) ** cfg.weight_alpha) for x in one_minus]
    # The reference sums with Python's left-to-right sum().
    total_weight = 0.0
    for w in weights:
        total_weight += w
    if total_weight == 0:
        return _spread_uniform(remaining, idx, counts, cfg.n_up)
    n_up = cfg.n_up
    cur = counts[avail].tolist()
    for j, w in enumerate(weights):
        give = min(int(remaining * w / total_weight), n_up - cur[j])
        cur[j] += give
        remaining -= give
    counts[avail] = cur
    if remaining > 0:
        remaining = _spread_uniform(remaining, avail, counts, n_up)
    return remaining
