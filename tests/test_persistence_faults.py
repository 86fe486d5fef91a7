"""Fault injection for persistence: crashes mid-save, damaged files, and no code execution.

* A process killed with SIGKILL while saving a large state (10^6 tracked prompts) leaves
  the previous file intact and loadable; the only debris is at most one temporary file
  per crash, which ``load`` never reads.
* Truncated, wrong-version and tampered files raise a ``ValueError`` naming the problem,
  and a failed load leaves a running allocator untouched (validate, then swap).
* State files are JSON; nothing in the package can unpickle or evaluate them.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import coba_rl
from conftest import DATA
from test_contract import CASES, Case, plain_state

SRC = Path(coba_rl.__file__).parent
CRASH_PROMPTS = int(os.environ.get("CRASH_PROMPTS", str(10**6)))
CRASH_ROUNDS = int(os.environ.get("CRASH_ROUNDS", "1"))

# Saves the same large state to one path, over and over, reporting each completed save.
SAVER = """
import sys
import numpy as np
import coba_rl

path, n = sys.argv[1], int(sys.argv[2])
alloc = coba_rl.CoBAAllocator(coba_rl.CoBAConfig(window=2))
ids = np.arange(n, dtype=np.int64)
alloc.update(ids, (ids % 3 == 0).astype(float))
while True:
    alloc.update([0, 0], [1.0, 0.0])
    alloc.save(path)
    print(alloc.step, flush=True)
