"""The capability-oriented value function and its failure-rate shaping.

Everything here is a pure function of arrays. The arithmetic follows the authors'
released allocator operation for operation, so that allocations built on these values
reproduce the reference bit for bit (see ``tests/test_conformance.py``):

* the Beta density is evaluated with :mod:`math` (log-gamma, then ``log(exp(.))`` of the
  Beta function, exactly as the reference does);
* the saturation term uses :func:`numpy.exp` on ``(-n / tau) * p * (1 - p)``;
* marginal gains are differences ``V(n + 1) - V(n)`` of two values, not the closed form.

Reference: Yao et al., *CoBA-RL: Capability-Oriented Budget Allocation for Reinforcement
Learning in LLMs*, arXiv 2602.03048, eq. 4-9.
"""

from __future__ import annotations

import math
import sys

import numpy as np
from numpy.typing import ArrayLike, NDArray

from coba_rl._validation import as_real_array, check_bounds, check_real

__all__ = [
    "MAX_KAPPA",
    "adaptive_tau",
    "beta_pdf",
    "beta_shape",
    "capability_value",
    "marginal_gains",
    "transform_failure_rate",
    "unique_gains",
]

FloatArray = NDArray[np.float64]

#: Density used where the Beta density is not finite (as in the released allocator).
PDF_FLOOR = 1e-10

#: The largest ``kappa`` (``alpha + beta``) a :class:`coba_rl.CoBAConfig` accepts.
#:
#: The released arithmetic evaluates the Beta normaliser as ``log(exp(log B))``. That is
#: exact only while ``B(alpha, beta)`` is a normal double (``>= 2.2e-308``). For a given
#: ``kappa``, ``B(alpha, kappa - alpha)`` is smallest at ``alpha = kappa / 2`` (``B`` is
#: symmetric and log-convex in ``alpha``), which ``F_bar = 0.5`` reaches; ``B(k/2, k/2)``
#: leaves the normal range at ``k = 1019.33``. Beyond it the normaliser first loses
#: digits, then (``k`` near 1075) underflows to 0, where the reference replaces the density
#: by the constant :data:`PDF_FLOOR` and the allocation silently becomes that of a flat
#: density. 1000 keeps a small margin below the derived bound. :func:`beta_pdf` and the
#: gain tables refuse a shape whose normaliser is not a normal double.
MAX_KAPPA = 1000.0

_SMALLEST_NORMAL = sys.float_info.min


def transform_failure_rate(failure_rate: ArrayLike, gamma: float = 10.0) -> FloatArray:
    r"""Map the smoothed failure rate ``F_bar`` to the Beta mode ``F_tilde`` (eq. 6).

    .. math::

        \tilde F = \begin{cases} \bar F & \bar F > 0.5 \\
                   \sigma(\gamma (\bar F - 0.5)) & \text{otherwise} \end{cases}

    Early in training (the model fails most prompts) the mode follows the failure rate.
    Once the model passes more than half, the sigmoid keeps the mode from collapsing
    too fast towards hard prompts.

    Args:
      failure_rate: ``F_bar``, scalar or array, in [0, 1].
      gamma: sigmoid steepness (paper: 10).

    Returns:
      ``F_tilde`` with the shape of ``failure_rate`` (a 0-d array for a scalar).

    Example:
      >>> float(transform_failure_rate(0.8))
      0.8
      >>> round(float(transform_failure_rate(0.3)), 6)
      0.119203

    Reference: arXiv 2602.03048, eq. 6.
    """
    f_bar = _unit_interval(failure_rate, "failure_rate")
    gamma = check_real(gamma, "gamma")
    with np.errstate(over="ignore"):
        sig = 1.0 / (1.0 + np.exp(-gamma * (f_bar - 0.5)))
    return np.where(f_bar > 0.5, f_bar, sig)


