"""Ragged-group GRPO helpers, checked against a plain per-group loop."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from coba_rl import grpo


def loop_reference(
    rewards: list[float], ids: list[int], ddof: int, eps: float, scale: bool, singleton: str
) -> list[float]:
    out = []
    for r, g in zip(rewards, ids, strict=True):
        group = [x for x, h in zip(rewards, ids, strict=True) if h == g]
        n = len(group)
        if n == 1:
            if singleton == "zero":
                out.append(0.0)
            else:
                out.append(r / (1 + eps) if scale else r)
            continue
        mu = sum(group) / n
        if not scale:
            out.append(r - mu)
            continue
        sd = math.sqrt(sum((x - mu) ** 2 for x in group) / (n - ddof))
        out.append((r - mu) / (sd + eps))
    return out


@given(
    sizes=st.lists(st.integers(1, 9), min_size=1, max_size=8),
    data=st.data(),
    ddof=st.sampled_from([0, 1]),
    scale=st.booleans(),
    singleton=st.sampled_from(["zero", "raw"]),
    signed=st.booleans(),
)
def test_matches_loop_reference(
    sizes: list[int], data: st.DataObject, ddof: int, scale: bool, singleton: str, signed: bool
) -> None:
    ids = [g for g, n in enumerate(sizes) for _ in range(n)]
    perm = data.draw(st.permutations(range(len(ids))))
    ids = [ids[i] for i in perm]  # groups need not be contiguous
    outcomes = data.draw(st.lists(st.booleans(), min_size=len(ids), max_size=len(ids)))
    rewards = [(1.0 if o else (-1.0 if signed else 0.0)) for o in outcomes]
    ours = grpo.group_advantages(rewards, ids, ddof=ddof, scale=scale, singleton=singleton)  # type: ignore[arg-type]
    ref = loop_reference(rewards, ids, ddof, 1e-6, scale, singleton)
    np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=1e-12)


def test_constant_groups_get_zero_advantage() -> None:
    adv = grpo.group_advantages([1.0, 1.0, 0.0, 0.0, 0.0], [0, 0, 1, 1, 1])
    assert adv.tolist() == [0.0] * 5


def test_size_two_group() -> None:
    adv = grpo.group_advantages([1.0, 0.0], ["p", "p"])
    assert adv[0] == pytest.approx(0.5 / (math.sqrt(0.5) + 1e-6))  # std with ddof=1
    assert adv[0] == -adv[1]


def test_weights_undo_group_size() -> None:
    ids = [0] * 2 + [1] * 6
    adv, w = grpo.group_advantages([1.0, 0.0] + [1.0, 0.0] * 3, ids, return_weights=True)
    assert w.mean() == pytest.approx(1.0)
    # each prompt's rows carry the same total weight, whatever its group size
    assert w[:2].sum() == pytest.approx(w[2:].sum())
    assert w[0] == pytest.approx(8 / 2 / 2) and w[2] == pytest.approx(8 / 2 / 6)
    assert adv.shape == w.shape


def test_singleton_error() -> None:
    with pytest.raises(ValueError, match="single row; keep n_low >= 2"):
        grpo.group_advantages([1.0, 0.0, 1.0], [0, 0, 1], singleton="error")


@pytest.mark.parametrize(
    ("rewards", "ids", "match"),
    [
        ([1.0, 0.0], [0], "same length"),
        ([1.0, math.nan], [0, 0], "finite"),
        ([[1.0]], [[0]], "1-D"),
    ],
)
def test_bad_input(rewards: list[float], ids: list[int], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        grpo.group_advantages(rewards, ids)


def test_expand() -> None:
    assert grpo.expand([2, 0, 3]).tolist() == [0, 0, 2, 2, 2]
    assert grpo.expand(np.array([], dtype=np.int64)).tolist() == []
    with pytest.raises(ValueError, match="non-negative"):
        grpo.expand([1, -1])
    with pytest.raises(ValueError, match="integers"):
        grpo.expand([1.5])