"""


def _temps(directory: Path) -> list[Path]:
    return sorted(directory.glob(".state.json.*.tmp"))


def _crash_once(tmp_path: Path, prompts: int, rng: np.random.Generator, mid_write: bool) -> int:
    """Start the saver, kill -9 it at a random moment; return the last reported step."""
    script = tmp_path / "saver.py"
    script.write_text(SAVER)
    path = tmp_path / "state.json"
    proc = subprocess.Popen(
        [sys.executable, str(script), str(path), str(prompts)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    try:
        reported = [int(proc.stdout.readline())]  # one complete save exists from here on
        if mid_write:  # wait until a save is writing its temporary file, then strike
            before = set(_temps(tmp_path))
            deadline = time.monotonic() + 120
            while not set(_temps(tmp_path)) - before and time.monotonic() < deadline:
                time.sleep(0.001)
            time.sleep(float(rng.uniform(0.0, 0.01)))
        else:
            time.sleep(float(rng.uniform(0.0, 0.3)))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
        reported += [int(line) for line in proc.stdout.read().split()]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
    return reported[-1]


def _assert_intact(tmp_path: Path, last_reported: int, prompts: int) -> None:
    loaded = coba_rl.CoBAAllocator.load(tmp_path / "state.json")
    loaded._check()
    # The last save reported, or the one in flight if its rename beat the kill.
    assert loaded.step in (last_reported, last_reported + 1)
    assert len(loaded.tracker) == prompts


def test_kill_during_large_save_leaves_previous_file(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    crashes = 0
    for _ in range(CRASH_ROUNDS):
        # A save takes a fraction of a second, so a kill can land just after a rename
        # (no debris) instead of mid-write; strike again until one lands mid-write.
        for _attempt in range(10):
            before = len(_temps(tmp_path))
            last = _crash_once(tmp_path, CRASH_PROMPTS, rng, mid_write=True)
            crashes += 1
            _assert_intact(tmp_path, last, CRASH_PROMPTS)
            if len(_temps(tmp_path)) > before:
                break
        leftovers = _temps(tmp_path)
        assert len(leftovers) > before  # some kill landed mid-write
        assert len(leftovers) <= crashes  # at most one temporary file per crash
    # A later save by a healthy process replaces the file and adds no debris.
    alloc = coba_rl.CoBAAllocator.load(tmp_path / "state.json")
    alloc.save(tmp_path / "state.json")
    assert len(_temps(tmp_path)) == len(leftovers)


def test_kill_at_random_moments_small_state(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    rounds = 4 * CRASH_ROUNDS
    for _ in range(rounds):
        last = _crash_once(tmp_path, 10_000, rng, mid_write=False)
        _assert_intact(tmp_path, last, 10_000)
    assert len(_temps(tmp_path)) <= rounds


# -- damaged and tampered files ----------------------------------------------------------------


def _trained(case: Case, seed: int = 0) -> Any:
    alloc = case.make()
    rng = np.random.default_rng(seed)
    for _ in range(3):
        ids = rng.choice(30, size=6, replace=False).tolist()
        rows = [i for i in ids for _ in range(8)]
        alloc.update(rows, (rng.random(len(rows)) < 0.5).astype(float))
    return alloc


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_truncated_files(case: Case, tmp_path: Path) -> None:
    alloc = _trained(case)
    path = tmp_path / "state.json"
    alloc.save(path)
    text = path.read_text()
    for cut in sorted({*range(0, len(text), max(1, len(text) // 97)), len(text) - 1}):
        path.write_text(text[:cut])
        with pytest.raises(ValueError, match=re.escape(str(path)) + ".*not valid JSON"):
            type(alloc).load(path)


def _inner(state: dict[str, Any]) -> dict[str, Any]:
    inner: dict[str, Any] = state["tracker"] if "tracker" in state else state["history"]["index"]
    return inner


TAMPERINGS: list[tuple[str, Callable[[dict[str, Any]], Any], str]] = [
    ("version-0", lambda d: d.update(version=0), "unsupported state version 0"),
    ("version-3", lambda d: d.update(version=3), "unsupported state version 3"),
    ("version-float", lambda d: d.update(version=2.0), "unsupported state version 2.0"),
    ("version-str", lambda d: d.update(version="1"), "unsupported state version '1'"),
    ("no-version", lambda d: d.pop("version"), "unsupported state version None"),
    ("allocator", lambda d: d.update(allocator="BetaAllocator"), "state is for 'BetaAllocator'"),
    (
        "successes>totals",
        lambda d: _inner(d)["successes"][0].__setitem__(0, 10**6),
        "successes exceed totals",
    ),
    ("negative", lambda d: _inner(d)["totals"][0].__setitem__(0, -1), "negative entries"),
    ("float-count", lambda d: _inner(d)["totals"][0].__setitem__(0, 1.5), "must hold integers"),
    ("huge-count", lambda d: _inner(d)["totals"][0].__setitem__(0, 2**70), "int64|2\\*\\*53"),
    ("bad-config", lambda d: d["config"].update(n_low=9, n_up=3), "invalid config"),
    ("unknown-config", lambda d: d["config"].update(typo=1), "invalid config"),
    ("nan-config", lambda d: d["config"].update(success_reward=float("nan")), "invalid config"),
    ("inf-config", lambda d: d["config"].update(success_reward=float("inf")), "invalid config"),
    ("step", lambda d: d.update(step=-3), "step must be an int >= 0"),
    ("ids", lambda d: _inner(d).update(ids=_inner(d)["ids"][:-1]), "shape"),
]


@pytest.mark.parametrize(("what", "mutate", "match"), TAMPERINGS, ids=[t[0] for t in TAMPERINGS])
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_tampered_file(
    case: Case, what: str, mutate: Callable[[dict[str, Any]], Any], match: str, tmp_path: Path
) -> None:
    state = plain_state(json.loads(json.dumps(_trained(case).state_dict())))
    mutate(state)
    path = tmp_path / "state.json"
    path.write_text(json.dumps(state))  # NaN and Infinity become JSON's NaN/Infinity tokens
    with pytest.raises(ValueError, match=match):
        type(case.make()).load(path)
    running = _trained(case, seed=1)
    before = json.dumps(running.state_dict())
    with pytest.raises(ValueError, match=match):
        running.load_state_dict(json.loads(path.read_text()))
    assert json.dumps(running.state_dict()) == before
    running._check()


COBA_TAMPERINGS: list[tuple[str, Callable[[dict[str, Any]], Any], str]] = [
    ("nan-alpha", lambda d: d.update(alpha=float("nan")), "alpha must be a finite number"),
    ("inf-beta", lambda d: d.update(beta=float("inf")), "beta must be a finite number"),
    ("shape", lambda d: d.update(alpha=3.0), "not a valid shape"),
    ("nan-failure", lambda d: d.update(failure_window=[float("nan")]), "failure_window"),
    ("long-window", lambda d: d.update(failure_window=[0.5] * 9), "failure_window"),
]


@pytest.mark.parametrize(
    ("what", "mutate", "match"), COBA_TAMPERINGS, ids=[t[0] for t in COBA_TAMPERINGS]
)
def test_tampered_coba_shape(
    what: str, mutate: Callable[[dict[str, Any]], Any], match: str, tmp_path: Path
) -> None:
    """The Beta shape and failure window are part of the state and are checked on load."""
    case = CASES[1]  # the released variant
    state = json.loads(json.dumps(_trained(case).state_dict()))
    mutate(state)
    path = tmp_path / "state.json"
    path.write_text(json.dumps(state))
    with pytest.raises(ValueError, match=match):
        coba_rl.CoBAAllocator.load(path)
    running = _trained(case, seed=2)
    before = running.state_dict()
    with pytest.raises(ValueError, match=match):
        running.load_state_dict(json.loads(path.read_text()))
    assert running.state_dict() == before


def test_resume_keeps_the_beta_shape(tmp_path: Path) -> None:
    """The released CoBA code forgets its Beta shape on resume; ours keeps it exactly."""
    alloc = _trained(CASES[1])
    assert (alloc.alpha, alloc.beta) != coba_rl.initial_shape(alloc.config)
    alloc.save(tmp_path / "state.json")
    resumed = coba_rl.CoBAAllocator.load(tmp_path / "state.json")
    assert (resumed.alpha, resumed.beta, resumed.failure_rate) == (
        alloc.alpha,
        alloc.beta,
        alloc.failure_rate,
    )


# -- state files never run code ---------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_state_file_is_plain_json(case: Case, tmp_path: Path) -> None:
    for alloc in (_trained(case), case.make()):
        if alloc.step == 0:  # string ids, including a lone surrogate and the empty string
            alloc.update(["é-ü", "\ud800x", "", "日本"] * 2, [1.0, 0.0, 1.0, 0.0] * 2)
        path = tmp_path / "state.json"
        alloc.save(path)
        raw = path.read_bytes()
        assert raw.isascii()  # non-ASCII ids are escaped
        assert json.loads(raw) == alloc.state_dict()
        assert b"NaN" not in raw and b"Infinity" not in raw
        assert type(alloc).load(path).state_dict() == alloc.state_dict()


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_pickle_payload_is_rejected_without_running(case: Case, tmp_path: Path) -> None:
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self) -> tuple[Any, ...]:
            return (Path.touch, (marker,))

    path = tmp_path / "state.json"
    path.write_bytes(pickle.dumps(Payload()))
    with pytest.raises(ValueError, match="not valid JSON"):
        type(case.make()).load(path)
    assert not marker.exists()


FORBIDDEN = [
    r"\bimport pickle\b",
    r"\bpickle\.",
    r"\bcPickle\b",
    r"\bdill\b",
    r"\bjoblib\b",
    r"\bshelve\b",
    r"\bmarshal\b",
    r"allow_pickle\s*=\s*True",
    r"\bnp\.load\(",
    r"\bnumpy\.load\(",
    r"\btorch\.load\(",
    r"\byaml\.(unsafe_)?load\(",
    r"(?<![\w.])eval\(",
    r"(?<![\w.])exec\(",
]


def test_no_code_execution_paths_in_the_package() -> None:
    sources = sorted(SRC.rglob("*.py"))
    assert len(sources) > 10
    hits = [
        f"{p.relative_to(SRC)}:{n}: {line.strip()}"
        for p in sources
        for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
        for pattern in FORBIDDEN
        if re.search(pattern, line)
    ]
    assert hits == []


# -- states that contradict themselves -------------------------------------------------------


def _coba_run(window: int, epoch_like: bool) -> coba_rl.CoBAAllocator:
    """Five steps; ``epoch_like``: every prompt appears once, else the same prompts each step."""
    alloc = coba_rl.CoBAAllocator(coba_rl.CoBAConfig(window=window, n_up=32))
    for step in range(5):
        base = 10 * step if epoch_like else 0
        ids = [base + i for i in range(4) for _ in range(8)]
        rewards = [float((j + i + step) % 5 < i + 1) for i in range(4) for j in range(8)]
        alloc.update(ids, rewards)
    return alloc


def _shape_for(f_bar: float) -> dict[str, float]:
    a, b = coba_rl.beta_shape(f_bar)
    return {"alpha": float(a), "beta": float(b)}


INCONSISTENT: list[tuple[str, bool, Callable[[dict[str, Any]], Any], str]] = [
    # (name, epoch_like, mutation, error match)
    (
        "truncated-window",
        False,
        lambda d: d.update(failure_window=d["failure_window"][1:]),
        "failure_window has 2 entries",
    ),
    (
        "truncated-window-epoch",  # no prompt repeats: only the step counts reveal it
        True,
        lambda d: d.update(failure_window=d["failure_window"][1:]),
        "failure_window has 2 entries",
    ),
    ("emptied-window", True, lambda d: d.update(failure_window=[]), "failure_window has 0"),
    (
        "contradictory-shape",
        False,
        lambda d: d.update(_shape_for(0.9)),
        r"alpha=9\.1.*beta=1\.9.*failure_window",
    ),
    (
        "shape-swapped",
        False,
        lambda d: d.update(alpha=d["beta"], beta=d["alpha"]),
        r"alpha=.*failure_window",
    ),
    ("tracker-ahead-of-step", False, lambda d: d.update(step=3), r"step"),
    ("step-zero", False, lambda d: d.update(step=0), r"step"),
    (
        "appearances-ahead",
        True,
        lambda d: d["tracker"]["appearances"].__setitem__(0, 6),
        r"appear",
    ),
]


@pytest.mark.parametrize(
    ("what", "epoch_like", "mutate", "match"), INCONSISTENT, ids=[t[0] for t in INCONSISTENT]
)
def test_inconsistent_coba_state_is_rejected(
    what: str,
    epoch_like: bool,
    mutate: Callable[[dict[str, Any]], Any],
    match: str,
    tmp_path: Path,
) -> None:
    """Each of these states is well formed field by field; together the fields disagree."""
    alloc = _coba_run(window=3, epoch_like=epoch_like)
    state = plain_state(json.loads(json.dumps(alloc.state_dict())))
    if what == "appearances-ahead":  # keep the window columns consistent with the count
        state["tracker"]["appearances"][0] = 6
        row = state["tracker"]["totals"][0]
        state["tracker"]["totals"][0] = [max(1, x) for x in row]
    else:
        mutate(state)
    path = tmp_path / "state.json"
    path.write_text(json.dumps(state))
    with pytest.raises(ValueError, match=match):
        coba_rl.CoBAAllocator.load(path)
    running = _coba_run(window=3, epoch_like=not epoch_like)
    before = running.state_dict()
    with pytest.raises(ValueError, match=match):
        running.load_state_dict(json.loads(path.read_text()))
    assert running.state_dict() == before
    running._check()


def _knapsack_run() -> coba_rl.KnapsackRLAllocator:
    alloc = coba_rl.KnapsackRLAllocator(coba_rl.KnapsackConfig(min_rollouts=4, recent_rollouts=6))
    for step in range(3):
        ids = [i for i in range(3) for _ in range(4 + i)]
        rewards = [float((j + step) % 3 == 0) for i in range(3) for j in range(4 + i)]
        alloc.update(ids, rewards)
    return alloc


def _flip_newest_outcome(history: dict[str, Any]) -> None:
    """Flip prompt 0's newest ring outcome, which belongs to its last visit."""
    newest = (history["rollouts"][0] - 1) % history["recent"]
    history["ring"][0][newest] = 1 - history["ring"][0][newest]


