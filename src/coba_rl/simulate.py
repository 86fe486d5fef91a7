"""``coba-rl simulate``: compare allocators on the synthetic RLVR model, over seeds and budgets.

Runs uniform GRPO, Knapsack-RL, CoBA-RL (paper) and CoBA-RL (release) on
:mod:`coba_rl.sim` under the same per-step budget (and a fraction of it), over several
seeds, and writes a JSON record, a Markdown table and PNG plots. ``coba-paper-tokens``
(CoBA-RL's paper variant spending a token budget: at budget ``B``, the expected tokens
of ``B`` uniform rollouts) can join them; every run records the tokens it generated
(the simulator's response-length model), and a second table and a plot put held-out
accuracy against generated tokens.

The comparison is fair by construction: the policy trains with Adam (plain SGD is an
option), and every (allocator, budget) gets its own learning rate, the best of a small
grid by validation accuracy on separate tuning seeds (the validation set is disjoint
from the held-out set). The headline table uses those tuned learning rates; a secondary
table runs every allocator at one shared learning rate.

The model is synthetic: it says where GRPO's gradient signal comes from under each
allocation, not what a real LLM would score. Every output says so.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

import coba_rl
from coba_rl._cli import (
    CommandParser,
    check_lr_grid,
    check_names,
    check_output_dir,
    check_seeds,
    run_guarded,
    validated,
)
from coba_rl.config import CoBAConfig
from coba_rl.sim import (
    PASS_RATE_BINS,
    AllocatorLike,
    SimConfig,
    SimHistory,
    TokenBudgetCoBA,
    run_simulation,
)
from coba_rl.value import MAX_KAPPA

__all__ = [
    "ALLOCATORS",
    "DEFAULT_ALLOCATORS",
    "Comparison",
    "SimulateSettings",
    "TextProgress",
    "format_lr_search",
    "format_table",
    "format_token_table",
    "main",
    "make_allocator",
    "paired_difference",
    "run_comparison",
    "settings_from_args",
    "summarise",
    "write_plots",
    "write_results",
]

#: Allocator names, in the order tables and plots list them. ``coba-paper-tokens`` spends
#: a token budget: at budget ``B``, the expected tokens of ``B`` uniform rollouts.
ALLOCATORS: tuple[str, ...] = (
    "uniform",
    "knapsack-rl",
    "coba-paper",
    "coba-release",
    "coba-paper-tokens",
)

#: The allocators a run compares unless told otherwise (the rollout-budget ones).
DEFAULT_ALLOCATORS: tuple[str, ...] = ALLOCATORS[:4]

SYNTHETIC_NOTE = (
    "Synthetic model (coba_rl.sim): a logistic policy trained by GRPO's own gradient. "
    "It shows where the gradient signal comes from under each allocation; it does not "
    "predict benchmark gains on real LLMs."
)


class SimulateSettings(BaseModel):
    """Everything a comparison run depends on (written beside its results).

    Attributes:
      steps: training steps per run.
      batch_size: prompts per step ``M``.
      group_size: GRPO's uniform group size ``G``; the full budget is ``M * G``.
      budget_fractions: budgets to compare, as fractions of ``M * G`` (1.0 and 0.5).
      seeds: simulator seeds; each (allocator, budget) pair runs once per seed.
      allocators: names from :data:`ALLOCATORS` (default :data:`DEFAULT_ALLOCATORS`).
      n_low, n_up: per-prompt bounds for every allocator.
      kappa, gamma, window: CoBA-RL constants (both variants).
      sim: the synthetic model's constants (its ``lr`` is the shared "same lr").
      lr_grid: learning rates tried for every (allocator, budget); ``None`` picks
        ``(0.03, 0.1, 0.3, 1.0)`` (for Adam; pass a grid when you choose SGD).
      tune_seeds: seeds of the learning-rate search (scored by final validation
        accuracy, averaged over these seeds); disjoint from ``seeds``.
      same_lr: also run every allocator at ``sim.lr`` (the secondary table).

    Example:
      >>> s = SimulateSettings(steps=10, seeds=(0, 1))
      >>> s.budgets()
      [4096, 2048]
      >>> SimulateSettings(allocators=("coba",))
      Traceback (most recent call last):
      ...
      pydantic_core._pydantic_core.ValidationError: 1 validation error for SimulateSettings
      allocators
        Value error, unknown allocator 'coba'; choose from uniform, knapsack-rl, ...
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    steps: int = Field(default=300, ge=1)
    batch_size: int = Field(default=256, ge=1)
    group_size: int = Field(default=16, ge=1)
    budget_fractions: tuple[float, ...] = (1.0, 0.5)
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    allocators: tuple[str, ...] = DEFAULT_ALLOCATORS
    n_low: int = Field(default=2, ge=1)
    n_up: int = Field(default=128, ge=1)
    kappa: float = Field(default=11.0, gt=2.0, le=MAX_KAPPA, allow_inf_nan=False)
    gamma: float = Field(default=10.0, gt=0.0, allow_inf_nan=False)
    window: int = Field(default=1, ge=1)
    sim: SimConfig = SimConfig()
    lr_grid: tuple[float, ...] | None = None
    tune_seeds: tuple[int, ...] = (1000,)
    same_lr: bool = True

    @field_validator("allocators")
    @classmethod
    def _known(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        check_names(v, ALLOCATORS)
        if not v or len(set(v)) != len(v):
            raise ValueError(f"allocators must be non-empty and distinct, got {list(v)}")
        return v

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        return check_seeds(v)

    @field_validator("lr_grid")
    @classmethod
    def _grid(cls, v: tuple[float, ...] | None) -> tuple[float, ...] | None:
        return None if v is None else check_lr_grid(v)

    @field_validator("budget_fractions")
    @classmethod
    def _fractions(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if not v or not all(math.isfinite(f) and f > 0 for f in v):
            raise ValueError(f"budget_fractions must be non-empty and positive, got {list(v)}")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> SimulateSettings:
        if self.n_low > self.n_up:
            raise ValueError(f"n_low ({self.n_low}) must not exceed n_up ({self.n_up})")
        if self.batch_size > self.sim.num_train:
            raise ValueError(
                f"batch_size ({self.batch_size}) exceeds the training set "
                f"(sim.num_train = {self.sim.num_train})"
            )
        if not self.tune_seeds or set(self.tune_seeds) & set(self.seeds):
            raise ValueError(
                f"tune_seeds must be non-empty and disjoint from seeds, got {list(self.tune_seeds)}"
            )
        for b in self.budgets():
            if not self.batch_size * self.n_low <= b <= self.batch_size * self.n_up:
                raise ValueError(
                    f"budget {b} is outside [M * n_low, M * n_up] = "
                    f"[{self.batch_size * self.n_low}, {self.batch_size * self.n_up}]"
                )
        return self

    def budgets(self) -> list[int]:
        """The per-step budgets ``round(fraction * M * G)``, in the order of the fractions."""
        full = self.batch_size * self.group_size
        return [round(f * full) for f in self.budget_fractions]

    def grid(self) -> tuple[float, ...]:
        """The learning rates to try (``lr_grid``, or the optimiser's default grid)."""
        if self.lr_grid is not None:
            return self.lr_grid
        return (0.03, 0.1, 0.3, 1.0)


def make_allocator(name: str, settings: SimulateSettings) -> AllocatorLike:
    """A fresh allocator called ``name``, with the bounds and constants of ``settings``.

    Uniform GRPO tracks pass rates over ``window`` appearances (for reporting only);
    Knapsack-RL uses its released constants within ``[n_low, n_up]``;
    ``coba-paper-tokens`` is the paper variant wrapped in a
    :class:`~coba_rl.sim.TokenBudgetCoBA` (a rollout costs the length limit
    ``sim.length_limit`` until a length is known).

    Raises:
      ValueError: an unknown name.

    Example:
      >>> type(make_allocator("coba-paper-tokens", SimulateSettings())).__name__
      'TokenBudgetCoBA'
    """
    s = settings
    if name == "coba-paper-tokens":
        limit = float(s.sim.length_limit)
        inner = coba_rl.CoBAAllocator(
            CoBAConfig(
                variant="paper",
                n_low=s.n_low,
                n_up=s.n_up,
                kappa=s.kappa,
                gamma=s.gamma,
                window=s.window,
                default_tokens_per_rollout=limit,
            )
        )
        return TokenBudgetCoBA(inner, limit)
    if name in ("coba-paper", "coba-release"):
        cfg = CoBAConfig(
            variant="paper" if name == "coba-paper" else "release",
            n_low=s.n_low,
            n_up=s.n_up,
            kappa=s.kappa,
            gamma=s.gamma,
            window=s.window,
        )
        return coba_rl.CoBAAllocator(cfg)
    if name == "uniform":
        return coba_rl.UniformAllocator(coba_rl.UniformConfig(window=s.window))
    if name == "knapsack-rl":
        return coba_rl.KnapsackRLAllocator(coba_rl.KnapsackConfig(n_low=s.n_low, n_up=s.n_up))
    raise ValueError(f"unknown allocator {name!r}; choose from {', '.join(ALLOCATORS)}")


# -- running ---------------------------------------------------------------------------


class TextProgress:
    """A plain-text progress bar with an ETA on a stream (stderr by default); no dependency.

    On a terminal the bar redraws in place; otherwise it prints a line every 10 %. The
    ETA extrapolates the elapsed time linearly.

    Example:
      >>> import io
      >>> buf = io.StringIO()
      >>> bar = TextProgress(4, stream=buf, width=8)
      >>> for i in range(1, 5):
      ...     bar.update(i, "run")
      >>> bar.close()
      >>> buf.getvalue().splitlines()[-1]
      '[########] 100%  4/4  run'
    """

    def __init__(self, total: int, stream: TextIO | None = None, width: int = 30) -> None:
        self.total = max(int(total), 1)
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._last_decile = -1
        self._start = time.perf_counter()

    def update(self, done: int, label: str = "") -> None:
        """Show ``done`` of ``total`` units finished, with a label."""
        frac = min(max(done / self.total, 0.0), 1.0)
        decile = int(frac * 10)
        if not self._tty and decile == self._last_decile and done != self.total:
            return
        self._last_decile = decile
        fill = round(frac * self.width)
        bar = "#" * fill + "." * (self.width - fill)
        line = f"[{bar}] {frac * 100:3.0f}%  {done}/{self.total}  {label}"
        elapsed = time.perf_counter() - self._start
        if 0 < frac < 1:
            line += f"  {_clock(elapsed)} elapsed, ETA {_clock(elapsed / frac * (1 - frac))}"
        if self._tty:
            self.stream.write(f"\r{line}\033[K")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        """End the bar's line (terminal only)."""
        if self._tty:
            self.stream.write("\n")
            self.stream.flush()


def _clock(seconds: float) -> str:
    """``m:ss`` (or ``h:mm:ss``) for a duration in seconds."""
    m, sec = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


@dataclass
class RunRecord:
    """One simulated run: which allocator, budget, seed and learning rate, and its history.

    ``view`` is ``"tuned"`` (the allocator's own tuned lr) or ``"same-lr"`` (``sim.lr``).
    """

    allocator: str
    budget: int
    seed: int
    history: SimHistory
    seconds: float
    lr: float = math.nan
    view: str = "tuned"


@dataclass
class TuningRecord:
    """One learning-rate trial: final validation accuracy per tuning seed, and its mean."""

    allocator: str
    budget: int
    lr: float
    validation_final: list[float]
    score: float


@dataclass
class Comparison:
    """All runs of one comparison, with its settings and learning-rate search."""

    settings: SimulateSettings
    runs: list[RunRecord]
    tuning: list[TuningRecord] = field(default_factory=list)
    chosen_lr: dict[tuple[str, int], float] = field(default_factory=dict)

    def select(self, allocator: str, budget: int, view: str = "tuned") -> list[RunRecord]:
        """The runs of one (allocator, budget) pair in one view, in seed order."""
        return [
            r
            for r in self.runs
            if r.allocator == allocator and r.budget == budget and r.view == view
        ]

    def views(self) -> list[str]:
        """The views that ran: ``"tuned"`` and, if asked for, ``"same-lr"``."""
        return [v for v in ("tuned", "same-lr") if any(r.view == v for r in self.runs)]

    def allocators(self) -> list[str]:
        """Allocators that ran, in :data:`ALLOCATORS` order."""
        ran = {r.allocator for r in self.runs}
        return [a for a in ALLOCATORS if a in ran]


def run_comparison(
    settings: SimulateSettings, progress: Callable[[int, int, str], None] | None = None
) -> Comparison:
    """Tune each (allocator, budget)'s learning rate, then run every seed with it.

    1. For every (allocator, budget) and every lr of :meth:`SimulateSettings.grid`, run the
       tuning seeds and score the lr by the mean final *validation* accuracy; the best
       wins (ties keep the smaller lr).
    2. Run every evaluation seed with the chosen lr (view ``"tuned"``).
    3. With ``same_lr``, run every evaluation seed at ``sim.lr`` too (view ``"same-lr"``;
       a run whose chosen lr is ``sim.lr`` is reused, since it is identical).

    Args:
      settings: what to run.
      progress: optional ``progress(steps_done, steps_total, label)``.

    Example:
      >>> s = SimulateSettings(steps=3, batch_size=16, seeds=(0,), allocators=("coba-paper",),
      ...                      lr_grid=(0.1, 0.3), sim=SimConfig(num_train=64, num_heldout=32))
      >>> c = run_comparison(s)
      >>> sorted(c.chosen_lr.values()) <= [0.3, 0.3] and len(c.tuning) == 4
      True
      >>> [(r.budget, r.view) for r in c.runs]
      [(256, 'tuned'), (128, 'tuned'), (256, 'same-lr'), (128, 'same-lr')]
      >>> all(r.lr == c.chosen_lr[("coba-paper", r.budget)] for r in c.runs if r.view == "tuned")
      True

    Complexity: O(runs * steps) simulator steps; each a few milliseconds at M = 256.
    """
    s = settings
    names = list(s.allocators)
    grid = s.grid()
    pairs = [(b, a) for b in s.budgets() for a in names]
    n_same = 0
    if s.same_lr:
        n_same = len(pairs) * len(s.seeds)
    total = len(pairs) * len(grid) * len(s.tune_seeds) + len(pairs) * len(s.seeds) + n_same
    total *= s.steps
    done = 0

    def one(name: str, budget: int, seed: int, lr: float, label: str) -> tuple[SimHistory, float]:
        nonlocal done
        base = done

        def tick(step: int) -> None:
            if progress is not None and (step % 10 == 0 or step == s.steps):
                progress(base + step, total, label)

        t0 = time.perf_counter()
        hist = run_simulation(
            make_allocator(name, s),
            steps=s.steps,
            batch_size=s.batch_size,
            budget=budget,
            seed=seed,
            config=s.sim.model_copy(update={"lr": lr}),
            progress=tick,
        )
        done += s.steps
        return hist, time.perf_counter() - t0

    comparison = Comparison(settings=s, runs=[])
    for budget, name in pairs:
        best: tuple[float, float] | None = None
        for lr in grid:
            finals = [
                one(name, budget, seed, lr, f"lr search {name} B={budget} lr={lr:g}")[
                    0
                ].validation_accuracy[-1]
                for seed in s.tune_seeds
            ]
            score = float(np.mean(finals))
            comparison.tuning.append(TuningRecord(name, budget, lr, finals, score))
            if best is None or score > best[0]:
                best = (score, lr)
        assert best is not None
        comparison.chosen_lr[(name, budget)] = best[1]
    for view in ("tuned", "same-lr") if s.same_lr else ("tuned",):
        for budget, name in pairs:
            lr = comparison.chosen_lr[(name, budget)] if view == "tuned" else s.sim.lr
            for seed in s.seeds:
                if view == "same-lr" and lr == comparison.chosen_lr[(name, budget)]:
                    twin = next(r for r in comparison.select(name, budget) if r.seed == seed)
                    comparison.runs.append(
                        RunRecord(name, budget, seed, twin.history, 0.0, lr, view)
                    )
                    done += s.steps
                    continue
                hist, sec = one(name, budget, seed, lr, f"{view} {name} B={budget} seed={seed}")
                comparison.runs.append(RunRecord(name, budget, seed, hist, sec, lr, view))
    if progress is not None:
        progress(total, total, "done")
    return comparison


# -- summarising -----------------------------------------------------------------------


def _mean_std(x: Sequence[float]) -> tuple[float, float]:
    a = np.asarray(x, dtype=np.float64)
    return float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else 0.0


def summarise(comparison: Comparison, view: str = "tuned") -> list[dict[str, Any]]:
    """One row per (budget, allocator) of one view: means and standard deviations over seeds.

    Keys: ``budget``, ``allocator``, ``lr``, ``seeds``, ``heldout_start``, ``heldout_final``
    (mean, std), ``heldout_gain`` (mean, std), ``train_final`` (mean, std),
    ``effective_ratio`` (mean over steps; mean, std over seeds),
    ``zero_variance_per_step`` (mean, std), and per run ``rollouts`` and
    ``generated_tokens`` (totals; mean, std) and ``truncated_share`` (the share of
    rollouts that ran to the length limit; mean, std).
    """
    rows: list[dict[str, Any]] = []
    for budget in comparison.settings.budgets():
        for name in comparison.allocators():
            runs = comparison.select(name, budget, view)
            if not runs:
                continue
            start = [r.history.heldout_accuracy[0] for r in runs]
            final = [r.history.heldout_accuracy[-1] for r in runs]
            rows.append(
                {
                    "budget": budget,
                    "allocator": name,
                    "lr": runs[0].lr,
                    "seeds": [r.seed for r in runs],
                    "heldout_start": float(np.mean(start)),
                    "heldout_final": _mean_std(final),
                    "heldout_gain": _mean_std([f - s for f, s in zip(final, start, strict=True)]),
                    "train_final": _mean_std([r.history.train_accuracy[-1] for r in runs]),
                    "effective_ratio": _mean_std(
                        [float(np.mean(r.history.effective_ratio)) for r in runs]
                    ),
                    "zero_variance_per_step": _mean_std(
                        [float(np.mean(r.history.zero_variance_rollouts)) for r in runs]
                    ),
                    "rollouts": _mean_std([float(sum(r.history.rollouts)) for r in runs]),
                    "generated_tokens": _mean_std(
                        [float(sum(r.history.generated_tokens)) for r in runs]
                    ),
                    "truncated_share": _mean_std(
                        [
                            sum(r.history.truncated_rollouts) / max(sum(r.history.rollouts), 1)
                            for r in runs
                        ]
                    ),
                }
            )
    return rows


def format_table(comparison: Comparison, view: str = "tuned") -> str:
    """The Markdown comparison table of one view (accuracies in percent, mean ± std over seeds).

    Example:
      >>> s = SimulateSettings(steps=2, batch_size=16, seeds=(0,), allocators=("coba-paper",),
      ...                      budget_fractions=(1.0,), lr_grid=(0.01,),
      ...                      sim=SimConfig(num_train=64, num_heldout=32))
      >>> print(format_table(run_comparison(s)).splitlines()[0])
      | budget | allocator | lr | held-out acc. (%) | gain (points) | effective-gradient ratio | ...
    """
    s = comparison.settings
    full = s.batch_size * s.group_size
    lines = [
        "| budget | allocator | lr | held-out acc. (%) | gain (points) | effective-gradient ratio "
        "| zero-variance rollouts / step | train acc. (%) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in summarise(comparison, view):
        frac = row["budget"] / full
        lines.append(
            f"| {row['budget']} ({frac:g} x) | {row['allocator']} | {row['lr']:g} "
            f"| {_pm(row['heldout_final'], 100, 2)} | {_pm(row['heldout_gain'], 100, 2)} "
            f"| {_pm(row['effective_ratio'], 1, 3)} "
            f"| {_pm(row['zero_variance_per_step'], 1, 0)} "
            f"| {_pm(row['train_final'], 100, 1)} |"
        )
    return "\n".join(lines)


def paired_difference(
    comparison: Comparison,
    name: str,
    budget: int,
    ref_budget: int,
    view: str = "tuned",
    at_same_tokens: bool = False,
) -> tuple[float, float] | None:
    """Final held-out accuracy of ``(name, budget)`` minus uniform GRPO's at ``ref_budget``
    on the same seed: (mean, std) over seeds.

    With ``at_same_tokens``, uniform's accuracy is read off its curve at the tokens this
    run generated in all (linear between steps): accuracy at equal generated tokens.

    Same-seed differences share the seed's world (prompts, held-out set, batch order),
    so they are tighter than the difference of the two means.

    Returns:
      ``None`` if uniform did not run at ``ref_budget`` on these seeds or, with
      ``at_same_tokens``, generated fewer tokens than this run on some seed.

    Complexity: O(seeds * steps).
    """
    runs = {r.seed: r for r in comparison.select(name, budget, view)}
    ref = {r.seed: r for r in comparison.select("uniform", ref_budget, view)}
    seeds = [sd for sd in runs if sd in ref]
    if not seeds:
        return None
    diffs = []
    for sd in seeds:
        h, h_ref = runs[sd].history, ref[sd].history
        ref_acc = h_ref.heldout_accuracy[-1]
        if at_same_tokens:
            spent, ref_tokens = sum(h.generated_tokens), h_ref.cumulative_tokens()
            if spent > ref_tokens[-1]:
                return None
            ref_acc = float(np.interp(spent, ref_tokens, h_ref.heldout_accuracy))
        diffs.append(h.heldout_accuracy[-1] - ref_acc)
    return _mean_std(diffs)


def format_token_table(comparison: Comparison, view: str = "tuned") -> str:
    """The Markdown table of generated tokens against held-out accuracy, one row per
    (budget, allocator) of one view (mean ± std over seeds).

    Tokens and rollouts are totals over a run; "mean over steps" averages the held-out
    accuracy over the run (early speed shows there). The "vs uniform" columns are
    same-seed differences of the final held-out accuracy, in points
    (:func:`paired_difference`): against uniform GRPO at the same budget (for
    ``coba-paper-tokens`` at budget ``B``: about the same expected tokens), against
    uniform at the first (full) budget, and against uniform at the first budget when it
    had generated the same tokens as this run; "n/a" where uniform did not run (or,
    for the last, generated fewer tokens).

    Example:
      >>> s = SimulateSettings(steps=2, batch_size=16, seeds=(0,), lr_grid=(0.3,),
      ...                      allocators=("uniform", "coba-paper-tokens"),
      ...                      budget_fractions=(1.0,), sim=SimConfig(num_train=64, num_heldout=32))
      >>> lines = format_token_table(run_comparison(s)).splitlines()
      >>> lines[0]
      '| budget | allocator | lr | tokens generated (M) | rollouts | tokens / rollout | ...
      >>> lines[2].endswith("| 0.00 ± 0.00 | 0.00 ± 0.00 | 0.00 ± 0.00 |")  # uniform vs itself
      True
    """
    s = comparison.settings
    full = s.batch_size * s.group_size
    ref_budget = s.budgets()[0]
    lines = [
        "| budget | allocator | lr | tokens generated (M) | rollouts | tokens / rollout "
        "| at the length limit (%) | held-out acc. (%) | mean over steps (%) "
        f"| vs uniform, same budget | vs uniform at B = {ref_budget} "
        f"| vs uniform at B = {ref_budget}, same tokens |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in summarise(comparison, view):
        name, budget = row["allocator"], row["budget"]
        diffs = [
            paired_difference(comparison, name, budget, budget, view),
            paired_difference(comparison, name, budget, ref_budget, view),
            paired_difference(comparison, name, budget, ref_budget, view, at_same_tokens=True),
        ]
        cells = " | ".join("n/a" if d is None else _pm(d, 100, 2) for d in diffs)
        tokens, rollouts = row["generated_tokens"], row["rollouts"]
        per = tokens[0] / rollouts[0] if rollouts[0] else math.nan
        over_run = _mean_std(
            [
                float(np.mean(r.history.heldout_accuracy))
                for r in comparison.select(name, budget, view)
            ]
        )
        lines.append(
            f"| {budget} ({budget / full:g} x) | {name} | {row['lr']:g} "
            f"| {_pm(tokens, 1e-6, 1)} | {_pm(rollouts, 1, 0)} | {per:.0f} "
            f"| {_pm(row['truncated_share'], 100, 1)} | {_pm(row['heldout_final'], 100, 2)} "
            f"| {_pm(over_run, 100, 2)} | {cells} |"
        )
    return "\n".join(lines)


def _pm(ms: tuple[float, float], factor: float, digits: int) -> str:
    return f"{ms[0] * factor:.{digits}f} ± {ms[1] * factor:.{digits}f}"


# -- writing ---------------------------------------------------------------------------


def _settings_text(s: SimulateSettings) -> str:
    sim = ", ".join(f"{k}={v}" for k, v in s.sim.model_dump().items())
    return (
        f"- steps: {s.steps}; prompts per step M = {s.batch_size}; group size G = "
        f"{s.group_size}; budgets per step: {', '.join(map(str, s.budgets()))} "
        f"(fractions {', '.join(f'{f:g}' for f in s.budget_fractions)} of M * G)\n"
        f"- seeds: {', '.join(map(str, s.seeds))}\n"
        f"- bounds: [n_low, n_up] = [{s.n_low}, {s.n_up}]; CoBA-RL kappa = {s.kappa:g}, "
        f"gamma = {s.gamma:g}, window = {s.window}\n"
        f"- optimiser: {_optimizer_text(s.sim)}; learning rate per (allocator, budget) from "
        f"{', '.join(f'{x:g}' for x in s.grid())} by final validation accuracy on tuning "
        f"seeds {', '.join(map(str, s.tune_seeds))}; same-lr view: {s.sim.lr:g}\n"
        f"- response lengths: mean {s.sim.length_base:g} + {s.sim.length_span:g} (1 - p) e_i "
        f"tokens, failures {s.sim.failure_length_ratio:g} x as long as successes, "
        f"limit {s.sim.length_limit}\n"
        f"- model: {sim}"
    )


def _optimizer_text(cfg: SimConfig) -> str:
    if cfg.optimizer == "adam":
        return f"Adam (betas {cfg.adam_beta1:g}, {cfg.adam_beta2:g}; eps {cfg.adam_eps:g})"
    return "plain SGD"


def format_lr_search(comparison: Comparison) -> str:
    """The Markdown table of the learning-rate search: mean final validation accuracy (%)
    of every (allocator, budget) at every learning rate of the grid, and the one chosen."""
    lines = [
        "| budget | allocator | "
        + " | ".join(f"lr {lr:g}" for lr in comparison.settings.grid())
        + " | chosen |"
    ]
    lines.append("|---|---|" + "---|" * (len(comparison.settings.grid()) + 1))
    for (name, budget), lr in comparison.chosen_lr.items():
        scores = {
            t.lr: t.score for t in comparison.tuning if t.allocator == name and t.budget == budget
        }
        cells = " | ".join(f"{scores[x] * 100:.2f}" for x in comparison.settings.grid())
        lines.append(f"| {budget} | {name} | {cells} | {lr:g} |")
    return "\n".join(lines)


def write_results(
    comparison: Comparison, out_dir: str | os.PathLike[str], plots: bool = True
) -> dict[str, Path]:
    """Write ``results.json``, ``results.md`` and (if matplotlib is installed) the plots.

    Returns:
      A ``{kind: path}`` map of what was written: ``json``, ``markdown`` and any plots.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    if plots:
        written.update(write_plots(comparison, out))
    s = comparison.settings
    record = {
        "note": SYNTHETIC_NOTE,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "versions": {
            "coba_rl": coba_rl.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
        "settings": s.model_dump(mode="json"),
        "budgets": s.budgets(),
        "optimizer": {
            "name": s.sim.optimizer,
            **(
                {"betas": [s.sim.adam_beta1, s.sim.adam_beta2], "eps": s.sim.adam_eps}
                if s.sim.optimizer == "adam"
                else {}
            ),
        },
        "lr_grid": list(s.grid()),
        "chosen_lr": [
            {"allocator": a, "budget": b, "lr": lr} for (a, b), lr in comparison.chosen_lr.items()
        ],
        "tuning": [t.__dict__ for t in comparison.tuning],
        "pass_rate_bins": list(PASS_RATE_BINS),
        "summary": {v: summarise(comparison, v) for v in comparison.views()},
        "runs": [
            {
                "allocator": r.allocator,
                "budget": r.budget,
                "seed": r.seed,
                "lr": r.lr,
                "view": r.view,
                "seconds": r.seconds,
                "history": r.history.as_dict(),
            }
            for r in comparison.runs
        ],
    }
    json_path = out / "results.json"
    with open(json_path, "w", encoding="utf-8") as f:
        json.dump(record, f, allow_nan=True)
    written["json"] = json_path
    md = [
        "# Simulated comparison of rollout allocators",
        "",
        f"> {SYNTHETIC_NOTE}",
        "",
        "## Settings",
        "",
        _settings_text(s),
        "",
        "## Results, each allocator at its tuned learning rate (final step; mean ± std over seeds)",
        "",
        format_table(comparison, "tuned"),
        "",
        "## Generated tokens and held-out accuracy, tuned learning rates (mean ± std over seeds)",
        "",
        "Differences to uniform GRPO are on the same seed, final step, in points; "
        "'same tokens' reads uniform's accuracy where it had generated as many tokens.",
        "",
        format_token_table(comparison, "tuned"),
        "",
        "## Learning-rate search (mean final validation accuracy, %)",
        "",
        format_lr_search(comparison),
        "",
    ]
    if "same-lr" in comparison.views():
        md += [
            f"## Secondary view: every allocator at the same learning rate ({s.sim.lr:g})",
            "",
            format_table(comparison, "same-lr"),
            "",
            format_token_table(comparison, "same-lr"),
            "",
        ]
    md += [
        "Effective-gradient ratio: the share of rollouts in groups with mixed outcomes "
        "(0 < k < n), averaged over steps. Zero-variance rollouts: rollouts in groups whose "
        "rewards all agree (they get advantage 0 and teach nothing), per step.",
    ]
    pngs = [(k, p) for k, p in written.items() if p.suffix == ".png"]
    if pngs:
        md += ["", "## Plots", ""] + [f"![{k}]({p.name})" for k, p in pngs]
    md_path = out / "results.md"
    md_path.write_text("\n".join(md) + "\n", encoding="utf-8")
    written["markdown"] = md_path
    return written


# -- plots -----------------------------------------------------------------------------

_COLORS = {
    "uniform": "#7f7f7f",
    "knapsack-rl": "#1f77b4",
    "coba-paper": "#d62728",
    "coba-release": "#ff7f0e",
    "coba-paper-tokens": "#2ca02c",
}
_STYLES = ("-", "--", ":", "-.")


def _stack(runs: list[RunRecord], key: str) -> np.ndarray[Any, np.dtype[np.float64]]:
    return np.array([getattr(r.history, key) for r in runs], dtype=np.float64)


def write_plots(comparison: Comparison, out_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Draw ``sim_accuracy.png``, ``sim_shape.png``, ``sim_allocation.png`` and
    ``sim_tokens.png`` (held-out accuracy against cumulative generated tokens) into ``out_dir``.

    Needs matplotlib (``pip install 'coba-rl[plot]'``); without it, prints a message on
    stderr and returns ``{}``.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.colors import LogNorm
    except ImportError:
        print(
            "matplotlib is not installed: skipping plots (pip install 'coba-rl[plot]')",
            file=sys.stderr,
        )
        return {}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    s = comparison.settings
    budgets = s.budgets()
    names = comparison.allocators()
    full_budget = budgets[0]
    written: dict[str, Path] = {}
    footer = "Synthetic model (coba_rl.sim); not a prediction of LLM benchmark gains."
    seeds_txt = f"mean ± std over seeds {', '.join(map(str, s.seeds))}"

    # accuracy against step, one panel per budget
    fig, axes = plt.subplots(
        1, len(budgets), figsize=(5.2 * len(budgets), 4.0), sharey=True, squeeze=False
    )
    for ax, budget in zip(axes[0], budgets, strict=True):
        for name in names:
            acc = _stack(comparison.select(name, budget), "heldout_accuracy") * 100
            mean, std = acc.mean(axis=0), acc.std(axis=0)
            steps = np.arange(mean.size)
            ax.plot(steps, mean, color=_COLORS[name], label=name, lw=1.6)
            ax.fill_between(steps, mean - std, mean + std, color=_COLORS[name], alpha=0.2, lw=0)
        if budget != full_budget and "uniform" in names:
            ref = _stack(comparison.select("uniform", full_budget), "heldout_accuracy") * 100
            ax.plot(ref.mean(axis=0), color=_COLORS["uniform"], ls="--", lw=1.2,
                    label=f"uniform at B={full_budget}")  # fmt: skip
        ax.set_title(f"budget B = {budget} rollouts / step")
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("held-out accuracy (%)")
    axes[0][-1].legend(loc="lower right", fontsize=8)
    fig.suptitle(f"Held-out accuracy, {seeds_txt}", fontsize=11)
    fig.text(0.5, 0.01, footer, ha="center", fontsize=8, color="#555555")
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    written["accuracy"] = _save(fig, out / "sim_accuracy.png", plt)

    # alpha and the failure rate against step (full budget)
    fig, (ax_a, ax_f) = plt.subplots(1, 2, figsize=(10.4, 3.8))
    for name in names:
        runs = comparison.select(name, full_budget)
        alpha = _stack(runs, "alpha")
        if np.isfinite(alpha).any():
            ax_a.plot(np.nanmean(alpha, axis=0), color=_COLORS[name], label=name, lw=1.6)
        fail = _stack(runs, "failure_rate")
        ax_f.plot(fail.mean(axis=0), color=_COLORS[name], label=name, lw=1.2)
    ax_a.set_title(f"Beta shape alpha (kappa = {s.kappa:g}; beta = kappa - alpha)")
    ax_a.set_xlabel("training step")
    ax_a.set_ylabel("alpha")
    ax_f.set_title("failure rate of the step, 1 - mean_i(k_i / n_i)")
    ax_f.set_xlabel("training step")
    ax_f.set_ylabel("failure rate")
    for ax in (ax_a, ax_f):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"Allocator state at B = {full_budget}, mean over seeds", fontsize=11)
    fig.text(0.5, 0.01, footer, ha="center", fontsize=8, color="#555555")
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    written["shape"] = _save(fig, out / "sim_shape.png", plt)

    # allocation against true pass rate over time (full budget)
    ncols = min(2, len(names))
    nrows = math.ceil(len(names) / ncols)
    fig, axes = plt.subplots(
        nrows,
        ncols,
        figsize=(5.4 * ncols + 1.0, 3.3 * nrows + 0.9),
        squeeze=False,
        sharex=True,
        layout="constrained",
    )
    norm = LogNorm(vmin=max(s.n_low, 1), vmax=s.n_up)
    labels = [
        f"{lo:g}-{hi:g}" for lo, hi in zip(PASS_RATE_BINS, (*PASS_RATE_BINS[1:], 1.0), strict=True)
    ]
    image = None
    for k, ax in enumerate(axes.flat):
        if k >= len(names):
            ax.axis("off")
            continue
        name = names[k]
        runs = comparison.select(name, full_budget)
        n_in = _stack(runs, "prompts_by_bin")
        spent = np.nansum(_stack(runs, "counts_by_bin") * n_in, axis=0)
        n_pooled = n_in.sum(axis=0)
        mean = np.divide(spent, n_pooled, out=np.full(spent.shape, np.nan), where=n_pooled > 0)
        image = ax.imshow(
            mean.T,
            aspect="auto",
            origin="lower",
            cmap="viridis",
            norm=norm,
            interpolation="nearest",
            extent=(0.5, mean.shape[0] + 0.5, -0.5, len(labels) - 0.5),
        )
        ax.set_yticks(range(len(labels)))
        ax.set_yticklabels(labels, fontsize=7)
        ax.set_title(name, fontsize=10)
        if k % ncols == 0:
            ax.set_ylabel("true pass rate of the prompt")
        if k >= len(names) - ncols:
            ax.set_xlabel("training step")
    if image is not None:
        ticks = [t for t in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512) if s.n_low <= t <= s.n_up]
        cbar = fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.9, ticks=ticks)
        cbar.ax.set_yticklabels([str(t) for t in ticks])
        cbar.set_label("mean rollouts per prompt (log scale)")
    fig.suptitle(
        f"Where the budget goes: rollouts per prompt by true pass rate, B = {full_budget} "
        f"(uniform = {full_budget // s.batch_size}), mean over seeds; white = empty bin",
        fontsize=10,
    )
    fig.supxlabel(footer, fontsize=8, color="#555555")
    written["allocation"] = _save(fig, out / "sim_allocation.png", plt)

    # accuracy against cumulative generated tokens, every (allocator, budget)
    fig, ax = plt.subplots(figsize=(7.4, 4.6))
    for k, budget in enumerate(budgets):
        for name in names:
            runs = comparison.select(name, budget)
            acc = _stack(runs, "heldout_accuracy") * 100
            tokens = np.array([r.history.cumulative_tokens() for r in runs], dtype=np.float64)
            x, mean, std = tokens.mean(axis=0) / 1e6, acc.mean(axis=0), acc.std(axis=0)
            label = f"{name}, B = {budget}"
            if name == "coba-paper-tokens":
                label = f"{name}, T = tokens of {budget} uniform rollouts"
            style = _STYLES[k % len(_STYLES)]
            ax.plot(x, mean, color=_COLORS[name], ls=style, lw=1.5, label=label)
            ax.fill_between(x, mean - std, mean + std, color=_COLORS[name], alpha=0.12, lw=0)
    ax.set_xlabel("generated tokens, cumulative (millions; mean over seeds)")
    ax.set_ylabel("held-out accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=7)
    ax.set_title(
        f"Held-out accuracy against generated tokens, {seeds_txt}\n"
        f"(response lengths grow with difficulty, limit {s.sim.length_limit} tokens)",
        fontsize=10,
    )
    fig.text(0.5, 0.01, footer, ha="center", fontsize=8, color="#555555")
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    written["tokens"] = _save(fig, out / "sim_tokens.png", plt)
    return written


def _save(fig: Any, path: Path, plt: Any) -> Path:
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# -- command line ----------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``coba-rl simulate``."""
    p = CommandParser(
        prog="coba-rl simulate",
        description="Compare uniform GRPO, Knapsack-RL and CoBA-RL (paper, release; and by "
        "tokens on request) on a synthetic RLVR model, at the same per-step budget and at "
        "half of it, over several seeds. " + SYNTHETIC_NOTE,
    )
    d = SimulateSettings()
    p.add_argument(
        "--out",
        default=os.path.join("results", "sim"),
        help="output folder; created and checked for writing before the runs start",
    )
    p.add_argument("--steps", type=int, default=d.steps, help="training steps per run")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="prompts per step M")
    p.add_argument(
        "--group-size",
        type=int,
        default=d.group_size,
        help="GRPO's uniform group size G; the full per-step budget is M * G",
    )
    p.add_argument(
        "--budget-fractions",
        type=float,
        nargs="+",
        default=list(d.budget_fractions),
        help="per-step budgets to compare, as fractions of M * G",
    )
    p.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=list(d.seeds),
        help="simulator seeds; every (allocator, budget) pair runs once per seed",
    )
    p.add_argument(
        "--allocators",
        nargs="+",
        default=list(d.allocators),
        choices=ALLOCATORS,
        metavar="NAME",
        help=f"allocators to compare, from: {', '.join(ALLOCATORS)} (coba-paper-tokens: "
        "CoBA-RL spending the expected tokens of the budget's uniform rollouts)",
    )
    p.add_argument(
        "--n-low",
        type=int,
        default=d.n_low,
        help="fewest rollouts a prompt gets; uniform GRPO ignores it",
    )
    p.add_argument(
        "--n-up",
        type=int,
        default=d.n_up,
        help="most rollouts a prompt gets; uniform GRPO ignores it",
    )
    p.add_argument("--kappa", type=float, default=d.kappa, help="CoBA-RL alpha + beta")
    p.add_argument("--gamma", type=float, default=d.gamma, help="CoBA-RL failure-rate steepness")
    p.add_argument("--window", type=int, default=d.window, help="CoBA-RL pass-rate window")
    p.add_argument(
        "--num-train", type=int, default=d.sim.num_train, help="training prompts of the model"
    )
    p.add_argument(
        "--length-limit",
        type=int,
        default=d.sim.length_limit,
        help="generation length limit in tokens: no response of the model is longer",
    )
    p.add_argument(
        "--per-prompt-weights", action="store_true", help="weight rows by G / n_i in the loss"
    )
    p.add_argument(
        "--optimizer", choices=("adam", "sgd"), default=d.sim.optimizer, help="optimiser of theta"
    )
    p.add_argument(
        "--lr-grid",
        type=float,
        nargs="+",
        default=None,
        help="learning rates tried per allocator and budget (default: 0.03 0.1 0.3 1)",
    )
    p.add_argument(
        "--lr",
        type=float,
        default=None,
        help="the shared lr of the same-lr view (default: 0.3, uniform GRPO's tuned lr)",
    )
    p.add_argument(
        "--tune-seeds",
        type=int,
        nargs="+",
        default=list(d.tune_seeds),
        help="seeds of the learning-rate search (disjoint from --seeds)",
    )
    p.add_argument("--no-same-lr", action="store_true", help="skip the same-lr secondary view")
    p.add_argument(
        "--quick",
        action="store_true",
        help="a short run: 60 steps, 3 seeds, M = 32, 512 training prompts",
    )
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def settings_from_args(args: argparse.Namespace) -> SimulateSettings:
    """The :class:`SimulateSettings` of parsed ``coba-rl simulate`` arguments.

    ``--quick`` caps the run at 60 steps, the first 3 seeds, M = 32 and 512 training,
    256 validation and 256 held-out prompts.

    Raises:
      UsageError: inconsistent settings, named as options.
    """
    steps, seeds = args.steps, tuple(args.seeds)
    batch_size, num_train = args.batch_size, args.num_train
    sizes: dict[str, int] = {}
    if args.quick:
        sizes = {"num_heldout": 256, "num_val": 256}
        steps, seeds = min(steps, 60), seeds[:3]
        batch_size, num_train = min(batch_size, 32), min(num_train, 512)
    return validated(
        SimulateSettings,
        {
            "steps": steps,
            "batch_size": batch_size,
            "group_size": args.group_size,
            "budget_fractions": tuple(args.budget_fractions),
            "seeds": seeds,
            "allocators": tuple(args.allocators),
            "n_low": args.n_low,
            "n_up": args.n_up,
            "kappa": args.kappa,
            "gamma": args.gamma,
            "window": args.window,
            "lr_grid": tuple(args.lr_grid) if args.lr_grid else None,
            "tune_seeds": tuple(args.tune_seeds),
            "same_lr": not args.no_same_lr,
            "sim": {
                "num_train": num_train,
                "length_limit": args.length_limit,
                "per_prompt_weights": args.per_prompt_weights,
                "optimizer": args.optimizer,
                "lr": args.lr if args.lr is not None else SimConfig().lr,
                **sizes,
            },
        },
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``coba-rl simulate``; print the table and where the results are.

    Bad options, inconsistent settings and an output folder that cannot be written are
    reported on one line with exit status 2, before any simulation runs.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    return run_guarded(parser.prog, lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    check_output_dir(args.out)
    bar = None if args.quiet else TextProgress(1)

    def progress(done: int, total: int, label: str) -> None:
        if bar is not None:
            bar.total = total
            bar.update(done, label)

    comparison = run_comparison(settings, progress=progress)
    if bar is not None:
        bar.close()
    written = write_results(comparison, args.out, plots=not args.no_plots)
    print(SYNTHETIC_NOTE)
    print(_settings_text(settings))
    print()
    print("Each allocator at its tuned learning rate:")
    print(format_table(comparison, "tuned"))
    print("\nGenerated tokens and held-out accuracy (tuned learning rates):")
    print(format_token_table(comparison, "tuned"))
    if "same-lr" in comparison.views():
        print(f"\nSecondary view, every allocator at lr = {settings.sim.lr:g}:")
        print(format_table(comparison, "same-lr"))
    print(f"\nTable:   {written['markdown']}")
    print(f"Data:    {written['json']}")
    pngs = [str(p) for p in written.values() if p.suffix == ".png"]
    print(f"Plots:   {', '.join(pngs) if pngs else 'none (matplotlib missing or --no-plots)'}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