def beta_shape(
    failure_rate: ArrayLike, kappa: float = 11.0, gamma: float = 10.0
) -> tuple[FloatArray, FloatArray]:
    r"""The Beta shape ``(alpha, beta)`` for a smoothed failure rate (eq. 7).

    .. math::

        \alpha = \mathrm{clip}(1 + (\kappa - 2)\tilde F,\ 1,\ \kappa - 1), \qquad
        \beta = \kappa - \alpha

    The mode of ``Beta(alpha, beta)`` is ``F_tilde``: a failing model (high ``F``) puts
    the density's peak at high pass rates (exploit easy prompts first); as the model
    improves the peak moves to hard prompts (explore).

    Args:
      failure_rate: ``F_bar``, scalar or array, in [0, 1].
      kappa: ``alpha + beta`` (paper: 11); must exceed 2.
      gamma: sigmoid steepness of :func:`transform_failure_rate`.

    Returns:
      ``(alpha, beta)``, each with the shape of ``failure_rate``.

    Example:
      >>> a, b = beta_shape(0.8, kappa=11.0)
      >>> float(a), float(b)
      (8.2, 2.8)

    Reference: arXiv 2602.03048, eq. 6-7.
    """
    kappa = check_real(kappa, "kappa", lo=2.0)
    f_tilde = transform_failure_rate(failure_rate, gamma)
    alpha = np.clip(1.0 + (kappa - 2.0) * f_tilde, 1.0, kappa - 1.0)
    return alpha, kappa - alpha


def _beta_shape_scalar(f_bar: float, kappa: float, gamma: float) -> tuple[float, float]:
    """:func:`beta_shape` of one validated ``F_bar`` with validated constants, as floats.

    The same operations in the same order as :func:`transform_failure_rate` and
    :func:`beta_shape` (the exponential is numpy's, on a float64), without their
    validation and array wrappers: the per-step path of ``allocate``.
    """
    if f_bar > 0.5:
        f_tilde = f_bar
    elif (arg := -gamma * (f_bar - 0.5)) < 700.0:  # exp cannot overflow
        f_tilde = float(1.0 / (1.0 + np.exp(arg)))
    else:
        with np.errstate(over="ignore"):
            f_tilde = float(1.0 / (1.0 + np.exp(arg)))
    alpha = min(max(1.0 + (kappa - 2.0) * f_tilde, 1.0), kappa - 1.0)
    return alpha, kappa - alpha


def _log_beta_function(alpha: float, beta: float) -> float:
    """``log B(alpha, beta)`` as the released allocator computes it: ``log(exp(.))``.

    Raises ``ValueError`` where ``B`` is not a normal double: there ``log(exp(.))`` loses
    digits (subnormal ``B``) or fails (``B`` underflows to 0 or overflows), and the
    reference would silently replace the density by its floor for every ``p``.
    """
    try:
        b = math.exp(math.lgamma(alpha) + math.lgamma(beta) - math.lgamma(alpha + beta))
    except (OverflowError, ValueError):
        b = math.inf
    if not _SMALLEST_NORMAL <= b < math.inf:
        raise ValueError(
            f"Beta({alpha}, {beta}): the normaliser B(alpha, beta) = {b:.3g} is not a normal "
            f"float, so the density cannot be computed exactly; keep alpha + beta <= "
            f"MAX_KAPPA = {MAX_KAPPA:g} (alpha, beta >= 1)"
        )
    return math.log(b)


def _beta_pdf_scalar(p: float, alpha: float, beta: float, log_b: float) -> float:
    # Operation for operation as the released allocator, with log B hoisted out of the
    # per-p loop (it does not depend on p, so the result is bit-identical).
    p = min(max(p, 1e-10), 1.0 - 1e-10)
    try:
        log_pdf = (alpha - 1) * math.log(p) + (beta - 1) * math.log(1 - p)
        pdf = math.exp(log_pdf - log_b)
    except (OverflowError, ValueError):
        return PDF_FLOOR
    return pdf if math.isfinite(pdf) else PDF_FLOOR