KNAPSACK_INCONSISTENT: list[tuple[str, Callable[[dict[str, Any]], Any], str]] = [
    ("visits-ahead-of-step", lambda d: d.update(step=2), "step"),
    ("no-step", lambda d: d.update(step=0), "step"),
    (
        "last-visit-size",
        lambda d: d["history"]["last_visit"].__setitem__(0, 5),
        "last_visit",
    ),
    ("ring-vs-last-visit", lambda d: _flip_newest_outcome(d["history"]), "ring"),
    (
        "fewer-rollouts-than-visits",
        lambda d: d["history"]["rollouts"].__setitem__(2, 2),
        "rollouts",
    ),
]


@pytest.mark.parametrize(
    ("what", "mutate", "match"), KNAPSACK_INCONSISTENT, ids=[t[0] for t in KNAPSACK_INCONSISTENT]
)
def test_inconsistent_knapsack_state_is_rejected(
    what: str, mutate: Callable[[dict[str, Any]], Any], match: str
) -> None:
    state = plain_state(json.loads(json.dumps(_knapsack_run().state_dict())))
    mutate(state)
    running = _knapsack_run()
    running.update([9] * 8, [1.0] * 8)
    before = running.state_dict()
    with pytest.raises(ValueError, match=match):
        running.load_state_dict(state)
    assert running.state_dict() == before
    with pytest.raises(ValueError, match=match):
        coba_rl.KnapsackRLAllocator.from_state_dict(state)


