"""Graded rewards: exact matching (the released rule) or a success threshold.

Expected pass rates are counted by hand in the comments: a rollout succeeds when its
reward equals ``success_reward`` (threshold ``None``) or is at least ``success_threshold``.
"""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
from pydantic import ValidationError

import coba_rl
from coba_rl import RewardWarning

IDS = [1, 1, 1, 1, 2, 2, 2, 2]
GRADED = [1.0, 0.9, 0.4, 0.0, 0.5, 0.49, 0.2, 0.1]  # prompt 1, then prompt 2


def test_threshold_counts_graded_successes_coba() -> None:
    alloc = coba_rl.CoBAAllocator(coba_rl.CoBAConfig(success_threshold=0.5))
    with warnings.catch_warnings():
        warnings.simplefilter("error", RewardWarning)
        alloc.update(IDS, GRADED)
    # prompt 1: 1.0 and 0.9 are >= 0.5 -> 2/4; prompt 2: only 0.5 (the threshold itself) -> 1/4
    assert alloc.pass_rates([1, 2]).tolist() == [0.5, 0.25]
    # F = 1 - (0.5 + 0.25) / 2 = 0.625 > 0.5, so alpha = 1 + 9 * 0.625
    assert alloc.failure_rate == 0.625
    assert (alloc.alpha, alloc.beta) == (6.625, 4.375)


def test_exact_match_is_the_default_and_warns_once() -> None:
    alloc = coba_rl.CoBAAllocator()
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        alloc.update(IDS, GRADED)
        alloc.update(IDS, GRADED)  # the same allocator does not warn twice
    assert [w.category for w in record] == [RewardWarning]
    assert re.search(r"reward 0\.9 .*success_threshold", str(record[0].message))
    # prompt 1: only 1.0 equals success_reward -> 1/4; prompt 2: none -> 0
    assert alloc.pass_rates([1, 2]).tolist() == [0.25, 0.0]
    # F = 1 - (0.25 + 0) / 2 = 0.875, alpha = 1 + 9 * 0.875
    assert alloc.failure_rate == 0.875
    assert alloc.alpha == 8.875
    with pytest.warns(RewardWarning):  # another allocator warns on its own
        coba_rl.CoBAAllocator().update([7, 7], [1.0, 0.25])


@pytest.mark.parametrize(
    "rewards",
    [
        [1.0, 0.0, 0.0, 1.0],  # {0, 1}
        [1.0, -1.0, -1.0, 1.0],  # {-1, +1}
        [1.0, -1.3, -0.2, 0.0],  # failures with a length penalty (plain failures: <= 0)
    ],
)
def test_plain_rewards_do_not_warn(rewards: list[float]) -> None:
    for alloc in (
        coba_rl.CoBAAllocator(),
        coba_rl.KnapsackRLAllocator(),
        coba_rl.UniformAllocator(),
    ):
        with warnings.catch_warnings():
            warnings.simplefilter("error", RewardWarning)
            alloc.update([3, 3, 3, 3], rewards)


def test_reward_above_success_reward_warns() -> None:
    """A bonus on top of a correct answer (1.1) is not a success under exact matching."""
    alloc = coba_rl.UniformAllocator()
    with pytest.warns(RewardWarning, match=r"1\.1"):
        alloc.update([3, 3], [1.1, 0.0])
    assert alloc.pass_rates([3]).tolist() == [0.0]


def test_negative_success_reward_convention() -> None:
    """With success_reward = 0 and failures below it, only rewards above 0 are graded."""
    cfg = coba_rl.CoBAConfig(success_reward=0.0)
    alloc = coba_rl.CoBAAllocator(cfg)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RewardWarning)
        alloc.update([4, 4, 4], [0.0, -1.0, -0.5])
    assert alloc.pass_rates([4]).tolist() == [pytest.approx(1 / 3)]
    with pytest.warns(RewardWarning, match="0.5"):
        alloc.update([4], [0.5])


def test_threshold_knapsack() -> None:
    cfg = coba_rl.KnapsackConfig(success_threshold=0.6, min_rollouts=4, recent_rollouts=4)
    alloc = coba_rl.KnapsackRLAllocator(cfg)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RewardWarning)
        alloc.update([5, 5, 5, 5, 6, 6], [0.7, 0.2, 1.0, 0.6, 0.59, 0.61])
    # 5: 0.7, 1.0, 0.6 -> 3/4 (its visit had 4 >= recent rollouts); 6: 2 < min_rollouts
    assert alloc.pass_rates([5, 6]).tolist()[0] == 0.75
    assert np.isnan(alloc.pass_rates([6])[0])
    alloc.update([6] * 2, [0.0, 1.0])
    # 6: last 4 rollouts 0.59, 0.61, 0.0, 1.0 -> 0.61 and 1.0 succeed -> 2/4
    assert alloc.pass_rates([6]).tolist() == [0.5]

    exact = coba_rl.KnapsackRLAllocator(coba_rl.KnapsackConfig(min_rollouts=4, recent_rollouts=4))
    with pytest.warns(RewardWarning, match="0.7"):
        exact.update([5] * 4, [0.7, 0.2, 1.0, 0.6])
    assert exact.pass_rates([5]).tolist() == [0.25]  # only 1.0 matches


def test_threshold_uniform_and_tracker() -> None:
    alloc = coba_rl.UniformAllocator(coba_rl.UniformConfig(success_threshold=0.0))
    alloc.update([8, 8, 8, 8, 9], [0.5, -0.5, 0.0, 1.0, -1.0])
    assert alloc.pass_rates([8, 9]).tolist() == [0.75, 0.0]  # 0.5, 0.0, 1.0 are >= 0
    t = coba_rl.PassRateTracker()
    t.record([1, 1, 1], [0.3, 0.8, 1.0], success_threshold=0.75)
    assert t.pass_rates([1]).tolist() == [pytest.approx(2 / 3)]


@pytest.mark.parametrize(
    "config_type", [coba_rl.CoBAConfig, coba_rl.KnapsackConfig, coba_rl.UniformConfig]
)
def test_threshold_validation_and_persistence(config_type: type) -> None:
    assert config_type().success_threshold is None
    for bad in (float("nan"), float("inf"), "high"):
        with pytest.raises(ValidationError, match="success_threshold"):
            config_type(success_threshold=bad)
    assert config_type(success_threshold=1).success_threshold == 1.0


def test_threshold_survives_save_and_load() -> None:
    cfg = coba_rl.CoBAConfig(success_threshold=0.5)
    alloc = coba_rl.CoBAAllocator(cfg)
    alloc.update(IDS, GRADED)
    resumed = coba_rl.CoBAAllocator.from_state_dict(alloc.state_dict())
    assert resumed.config.success_threshold == 0.5
    resumed.update([1] * 2, [0.6, 0.7])  # both succeed: window 1 -> 2/2
    assert resumed.pass_rates([1]).tolist() == [1.0]
    with pytest.raises(ValueError, match="success_threshold"):
        coba_rl.CoBAAllocator().load_state_dict(alloc.state_dict())