def beta_pdf(p: ArrayLike, alpha: float, beta: float) -> FloatArray:
    r"""The Beta density, computed with log-gamma (eq. 8).

    .. math::

        f(p; \alpha, \beta) = \frac{p^{\alpha - 1}(1 - p)^{\beta - 1}}{B(\alpha, \beta)}

    ``p`` is clipped to ``[1e-10, 1 - 1e-10]``; a non-finite density becomes ``1e-10``
    (as in the released allocator; with ``alpha, beta >= 1`` and ``alpha + beta <=``
    :data:`MAX_KAPPA` that never happens).

    Raises:
      ValueError: the normaliser ``B(alpha, beta)`` is not a normal double (for example
        ``alpha = beta = 537.5``), where the released arithmetic would silently return the
        floor ``1e-10`` for every ``p``.

    Args:
      p: pass rates, any shape.
      alpha, beta: the Beta shape (see :func:`beta_shape`).

    Returns:
      The density, with the shape of ``p``.

    Example:
      >>> [round(float(x), 4) for x in beta_pdf([0.25, 0.5, 0.75], 2.0, 2.0)]
      [1.125, 1.5, 1.125]

    Complexity: one scalar evaluation per *distinct* value of ``p``.

    Reference: arXiv 2602.03048, eq. 8.
    """
    p_arr = as_real_array(p, "p")
    alpha, beta = check_real(alpha, "alpha"), check_real(beta, "beta")
    uniq, inverse = np.unique(p_arr, return_inverse=True)
    return _beta_pdf_distinct(uniq, alpha, beta)[inverse].reshape(p_arr.shape)


def _beta_pdf_scalar_path(p: FloatArray, alpha: float, beta: float) -> FloatArray:
    """The density at each entry of a 1-D ``p``, one :mod:`math` evaluation per entry.

    The reference for :func:`_beta_pdf_vector`. Complexity: O(len(p)) Python calls.
    """
    log_b = _log_beta_function(alpha, beta)
    return np.fromiter(
        (_beta_pdf_scalar(float(x), alpha, beta, log_b) for x in p),
        dtype=np.float64,
        count=p.size,
    )


def _beta_pdf_vector(p: FloatArray, alpha: float, beta: float) -> FloatArray:
    """:func:`_beta_pdf_scalar_path` with numpy ufuncs: the same operations, element-wise.

    ``np.log`` and ``np.exp`` agree bit for bit with :func:`math.log` and :func:`math.exp`
    where numpy calls the C library for float64 (checked on first use by
    :func:`_vector_pdf_is_exact`; ``benchmarks/density_bit_identity.py`` checks 10^7
    random rates). An overflowing ``exp`` gives ``inf`` where :func:`math.exp` raises;
    both end at the floor. Complexity: O(len(p)) vectorised.
    """
    log_b = _log_beta_function(alpha, beta)
    q = np.maximum(p, 1e-10)
    np.minimum(q, 1.0 - 1e-10, out=q)
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        # (alpha - 1) log q + (beta - 1) log(1 - q) - log_b, then exp: in place.
        pdf = np.log(q)
        pdf *= alpha - 1
        np.subtract(1, q, out=q)
        np.log(q, out=q)
        q *= beta - 1
        pdf += q
        pdf -= log_b
        np.exp(pdf, out=pdf)
    if np.isfinite(pdf).all():
        return pdf
    return np.where(np.isfinite(pdf), pdf, PDF_FLOOR)


def _beta_pdf_and_logs(
    p: FloatArray, alpha: float, beta: float
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray] | None:
    """:func:`_beta_pdf_vector` of rates already inside ``[1e-10, 1 - 1e-10]``, with its logs.

    Returns ``(pdf, 1 - p, log p + log(1 - p), log pdf)``: the density by the same
    operations as :func:`_beta_pdf_vector` (its clip is the identity on such rates), and
    the logs it computes on the way, for a caller that also needs ``log(p (1 - p))`` and
    an approximate ``log pdf`` (the exponent before ``exp``, within an ulp of it). ``None``
    if a density is not finite (then the floor rule applies: use
    :func:`_beta_pdf_distinct`). Call under ``np.errstate(all="ignore")`` and only where
    :func:`_vector_pdf_is_exact`. Complexity: O(len(p)), ten array operations.
    """
    log_b = _log_beta_function(alpha, beta)
    log_p = np.log(p)
    om = 1.0 - p
    log_om = np.log(om)
    log_pdf = log_p * (alpha - 1)
    log_pdf += log_om * (beta - 1)
    log_pdf -= log_b
    pdf = np.exp(log_pdf)
    if not math.isfinite(float(np.add.reduce(pdf))):  # a NaN or inf (or a huge sum)
        return None
    log_p += log_om
    return pdf, om, log_p, log_pdf


