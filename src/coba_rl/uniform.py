"""Uniform GRPO, the baseline every budget allocator is compared against.

GRPO samples the same group size for every prompt. With a budget ``B`` over ``M``
prompts that is ``B // M`` each, the first ``B % M`` prompts one more. The allocator
still tracks pass rates, so its :meth:`Allocation.metrics` are comparable with the others.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field

from coba_rl._persist import (
    Persistent,
    config_summary,
    make_envelope,
    open_envelope,
    parse_config,
    parse_step,
)
from coba_rl._sync import synchronized
from coba_rl._validation import (
    MAX_WINDOW,
    as_id_array,
    check_budget,
    check_config,
    check_lengths,
    check_rewards,
    check_unique_ids,
    even_split,
    rollouts_only,
)
from coba_rl.rewards import warn_graded_rewards
from coba_rl.tracker import PassRateTracker
from coba_rl.types import Allocation, _owned

__all__ = ["UniformAllocator", "UniformConfig"]


class UniformConfig(BaseModel):
    """What the uniform baseline tracks (its counts do not depend on it).

    Attributes:
      window: how many past appearances make up the reported pass rates.
      success_reward: a rollout succeeds when its reward equals this value.
      success_threshold: ``None`` (exact matching) or a number: a rollout succeeds when
        its reward is at least this value.

    Example:
      >>> UniformConfig().window
      1
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    window: int = Field(default=1, ge=1, le=MAX_WINDOW)
    success_reward: float = Field(default=1.0, allow_inf_nan=False)
    success_threshold: float | None = Field(default=None, allow_inf_nan=False)


class UniformAllocator(Persistent[UniformConfig]):
    """The GRPO baseline behind the :class:`coba_rl.Allocator` interface.

    .. math::

        n_i = \\lfloor B / M \\rfloor + [\\, i < B \\bmod M \\,]

    Safe to share between threads: ``allocate``, ``update``, ``state_dict``,
    ``load_state_dict`` and ``save`` hold the allocator's lock.

    Args:
      config: see :class:`UniformConfig`; defaults to ``UniformConfig()``. A plain dict
        of its fields is validated into one; another type (another allocator's config
        included) raises ``TypeError``.

    Example:
      >>> alloc = UniformAllocator()
      >>> alloc.allocate(["a", "b", "c"], 10).counts.tolist()
      [4, 3, 3]
      >>> alloc.update(["a", "a", "b"], [1.0, 0.0, 1.0])
      >>> alloc.allocate(["a", "b", "c"], 10).pass_rates.tolist()
      [0.5, 1.0, nan]

    Complexity: O(M log N) per allocation (the pass-rate lookup), O(M) for the counts.

    Reference: GRPO (Shao et al., arXiv 2402.03300), the baseline of CoBA-RL
    (arXiv 2602.03048) and Knapsack-RL (arXiv 2509.25849).
    """

    def __init__(self, config: UniformConfig | Mapping[str, Any] | None = None) -> None:
        self.config = check_config(config, UniformConfig)
        self._tracker = PassRateTracker(self.config.window)
        self._step = 0
        self._reward_warned = False

    @synchronized
    def __repr__(self) -> str:
        return (
            f"UniformAllocator(step={self._step}, prompts={len(self._tracker)}, "
            f"config={config_summary(self.config)})"
        )

    @property
    def step(self) -> int:
        """How many times :meth:`update` was called."""
        return self._step

    @property
    def tracker(self) -> PassRateTracker:
        """The per-prompt pass-rate tracker (read it, do not modify it)."""
        return self._tracker

    def pass_rates(self, prompt_ids: Any) -> NDArray[np.float64]:
        """Windowed pass rate of each id (``NaN`` if never seen); does not grow the state."""
        return self._tracker.pass_rates(prompt_ids)

    @synchronized
    def allocate(
        self, prompt_ids: Any, budget: int | None, token_budget: float | None = None
    ) -> Allocation:
        """``budget // M`` rollouts per prompt, the first ``budget % M`` prompts one more.

        Args:
          prompt_ids: one stable id per prompt (ints or strings, no duplicates).
          budget: total rollouts ``B >= 0`` (``0`` for an empty batch).

        Returns:
          An :class:`Allocation` with ``method="uniform"`` summing to exactly ``budget``.

        Raises:
          ValueError: duplicate ids, a negative budget or a positive one with no prompts,
            or a token budget (this allocator counts rollouts only).
          TypeError: ids that are not all ints or all strings, a non-integer budget.
        """
        budget = rollouts_only(type(self).__name__, budget, token_budget)
        ids = as_id_array(prompt_ids)
        check_unique_ids(ids)
        b = check_budget(budget, int(ids.size), 0, sys.maxsize)
        rates = self._tracker.pass_rates(ids)
        return Allocation(
            counts=_owned(even_split(b, int(ids.size))),
            budget=b,
            pass_rates=_owned(rates),
            method="uniform",
            n_unseen=int(np.isnan(rates).sum()),
        )

    @synchronized
    def update(self, prompt_ids: Any, rewards: Any, lengths: Any = None) -> None:
        """Record one training step: one (prompt id, reward) pair per rollout.

        ``lengths`` (response lengths, one per rollout) are checked and then ignored:
        this allocator counts rollouts only (it accepts them so that every
        :class:`coba_rl.Allocator` is driven the same way).

        Success follows ``config.success_reward`` / ``config.success_threshold`` as in
        :class:`coba_rl.CoBAAllocator` (one :class:`coba_rl.RewardWarning` at most).

        Raises:
          ValueError: lengths differ, or a reward is NaN or infinite.
          TypeError: ids that are not all ints or all strings.
        """
        ids = as_id_array(prompt_ids)
        r = check_rewards(rewards, ids.size)
        if lengths is not None:
            check_lengths(lengths, ids.size)
        cfg = self.config
        self._tracker.record(ids, r, cfg.success_reward, cfg.success_threshold)
        if not self._reward_warned:
            self._reward_warned = warn_graded_rewards(r, cfg.success_reward, cfg.success_threshold)
        self._step += 1

    @synchronized
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume exactly: the config, the step and the tracker."""
        body = {"step": self._step, "tracker": self._tracker.state_dict()}
        return make_envelope(type(self).__name__, self.config, body)

    @classmethod
    def _parse_state(cls, state: Any) -> UniformAllocator:
        state = open_envelope(state, cls.__name__, ("step", "tracker"))
        config = parse_config(state, UniformConfig)
        new = cls(config)
        new._step = parse_step(state["step"])
        tracker = PassRateTracker.from_state_dict(state["tracker"])
        if tracker.window != config.window:
            raise ValueError(
                f"allocator state: tracker window {tracker.window} != config window {config.window}"
            )
        most = int(tracker._appearances.max()) if len(tracker) else 0
        if most > new._step:
            raise ValueError(
                f"allocator state: the tracker is ahead of the step: a prompt appears {most} "
                f"times, but step is {new._step}"
            )
        new._tracker = tracker
        return new

    @synchronized
    def _check(self) -> None:
        """Raise ``AssertionError`` if an invariant fails (used by the stress tests)."""
        self._tracker._check()
        if self._tracker.window != self.config.window:
            raise AssertionError("tracker window != config window")
        if len(self._tracker) and int(self._tracker._appearances.max()) > self._step:
            raise AssertionError("a prompt appears more often than update was called")
