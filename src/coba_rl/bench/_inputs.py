"""Benchmark inputs: pass-rate batches shaped like those of math RLVR training."""

from __future__ import annotations

from typing import Literal

import numpy as np
from numpy.typing import NDArray

__all__ = ["BATCH_KINDS", "LENGTH_LIMIT", "BatchKind", "paper_batch", "token_batch"]

BatchKind = Literal["realistic", "grid", "continuous", "tie-heavy"]
#: Every batch kind :func:`paper_batch` draws; the first is the headline case.
BATCH_KINDS: tuple[BatchKind, ...] = ("realistic", "grid", "continuous", "tie-heavy")

#: Share of prompts the policy never solves / always solves (early math RLVR).
UNSOLVED_SHARE = 0.33
SOLVED_SHARE = 0.10
#: Longest response (tokens) of :func:`token_batch`: the generation length limit.
LENGTH_LIMIT = 4096.0


def paper_batch(
    rng: np.random.Generator, m: int = 512, group: int = 16, kind: BatchKind = "grid"
) -> NDArray[np.float64]:
    r"""Pass rates like a math-RLVR batch, with mass at 0 and 1.

    .. math::

        q_i \sim \mathrm{Beta}(0.6, 0.9), \qquad
        p_i = \begin{cases} 0 & \text{w.p. } 0.33 \\ 1 & \text{w.p. } 0.067 \\
              k_i / n_i,\ k_i \sim \mathrm{Bin}(n_i, q_i) & \text{(realistic) otherwise} \\
              k_i / G,\ k_i \sim \mathrm{Bin}(G, q_i) & \text{(grid) otherwise} \\
              q_i & \text{(continuous) otherwise} \end{cases}

    ``realistic`` rates are what a CoBA-RL run reports: the rollout counts ``n_i`` are
    those of an actual :func:`coba_rl.allocate` call (B = ``group`` M, bounds [2, 128],
    on the grid rates of an earlier step), so ``n_i`` varies from prompt to prompt and
    the batch holds many distinct rates ``k / n``. ``grid`` rates are what a tracker
    reports after ``group`` rollouts per prompt (at most ``group + 1`` distinct values);
    ``continuous`` rates are all distinct (a window of several appearances, or smoothed
    estimates); ``tie-heavy`` puts every prompt on 0.25, 0.5 or 0.75, so nearly every
    marginal gain ties with thousands of others.

    Args:
      rng: the random generator (the only source of randomness).
      m: number of prompts ``M``.
      group: the grid's denominator ``G`` (and the mean rollouts per prompt of the
        realistic kind's allocation).
      kind: ``"realistic"``, ``"grid"``, ``"continuous"`` or ``"tie-heavy"``.

    Returns:
      Pass rates of shape ``(m,)`` in [0, 1].

    Raises:
      ValueError: on an unknown ``kind``.

    Example:
      >>> p = paper_batch(np.random.default_rng(0), m=8)
      >>> p.shape, bool(((p * 16) % 1 == 0).all())
      ((8,), True)
      >>> len(set(paper_batch(np.random.default_rng(0), m=100, kind="tie-heavy")))
      3

    Complexity: O(M).
    """
    if kind == "tie-heavy":
        return rng.choice(np.array([0.25, 0.5, 0.75]), size=m)
    if kind not in BATCH_KINDS:
        raise ValueError(f"kind must be one of {BATCH_KINDS}, got {kind!r}")
    latent = rng.beta(0.6, 0.9, size=m)
    zero = rng.random(m) < UNSOLVED_SHARE
    one = ~zero & (rng.random(m) < SOLVED_SHARE)
    if kind == "realistic":
        latent[zero], latent[one] = 0.0, 1.0
        return _realistic(rng, latent, group)
    rates = rng.binomial(group, latent) / group if kind == "grid" else latent
    rates[zero], rates[one] = 0.0, 1.0
    return np.asarray(rates, dtype=np.float64)


def _realistic(
    rng: np.random.Generator, latent: NDArray[np.float64], group: int
) -> NDArray[np.float64]:
    """``k_i / n_i`` with ``n_i`` from a CoBA-RL allocation of the previous step's grid rates.

    Complexity: one :func:`coba_rl.allocate` call, O(M log M).
    """
    from coba_rl.coba import allocate
    from coba_rl.config import CoBAConfig
    from coba_rl.types import BatchStats

    m = latent.size
    previous = rng.binomial(group, latent) / group
    stats = BatchStats(pass_rates=previous, failure_rate=0.6)
    n = allocate(stats, group * m, CoBAConfig(n_low=2, n_up=128)).counts
    return np.asarray(rng.binomial(n, latent) / n, dtype=np.float64)


def token_batch(
    rng: np.random.Generator, m: int = 512, n_low: int = 2, n_up: int = 128
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    r"""Pass rates ``k_i / n_i`` and mean response lengths (tokens) per prompt.

    .. math::

        n_i = \lfloor e^{u_i} \rfloor,\ u_i \sim U(\log n_{low}, \log n_{up}), \qquad
        p_i = k_i / n_i,\ k_i \sim \mathrm{Bin}(n_i, q_i), \qquad
        c_i = \min(250 + 2500 (1 - p_i) \varepsilon_i,\ 4096)

    with ``q_i = 0`` for a quarter of the prompts (never solved), otherwise
    ``q_i ~ Beta(0.6, 0.9)``, and ``eps_i ~ LogNormal(0, 0.35)``: group sizes that vary as
    a previous CoBA-RL step leaves them, and responses that grow with difficulty and stop
    at :data:`LENGTH_LIMIT`. The lengths are the per-prompt costs of a token budget.

    Args:
      rng: the random generator (the only source of randomness).
      m: number of prompts ``M``.
      n_low, n_up: the range of the previous step's group sizes.

    Returns:
      ``(pass_rates, lengths)``, both of shape ``(m,)``; lengths in
      ``(0, LENGTH_LIMIT]``, rounded to 0.1 token.

    Example:
      >>> p, c = token_batch(np.random.default_rng(0), m=64)
      >>> p.shape == c.shape == (64,), bool((c <= LENGTH_LIMIT).all() and (c > 0).all())
      (True, True)

    Complexity: O(M).
    """
    group = np.exp(rng.uniform(np.log(n_low), np.log(n_up), m)).astype(np.int64)
    latent = rng.beta(0.6, 0.9, m)
    latent[rng.random(m) < 0.25] = 0.0  # never solved
    rates = rng.binomial(group, latent) / group
    noise = rng.lognormal(0.0, 0.35, m)
    lengths = np.minimum(250.0 + 2500.0 * (1.0 - rates) * noise, LENGTH_LIMIT)
    return np.asarray(rates, dtype=np.float64), np.asarray(np.round(lengths, 1), dtype=np.float64)
