"""The ``coba-rl experiment`` command line."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from coba_rl._cli import CommandParser, UsageError, check_output_dir, run_guarded, validated
from coba_rl.experiment.settings import ALLOCATORS, ExperimentSettings, preset

__all__ = ["build_parser", "main"]


def build_parser() -> CommandParser:
    """The argument parser of ``coba-rl experiment``."""
    p = CommandParser(
        prog="coba-rl experiment",
        description="Train a tiny transformer from scratch on CPU on a generated addition "
        "task with GRPO (Adam, token-mean loss), once per allocator: uniform, Knapsack-RL, "
        "CoBA-RL paper and release at the same rollout budget, CoBA-RL at half of it; each "
        "with its learning rate tuned on a validation split; several seeds. Writes "
        "results.json, results.md and plots. Needs the [experiment] extra (torch).",
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--quick", action="store_true", help="a short run: 1 seed, 48 steps (about 2 minutes)"
    )
    mode.add_argument(
        "--smoke", action="store_true", help="a tiny end-to-end check of the loop (about 1 minute)"
    )
    p.add_argument(
        "--out",
        default=os.path.join("results", "experiment"),
        help="output folder; created and checked for writing before any training",
    )
    p.add_argument(
        "--seeds", type=int, nargs="+", default=None, help="seeds (default: 0 1 2; 0 with --quick)"
    )
    p.add_argument(
        "--steps", type=int, default=None, help="GRPO steps per run (default: 120; 48 with --quick)"
    )
    p.add_argument(
        "--allocators",
        nargs="+",
        default=None,
        metavar="NAME",
        help=f"allocators run at the full budget, from {', '.join(ALLOCATORS)} (default: the "
        "first four; coba-paper-tokens spends the expected tokens of the rollout budget)",
    )
    p.add_argument(
        "--half-budget",
        nargs="*",
        default=None,
        metavar="NAME",
        help="allocators also run at half the budget (default: coba-paper coba-release; "
        "none if given without names)",
    )
    p.add_argument("--threads", type=int, default=1, help="torch threads (the model is tiny)")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--replot",
        action="store_true",
        help="redraw results.md and the plots from OUT/results.json (no training)",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``coba-rl experiment``; print the table and where the results are.

    Bad options, inconsistent settings, a missing torch and an output folder that cannot
    be written are reported on one line with exit status 2, before any training.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    return run_guarded(parser.prog, lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    from coba_rl.experiment.report import format_table, write_markdown, write_plots

    if args.replot:
        src = out / "results.json"
        try:
            record = json.loads(src.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise UsageError(f"cannot read {src}: {exc}") from None
        plots = [] if args.no_plots else write_plots(record, out)
        print(write_markdown(record, out / "results.md", plots))
        return 0
    values: dict[str, Any] = dict(
        preset("smoke" if args.smoke else "quick" if args.quick else "full")
    )
    values["threads"] = args.threads
    if args.seeds is not None:
        values["seeds"] = tuple(args.seeds)
        if args.quick or args.smoke:
            values["tune_seed"] = args.seeds[0]
    if args.steps is not None:
        values["steps"] = args.steps
    if args.allocators is not None:
        values["allocators"] = tuple(args.allocators)
    if args.half_budget is not None:
        values["half_budget"] = tuple(args.half_budget)
    settings = validated(ExperimentSettings, values)
    if importlib.util.find_spec("torch") is None:
        raise UsageError("needs torch: pip install 'coba-rl[experiment]'")
    check_output_dir(out)

    from coba_rl.experiment._run import run_experiment
    from coba_rl.simulate import TextProgress

    bar = None if args.quiet else TextProgress(1)

    def progress(done: int, total: int, label: str) -> None:
        if bar is not None:
            bar.total = total
            bar.update(done, label)

    record = run_experiment(settings, progress=progress)
    if bar is not None:
        bar.close()
    json_path = out / "results.json"
    tmp = out / ".results.json.tmp"
    tmp.write_text(json.dumps(record), encoding="utf-8")
    tmp.replace(json_path)
    plots = [] if args.no_plots else write_plots(record, out)
    md = write_markdown(record, out / "results.md", plots)
    print(record["note"])
    print(f"wall time {record['wall_seconds'] / 60:.1f} min\n")
    print(format_table(record))
    print(f"\nTable:   {md}\nData:    {json_path}")
    print(f"Plots:   {', '.join(map(str, plots)) if plots else 'none'}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
