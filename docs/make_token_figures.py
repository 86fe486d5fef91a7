"""Regenerate the figure of the token-budget page (``docs/figures/tokens_*.png``).

Every curve comes from the public coba-rl API. Run from the repository root::

    python docs/make_token_figures.py            # writes docs/figures/
    python docs/make_token_figures.py --out DIR  # writes elsewhere

Needs matplotlib (``pip install -e '.[plot]'``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import coba_rl

# -- configuration ---------------------------------------------------------------------
GRID, PER_RATE = 16, 4  # pass rates k / GRID, PER_RATE prompts each: M = 68 prompts
GROUP = 8  # the rollout budget is M * GROUP, as a GRPO group size would give
SHORT, LONG, LIMIT = 200.0, 2400.0, 2048.0  # length grows with difficulty, up to a limit
FAILURE_RATE = 0.6
N_LOW, N_UP = 2, 64
FIGURES = ("tokens_allocation.png",)
_METADATA = {"Software": None}  # no matplotlib version: regenerating gives the same bytes


def batch() -> tuple[np.ndarray, np.ndarray]:
    """Pass rates on a grid and mean response lengths that grow with difficulty."""
    p = np.repeat(np.arange(GRID + 1) / GRID, PER_RATE)
    lengths = np.minimum(SHORT + (LONG - SHORT) * (1.0 - p), LIMIT)
    return p, lengths


def allocation_figure(path: Path) -> None:
    """Counts and tokens per prompt against p: a rollout budget beside token budgets."""
    import matplotlib.pyplot as plt

    p, lengths = batch()
    cfg = coba_rl.CoBAConfig(n_low=N_LOW, n_up=N_UP)
    stats = coba_rl.BatchStats(pass_rates=p, failure_rate=FAILURE_RATE, costs=lengths)
    m = p.size
    by_rollouts = coba_rl.allocate(stats, m * GROUP, cfg)
    spend = float(lengths @ by_rollouts.counts)
    runs = [
        (f"rollout budget B = {m * GROUP}", by_rollouts, "-", "tab:blue"),
        (
            "token budget T = same tokens",
            coba_rl.allocate(stats, None, cfg, token_budget=spend),
            "--",
            "tab:orange",
        ),
        (
            "token budget T = half the tokens",
            coba_rl.allocate(stats, None, cfg, token_budget=spend / 2),
            ":",
            "tab:green",
        ),
    ]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10.0, 3.9))
    at = np.arange(0, m, PER_RATE)  # one prompt per pass rate (all PER_RATE are alike)
    for label, alloc, style, color in runs:
        rollouts = int(alloc.counts.sum())
        tokens = float(lengths @ alloc.counts)
        text = f"{label}: {rollouts} rollouts, {tokens / 1e3:.0f}k tokens"
        left.plot(p[at], alloc.counts[at], style, color=color, marker="o", ms=3, label=text)
        right.plot(p[at], (lengths * alloc.counts)[at] / 1e3, style, color=color, marker="o", ms=3)
    left.set_xlabel("pass rate p")
    left.set_ylabel("rollouts n_i")
    left.set_title("Rollouts per prompt", fontsize=10)
    right.set_xlabel("pass rate p")
    right.set_ylabel("expected tokens c_i n_i (thousands)")
    right.set_title(
        f"Tokens per prompt (length {SHORT:.0f} at p = 1 to {LIMIT:.0f} at the limit)",
        fontsize=10,
    )
    left.legend(fontsize=7, loc="upper left")
    for ax in (left, right):
        ax.grid(alpha=0.3)
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
    allocation_figure(paths[0])
    return paths


if __name__ == "__main__":
    for written in main():
        print(written)
