"""The paper's Table 4 setting: DP vs heap vs vectorised greedy (same as ``coba-rl bench``).

Run: ``python benchmarks/paper_setting.py [--quick]``. Reports medians and ratios measured
in one run; the absolute times depend on the machine.
"""

from __future__ import annotations

import sys

from coba_rl.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["bench", *sys.argv[1:]]))
