"""Tracker throughput: ``CoBAAllocator.update()`` rollouts per second, save and load times.

Each size is ``n`` rollouts per step, 16 per prompt (``n / 16`` prompts a step), drawn
from a dataset of ``n`` prompts indexed ``0 .. n - 1`` (stable dataset indices, as
trainers pass them) by a random sampler: one epoch of 16 steps records every prompt for
the first time, then a second epoch revisits them. A prompt's 16 rollouts are
contiguous, as a GRPO trainer lays them out. After the largest size the allocator holds
``n`` prompts; it is saved, loaded and compared.
"""

from __future__ import annotations

import os
import statistics
import tempfile
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from coba_rl.allocator import CoBAAllocator
from coba_rl.bench._timing import timed
from coba_rl.config import CoBAConfig

__all__ = ["TRACKER_SIZES", "run_persistence", "run_tracker_throughput"]

#: Rollouts per step of the full benchmark.
TRACKER_SIZES = (10**4, 10**5, 10**6)
ROLLOUTS_PER_PROMPT = 16
STEPS_PER_EPOCH = 16


def _epoch_steps(
    rng: np.random.Generator, n_prompts: int, per_step: int
) -> list[tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]]:
    """One epoch: (rollout ids, rewards) per step, prompts shuffled, rollouts contiguous."""
    order = rng.permutation(n_prompts)
    latent = rng.beta(0.6, 0.9, size=n_prompts)
    steps = []
    for start in range(0, n_prompts, per_step):
        prompts = order[start : start + per_step]
        ids = np.repeat(prompts, ROLLOUTS_PER_PROMPT)
        rewards = (rng.random(ids.size) < latent[ids]).astype(np.float64)
        steps.append((ids, rewards))
    return steps


def run_tracker_throughput(
    sizes: Sequence[int] = TRACKER_SIZES,
    seed: int = 0,
    config: CoBAConfig | None = None,
    progress: Callable[[str], None] | None = None,
) -> tuple[list[dict[str, Any]], CoBAAllocator]:
    """Time ``update()`` per step for each size (two epochs: new ids, then seen ids).

    Returns:
      One JSON-ready row per size (median seconds per step for new-id and seen-id
      steps, rollouts per second over all steps, tracked prompts, tracker bytes), and
      the allocator of the largest size (it holds ``max(sizes)`` prompts).
    """
    rng = np.random.default_rng(seed)
    cfg = config if config is not None else CoBAConfig()
    rows = []
    largest: CoBAAllocator | None = None
    for n in sorted(sizes):
        per_step = max(1, n // ROLLOUTS_PER_PROMPT)
        n_prompts = per_step * STEPS_PER_EPOCH
        alloc = CoBAAllocator(cfg)
        times: dict[str, list[float]] = {"new": [], "seen": []}
        for phase in ("new", "seen"):
            for ids, rewards in _epoch_steps(rng, n_prompts, per_step):
                t, _ = timed(lambda: alloc.update(ids, rewards))  # noqa: B023
                times[phase].append(t)
        every = times["new"] + times["seen"]
        rollouts = per_step * ROLLOUTS_PER_PROMPT
        rows.append(
            {
                "rollouts_per_step": rollouts,
                "prompts_per_step": per_step,
                "steps": len(every),
                "median_s_new_ids": statistics.median(times["new"]),
                "median_s_seen_ids": statistics.median(times["seen"]),
                "max_s": max(every),
                "rollouts_per_s": rollouts / statistics.median(every),
                "tracked_prompts": len(alloc.tracker),
                "tracker_nbytes": alloc.tracker.nbytes(),
            }
        )
        if progress:
            progress(
                f"tracker, {rollouts} rollouts/step: "
                f"{rows[-1]['rollouts_per_s'] / 1e6:.1f} M rollouts/s"
            )
        largest = alloc
    assert largest is not None, "sizes must not be empty"
    return rows, largest


def run_persistence(
    alloc: CoBAAllocator, progress: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Save and load ``alloc`` through a JSON file; time both, measure the file, compare.

    Returns:
      JSON-ready dict: ``tracked_prompts``, ``save_s``, ``load_s``, ``file_bytes``,
      ``tracker_nbytes`` and ``round_trip_identical`` (same ids, counts and shape).
    """
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "allocator.json")
        t_save, _ = timed(lambda: alloc.save(path))
        size = os.path.getsize(path)
        t_load, loaded = timed(lambda: CoBAAllocator.load(path))
    mine, theirs = alloc.tracker, loaded.tracker
    identical = (
        np.array_equal(mine._keys, theirs._keys)
        and np.array_equal(mine._succ, theirs._succ)
        and np.array_equal(mine._total, theirs._total)
        and np.array_equal(mine._appearances, theirs._appearances)
        and (alloc.alpha, alloc.beta, alloc.step) == (loaded.alpha, loaded.beta, loaded.step)
    )
    if progress:
        progress(f"tracker: saved and loaded {len(mine)} prompts")
    return {
        "tracked_prompts": len(mine),
        "window": mine.window,
        "save_s": t_save,
        "load_s": t_load,
        "file_bytes": size,
        "tracker_nbytes": mine.nbytes(),
        "round_trip_identical": bool(identical),
    }
