"""Tracker stage only: ``CoBAAllocator.update()`` rollouts per second, save and load.

Run: ``python benchmarks/tracker_throughput.py [--sizes 10000,100000,1000000]``. The last
size also sets how many prompts are saved and loaded.
"""

from __future__ import annotations

import argparse

from coba_rl.bench import run_persistence, run_tracker_throughput


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000", help="rollouts per step")
    args = parser.parse_args()
    sizes = [int(float(s)) for s in args.sizes.split(",")]
    rows, largest = run_tracker_throughput(sizes)
    for r in rows:
        print(
            f"{r['rollouts_per_step']:>9,} rollouts/step: {r['rollouts_per_s'] / 1e6:6.1f} M/s "
            f"(new ids {r['median_s_new_ids'] * 1e3:.2f} ms, "
            f"seen ids {r['median_s_seen_ids'] * 1e3:.2f} ms per step)"
        )
    per = run_persistence(largest)
    print(
        f"{per['tracked_prompts']:,} prompts: save {per['save_s']:.2f} s, "
        f"load {per['load_s']:.2f} s, file {per['file_bytes'] / 1e6:.1f} MB, "
        f"arrays {per['tracker_nbytes'] / 1e6:.1f} MB"
    )
    return 0 if per["round_trip_identical"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
