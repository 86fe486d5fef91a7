"""The ``coba-rl experiment`` command line."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from coba_rl.experiment.settings import ExperimentSettings, preset

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``coba-rl experiment``."""
    p = argparse.ArgumentParser(
        prog="coba-rl experiment",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Train a tiny transformer from scratch on CPU on a generated addition "
        "task with GRPO (Adam, token-mean loss), once per allocator: uniform, Knapsack-RL, "
        "CoBA-RL paper and release at the same rollout budget, CoBA-RL at half of it; each "
        "with its learning rate tuned on a validation split; several seeds. Writes "
        "results.json, results.md and plots. Needs the [experiment] extra (torch).",
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="a short run (about 5 minutes)")
    mode.add_argument(
        "--smoke", action="store_true", help="a tiny end-to-end check of the loop (about 1 minute)"
    )
    p.add_argument("--out", default=os.path.join("results", "experiment"), help="output folder")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="override the seeds")
    p.add_argument("--steps", type=int, default=None, help="override the GRPO steps per run")
    p.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: 1; tiny model)"
    )
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--replot",
        action="store_true",
        help="redraw results.md and the plots from OUT/results.json (no training)",
    )
    return p


def _check_out(out: Path) -> None:
    """Fail before any work if ``out`` cannot be created or written."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-check"
        probe.write_text("", encoding="utf-8")
        probe.unlink()
    except OSError as exc:
        raise SystemExit(
            f"coba-rl experiment: error: cannot write to {out}: {exc.strerror}"
        ) from None


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``coba-rl experiment``; print the table and where the results are."""
    parser = build_parser()
    args = parser.parse_args(argv)
    out = Path(args.out)
    from coba_rl.experiment.report import format_table, write_markdown, write_plots

    if args.replot:
        src = out / "results.json"
        try:
            record = json.loads(src.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            parser.error(f"cannot read {src}: {exc}")
        plots = [] if args.no_plots else write_plots(record, out)
        print(write_markdown(record, out / "results.md", plots))
        return 0
    overrides = dict(preset("smoke" if args.smoke else "quick" if args.quick else "full"))
    for key in ("seeds", "steps", "threads"):
        value = getattr(args, key)
        if value is not None:
            overrides[key] = tuple(value) if key == "seeds" else value
    try:
        settings = ExperimentSettings(**overrides)  # type: ignore[arg-type]
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        msg = "; ".join(e["msg"] for e in exc.errors()) if hasattr(exc, "errors") else str(exc)
        parser.error(msg)
    try:
        import torch  # noqa: F401
    except ImportError:
        parser.error("needs torch: pip install 'coba-rl[experiment]'")
    _check_out(out)

    from coba_rl.experiment.run import run_experiment
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
