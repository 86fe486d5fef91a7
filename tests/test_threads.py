"""Allocators shared between threads: concurrent updates, allocations and saves.

A trainer may update the allocator from one thread while another thread allocates,
logs or checkpoints it. Every public method holds the allocator's lock, so the state
after any interleaving is one that some sequential order of the same calls produces.
The switch interval is shortened to force interleavings inside the numpy-heavy methods.
"""

from __future__ import annotations

import copy
import json
import pickle
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import coba_rl
from test_contract import CASES, Case

THREADS = 8
UPDATES = 60  # per thread
SHARED = 5  # ids every thread records: their appearance counts add up across threads


@pytest.fixture(autouse=True)
def _fast_switching() -> Iterator[None]:
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(old)


def _index(alloc: Any) -> coba_rl.PassRateTracker:
    index: coba_rl.PassRateTracker = (
        alloc.tracker if hasattr(alloc, "tracker") else alloc.history._index
    )
    return index


def _step(k: int, j: int) -> tuple[list[int], list[float]]:
    """Thread ``k``'s ``j``-th update: three new ids of its own, one shared id."""
    own = [100_000 * (k + 1) + 3 * j + d for d in range(3)]
    ids = [*own, j % SHARED]
    rows = [i for i in ids for _ in range(4)]
    rewards = [float((i + r) % 3 == 0) for i in ids for r in range(4)]
    return rows, rewards


def _run_threads(workers: list[Callable[[], None]]) -> list[BaseException]:
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(workers))

    def wrap(work: Callable[[], None]) -> None:
        try:
            barrier.wait()
            work()
        except BaseException as exc:  # collected and re-raised by the test
            errors.append(exc)

    threads = [threading.Thread(target=wrap, args=(w,)) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not any(t.is_alive() for t in threads), "a thread hung (deadlock?)"
    return errors


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_concurrent_updates_allocations_and_saves(case: Case, tmp_path: Path) -> None:
    alloc = case.make()
    done = threading.Event()
    snapshots: list[dict[str, Any]] = []

    def updater(k: int) -> Callable[[], None]:
        def work() -> None:
            for j in range(UPDATES):
                alloc.update(*_step(k, j))

        return work

    def reader() -> None:
        ids = [0, 1, 2, 100_000, 200_001, 999]
        while not done.is_set():
            a = alloc.allocate(ids, 6 * 8)
            assert int(a.counts.sum()) == 48
            snapshots.append(json.loads(json.dumps(alloc.state_dict())))
            alloc.save(tmp_path / "state.json")

    updaters = [updater(k) for k in range(THREADS)]

    def all_updates() -> None:
        errors = _run_threads(updaters)
        done.set()
        if errors:
            raise errors[0]

    errors = _run_threads([all_updates, reader, reader])
    assert errors == []
    assert alloc.step == THREADS * UPDATES
    alloc._check()
    index = _index(alloc)
    keys = index._keys
    assert np.unique(keys).size == keys.size == len(index)  # no duplicate ids
    expected = {i for k in range(THREADS) for j in range(UPDATES) for i in _step(k, j)[0]}
    assert set(keys.tolist()) == expected
    # every update added one appearance to each of its four ids
    assert int(index._appearances.sum()) == THREADS * UPDATES * 4
    shared = index.lookup(list(range(SHARED)))
    assert index._appearances[shared].tolist() == [THREADS * UPDATES // SHARED] * SHARED
    # each thread's own ids were recorded exactly as a sequential run records them
    twin = case.make()
    for k in range(THREADS):
        for j in range(UPDATES):
            rows, rewards = _step(k, j)
            twin.update(rows[:12], rewards[:12])
    own = sorted(expected - set(range(SHARED)))
    np.testing.assert_array_equal(alloc.pass_rates(own), twin.pass_rates(own))
    # the state round-trips, and every snapshot taken mid-run was a consistent state
    restored = type(alloc).from_state_dict(json.loads(json.dumps(alloc.state_dict())))
    assert restored.state_dict() == alloc.state_dict()
    assert snapshots
    for snap in snapshots[:: max(1, len(snapshots) // 20)]:
        type(alloc).from_state_dict(snap)._check()
    type(alloc).load(tmp_path / "state.json")._check()


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_concurrent_loads_swap_whole_states(case: Case) -> None:
    """``load_state_dict`` racing with ``update``: never a mixture of two states."""
    alloc = case.make()
    source = case.make()
    for j in range(5):
        source.update(*_step(0, j))
    state = source.state_dict()

    def loader() -> None:
        for _ in range(50):
            alloc.load_state_dict(state)

    def updater() -> None:
        for j in range(50):
            alloc.update(*_step(1, j))

    assert _run_threads([loader, updater, loader, updater]) == []
    alloc._check()
    restored = type(alloc).from_state_dict(json.loads(json.dumps(alloc.state_dict())))
    restored._check()


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_pickle_and_deepcopy_still_work(case: Case) -> None:
    alloc = case.make()
    for j in range(3):
        alloc.update(*_step(0, j))
    for clone in (pickle.loads(pickle.dumps(alloc)), copy.deepcopy(alloc), copy.copy(alloc)):
        assert clone.state_dict() == alloc.state_dict()
        clone.update(*_step(1, 0))  # the clone has a working lock of its own
        assert clone.step == alloc.step + 1
        clone._check()
    assert copy.deepcopy(alloc)._lock is not alloc._lock


def test_tracker_is_safe_to_read_while_recording() -> None:
    """``allocator.tracker`` is public: reading it while another thread records is safe."""
    t = coba_rl.PassRateTracker(window=2)

    def writer() -> None:
        for j in range(300):
            t.record([3 * j, 3 * j + 1, 3 * j + 2, 0], [1.0, 0.0, 1.0, 1.0])

    def reader() -> None:
        for _ in range(300):
            rates = t.pass_rates([0, 1, 2, 5, 10**9])
            assert np.isnan(rates[-1])
            json.dumps(t.state_dict())

    assert _run_threads([writer, writer, reader, reader]) == []
    t._check()
    assert len(t) == 900
