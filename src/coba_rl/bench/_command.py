"""``coba-rl bench``: every stage, its progress on stderr, its results in files.

Stages: the paper's Table 4 setting, token budgets at that setting, the sweep over M, the
sweep over n_up, the tracker's throughput and persistence, and allocation at scale (10^6
distinct rates; n_up = 65,536).
``--quick`` keeps every stage but lowers the repetitions and the caps. ``--check`` makes
a missed target an error (exit status 1), as a disagreement between paths always is.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from coba_rl._cli import UsageError, check_output_dir
from coba_rl.bench._machine import machine_info
from coba_rl.bench._paper import PAPER_SETTING, PAPER_TABLE4, format_paper_table, run_paper_setting
from coba_rl.bench._report import (
    PLOT_NAME,
    format_markdown,
    plot_sweep,
    targets_missed,
    update_docs,
    write_results,
)
from coba_rl.bench._scale import run_scale
from coba_rl.bench._sweep import SWEEP_SIZES, growth_exponents, run_bounds_sweep, run_size_sweep
from coba_rl.bench._throughput import TRACKER_SIZES, run_persistence, run_tracker_throughput
from coba_rl.bench._tokens import TOKEN_SETTING, format_token_table, run_token_budget

__all__ = ["BenchSettings", "add_arguments", "run", "run_all"]


@dataclass(frozen=True)
class BenchSettings:
    """Repetitions, caps and sizes of one benchmark run."""

    paper_reps: int
    paper_dp_reps: int
    sizes: tuple[int, ...]
    cap_s: float
    sweep_reps: int
    rep_budget_s: float
    memory_cap_s: float
    tracker_sizes: tuple[int, ...]
    seed: int = 0
    command: str = "coba-rl bench"
    scale_reps: int = 3
    token_reps: int = 20
    token_batches: int = 5

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> BenchSettings:
        """Full or ``--quick`` defaults, overridden by the explicit options."""
        quick = bool(args.quick)
        reps = args.reps if args.reps is not None else (3 if quick else 10)
        return cls(
            paper_reps=reps,
            paper_dp_reps=1 if quick else min(3, reps),
            sizes=tuple(args.sizes) if args.sizes else SWEEP_SIZES,
            cap_s=args.cap if args.cap is not None else (1.0 if quick else 20.0),
            sweep_reps=min(reps, 3 if quick else 5),
            rep_budget_s=0.5 if quick else 2.0,
            memory_cap_s=0.25 if quick else 5.0,
            tracker_sizes=tuple(args.tracker_sizes) if args.tracker_sizes else TRACKER_SIZES,
            seed=args.seed,
            command=_command(args),
            scale_reps=1 if quick else 3,
            # --quick times the same five batches, fewer rounds each (the pooled median of
            # two batches falls between them where one needs a second ranking).
            token_reps=5 if quick else 20,
            token_batches=5,
        )


def _command(args: argparse.Namespace) -> str:
    parts = ["coba-rl bench"]
    if args.quick:
        parts.append("--quick")
    for flag, value in (("--reps", args.reps), ("--cap", args.cap)):
        if value is not None:
            parts.append(f"{flag} {value:g}")
    if args.seed:
        parts.append(f"--seed {args.seed}")
    for flag, values in (("--sizes", args.sizes), ("--tracker-sizes", args.tracker_sizes)):
        if values:
            parts.append(f"{flag} {','.join(str(v) for v in values)}")
    return " ".join(parts)


def _int_list(text: str) -> list[int]:
    try:
        values = [int(float(v)) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``coba-rl bench``."""
    parser.add_argument(
        "--quick", action="store_true", help="fewer repetitions, lower caps (under a minute)"
    )
    parser.add_argument("--out", type=Path, default=Path("results/bench"), help="results folder")
    parser.add_argument(
        "--reps",
        type=_positive_int,
        default=None,
        help="repetitions at the paper's setting (default: 10; 3 with --quick)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of every random input")
    parser.add_argument(
        "--cap",
        type=_positive_float,
        default=None,
        help="seconds per call before a sweep path is dropped (default: 20; 1 with --quick)",
    )
    parser.add_argument(
        "--sizes",
        type=_int_list,
        default=None,
        help=f"M values of the sweep, comma-separated (default: {','.join(map(str, SWEEP_SIZES))})",
    )
    parser.add_argument(
        "--tracker-sizes",
        type=_int_list,
        default=None,
        help="rollouts per step of the tracker stage, comma-separated "
        f"(default: {','.join(map(str, TRACKER_SIZES))})",
    )
    parser.add_argument(
        "--update-docs",
        type=Path,
        default=None,
        metavar="DOC",
        help="also splice results.md into DOC between its marker lines and copy the plot "
        "to DOC's figures/ folder (default: no DOC)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    parser.add_argument(
        "--check",
        action="store_true",
        help="exit with status 1 when a target is missed, not only when paths disagree",
    )


