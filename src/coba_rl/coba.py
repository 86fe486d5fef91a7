"""CoBA-RL allocation for one batch: the paper's Algorithm 1 and the released variant.

:func:`allocate` is the stateless entry point: pass rates and a failure rate in, counts
out. :class:`coba_rl.CoBAAllocator` wraps it with a pass-rate tracker for use in a
training loop.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray

from coba_rl._validation import (
    check_budget,
    check_config,
    check_instance,
    check_token_budget,
    even_split,
)
from coba_rl.config import CoBAConfig
from coba_rl.solvers import _capability_extra
from coba_rl.tokens import resolve_costs, token_greedy_value
from coba_rl.types import Allocation, BatchStats, _owned, _trusted_allocation
from coba_rl.value import _adaptive_tau_clipped, _beta_shape_scalar

__all__ = ["allocate", "initial_shape"]

IntArray = NDArray[np.int64]
FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]

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
    stats: BatchStats,
    budget: int | None,
    config: CoBAConfig | Mapping[str, Any] | None = None,
    token_budget: float | None = None,
) -> Allocation:
    """Split ``budget`` rollouts (or ``token_budget`` tokens, or both) over a batch with CoBA-RL.

    The Beta shape comes from ``stats.failure_rate`` (eq. 6-7); each prompt's value is
    ``V(n, p)`` (eq. 9); the budget is spent by the greedy of Algorithm 1
    (``variant="paper"``) or by the authors' released rule (``variant="release"``).

    Edge cases ([Rules: budget below the floor][rules-even-split], [unseen][rules-unseen]):

    * every prompt unseen (all ``NaN``): the even split;
    * ``budget < M * n_low``: the even split, with a :class:`BudgetWarning`;
    * otherwise unseen prompts count as ``config.unseen_pass_rate`` (0.5).

    **Token budget** (``token_budget`` given; see [Token budgets][token-budget-guide]):
    the counts maximise the same value subject to ``sum_i c_i n_i <= token_budget``,
    with ``c_i`` = ``stats.costs`` (unknown costs: the mean of the known ones; none
    known: ``config.default_tokens_per_rollout``), the bounds ``[n_low, n_up]``, the
    straggler cap ``config.max_prompt_tokens`` and, if ``budget`` is given, at most
    ``budget`` rollouts. If the rollout-only allocation of ``budget`` fits in the token
    budget (and the straggler cap), it is returned unchanged. ``Allocation.budget`` is
    then the rollouts spent, and ``tokens``, ``binding`` and ``gap`` say what the
    tokens came to, which constraint stopped the allocation and how far from the
    optimum it may be. Paper variant only.

    Args:
      stats: the batch's pass rates, (optionally) smoothed failure rate and costs.
      budget: the total number of rollouts ``B``; ``0 <= B <= M * n_up``. ``None``
        only with a ``token_budget`` (no cap on rollouts beyond ``M * n_up``).
      config: the allocator constants; defaults to :class:`CoBAConfig` ``()``. A plain
        dict of its fields (a Hydra or YAML config) is validated into one.
      token_budget: ``T``, the expected tokens to spend, at least
        ``n_low * sum(costs)``. ``None`` (default): rollouts only, exactly as without it.

    Returns:
      An :class:`Allocation` whose ``counts`` sum to exactly its ``budget``.

    Raises:
      ValueError: budget negative or above ``M * n_up``, or positive with no prompts; a
        config dict with an unknown key or a bad value; a token budget that is negative,
        not finite or below the floor ``n_low * sum(costs)``; no known cost and no
        default; a token budget with ``variant="release"``.
      TypeError: ``stats`` not a :class:`BatchStats`, ``config`` another type (another
        allocator's config included), a non-integer budget, ``budget=None`` without a
        token budget.

    Example:
      >>> stats = BatchStats(pass_rates=[0.1, 0.5, 0.9, float("nan")], failure_rate=0.6)
      >>> a = allocate(stats, 32)
      >>> a.counts.tolist(), int(a.counts.sum())
      ([2, 14, 2, 14], 32)
      >>> long = BatchStats(pass_rates=[0.1, 0.5, 0.9, 0.5], costs=[900, 300, 100, 100])
      >>> t = allocate(long, 32, token_budget=6000)  # the 32 rollouts above need 7600
      >>> t.counts.tolist(), t.tokens, t.binding
      ([2, 6, 2, 22], 6000.0, 'tokens+rollouts')

    Complexity: O(M log M) time and O(M) memory, whatever the budget and ``n_up``. With
    a token budget, O(M log M) per ranking of units by gain per token, without the gain
    table (see :func:`coba_rl.tokens.token_greedy_value`).

    Reference: arXiv 2602.03048, Algorithm 1; [Rules: the paper variant][rules-paper-variant]
    and [the release variant][rules-release-variant].
    """
    check_instance(stats, BatchStats, "stats")
    cfg = check_config(config, CoBAConfig)
    if budget is None and token_budget is None:
        raise TypeError(
            "budget is None and no token_budget was given: pass a rollout budget, a "
            "token budget, or both"
        )
    f_bar = stats.resolved_failure_rate()
    if f_bar is None:
        alpha, beta = initial_shape(cfg)
    else:
        # f_bar is validated by BatchStats, kappa and gamma by CoBAConfig.
        alpha, beta = _beta_shape_scalar(f_bar, cfg.kappa, cfg.gamma)
    if token_budget is None:
        assert budget is not None
        return allocate_with_shape(stats.pass_rates, budget, cfg, alpha, beta, f_bar)
    return allocate_tokens_with_shape(
        stats.pass_rates, stats.costs, budget, token_budget, cfg, alpha, beta, f_bar
    )


def resolve_batch_costs(costs: FloatArray | None, m: int, cfg: CoBAConfig) -> FloatArray:
    """Per-prompt costs with unknowns filled ([Rules: token budgets][rules-token-budget])."""
    if costs is not None and costs.size and costs.ndim == 1:
        # Every cost known, finite and positive (the common case): nothing to fill.
        # NaN fails both tests.
        lo, hi = float(np.minimum.reduce(costs)), float(np.maximum.reduce(costs))
        if lo > 0 and math.isfinite(hi):
            if costs.flags.writeable:
                costs = costs.copy()
                costs.setflags(write=False)
            return costs
    raw = np.full(m, np.nan) if costs is None else costs
    if m and bool(np.isnan(raw).all()) and cfg.default_tokens_per_rollout is None:
        raise ValueError(
            "a token budget needs tokens per rollout, but no prompt of the batch has a known "
            "cost (costs None or all NaN); pass BatchStats(costs=...) (e.g. mean response "
            "lengths) or set CoBAConfig(default_tokens_per_rollout=...), e.g. to the "
            "response-length limit"
        )
    return resolve_costs(raw, default=cfg.default_tokens_per_rollout)


def straggler_caps(costs: FloatArray, cfg: CoBAConfig) -> IntArray | None:
    """Per-prompt caps so that ``c_i n_i <= max_prompt_tokens``, never below ``n_low``."""
    if cfg.max_prompt_tokens is None:
        return None
    q = np.floor(cfg.max_prompt_tokens / costs)
    q = np.where(q * costs > cfg.max_prompt_tokens, q - 1, q)  # rounding of the division
    return np.clip(q, cfg.n_low, cfg.n_up).astype(np.int64)


def _binding(
    counts: IntArray,
    costs: FloatArray,
    t: float,
    budget: int | None,
    caps: IntArray | None,
    n_up: int,
) -> str:
    open_ = counts < (n_up if caps is None else caps)
    n_open = int(np.count_nonzero(open_))
    if not n_open:
        return "none"
    left = t - float(costs @ counts)
    # Every open prompt's cost above the tokens left: the cheapest open one's is.
    c_open = costs if n_open == counts.size else costs[open_]
    tok = float(np.minimum.reduce(c_open)) > left
    rol = budget is not None and int(np.add.reduce(counts)) >= budget
    return "tokens+rollouts" if tok and rol else "tokens" if tok else "rollouts" if rol else "none"


def allocate_tokens_with_shape(
    pass_rates: FloatArray,
    costs: FloatArray | None,
    budget: int | None,
    token_budget: float,
    cfg: CoBAConfig,
    alpha: float,
    beta: float,
    failure_rate: float | None = None,
) -> Allocation:
    """:func:`allocate` under a token budget, with the Beta shape given.

    ``pass_rates`` and ``costs`` must already be validated (as :class:`BatchStats` does).
    """
    t = check_token_budget(token_budget)
    if cfg.variant != "paper":
        raise ValueError(
            "token budgets need variant='paper': the release variant spreads its buckets' "
            "rollouts by count, not by value per token"
        )
    m = int(pass_rates.size)
    c = resolve_batch_costs(costs, m, cfg)
    caps = straggler_caps(c, cfg)
    unseen, n_unseen = _unseen(pass_rates)
    common: dict[str, Any] = {
        "alpha": alpha,
        "beta": beta,
        "failure_rate": failure_rate,
        "n_low": cfg.n_low,
        "n_up": cfg.n_up,
        "n_unseen": n_unseen,
        "token_budget": t,
        "costs": c,
    }
    b = None if budget is None else check_budget(budget, m, cfg.n_low, cfg.n_up)

    def result(
        counts: IntArray,
        rates: FloatArray,
        method: str,
        tau: float | None,
        gap: float,
        binding: str | None = None,
    ) -> Allocation:
        tokens = float(c @ counts)
        if binding is None:
            binding = _binding(counts, c, t, b, caps, cfg.n_up)
        return Allocation(
            counts=_owned(counts),
            budget=int(counts.sum()),
            pass_rates=_owned(rates),
            method=method,
            tau=tau,
            tokens=tokens,
            binding=binding,
            gap=gap,
            **common,
        )

    # As the tokens of counts are summed (a float row of n_low: the same dot product).
    floor = float(c @ np.full(m, float(cfg.n_low)))
    if m == 0:
        return result(np.zeros(0, dtype=np.int64), pass_rates, "greedy", None, 0.0, "none")
    if b is not None and (n_unseen == m or b < m * cfg.n_low):
        # The rollout-only rule is the even split; keep it if it fits.
        even = even_split(b, m)
        fits_caps = caps is None or bool((even <= caps).all())
        if float(c @ even) <= t and fits_caps:
            return result(even, pass_rates, "even_split", None, 0.0)
        if b < m * cfg.n_low:
            raise ValueError(
                f"budget {b} is below M * n_low = {m * cfg.n_low} and its even split needs "
                f"{float(c @ even):g} tokens, above the token budget {t:g}"
                + (" or the straggler cap" if not fits_caps else "")
            )
    if floor > t:
        raise ValueError(
            f"token_budget {t:g} is below the floor n_low * sum(costs) = {floor:g}: even "
            f"{cfg.n_low} rollout(s) per prompt do not fit; raise the token budget"
        )
    p = _filled(pass_rates, unseen, cfg)
    s = cfg.smoothing
    clipped, tau = _clipped_and_tau(p, cfg)  # shared by tau and both solvers
    rollout: Callable[[], IntArray] | None = None
    if b is not None and caps is None:
        spare = b - m * cfg.n_low

        def rollout() -> IntArray:  # the rollout-only allocation, above n_low
            return _capability_extra(p, alpha, beta, tau, cfg.n_low, cfg.n_up, s, spare, clipped)

    sol = token_greedy_value(
        floor, p, alpha, beta, tau, cfg.n_low, cfg.n_up, s, c, t, b, caps, rollout, clipped
    )
    counts = sol.counts  # read-only, held by nobody else
    if sol.nu == math.inf:  # the rollout-only allocation fits: returned unchanged
        binding = _binding(counts, c, t, b, caps, cfg.n_up)
        gap = 0.0
    else:
        binding, gap = sol.bound, float(sol.gap)
    # The per-step path: every field below is built here, of its declared type.
    return _trusted_allocation(
        counts,
        int(np.add.reduce(counts)),
        _owned(p),
        method="greedy",
        tau=float(tau),
        tokens=float(sol.tokens),
        binding=binding,
        gap=gap,
        **common,
    )


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
    unseen, n_unseen = _unseen(pass_rates)
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
    p = _filled(pass_rates, unseen, cfg)
    tau: float | None
    if cfg.variant == "paper":
        counts, tau = _paper_counts(p, b, cfg, alpha, beta)
    else:
        counts, tau = _release_counts(p, b, cfg, alpha, beta)
    # The per-step path: every field below is built here, of its declared type.
    return _trusted_allocation(
        _owned(np.asarray(counts, dtype=np.int64)),
        b,
        _owned(p),
        tau=None if tau is None else float(tau),
        method="greedy",
        n_unseen=n_unseen,
        alpha=float(alpha),
        beta=float(beta),
        failure_rate=None if failure_rate is None else float(failure_rate),
        n_low=cfg.n_low,
        n_up=cfg.n_up,
    )


def _unseen(pass_rates: FloatArray) -> tuple[BoolArray | None, int]:
    """The unseen (``NaN``) mask and its count; ``None`` for a complete batch.

    A NaN sum is the one sign of an unseen prompt (the rates are in [0, 1] or NaN), so a
    complete batch costs one reduction, not a scan and a count.
    """
    if not math.isnan(float(np.add.reduce(pass_rates))):
        return None, 0
    unseen = np.isnan(pass_rates)
    return unseen, int(np.count_nonzero(unseen))


def _filled(pass_rates: FloatArray, unseen: BoolArray | None, cfg: CoBAConfig) -> FloatArray:
    """The rates with unseen prompts at ``cfg.unseen_pass_rate``, owned by the caller (a
    complete read-only array is returned as it is, the Allocation can hold it)."""
    if unseen is None:
        return pass_rates if not pass_rates.flags.writeable else pass_rates.copy()
    return np.where(unseen, cfg.unseen_pass_rate, pass_rates)


def _clipped_and_tau(p: FloatArray, cfg: CoBAConfig) -> tuple[FloatArray, float]:
    """``p`` clipped to ``[s, 1 - s]`` and tau (adaptive: from that clip)."""
    s = cfg.smoothing
    clipped = np.minimum(np.maximum(p, s), 1.0 - s)
    if cfg.tau == "adaptive":
        return clipped, _adaptive_tau_clipped(clipped, cfg.tau_min, cfg.tau_max, cfg.var_max)
    return clipped, float(cfg.tau)


def _greedy_counts(
    p: FloatArray, spare: int, cfg: CoBAConfig, alpha: float, beta: float
) -> tuple[IntArray, float]:
    """Algorithm 1 on pass rates ``p`` with ``spare`` units above ``n_low`` (capped).

    The threshold solver: the counts of :func:`coba_rl.solvers.greedy_heap` on the gain
    table, in O(M log M) time and O(M) memory without building the table.
    """
    clipped, tau = _clipped_and_tau(p, cfg)  # the clip is shared by tau and the solver
    extra = _capability_extra(
        p, alpha, beta, tau, cfg.n_low, cfg.n_up, cfg.smoothing, spare, clipped
    )
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
