"""Regenerate the figures of the concept pages (``docs/figures/concepts_*.png``).

Every curve is computed with the public coba-rl API, so the figures show what the
library does, not a re-derivation. Run from the repository root::

    python docs/make_concept_figures.py            # writes docs/figures/
    python docs/make_concept_figures.py --out DIR  # writes elsewhere

Needs matplotlib (``pip install -e '.[plot]'``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import coba_rl

# -- configuration ---------------------------------------------------------------------
KAPPA = 11.0  # paper and release default
GAMMA = 10.0
FAILURE_RATES = (0.9, 0.7, 0.55, 0.4, 0.2)  # F_bar values shown in the Beta figure
SAT_PASS_RATES = (0.5, 0.25, 0.1, 0.03)  # pass rates shown in the saturation figure
TAUS = (3.0, 12.0)  # the adaptive tau's range (tau_min, tau_max)
N_LOW, N_UP = 2, 128
GRID = 16  # allocation figure: pass rates k / GRID, PER_RATE prompts each
PER_RATE = 8
FIGURES = ("concepts_beta_density.png", "concepts_saturation.png", "concepts_allocation.png")
# PNG metadata without the matplotlib version, so regenerating gives the same bytes
_METADATA = {"Software": None}


def beta_density_figure(path: Path) -> None:
    """The Beta density of eq. 8 at the shape eq. 6-7 gives for several failure rates."""
    import matplotlib.pyplot as plt

    p = np.linspace(0.0, 1.0, 401)
    fig, ax = plt.subplots(figsize=(7.0, 3.8))
    for f_bar in FAILURE_RATES:
        alpha, beta = (float(x) for x in coba_rl.beta_shape(f_bar, KAPPA, GAMMA))
        mode = float(coba_rl.transform_failure_rate(f_bar, GAMMA))
        label = rf"$\bar F$ = {f_bar:.2f}: $\alpha$ = {alpha:.2f}, $\beta$ = {beta:.2f}"
        (line,) = ax.plot(p, coba_rl.beta_pdf(p, alpha, beta), label=label)
        ax.axvline(mode, color=line.get_color(), linestyle=":", linewidth=0.8)
    ax.set_xlabel("pass rate $p$")
    ax.set_ylabel(r"Beta$(p;\ \alpha, \beta)$")
    ax.set_title(
        rf"Failure-rate shaping ($\kappa$ = {KAPPA:g}, $\gamma$ = {GAMMA:g}); dotted: mode"
    )
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(bottom=0.0)
    ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120, metadata=_METADATA)
    plt.close(fig)


def saturation_figure(path: Path) -> None:
    """The saturation factor of eq. 9 and its marginal gains, at both ends of tau's range."""
    import matplotlib.pyplot as plt

    n = np.arange(N_LOW, N_UP + 1)
    fig, (left, right) = plt.subplots(1, 2, figsize=(9.0, 3.8))
    for p in SAT_PASS_RATES:
        colour = None
        for tau, style in zip(TAUS, ("-", "--"), strict=True):
            # With the Beta factor set to 1 (alpha = beta = 1), V is the saturation factor.
            sat = coba_rl.capability_value(n, p, 1.0, 1.0, tau)
            gains = coba_rl.marginal_gains([p], 1.0, 1.0, tau, N_LOW, N_UP)[0]
            label = rf"$p$ = {p:g}, $\tau$ = {tau:g}"
            (line,) = left.plot(n, sat, style, color=colour, label=label)
            colour = line.get_color()
            right.semilogy(n[:-1], gains, style, color=colour)
    left.set_xscale("log", base=2)
    left.set_xlabel("rollouts $n$")
    left.set_ylabel(r"$1 - e^{-(n/\tau)\,p(1-p)}$")
    left.set_title("Saturation factor")
    left.legend(fontsize=7, frameon=False, ncol=2)
    right.set_xscale("log", base=2)
    right.set_xlabel("rollouts $n$")
    right.set_ylabel("gain of rollout $n+1$")
    right.set_title("Marginal gains (geometric, decreasing)")
    fig.tight_layout()
    fig.savefig(path, dpi=120, metadata=_METADATA)
    plt.close(fig)


def allocation_figure(path: Path) -> None:
    """Counts per pass rate from :func:`coba_rl.allocate` at several failure rates."""
    import matplotlib.pyplot as plt

    rates = np.repeat(np.arange(GRID + 1) / GRID, PER_RATE)
    budget = rates.size * GRID
    cfg = coba_rl.CoBAConfig(n_low=N_LOW, n_up=N_UP, kappa=KAPPA, gamma=GAMMA)
    fig, ax = plt.subplots(figsize=(7.0, 3.8))
    for f_bar in (0.8, 0.5, 0.2):
        alloc = coba_rl.allocate(
            coba_rl.BatchStats(pass_rates=rates, failure_rate=f_bar), budget, cfg
        )
        per_rate = alloc.counts.reshape(GRID + 1, PER_RATE).mean(axis=1)
        ax.plot(np.arange(GRID + 1) / GRID, per_rate, "o-", label=rf"$\bar F$ = {f_bar:g}")
    ax.axhline(GRID, color="grey", linestyle=":", linewidth=0.8, label=f"uniform GRPO (G = {GRID})")
    ax.set_xlabel("pass rate $p$")
    ax.set_ylabel("rollouts per prompt")
    ax.set_title(f"Algorithm 1: M = {rates.size}, B = {budget}, [{N_LOW}, {N_UP}], adaptive tau")
    ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120, metadata=_METADATA)
    plt.close(fig)


def main(argv: list[str] | None = None) -> list[Path]:
    """Write every concept figure into ``--out`` and return their paths."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "figures")
    args = parser.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    args.out.mkdir(parents=True, exist_ok=True)
    paths = [args.out / name for name in FIGURES]
    for make, path in zip(
        (beta_density_figure, saturation_figure, allocation_figure), paths, strict=True
    ):
        make(path)
        print(f"wrote {path.name}")
    return paths


if __name__ == "__main__":
    main()
