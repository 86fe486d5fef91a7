"""Memory: lookups never grow the state, and a million tracked prompts fit a known bound.

The tracker stores, per prompt, its key (8 bytes for an int id, 4 bytes per character of
the longest string id), its position in the sorted order (8 bytes), ``window`` pairs of
(successes, rollouts) (16 bytes each) and an appearance count (8 bytes). The bound below
is that layout; ``tests/memory_probe.py`` measures the process's resident set in a fresh
subprocess, and ``docs/reliability.md`` quotes the measurements.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import coba_rl
from test_contract import CASES, Case

PROBE = Path(__file__).parent / "memory_probe.py"
MILLION = 1_000_000


def _bytes_per_prompt(key_bytes: int, window: int) -> int:
    return key_bytes + 8 + 16 * window + 8


def _tracked(alloc: Any) -> int:
    return len(alloc.tracker) if hasattr(alloc, "tracker") else len(alloc.history)


@pytest.mark.parametrize("kind", ["int", "str"])
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_lookups_never_grow_the_state(case: Case, kind: str) -> None:
    alloc = case.make()
    seen = list(range(20)) if kind == "int" else [f"p{i}" for i in range(20)]
    alloc.update([i for i in seen for _ in range(8)], [1.0, 0.0] * 80)
    before, tracked = json.dumps(alloc.state_dict()), _tracked(alloc)
    for start in range(100, 5100, 1000):
        unseen = list(range(start, start + 1000))
        if kind == "str":
            unseen = [f"p{i}" for i in unseen]
        alloc.pass_rates(unseen)
        alloc.allocate([*seen[:5], *unseen[:50]], 55 * 4)
    assert _tracked(alloc) == tracked == 20
    assert json.dumps(alloc.state_dict()) == before


def test_tracker_lookup_and_failed_record_never_grow() -> None:
    t = coba_rl.PassRateTracker(window=2)
    t.record(["a", "b"], [1.0, 0.0])
    nbytes = t.nbytes()
    t.lookup([f"x{i}" for i in range(10_000)])
    t.pass_rates(["c", "d"])
    with pytest.raises(ValueError, match="not finite"):
        t.record(["new-1", "new-2"], [1.0, float("nan")])
    with pytest.raises(TypeError, match="holds str prompt ids"):
        t.record([1, 2], [1.0, 0.0])
    assert len(t) == 2 and t.nbytes() == nbytes


@pytest.mark.parametrize("window", [1, 4])
def test_million_int_ids_nbytes(window: int) -> None:
    t = coba_rl.PassRateTracker(window=window)
    ids = np.arange(MILLION, dtype=np.int64) * 3
    t.record(ids, np.ones(MILLION))
    assert len(t) == MILLION
    assert t.nbytes() == MILLION * _bytes_per_prompt(8, window)
    t.record(ids[::2], np.zeros(MILLION // 2))  # seen again: no growth
    assert t.nbytes() == MILLION * _bytes_per_prompt(8, window)


def test_million_string_ids_nbytes() -> None:
    t = coba_rl.PassRateTracker()
    ids = np.array([f"prompt-{i:07d}" for i in range(MILLION)])  # 14 characters each
    t.record(ids, np.ones(MILLION))
    assert t.nbytes() == MILLION * _bytes_per_prompt(4 * 14, 1)  # 88 bytes per prompt


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc (Linux)")
def test_million_prompts_resident_memory() -> None:
    """The live resident growth of tracking 10^6 prompts is the arrays, plus a little."""
    out = subprocess.run(
        [sys.executable, str(PROBE), "--prompts", str(MILLION), "--ids", "int"],
        capture_output=True,
        text=True,
        check=True,
    )
    m = json.loads(out.stdout)
    assert m["tracked"] == MILLION
    assert m["nbytes"] == MILLION * _bytes_per_prompt(8, 1)
    assert m["rss_delta_trimmed"] <= m["nbytes"] + 16 * 2**20
