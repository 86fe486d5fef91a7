"""The ``coba-rl`` command line: ``coba-rl bench`` and ``coba-rl simulate``.

Every subcommand follows the same conventions: ``--help`` shows each option's default;
bad arguments give one line, ``coba-rl <command>: error: <what is wrong>``, and exit
status 2; the output folder is created and checked before any work starts.
``coba-rl --version`` prints the installed version.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from coba_rl import __version__
from coba_rl._cli import CommandParser, run_guarded

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``coba-rl`` console script."""
    parser = CommandParser(
        prog="coba-rl",
        description="CoBA-RL rollout budget allocation: benchmarks and tools.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    from coba_rl.bench._command import add_arguments as add_bench_arguments

    add_bench_arguments(
        sub.add_parser(
            "bench",
            help="DP vs heap vs vectorised greedy (the paper's Table 4), sweeps, tracker",
            description="Time the DP, the paper's heap and the vectorised greedy on identical "
            "inputs at M=512, B=8192, [2, 128]; sweep M and n_up; time the tracker. Checks "
            "that every path agrees and writes results.json, results.md and a plot.",
        )
    )
    sub.add_parser(
        "simulate",
        add_help=False,
        help="compare allocators on a synthetic RLVR model (coba-rl simulate --help)",
    )
    sub.add_parser(
        "experiment",
        add_help=False,
        help="GRPO on a tiny transformer with each allocator (coba-rl experiment --help)",
    )
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["simulate"]:  # its own parser, imported only when used
        from coba_rl.simulate import main as simulate_main

        return simulate_main(args_list[1:])
    if args_list[:1] == ["experiment"]:
        from coba_rl.experiment._command import main as experiment_main

        return experiment_main(args_list[1:])
    args = parser.parse_args(argv)

    if args.command == "bench":
        from coba_rl.bench._command import run as run_bench

        return run_guarded("coba-rl bench", lambda: run_bench(args))
    return 2  # pragma: no cover (argparse enforces a command)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
