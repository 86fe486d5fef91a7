"""The ``coba-rl`` command line: ``coba-rl bench`` runs the bundled benchmark."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``coba-rl`` console script."""
    parser = argparse.ArgumentParser(
        prog="coba-rl",
        description="CoBA-RL rollout budget allocation: benchmarks and tools.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    bench = sub.add_parser(
        "bench",
        help="DP vs heap vs vectorised greedy at the paper's Table 4 setting",
        description="Time the DP, the paper's heap and the vectorised greedy on identical "
        "inputs at M=512, B=8192, [2, 128], and check that they agree.",
    )
    bench.add_argument("--quick", action="store_true", help="fewer repetitions (under a minute)")
    bench.add_argument("--reps", type=int, default=None, help="repetitions per path")
    bench.add_argument("--seed", type=int, default=0, help="seed of the pass-rate batches")
    bench.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    args = parser.parse_args(argv)

    if args.command == "bench":
        from coba_rl.bench import main_paper

        reps = args.reps if args.reps is not None else (3 if args.quick else 10)
        if reps < 1:
            parser.error("--reps must be at least 1")
        dp_reps = 1 if args.quick else min(3, reps)
        return main_paper(reps=reps, dp_reps=dp_reps, seed=args.seed, quiet=args.quiet)
    return 2  # pragma: no cover (argparse enforces a command)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