def test_inconsistent_uniform_state_is_rejected() -> None:
    alloc = coba_rl.UniformAllocator()
    for _ in range(3):
        alloc.update([1, 1, 2], [1.0, 0.0, 1.0])
    state = plain_state(alloc.state_dict())
    state["step"] = 2  # prompt 1 appeared 3 times
    with pytest.raises(ValueError, match="step"):
        coba_rl.UniformAllocator.from_state_dict(state)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_resumed_run_matches_uninterrupted_run(case: Case, tmp_path: Path) -> None:
    """Save and load after every step (empty steps included): the same allocations."""
    rng_a, rng_b = np.random.default_rng(3), np.random.default_rng(3)
    straight, resumed = case.make(), case.make()
    path = tmp_path / "state.json"
    for step in range(12):
        ids = [int(i) for i in np.random.default_rng(step).choice(30, size=6, replace=False)]
        a, b = straight.allocate(ids, 48), resumed.allocate(ids, 48)
        assert a.counts.tolist() == b.counts.tolist()
        np.testing.assert_array_equal(a.pass_rates, b.pass_rates)
        for alloc, rng, alloc_counts in ((straight, rng_a, a), (resumed, rng_b, b)):
            if step == 4:
                alloc.update([], [])
                continue
            rows = [
                i for i, c in zip(ids, alloc_counts.counts.tolist(), strict=True) for _ in range(c)
            ]
            alloc.update(rows, (rng.random(len(rows)) < 0.4).astype(float))
        resumed.save(path)
        resumed = type(resumed).load(path)
        assert resumed.state_dict() == straight.state_dict()


