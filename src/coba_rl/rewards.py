"""What counts as a successful rollout: exact matching, or a threshold for graded rewards.

Every pass rate in coba-rl is successes over rollouts, and a rollout's success comes from
its reward by one of two rules, chosen in the allocator's config:

* ``success_threshold=None`` (the default, the released rule): a rollout succeeds when
  its reward equals ``success_reward`` exactly. Binary rewards in {0, 1} or {-1, +1}
  need nothing else.
* ``success_threshold=t``: a rollout succeeds when its reward is ``>= t``. Use it for
  graded or shaped rewards (partial credit, format bonuses, DAPO's overlong penalty).

Under exact matching, a reward that is neither ``success_reward`` nor a *plain failure*
counts as a failure, silently in the released code. A plain failure is a reward below
``success_reward`` that is at most 0: the 0 of {0, 1}, the -1 of {-1, +1}, a wrong answer
with a length penalty (-1.2). Anything else (0.5 for a partial match, 1.1 for a correct
answer with a bonus) is *graded*: the allocator then emits one :class:`RewardWarning`,
naming the value and the ``success_threshold`` option.
"""

from __future__ import annotations

import warnings

import numpy as np
from numpy.typing import NDArray

__all__ = ["RewardWarning", "first_graded_reward", "success_mask", "warn_graded_rewards"]

FloatArray = NDArray[np.float64]


class RewardWarning(UserWarning):
    """A graded reward counted as a failure under exact matching (see :mod:`coba_rl.rewards`)."""


def success_mask(
    rewards: FloatArray, success_reward: float = 1.0, success_threshold: float | None = None
) -> NDArray[np.bool_]:
    """Which rollouts succeed: ``reward == success_reward``, or ``reward >= success_threshold``.

    >>> success_mask(np.array([1.0, 0.9, 0.0])).tolist()
    [True, False, False]
    >>> success_mask(np.array([1.0, 0.9, 0.0]), success_threshold=0.5).tolist()
    [True, True, False]
    """
    if success_threshold is None:
        return np.asarray(rewards == success_reward)
    return np.asarray(rewards >= success_threshold)


def first_graded_reward(rewards: FloatArray, success_reward: float = 1.0) -> float | None:
    """The first reward that is neither ``success_reward`` nor a plain failure, or ``None``.

    A plain failure is below ``success_reward`` and at most 0.

    >>> first_graded_reward(np.array([1.0, -1.0, 0.0, -1.3]))
    >>> first_graded_reward(np.array([1.0, 0.0, 0.5, 0.9]))
    0.5
    """
    plain = (rewards == success_reward) | ((rewards < success_reward) & (rewards <= 0.0))
    if plain.all():
        return None
    return float(rewards[int(np.argmin(plain))])


def warn_graded_rewards(
    rewards: FloatArray, success_reward: float, success_threshold: float | None
) -> bool:
    """Warn (:class:`RewardWarning`) if exact matching meets a graded reward; say if it did.

    Allocators call it on each update until it returns ``True``, so each warns once.
    """
    if success_threshold is not None:
        return False
    value = first_graded_reward(rewards, success_reward)
    if value is None:
        return False
    warnings.warn(
        f"reward {value!r} is neither success_reward ({success_reward!r}) nor a plain "
        "failure (a reward <= 0), so it counts as a failure: success means "
        "reward == success_reward exactly. For graded or shaped rewards, set "
        "success_threshold in the config (a rollout succeeds when reward >= "
        "success_threshold). Shown once per allocator.",
        RewardWarning,
        stacklevel=3,
    )
    return True
