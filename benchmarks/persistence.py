"""Save and load of a large allocator state: the compact format against version 1.

Run: ``python benchmarks/persistence.py [--prompts 1000000] [--window 3] [--repeats 3]``.

Builds a :class:`coba_rl.CoBAAllocator` tracking ``--prompts`` prompts (three steps over
every prompt, 4 to 16 rollouts each, so each prompt's window is full), then times, in the
same run:

* ``save`` and ``load`` of the current format (compact base64 arrays, state version 2);
* the baseline: the same state written as version 1 did (nested JSON lists through
  ``json.dump``), and that file loaded (this version still reads it).

Prints the median of ``--repeats`` timings, the file sizes and the ratios, with the
machine and library versions. Timings vary with the machine's load; the ratios, measured
in one run, are what compares.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np

import coba_rl


def _plain(value: Any) -> Any:
    """The state with every compact array expanded to nested lists (the version 1 layout)."""
    if isinstance(value, dict) and set(value) == {"dtype", "shape", "data"}:
        raw = base64.b64decode(value["data"])
        return np.frombuffer(raw, dtype=value["dtype"]).reshape(value["shape"]).tolist()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _median_time(fn: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def build(prompts: int, window: int, seed: int = 0) -> coba_rl.CoBAAllocator:
    rng = np.random.default_rng(seed)
    alloc = coba_rl.CoBAAllocator(coba_rl.CoBAConfig(window=window))
    latent = rng.beta(0.6, 0.9, size=prompts)
    for _ in range(window):
        order = rng.permutation(prompts)
        sizes = rng.integers(4, 17, size=prompts)
        ids = np.repeat(order, sizes[order])
        alloc.update(ids, (rng.random(ids.size) < latent[ids]).astype(np.float64))
    return alloc


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=10**6, help="tracked prompts (10^6)")
    parser.add_argument("--window", type=int, default=3, help="pass-rate window (3)")
    parser.add_argument("--repeats", type=int, default=3, help="timings per measure (3)")
    args = parser.parse_args()
    print(
        f"coba-rl {coba_rl.__version__}, numpy {np.__version__}, Python "
        f"{platform.python_version()}, {platform.machine()}, {os.cpu_count()} CPUs"
    )
    alloc = build(args.prompts, args.window)
    with tempfile.TemporaryDirectory() as tmp:
        new, old = os.path.join(tmp, "v2.json"), os.path.join(tmp, "v1.json")
        t_save = _median_time(lambda: alloc.save(new), args.repeats)
        t_load = _median_time(lambda: coba_rl.CoBAAllocator.load(new), args.repeats)
        state = alloc.state_dict()
        v1 = _plain(state)
        v1["version"] = 1
        del v1["rollout_steps"]

        def save_v1() -> None:  # the version 1 writer: json.dump of nested lists
            with open(old, "w", encoding="utf-8") as f:
                json.dump(v1, f, separators=(",", ":"))
                f.flush()
                os.fsync(f.fileno())

        t_save_v1 = _median_time(save_v1, args.repeats)
        t_load_v1 = _median_time(lambda: coba_rl.CoBAAllocator.load(old), args.repeats)
        same = coba_rl.CoBAAllocator.load(old).state_dict() == state
        size, size_v1 = os.path.getsize(new), os.path.getsize(old)
    print(f"{len(alloc.tracker):,} prompts, window {args.window}")
    print(f"{'':24}{'save (s)':>10}{'load (s)':>10}{'file (MB)':>11}")
    print(f"{'compact (version 2)':24}{t_save:10.2f}{t_load:10.2f}{size / 1e6:11.1f}")
    print(f"{'lists (version 1)':24}{t_save_v1:10.2f}{t_load_v1:10.2f}{size_v1 / 1e6:11.1f}")
    print(
        f"speed-up: save {t_save_v1 / t_save:.1f}x, load {t_load_v1 / t_load:.1f}x; "
        f"version 1 file resumes to the same state: {same}"
    )
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