def _progress(quiet: bool) -> Callable[[str], None]:
    start = time.perf_counter()

    def report(msg: str) -> None:
        if not quiet:
            elapsed = time.perf_counter() - start
            print(f"[{elapsed:6.1f} s] {msg}", file=sys.stderr, flush=True)

    return report


def run_all(settings: BenchSettings, progress: Callable[[str], None]) -> dict[str, Any]:
    """Every stage; returns the JSON-ready results (with ``ok``: every check passed)."""
    start = time.perf_counter()
    created = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    progress(f"paper setting: {settings.paper_reps} repetitions per case")
    cases = run_paper_setting(
        reps=settings.paper_reps,
        dp_reps=settings.paper_dp_reps,
        seed=settings.seed,
        progress=progress,
    )
    progress(f"token budgets: {settings.token_batches} batches x {settings.token_reps} rounds")
    tokens = [
        c.to_json()
        for c in run_token_budget(
            reps=settings.token_reps,
            batches=settings.token_batches,
            seed=settings.seed,
            progress=progress,
        )
    ]
    sweep = run_size_sweep(
        settings.sizes,
        cap_s=settings.cap_s,
        reps=settings.sweep_reps,
        rep_budget_s=settings.rep_budget_s,
        memory_cap_s=settings.memory_cap_s,
        seed=settings.seed,
        progress=progress,
    )
    bounds_m = max(min(settings.sizes), max(settings.sizes) // 4)
    bounds = run_bounds_sweep(
        bounds_m,
        reps=settings.sweep_reps,
        rep_budget_s=settings.rep_budget_s,
        memory_cap_s=settings.memory_cap_s,
        seed=settings.seed + 1,
        progress=progress,
    )
    throughput, largest = run_tracker_throughput(
        settings.tracker_sizes, seed=settings.seed, progress=progress
    )
    persistence = run_persistence(largest, progress=progress)
    scale = run_scale(reps=settings.scale_reps, progress=progress)
    checks = (
        [c.counts_identical and c.dp_objective_equal for c in cases]
        + [q.counts_identical and q.dp_objective_equal is not False for q in sweep + bounds]
        + [persistence["round_trip_identical"]]
        + [c["agrees"] for c in tokens]
    )
    return {
        "schema": "coba-rl.bench/1",
        "created": created,
        "elapsed_s": time.perf_counter() - start,
        "machine": machine_info(),
        "settings": asdict(settings),
        "ok": all(checks),
        "paper_setting": {
            "setting": dict(PAPER_SETTING),
            "paper_table4_s": dict(PAPER_TABLE4),
            "cases": [c.to_json() for c in cases],
            "table": format_paper_table(cases),
        },
        "token_budget": {
            "setting": dict(TOKEN_SETTING),
            "cases": tokens,
            "table": format_token_table(tokens),
        },
        "sweep": {
            "settings": {
                "n_low": 2,
                "n_up": 128,
                "reps": settings.sweep_reps,
                "rep_budget_s": settings.rep_budget_s,
                "cap_s": settings.cap_s,
                "memory_cap_s": settings.memory_cap_s,
            },
            "points": [q.to_json() for q in sweep],
            "growth_in_m": growth_exponents(sweep, axis=lambda q: q.m, min_axis=1024),
        },
        "bounds_sweep": {
            "settings": {"m": bounds_m, "n_low": 2},
            "points": [q.to_json() for q in bounds],
            "growth_in_k": growth_exponents(bounds, axis=lambda q: q.n_up - q.n_low),
        },
        "tracker": {"throughput": throughput, "persistence": persistence},
        "scale": scale,
    }


def run(args: argparse.Namespace) -> int:
    """Run ``coba-rl bench`` from parsed options.

    Exit status 1 if paths disagree, or (with ``--check``) if any target is missed.

    Raises:
      UsageError: the results folder cannot be written or ``--update-docs`` names no file;
        checked before any stage runs.
    """
    check_output_dir(args.out)
    if args.update_docs is not None and not args.update_docs.is_file():
        raise UsageError(f"--update-docs: no such file '{args.update_docs}'")
    settings = BenchSettings.from_args(args)
    progress = _progress(args.quiet)
    results = run_all(settings, progress)
    markdown = format_markdown(results)
    out: Path = args.out
    files = write_results(out, results, markdown)
    plot = out / PLOT_NAME
    drawn = plot_sweep(results["sweep"]["points"], plot)
    if drawn:
        files["plot"] = plot
    else:
        print("matplotlib is not installed: skipping the plot (pip install 'coba-rl[plot]')")
    if args.update_docs is not None:
        update_docs(args.update_docs, markdown, plot if drawn else None)
        files["docs"] = args.update_docs
    print(markdown)
    for kind, path in files.items():
        print(f"wrote {kind}: {path}")
    if not results["ok"]:
        return 1
    return 1 if args.check and targets_missed(results) else 0
