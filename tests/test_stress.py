"""Long randomised runs: allocate, update, save and load, with every invariant checked.

Each run drives one allocator for ``STRESS_STEPS`` training steps with random batch sizes
and budgets (zero, below the floor, ordinary, at capacity), a pool of prompts that drifts
(unseen prompts enter, old ones leave), rollouts in shuffled order, and a save/load at
random points (to a file, through ``state_dict``/``load_state_dict`` in a fresh object, and
through ``from_state_dict``). After every step ``_check()`` asserts the allocator's
invariants, and the allocation is compared with a twin that never went through
persistence: a resumed allocator must make exactly the same decisions.

CI runs a short seeded version. ``make stress`` runs the long one (``STRESS_STEPS``,
default 5000 per run there, and ``STRESS_SEEDS`` seeds).
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import coba_rl
from test_contract import CASES, N_LOW, N_UP, Case

STEPS = int(os.environ.get("STRESS_STEPS", "600"))
SEEDS = range(int(os.environ.get("STRESS_SEEDS", "1")))
POOL = 150  # prompts available at any one time; the pool slides by one every other step


def _ids(raw: np.ndarray[Any, Any], kind: str) -> list[Any]:
    if kind == "int":
        return [int(i) for i in raw]
    return [f"q/{int(i)}/é" for i in raw]  # non-ASCII, sorts differently from the ints


def _budget(rng: np.random.Generator, case: Case, m: int) -> int:
    cap = m * (case.max_budget_per_prompt or 3 * N_UP)
    regime = rng.integers(0, 6)
    if m == 0 or regime == 0:
        return 0
    if regime == 1:
        return int(rng.integers(0, m * N_LOW))  # below the floor: the even split
    if regime == 2:
        return cap  # every prompt at its cap
    return int(rng.integers(m * N_LOW, cap + 1))


def _check_allocation(a: coba_rl.Allocation, case: Case, m: int, budget: int) -> None:
    c = a.counts
    assert c.dtype == np.int64 and c.shape == (m,)
    assert sum(c.tolist()) == budget == a.budget
    assert (c >= 0).all()
    if case.capped:
        assert (c <= N_UP).all()
    if budget >= m * N_LOW:
        assert (c >= N_LOW).all()


def _reload(alloc: Any, case: Case, how: int, path: Path) -> Any:
    if how == 0:
        alloc.save(path)
        return type(alloc).load(path)
    if how == 1:
        fresh = case.make()
        fresh.load_state_dict(json.loads(json.dumps(alloc.state_dict())))
        return fresh
    return type(alloc).from_state_dict(json.loads(json.dumps(alloc.state_dict())))


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("kind", ["int", "str"])
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_long_run(case: Case, kind: str, seed: int, tmp_path: Path) -> None:
    rng = np.random.default_rng([seed, CASES.index(case), kind == "str"])
    true_p = np.concatenate([[0.0, 1.0], rng.random(STEPS // 2 + POOL)])
    alloc, twin = case.make(), case.make()
    reloads = 0
    for step in range(STEPS):
        start = step // 2
        m = int(rng.integers(0, 40))
        raw = rng.choice(np.arange(start, start + POOL), size=m, replace=False)
        ids = _ids(raw, kind)
        budget = _budget(rng, case, m)
        tracked = len(alloc.tracker) if hasattr(alloc, "tracker") else len(alloc.history)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", coba_rl.BudgetWarning)
            a = alloc.allocate(ids, budget)
            b = twin.allocate(ids, budget)
        _check_allocation(a, case, m, budget)
        assert a.counts.tolist() == b.counts.tolist()
        now = len(alloc.tracker) if hasattr(alloc, "tracker") else len(alloc.history)
        assert now == tracked  # allocate never adds the unseen ids

        rows = np.repeat(raw, a.counts)
        rewards = (rng.random(rows.size) < true_p[rows % true_p.size]).astype(float)
        if rng.random() < 0.3:  # rollouts need not arrive grouped by prompt
            order = rng.permutation(rows.size)
            rows, rewards = rows[order], rewards[order]
        alloc.update(_ids(rows, kind), rewards)
        twin.update(_ids(rows, kind), rewards)
        alloc._check()

        if rng.random() < 0.08:
            alloc = _reload(alloc, case, int(rng.integers(0, 3)), tmp_path / "state.json")
            alloc._check()
            reloads += 1
            assert alloc.state_dict() == twin.state_dict()  # nothing lost, nothing added
    assert alloc.state_dict() == twin.state_dict()
    assert alloc.step == STEPS
    assert reloads > 0
    assert sorted(p.name for p in tmp_path.iterdir()) in ([], ["state.json"])  # no temp files