#: Rates and shapes on which the vectorised density is compared with the scalar one
#: once per process, before it is trusted (ends, grid rates, mid-range and extreme shapes).
_PROBE_RATES = np.concatenate(
    [
        np.array([0.0, 1e-300, 1e-10, 1e-6, 0.01, 0.5, 0.99, 1 - 1e-10, 1.0]),
        np.arange(1, 128) / 128.0,
        np.random.default_rng(20260203).random(2048),
    ]
)
_PROBE_SHAPES = ((9.0, 2.0), (1.0, 10.0), (2.7, 8.3), (1.0, 1.0), (500.0, 400.0))
_VECTOR_PDF_EXACT: list[bool] = []


def _vector_pdf_is_exact() -> bool:
    """Whether :func:`_beta_pdf_vector` equals the scalar path on the probe (cached)."""
    if not _VECTOR_PDF_EXACT:
        same = all(
            np.array_equal(
                _beta_pdf_vector(_PROBE_RATES, a, b), _beta_pdf_scalar_path(_PROBE_RATES, a, b)
            )
            for a, b in _PROBE_SHAPES
        )
        _VECTOR_PDF_EXACT.append(same)
    return _VECTOR_PDF_EXACT[0]


def _beta_pdf_distinct(p: FloatArray, alpha: float, beta: float) -> FloatArray:
    """The density at each entry of a 1-D ``p`` (unchecked), bit-identical to :mod:`math`.

    Vectorised when this platform's numpy agrees with :mod:`math` on the probe, else one
    scalar call per entry. Complexity: O(len(p)).
    """
    if _vector_pdf_is_exact():
        return _beta_pdf_vector(p, alpha, beta)
    return _beta_pdf_scalar_path(p, alpha, beta)


def capability_value(
    n: ArrayLike,
    p: ArrayLike,
    alpha: float,
    beta: float,
    tau: float,
    smoothing: float = 0.01,
) -> FloatArray:
    r"""The capability-oriented value ``V(n, p)`` of giving ``n`` rollouts to a prompt (eq. 5, 9).

    .. math::

        V(n, p) = \bigl(1 - e^{-(n/\tau)\, p (1 - p)}\bigr)\ f(p; \alpha, \beta)

    with ``p`` first clipped to ``[smoothing, 1 - smoothing]``. The first factor
    saturates in ``n`` (more rollouts on one prompt help less and less); the second is
    the Beta density of :func:`beta_pdf`, which says how much the policy's current
    capability wants prompts of that pass rate.

    Args:
      n: rollout counts; broadcast against ``p``.
      p: pass rates in [0, 1].
      alpha, beta: the Beta shape.
      tau: saturation scale (see :func:`adaptive_tau`).
      smoothing: the clip ``s`` applied to ``p``.

    Returns:
      ``V`` with the broadcast shape of ``n`` and ``p``.

    Example:
      >>> round(float(capability_value(8, 0.5, 2.0, 2.0, tau=4.0)), 6)
      0.590204

    Reference: arXiv 2602.03048, eq. 5 and 9.
    """
    smoothing = check_real(smoothing, "smoothing", 0.0, 0.5)
    tau = check_real(tau, "tau", lo=np.finfo(np.float64).tiny)
    p_s = np.clip(as_real_array(p, "p"), smoothing, 1.0 - smoothing)
    n_arr = as_real_array(n, "n")
    return _saturation(n_arr, p_s, tau) * beta_pdf(p_s, alpha, beta)


def _saturation(n: FloatArray, p_s: FloatArray, tau: float) -> FloatArray:
    """``1 - exp(-(n / tau) p (1 - p))`` on clipped rates, in the reference's operation order."""
    with np.errstate(over="ignore", under="ignore"):
        return np.asarray(1 - np.exp(-n / tau * p_s * (1 - p_s)), dtype=np.float64)


