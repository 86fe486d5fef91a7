"""Value function and Beta shaping: checked against SciPy and the closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats as sps

from coba_rl import value

rates = st.floats(0.0, 1.0, allow_nan=False)


def _f_tilde(f: float, gamma: float = 10.0) -> float:
    """Eq. 6 written out: identity above 0.5, a sigmoid at or below."""
    return f if f > 0.5 else 1.0 / (1.0 + math.exp(-gamma * (f - 0.5)))


@given(f=rates, kappa=st.floats(2.5, 40.0))
def test_beta_shape_sums_to_kappa_and_mode_is_transformed_rate(f: float, kappa: float) -> None:
    alpha, beta = (float(x) for x in value.beta_shape(f, kappa))
    f_tilde = _f_tilde(f)
    expected_alpha = min(max(1.0 + (kappa - 2.0) * f_tilde, 1.0), kappa - 1.0)  # eq. 7
    assert alpha == pytest.approx(expected_alpha, abs=1e-12)
    assert alpha + beta == pytest.approx(kappa, abs=1e-12)
    assert 1.0 <= alpha <= kappa - 1.0
    if alpha > 1.0 and beta > 1.0:  # interior: the Beta mode is F_tilde
        # the mode found numerically from SciPy's density, not from the closed form
        grid = np.linspace(0.0, 1.0, 20001)
        mode = float(grid[np.argmax(sps.beta.pdf(grid, alpha, beta))])
        assert mode == pytest.approx(f_tilde, abs=1e-4)


def test_beta_shape_worked_values() -> None:
    # F = 0.7 > 0.5: F_tilde = 0.7, alpha = 1 + 9 * 0.7 = 7.3, beta = 3.7.
    # F = 0.5: F_tilde = sigmoid(0) = 0.5, alpha = 5.5. F = 0.0: sigmoid(-5) = 0.00669285,
    # alpha = 1 + 9 * 0.00669285 = 1.0602357. F = 1.0: alpha = 10 = kappa - 1.
    for f, alpha in [(0.7, 7.3), (0.5, 5.5), (0.0, 1.0602357), (1.0, 10.0)]:
        a, b = (float(x) for x in value.beta_shape(f, 11.0))
        assert a == pytest.approx(alpha, abs=1e-7)
        assert b == pytest.approx(11.0 - alpha, abs=1e-7)


def test_transform_is_identity_above_half_and_sigmoid_below() -> None:
    f = np.array([0.0, 0.3, 0.5, 0.5000001, 0.9])
    out = value.transform_failure_rate(f, gamma=10.0)
    assert out[3] == f[3]
    assert out[4] == f[4]
    assert out[2] == pytest.approx(0.5)
    assert out[1] == pytest.approx(1 / (1 + math.exp(-10 * (0.3 - 0.5))))
    assert out[0] == pytest.approx(1 / (1 + math.exp(5.0)))


def test_beta_shape_is_vectorised() -> None:
    a, b = value.beta_shape(np.array([0.1, 0.6, 1.0]), kappa=11.0)
    assert a.shape == (3,)
    assert b.shape == (3,)
    assert a[2] == 10.0
    assert b[2] == 1.0


@given(p=st.floats(1e-6, 1 - 1e-6), a=st.floats(1.0, 20.0), b=st.floats(1.0, 20.0))
def test_beta_pdf_matches_scipy(p: float, a: float, b: float) -> None:
    ours = float(value.beta_pdf(p, a, b))
    ref = float(sps.beta.pdf(p, a, b))
    assert ours == pytest.approx(ref, rel=1e-9, abs=1e-300)


def test_beta_pdf_keeps_shape_and_floors_non_finite() -> None:
    p = np.array([[0.2, 0.2], [0.7, 0.0]])
    out = value.beta_pdf(p, 3.0, 4.0)
    assert out.shape == (2, 2)
    assert out[0, 0] == out[0, 1]
    # alpha < 1 at p -> 0 would blow up; the clip at 1e-10 keeps it finite
    assert np.isfinite(value.beta_pdf([0.0], 0.5, 3.0)).all()
    # As in the reference, B(alpha, beta) goes through exp(); where that underflows to 0
    # the reference falls back to the floor for every p. We refuse instead.
    with pytest.raises(ValueError, match="normaliser"):
        value.beta_pdf(0.5, 1000.0, 1000.0)


@given(p=st.floats(0.0, 1.0), n=st.integers(1, 200), tau=st.floats(0.5, 20.0))
def test_value_formula(p: float, n: int, tau: float) -> None:
    a, b = 4.0, 3.0
    ps = min(max(p, 0.01), 0.99)
    expected = (1 - math.exp(-(n / tau) * ps * (1 - ps))) * sps.beta.pdf(ps, a, b)
    assert float(value.capability_value(n, p, a, b, tau)) == pytest.approx(expected, rel=1e-9)


@given(p=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=8), tau=st.floats(1.0, 12.0))
def test_marginal_gains_equal_closed_form_and_decrease(p: list[float], tau: float) -> None:
    a, b, n_low, n_up = 6.0, 5.0, 2, 40
    g = value.marginal_gains(p, a, b, tau, n_low, n_up)
    assert g.shape == (len(p), n_up - n_low)
    ps = np.clip(np.array(p), 0.01, 0.99)
    c = sps.beta.pdf(ps, a, b)[:, None]
    k = (ps * (1 - ps) / tau)[:, None]
    n = np.arange(n_low, n_up)[None, :]
    closed = c * np.exp(-k * n) * (1 - np.exp(-k))
    np.testing.assert_allclose(g, closed, rtol=1e-6, atol=1e-15)
    assert (np.diff(closed, axis=1) < 0).all()


def test_marginal_gains_identical_rows_for_equal_rates() -> None:
    g = value.marginal_gains([0.25, 0.5, 0.25], 3.0, 3.0, 5.0, 2, 10)
    assert np.array_equal(g[0], g[2])


@given(p=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=50))
def test_adaptive_tau_in_range_and_matches_variance(p: list[float]) -> None:
    tau = value.adaptive_tau(p)
    assert 3.0 <= tau <= 12.0
    var = float(np.var(np.clip(p, 0.01, 0.99)))
    assert tau == pytest.approx(3.0 + 9.0 * min(var / 0.1667, 1.0), abs=1e-9)


# -- large kappa: refused where the released arithmetic would underflow -----------------------


def _exact_kappa_limit() -> float:
    """The largest kappa whose normaliser B(kappa/2, kappa/2) is a normal double (SciPy)."""
    from scipy.special import betaln

    target = math.log(np.finfo(np.float64).tiny)  # log of the smallest normal double
    lo, hi = 3.0, 4000.0
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if betaln(mid / 2, mid / 2) >= target else (lo, mid)
    return lo


def test_max_kappa_is_derived_from_the_normal_range() -> None:
    # F_bar = 0.5 gives alpha = beta = kappa / 2, where B(alpha, kappa - alpha) is smallest
    # (B is symmetric and log-convex in alpha). Below the smallest normal double, the
    # released log(exp(log B)) first loses precision and then (kappa > ~1075) underflows.
    limit = _exact_kappa_limit()
    assert 1019.0 < limit < 1020.0
    assert limit >= value.MAX_KAPPA
    assert 0.95 * limit <= value.MAX_KAPPA  # the margin is small, not a guess


@pytest.mark.parametrize("kappa", [1075.0, 1100.0, 1e6, "just above the limit"])
def test_config_refuses_kappa_beyond_the_exact_range(kappa: float | str) -> None:
    from coba_rl import CoBAConfig

    if isinstance(kappa, str):
        kappa = float(np.nextafter(value.MAX_KAPPA, np.inf))
    with pytest.raises(ValueError, match=r"kappa.*1000"):
        CoBAConfig(kappa=kappa)


def test_density_at_max_kappa_is_exact_not_the_floor() -> None:
    from coba_rl import BatchStats, CoBAConfig, allocate

    k = value.MAX_KAPPA
    alpha, beta = (float(x) for x in value.beta_shape(0.5, k))
    assert alpha == beta == k / 2
    p = np.array([0.45, 0.5, 0.55])
    ours = value.beta_pdf(p, alpha, beta)
    np.testing.assert_allclose(ours, sps.beta.pdf(p, alpha, beta), rtol=1e-9)
    assert ours[1] > 25.0 and (ours > 100 * value.PDF_FLOOR).all()
    # and the allocation follows that peaked density, unlike the floor (all gains equal)
    stats = BatchStats(pass_rates=[0.2, 0.5, 0.8], failure_rate=0.5)
    counts = allocate(stats, 24, CoBAConfig(kappa=k, n_up=20)).counts.tolist()
    assert counts == [2, 20, 2]


@pytest.mark.parametrize("half", [537.5, 520.0])
def test_beta_pdf_refuses_an_underflowing_normaliser(half: float) -> None:
    # 537.5: B underflows to 0 and the reference returns its 1e-10 floor for every p;
    # 520: B is subnormal and log(exp(log B)) has lost digits. Both used to pass silently.
    with pytest.raises(ValueError, match="normal"):
        value.beta_pdf([0.5], half, half)
    with pytest.raises(ValueError, match="normal"):
        value.marginal_gains([0.5], half, half, tau=4.0, n_low=2, n_up=4)


def test_simulate_settings_refuse_kappa_beyond_the_exact_range() -> None:
    # Checked with the other settings, before any work (a one-line CLI error).
    from pydantic import ValidationError

    from coba_rl.simulate import SimulateSettings

    with pytest.raises(ValidationError, match="less than or equal to 1000"):
        SimulateSettings(kappa=1075.0)
    assert SimulateSettings(kappa=value.MAX_KAPPA).kappa == value.MAX_KAPPA
