"""Measure what tracking many prompts costs: the tracker's arrays and the process's RSS.

Run in a fresh process, so that nothing else shares the heap::

    python tests/memory_probe.py --prompts 1000000 --ids str --window 1

Prints one JSON object, sizes in bytes: ``nbytes`` (the tracker's arrays), ``rss_delta``
(resident set growth once the prompts are tracked; freed temporaries that the C allocator
keeps count), ``rss_delta_trimmed`` (the same after ``malloc_trim``: what is live) and
``peak_delta`` (peak resident set growth while recording). Linux with glibc only.
``tests/test_memory.py`` runs it; ``docs/reliability.md`` quotes its output.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import resource

import numpy as np

import coba_rl


def _rss() -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("VmRSS not found in /proc/self/status")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=1_000_000)
    parser.add_argument("--ids", choices=["int", "str"], default="int")
    parser.add_argument("--window", type=int, default=1)
    args = parser.parse_args()
    n = args.prompts
    raw = np.arange(n, dtype=np.int64)
    ids = raw if args.ids == "int" else np.array([f"prompt-{i}" for i in range(n)])
    rewards = (raw % 3 == 0).astype(np.float64)
    tracker = coba_rl.PassRateTracker(window=args.window)
    gc.collect()
    base = _rss()
    base_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    tracker.record(ids, rewards)
    gc.collect()
    after = _rss()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    # glibc keeps freed temporaries in its heap; trimming shows what is still live.
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    trimmed = _rss()
    print(
        json.dumps(
            {
                "prompts": n,
                "ids": args.ids,
                "window": args.window,
                "tracked": len(tracker),
                "nbytes": tracker.nbytes(),
                "rss_delta": after - base,
                "rss_delta_trimmed": trimmed - base,
                "peak_delta": max(0, peak - base_peak),
            }
        )
    )


if __name__ == "__main__":
    main()