def _values_in_place(
    neg_n: FloatArray, tau: float, p_s: FloatArray, om: FloatArray, pdf: FloatArray
) -> FloatArray:
    """``V(n) = (1 - exp(((-n) / tau) p (1 - p))) C`` written over ``neg_n`` (``-n``).

    The reference's operations in its order (:func:`_saturation` times the density), so
    the values, and their differences, the gains, are those of :func:`marginal_gains` bit
    for bit. ``p_s``, ``om = 1 - p_s`` and ``pdf`` broadcast against ``neg_n``. The
    solvers' bands call it on their few columns. Complexity: O(neg_n.size), in place.
    """
    neg_n /= tau
    neg_n *= p_s
    neg_n *= om
    np.exp(neg_n, out=neg_n)
    np.subtract(1, neg_n, out=neg_n)
    neg_n *= pdf
    return neg_n


def marginal_gains(
    pass_rates: ArrayLike,
    alpha: float,
    beta: float,
    tau: float,
    n_low: int,
    n_up: int,
    smoothing: float = 0.01,
) -> FloatArray:
    r"""The table of marginal gains that Algorithm 1 spends the budget on.

    .. math::

        g_{i,j} = V(n_{low} + j + 1, p_i) - V(n_{low} + j, p_i),
        \qquad 0 \le j < n_{up} - n_{low}

    In exact arithmetic ``g_{i,j} = C_i e^{-k_i (n_{low}+j)} (1 - e^{-k_i})`` with
    ``C_i = f(p_i)`` and ``k_i = p_i(1-p_i)/\tau``: a strictly decreasing geometric
    sequence, which is what makes the greedy optimal. The table is computed as
    differences of values, as the reference does, so that near-ties order the same way.

    Args:
      pass_rates: shape ``(M,)``.
      alpha, beta: the Beta shape.
      tau: saturation scale.
      n_low, n_up: per-prompt bounds, ``1 <= n_low <= n_up``.
      smoothing: the clip applied to pass rates.

    Returns:
      Gains of shape ``(M, n_up - n_low)``.

    Example:
      >>> g = marginal_gains([0.5, 0.9], 2.0, 2.0, tau=4.0, n_low=2, n_up=5)
      >>> g.shape
      (2, 3)
      >>> bool((g[:, :-1] >= g[:, 1:]).all())
      True

    Complexity: O(M (n_up - n_low)) exponentials, O(distinct p) densities.

    Reference: arXiv 2602.03048, eq. 9 and Algorithm 1.
    """
    gains_u, inverse = unique_gains(pass_rates, alpha, beta, tau, n_low, n_up, smoothing)
    return gains_u[inverse]


def unique_gains(
    pass_rates: ArrayLike,
    alpha: float,
    beta: float,
    tau: float,
    n_low: int,
    n_up: int,
    smoothing: float = 0.01,
) -> tuple[FloatArray, NDArray[np.int64]]:
    """:func:`marginal_gains` for the distinct pass rates only, and each prompt's row.

    ``marginal_gains(p, ...) == gains_u[inverse]``. Batches of pass rates ``k / G`` hold
    at most ``G + 1`` distinct values, so this table is tiny.

    Example:
      >>> g, inv = unique_gains([0.5, 0.25, 0.5], 3.0, 3.0, 4.0, n_low=2, n_up=6)
      >>> g.shape, inv.tolist()
      ((2, 4), [1, 0, 1])
    """
    n_low, n_up = check_bounds(n_low, n_up)
    p = as_real_array(pass_rates, "pass_rates")
    if p.ndim != 1:
        raise ValueError(f"pass_rates must be 1-D, got shape {p.shape}")
    alpha, beta = check_real(alpha, "alpha"), check_real(beta, "beta")
    tau = check_real(tau, "tau", lo=np.finfo(np.float64).tiny)
    smoothing = check_real(smoothing, "smoothing", 0.0, 0.5)
    return _unique_gains(p, alpha, beta, tau, n_low, n_up, smoothing)


