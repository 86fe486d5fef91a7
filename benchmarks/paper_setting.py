"""The paper's Table 4 setting only: DP vs the paper's heap vs the vectorised greedy.

Run: ``python benchmarks/paper_setting.py [--reps N] [--dp-reps N] [--seed S]``. Prints the
Markdown table of medians, minima, maxima and ratios, measured in one run; the absolute
times depend on the machine. ``coba-rl bench`` runs this stage and every other one.
"""

from __future__ import annotations

import argparse

from coba_rl.bench import format_paper_table, run_paper_setting


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=10, help="batches per case")
    parser.add_argument("--dp-reps", type=int, default=3, help="batches the DP runs on")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    cases = run_paper_setting(reps=args.reps, dp_reps=args.dp_reps, seed=args.seed)
    print(format_paper_table(cases))
    return 0 if all(c.counts_identical and c.dp_objective_equal for c in cases) else 1


if __name__ == "__main__":
    raise SystemExit(main())
