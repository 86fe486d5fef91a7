"""Every benchmark stage, exactly as ``coba-rl bench`` (same options, same result files).

Run: ``python benchmarks/run_all.py [--quick] [--out DIR] [--update-docs docs/performance.md]``.
"""

from __future__ import annotations

import sys

from coba_rl.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["bench", *sys.argv[1:]]))