def _unique_gains(
    p: FloatArray, alpha: float, beta: float, tau: float, n_low: int, n_up: int, smoothing: float
) -> tuple[FloatArray, NDArray[np.int64]]:
    """:func:`unique_gains` on validated arguments (the per-step path of ``allocate``)."""
    uniq, inverse = np.unique(p, return_inverse=True)
    p_s = np.clip(uniq, smoothing, 1.0 - smoothing)
    n = np.arange(n_low, n_up + 1, dtype=np.float64)
    values = (
        _saturation(n[None, :], p_s[:, None], tau) * _beta_pdf_distinct(p_s, alpha, beta)[:, None]
    )
    return values[:, 1:] - values[:, :-1], inverse.reshape(-1).astype(np.int64)


def _unit_interval(x: ArrayLike, name: str) -> FloatArray:
    """``x`` as a float64 array whose values all lie in [0, 1] (NaN rejected)."""
    arr = as_real_array(x, name)
    bad = ~((arr >= 0.0) & (arr <= 1.0))
    if bad.any():
        raise ValueError(f"{name} must lie in [0, 1], got {arr[bad].reshape(-1)[0]}")
    return arr


def adaptive_tau(
    pass_rates: ArrayLike,
    tau_min: float = 3.0,
    tau_max: float = 12.0,
    var_max: float = 0.1667,
    smoothing: float = 0.01,
) -> float:
    r"""Adaptive saturation scale from the spread of the batch's pass rates.

    .. math::

        \tau = \tau_{min} + (\tau_{max} - \tau_{min})\,
               \mathrm{clip}\bigl(\mathrm{Var}(p_{clipped}) / v_{max},\ 0,\ 1\bigr)

    ``Var`` is the population variance of the pass rates after clipping to
    ``[smoothing, 1 - smoothing]``. A batch with spread-out pass rates saturates more
    slowly (larger ``tau``), so the budget is spread over more rollouts per prompt.

    Args:
      pass_rates: shape ``(M,)``, ``M >= 1``.
      tau_min, tau_max, var_max: the released constants 3, 12 and 0.1667.
      smoothing: the clip applied first.

    Returns:
      ``tau`` as a Python float.

    Example:
      >>> adaptive_tau([0.5, 0.5])
      3.0
      >>> round(adaptive_tau([0.0, 1.0]), 4)
      12.0

    Reference: the authors' released allocator (the paper leaves ``tau`` open).
    """
    raw = _unit_interval(pass_rates, "pass_rates")
    if raw.size == 0:
        raise ValueError("adaptive_tau needs at least one pass rate, got none")
    tau_min = check_real(tau_min, "tau_min", lo=0.0)
    tau_max = check_real(tau_max, "tau_max", lo=tau_min)
    var_max = check_real(var_max, "var_max", lo=np.finfo(np.float64).tiny)
    smoothing = check_real(smoothing, "smoothing", 0.0, 0.5)
    return _adaptive_tau(raw, tau_min, tau_max, var_max, smoothing)


def _adaptive_tau(
    p: FloatArray, tau_min: float, tau_max: float, var_max: float, smoothing: float
) -> float:
    """:func:`adaptive_tau` on validated arguments (the per-step path of ``allocate``)."""
    p_arr = np.minimum(np.maximum(p, smoothing), 1.0 - smoothing)
    return _adaptive_tau_clipped(p_arr, tau_min, tau_max, var_max)


def _adaptive_tau_clipped(
    p_arr: FloatArray, tau_min: float, tau_max: float, var_max: float
) -> float:
    """:func:`_adaptive_tau` of rates already clipped to ``[s, 1 - s]``. Complexity: O(M)."""
    # np.mean's own arithmetic (a pairwise ``add.reduce``, then one division) without its
    # wrappers: this runs once per allocation, on small batches too.
    n = p_arr.size
    mean_p = np.add.reduce(p_arr, axis=None) / n
    dev = p_arr - mean_p
    var_p = float(np.add.reduce(dev * dev, axis=None)) / n
    # A Python float division: an overflow (subnormal var_max) gives inf, not a warning.
    v = min(max(var_p / var_max, 0.0), 1.0)
    return float(tau_min + (tau_max - tau_min) * v)
