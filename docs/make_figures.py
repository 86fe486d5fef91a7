"""Regenerate the figures of the value-function comparison (``docs/figures/value_*.png``).

Every curve comes from the public coba-rl API. Run from the repository root::

    python docs/make_figures.py            # writes docs/figures/
    python docs/make_figures.py --out DIR  # writes elsewhere

Needs matplotlib (``pip install -e '.[plot]'``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import coba_rl

# -- configuration ---------------------------------------------------------------------
NS = (2, 4, 8, 16, 64)  # rollout counts of the V(n, p) curves
FAILURE_RATE = 0.6  # F_bar of the CoBA-RL curves
TAU = 6.0  # saturation scale of the CoBA-RL curves (the adaptive tau lies in [3, 12])
FAILURE_RATES = (0.9, 0.7, 0.5, 0.3, 0.1)  # F_bar values of the Beta figure
KAPPA, GAMMA = 11.0, 10.0
GRID, PER_RATE, GROUP = 16, 4, 16  # allocation figure: p = k / GRID, PER_RATE prompts each
N_LOW, N_UP = 2, 64
FIGURES = ("value_vs_pass_rate.png", "value_beta_density.png", "value_allocations.png")
_METADATA = {"Software": None}  # no matplotlib version: regenerating gives the same bytes


def value_figure(path: Path) -> None:
    """V(n, p) against p for several n: CoBA-RL (eq. 9) beside Knapsack-RL."""
    import matplotlib.pyplot as plt

    p = np.linspace(0.0, 1.0, 401)
    alpha, beta = (float(x) for x in coba_rl.beta_shape(FAILURE_RATE, KAPPA, GAMMA))
    fig, (left, right) = plt.subplots(1, 2, figsize=(10.0, 3.9))
    colors = plt.cm.viridis(np.linspace(0.0, 0.85, len(NS)))
    for n, color in zip(NS, colors, strict=True):
        left.plot(
            p, coba_rl.capability_value(n, p, alpha, beta, TAU), color=color, label=f"n = {n}"
        )
        right.plot(p, coba_rl.knapsack_value(n, p), color=color, label=f"n = {n}")
    left.set_title(
        rf"CoBA-RL: $\bar F$ = {FAILURE_RATE:g} ($\alpha$ = {alpha:.1f}, "
        rf"$\beta$ = {beta:.1f}), $\tau$ = {TAU:g}",
        fontsize=10,
    )
    right.set_title(r"Knapsack-RL: $(1 - p^n - (1-p)^n)\, p (1-p)^2$", fontsize=10)
    for ax in (left, right):
        ax.set_xlabel("pass rate $p$")
        ax.set_xlim(0.0, 1.0)
        ax.set_ylim(bottom=0.0)
        ax.legend(fontsize=8, frameon=False)
    left.set_ylabel("$V(n, p)$")
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata=_METADATA)
    plt.close(fig)


def beta_figure(path: Path) -> None:
    """The Beta density of CoBA-RL's value at the shape of several failure rates."""
    import matplotlib.pyplot as plt

    p = np.linspace(0.0, 1.0, 401)
    fig, ax = plt.subplots(figsize=(7.0, 3.6))
    colors = plt.cm.plasma(np.linspace(0.0, 0.85, len(FAILURE_RATES)))
    for f_bar, color in zip(FAILURE_RATES, colors, strict=True):
        alpha, beta = (float(x) for x in coba_rl.beta_shape(f_bar, KAPPA, GAMMA))
        label = rf"$\bar F$ = {f_bar:g} ($\alpha$ = {alpha:.2f}, $\beta$ = {beta:.2f})"
        ax.plot(p, coba_rl.beta_pdf(p, alpha, beta), color=color, label=label)
    ax.set_xlabel("pass rate $p$")
    ax.set_ylabel(r"Beta$(p;\ \alpha, \beta)$")
    ax.set_title(rf"CoBA-RL's capability term ($\kappa$ = {KAPPA:g}, $\gamma$ = {GAMMA:g})")
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(bottom=0.0)
    ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata=_METADATA)
    plt.close(fig)


def allocation_figure(path: Path) -> None:
    """Mean rollouts per pass rate from the three allocators on one batch."""
    import matplotlib.pyplot as plt

    rates = np.repeat(np.arange(GRID + 1) / GRID, PER_RATE)
    budget = rates.size * GROUP
    stats = coba_rl.BatchStats(pass_rates=rates, failure_rate=FAILURE_RATE)
    counts = {
        "uniform GRPO": coba_rl.even_split(budget, rates.size),
        "CoBA-RL (paper)": coba_rl.allocate(
            stats, budget, coba_rl.CoBAConfig(n_low=N_LOW, n_up=N_UP)
        ).counts,
        "Knapsack-RL": coba_rl.knapsack_allocate(
            stats, budget, coba_rl.KnapsackConfig(n_low=N_LOW, n_up=N_UP)
        ).counts,
    }
    grid = np.arange(GRID + 1) / GRID
    fig, ax = plt.subplots(figsize=(7.0, 3.6))
    width = 0.8 / (GRID * len(counts))
    for j, (name, c) in enumerate(counts.items()):
        mean = c.reshape(GRID + 1, PER_RATE).mean(axis=1)
        ax.bar(grid + (j - 1) * width, mean, width=width, label=name)
    ax.set_xlabel("pass rate $p$")
    ax.set_ylabel("rollouts per prompt")
    ax.set_title(
        f"One batch: {rates.size} prompts, budget {budget} ({GROUP} each on average), "
        rf"$\bar F$ = {FAILURE_RATE:g}",
        fontsize=10,
    )
    ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata=_METADATA)
    plt.close(fig)


def main(argv: list[str] | None = None) -> list[Path]:
    """Write the figures and return their paths."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "figures")
    args = parser.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / name for name in FIGURES]
    for make, path in zip((value_figure, beta_figure, allocation_figure), paths, strict=True):
        make(path)
    return paths


if __name__ == "__main__":
    for written in main():
        print(written)