# -- state files of version 1 ------------------------------------------------------------------

V1 = DATA / "state_v1"


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_version_1_files_still_load(case: Case, tmp_path: Path) -> None:
    """Files written by coba-rl 0.1.0 (state version 1) load and resume to the same future.

    The expected counts were recorded by 0.1.0 itself, right after it saved the file.
    """
    path = V1 / f"{case.name}.json"
    assert json.loads(path.read_text())["version"] == 1
    expected = json.loads((V1 / f"{case.name}.expected.json").read_text())
    alloc = type(case.make()).load(path)
    alloc._check()
    assert alloc.step == expected["step"]
    assert alloc.allocate(expected["ids"], expected["budget"]).counts.tolist() == expected["counts"]
    alloc.save(tmp_path / "new.json")
    assert json.loads((tmp_path / "new.json").read_text())["version"] == coba_rl.STATE_VERSION
    again = type(alloc).load(tmp_path / "new.json")
    assert again.state_dict() == alloc.state_dict()


def test_version_1_file_with_a_truncated_window_is_rejected() -> None:
    state = json.loads((V1 / "coba-paper.json").read_text())
    assert len(state["failure_window"]) == 2 == state["config"]["window"]
    state["failure_window"] = state["failure_window"][1:]
    with pytest.raises(ValueError, match="failure_window"):
        coba_rl.CoBAAllocator.from_state_dict(state)


# -- where files go: permissions, folders, errors that name the target ----------------------


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o077])
def test_saved_file_follows_the_umask(mask: int, tmp_path: Path) -> None:
    old = os.umask(mask)
    try:
        coba_rl.UniformAllocator().save(tmp_path / "state.json")
    finally:
        os.umask(old)
    assert (tmp_path / "state.json").stat().st_mode & 0o777 == 0o666 & ~mask


def test_missing_folder_is_an_error_naming_it(tmp_path: Path) -> None:
    target = tmp_path / "run" / "ckpt" / "state.json"
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "run" / "ckpt"))):
        coba_rl.CoBAAllocator().save(target)
    assert not (tmp_path / "run").exists()  # nothing was created


def test_directory_as_path(tmp_path: Path) -> None:
    folder = tmp_path / "state.json"
    folder.mkdir()
    alloc = coba_rl.CoBAAllocator()
    with pytest.raises(IsADirectoryError, match=re.escape(str(folder)) + ".*is a directory"):
        alloc.save(folder)
    with pytest.raises(IsADirectoryError, match=re.escape(str(folder)) + ".*is a directory"):
        coba_rl.CoBAAllocator.load(folder)
    assert list(tmp_path.iterdir()) == [folder] and list(folder.iterdir()) == []


def test_write_failure_names_the_target_and_cleans_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    def full_disk(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    target = tmp_path / "state.json"
    with pytest.raises(OSError, match=re.escape(str(target)) + ".*No space left") as info:
        coba_rl.CoBAAllocator().save(target)
    assert ".tmp" not in str(info.value)
    assert info.value.errno == errno.ENOSPC
    assert list(tmp_path.iterdir()) == []  # no debris, no target


@pytest.mark.skipif(not os.path.isdir("/sys/kernel"), reason="needs a read-only /sys (Linux)")
def test_unwritable_folder_names_the_target() -> None:
    target = "/sys/kernel/coba-state.json"
    with pytest.raises(OSError, match=re.escape(target)) as info:
        coba_rl.UniformAllocator().save(target)
    assert ".tmp" not in str(info.value)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root ignores permissions")
def test_read_only_folder_names_the_target(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(PermissionError, match=re.escape(str(folder / "s.json"))) as info:
            coba_rl.UniformAllocator().save(folder / "s.json")
        assert ".tmp" not in str(info.value)
    finally:
        folder.chmod(0o700)
