"""The stateful CoBA-RL allocator for a training loop: track, shape, allocate, persist."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray

from coba_rl._persist import (
    STATE_VERSION,
    Persistent,
    atomic_write_json,
    config_summary,
    make_envelope,
    open_envelope,
    parse_config,
    parse_step,
    read_state_file,
)
from coba_rl._sync import synchronized
from coba_rl._validation import as_id_array, check_config, check_rewards, check_unique_ids
from coba_rl.coba import allocate_tokens_with_shape, allocate_with_shape, initial_shape
from coba_rl.config import CoBAConfig
from coba_rl.rewards import warn_graded_rewards
from coba_rl.tracker import PassRateTracker
from coba_rl.types import Allocation
from coba_rl.value import beta_shape

__all__ = ["STATE_VERSION", "CoBAAllocator", "atomic_write_json", "read_state_file"]


class CoBAAllocator(Persistent[CoBAConfig]):
    """CoBA-RL with memory: per-prompt pass rates, a failure-rate window and the Beta shape.

    Call :meth:`allocate` before generation and :meth:`update` once per training step
    with every rollout's (prompt id, reward), and optionally its response length in
    tokens: then ``allocate(ids, budget, token_budget=T)`` spends a token budget, each
    prompt costing its windowed mean response length ([Token budgets][token-budget-guide]).
    The shape computed after step ``t`` is used for the allocation at step ``t + 1``
    ([Rules: the failure rate][rules-failure-rate]).

    Safe to share between threads: ``allocate``, ``update``, ``state_dict``,
    ``load_state_dict`` and ``save`` hold the allocator's lock, so each call sees and
    leaves a consistent state. (The order of calls from different threads is theirs.)

    Args:
      config: the allocator constants; defaults to :class:`CoBAConfig` ``()``. A plain
        dict of its fields is validated into one; another type raises ``TypeError``.

    Example:
      >>> alloc = CoBAAllocator(CoBAConfig(n_low=2, n_up=16))
      >>> alloc.allocate([10, 11, 12], 24).counts.tolist()  # nothing seen yet: even split
      [8, 8, 8]
      >>> ids = [10] * 8 + [11] * 8 + [12] * 8
      >>> rewards = [1.0] * 2 + [0.0] * 6 + [1.0] * 6 + [0.0] * 2 + [0.0] * 8
      >>> alloc.update(ids, rewards)
      >>> a = alloc.allocate([10, 11, 12], 24)
      >>> a.counts.tolist(), round(a.alpha, 4), round(a.beta, 4)
      ([6, 16, 2], 7.0, 4.0)
    """

    def __init__(self, config: CoBAConfig | Mapping[str, Any] | None = None) -> None:
        self.config = check_config(config, CoBAConfig)
        self._tracker = PassRateTracker(self.config.window)
        self._failure_window: list[float] = []
        self._alpha, self._beta = initial_shape(self.config)
        self._step = 0
        self._rollout_steps = 0  # updates that carried rollouts (each appended an F_t)
        self._reward_warned = False

    @synchronized
    def __repr__(self) -> str:
        return (
            f"CoBAAllocator(step={self._step}, prompts={len(self._tracker)}, "
            f"alpha={self._alpha:.4g}, beta={self._beta:.4g}, config={config_summary(self.config)})"
        )

    # -- the training-loop API -----------------------------------------------------------

    @property
    def alpha(self) -> float:
        """The Beta shape's ``alpha`` for the next allocation."""
        return self._alpha

    @property
    def beta(self) -> float:
        """The Beta shape's ``beta`` for the next allocation."""
        return self._beta

    @property
    @synchronized
    def failure_rate(self) -> float | None:
        """``F_bar``, the mean of the failure-rate window (``None`` before any update)."""
        return float(np.mean(self._failure_window)) if self._failure_window else None

    @property
    def step(self) -> int:
        """How many times :meth:`update` was called."""
        return self._step

    @property
    def tracker(self) -> PassRateTracker:
        """The per-prompt pass-rate tracker (read it, do not modify it)."""
        return self._tracker

    def pass_rates(self, prompt_ids: Any) -> np.ndarray[Any, np.dtype[np.float64]]:
        """Windowed pass rate of each id (``NaN`` if never seen); does not grow the state."""
        return self._tracker.pass_rates(prompt_ids)

    def mean_lengths(self, prompt_ids: Any) -> NDArray[np.float64]:
        """Windowed mean response length of each id (``NaN`` if unknown): its token cost."""
        return self._tracker.mean_lengths(prompt_ids)

    @synchronized
    def allocate(
        self, prompt_ids: Any, budget: int | None, token_budget: float | None = None
    ) -> Allocation:
        """Rollout counts for a batch of prompts, in the order of ``prompt_ids``.

        With ``token_budget``, the counts spend at most that many expected tokens, each
        prompt's rollout costing its windowed mean response length (:meth:`mean_lengths`;
        unknown: as :func:`coba_rl.allocate` fills them), and ``budget`` (if not ``None``)
        caps the rollouts as well.

        Args:
          prompt_ids: one stable id per prompt (ints or strings, no duplicates).
          budget: total rollouts ``B``, ``0 <= B <= M * n_up``; ``None`` only with a
            token budget.
          token_budget: ``T``, expected tokens to spend; ``None``: rollouts only.

        Returns:
          An :class:`Allocation` whose counts sum to exactly its ``budget``.

        Raises:
          ValueError: duplicate ids, an impossible budget or token budget, no known
            length and no ``default_tokens_per_rollout``.
          TypeError: ids that are not all ints or all strings, a non-integer budget,
            no budget at all.

        Complexity: O(M log N + M (n_up - n_low)) for M prompts and N tracked ids; with
        a token budget, see :func:`coba_rl.tokens.token_greedy`.
        """
        ids = as_id_array(prompt_ids)
        check_unique_ids(ids)
        rates = self._tracker.pass_rates(ids)
        if token_budget is None:
            if budget is None:
                raise TypeError(
                    "budget is None and no token_budget was given: pass a rollout budget, a "
                    "token budget, or both"
                )
            return allocate_with_shape(
                rates, budget, self.config, self._alpha, self._beta, self.failure_rate
            )
        return allocate_tokens_with_shape(
            rates,
            self._tracker.mean_lengths(ids),
            budget,
            token_budget,
            self.config,
            self._alpha,
            self._beta,
            self.failure_rate,
        )

    @synchronized
    def update(self, prompt_ids: Any, rewards: Any, lengths: Any = None) -> None:
        """Record one training step: one (prompt id, reward) pair per rollout.

        ``lengths`` (optional, one per rollout) are the response lengths in tokens; each
        prompt's mean length over the same window as its pass rate is its token cost.

        Updates each prompt's window, appends this step's failure rate
        ``F_t = 1 - mean_i(successes_i / rollouts_i)`` to the failure window and recomputes
        the Beta shape from its mean (eq. 4, 6, 7). A rollout succeeds when its reward
        equals ``config.success_reward``, or is at least ``config.success_threshold`` when
        that is set; under exact matching, the first graded reward (neither
        ``success_reward`` nor a plain failure, see :mod:`coba_rl.rewards`) emits one
        :class:`coba_rl.RewardWarning` per allocator.

        Raises:
          ValueError: lengths differ, a reward is NaN or infinite, or a response length
            is not a whole number ``>= 0``.
          TypeError: ids that are not all ints or all strings.

        Complexity: O(n log n + N) for n rollouts and N tracked ids.
        """
        ids = as_id_array(prompt_ids)
        r = check_rewards(rewards, ids.size)
        cfg = self.config
        fractions = self._tracker.record(
            ids, r, cfg.success_reward, cfg.success_threshold, lengths=lengths
        )
        if not self._reward_warned:
            self._reward_warned = warn_graded_rewards(r, cfg.success_reward, cfg.success_threshold)
        self._step += 1
        if fractions.size == 0:
            return
        self._rollout_steps += 1
        self._failure_window.append(float(1.0 - np.mean(fractions)))
        del self._failure_window[: -self.config.window]
        a, b = beta_shape(np.mean(self._failure_window), self.config.kappa, self.config.gamma)
        self._alpha, self._beta = float(a), float(b)

    # -- persistence ---------------------------------------------------------------------

    @synchronized
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume exactly, as plain JSON-ready data (versioned).

        Holds the config, the tracker, the failure-rate window and the Beta shape, so
        that a resumed run makes the same next allocation as an uninterrupted one, and
        the step counts that :meth:`load_state_dict` checks them against.
        """
        return make_envelope(
            type(self).__name__,
            self.config,
            {
                "step": self._step,
                "rollout_steps": self._rollout_steps,
                "alpha": self._alpha,
                "beta": self._beta,
                "failure_window": list(self._failure_window),
                "tracker": self._tracker.state_dict(),
            },
        )

    @classmethod
    def _parse_state(cls, state: Any) -> CoBAAllocator:
        state = open_envelope(
            state,
            cls.__name__,
            ("step", "rollout_steps", "alpha", "beta", "failure_window", "tracker"),
            added={"rollout_steps": 2},
        )
        config = parse_config(state, CoBAConfig)
        new = cls(config)
        step = parse_step(state["step"])
        window = state["failure_window"]
        if (
            not isinstance(window, list)
            or len(window) > config.window
            or not all(isinstance(f, (int, float)) and not isinstance(f, bool) for f in window)
            or not all(0.0 <= f <= 1.0 for f in window)
        ):
            raise ValueError(
                f"allocator state: failure_window must be a list of at most {config.window} "
                "failure rates in [0, 1]"
            )
        alpha, beta = state["alpha"], state["beta"]
        for name, v in (("alpha", alpha), ("beta", beta)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"allocator state: {name} must be a finite number, got {v!r}")
        if not 1.0 <= alpha <= config.kappa - 1.0 or abs(alpha + beta - config.kappa) > 1e-9:
            raise ValueError(
                f"allocator state: shape (alpha={alpha}, beta={beta}) is not a valid shape for "
                f"kappa={config.kappa}"
            )
        tracker = PassRateTracker.from_state_dict(state["tracker"])
        if tracker.window != config.window:
            raise ValueError(
                f"allocator state: tracker window {tracker.window} != config window {config.window}"
            )
        failures = [float(f) for f in window]
        appearances = tracker._appearances
        if state["rollout_steps"] is None:  # version 1: derive it (the checks below still bite)
            full = len(failures) == config.window
            rollout_steps = min(step, int(appearances.sum())) if full else len(failures)
        else:
            rollout_steps = parse_step(state["rollout_steps"], "rollout_steps")
        _check_consistent(config, step, rollout_steps, failures, alpha, beta, appearances)
        new._tracker = tracker
        new._failure_window = failures
        new._alpha, new._beta = float(alpha), float(beta)
        new._step = step
        new._rollout_steps = rollout_steps
        return new

    @synchronized
    def _check(self) -> None:
        """Raise ``AssertionError`` if an invariant fails (used by the stress tests)."""
        self._tracker._check()
        try:
            _check_consistent(
                self.config,
                self._step,
                self._rollout_steps,
                self._failure_window,
                self._alpha,
                self._beta,
                self._tracker._appearances,
            )
        except ValueError as exc:
            raise AssertionError(str(exc)) from None
        cfg = self.config
        if not (1.0 <= self._alpha <= cfg.kappa - 1.0):
            raise AssertionError(f"alpha {self._alpha} outside [1, kappa - 1]")
        if abs(self._alpha + self._beta - cfg.kappa) > 1e-9:
            raise AssertionError("alpha + beta != kappa")
        if len(self._failure_window) > cfg.window:
            raise AssertionError("failure window longer than configured")
        if not all(0.0 <= f <= 1.0 for f in self._failure_window):
            raise AssertionError("failure rate outside [0, 1]")
        if self._tracker.window != cfg.window:
            raise AssertionError("tracker window != config window")


def _check_consistent(
    config: CoBAConfig,
    step: int,
    rollout_steps: int,
    failures: list[float],
    alpha: float,
    beta: float,
    appearances: np.ndarray[Any, np.dtype[np.int64]],
) -> None:
    """Raise ``ValueError`` unless the parts of a state could come from one run.

    With ``U`` the updates that carried rollouts (each appends one ``F_t`` and one
    appearance to each of its prompts; an empty update only counts a step):
    ``U <= step``; the failure window holds ``min(U, window)`` entries; the shape is the
    initial one before any ``F_t``, else ``beta_shape(mean(window))``; no prompt appears
    more than ``U`` times, and all prompts together at least ``U`` times.
    """
    where = "allocator state"
    if rollout_steps > step:
        raise ValueError(
            f"{where}: rollout_steps ({rollout_steps}) exceeds step ({step}): only updates "
            "count steps"
        )
    expected_len = min(rollout_steps, config.window)
    if len(failures) != expected_len:
        raise ValueError(
            f"{where}: failure_window has {len(failures)} entries, but {rollout_steps} "
            f"updates with rollouts (step {step}) and window {config.window} make "
            f"min({rollout_steps}, {config.window}) = {expected_len}; a truncated or padded "
            "window would resume to a different future"
        )
    if failures:
        f_bar = float(np.mean(failures))
        a, b = beta_shape(f_bar, config.kappa, config.gamma)
        expected, why = (float(a), float(b)), f"the failure_window (F_bar = {f_bar!r})"
    else:
        expected, why = initial_shape(config), "an empty failure_window (no update yet)"
    tol = 1e-9 * config.kappa
    if abs(alpha - expected[0]) > tol or abs(beta - expected[1]) > tol:
        raise ValueError(
            f"{where}: shape alpha={alpha!r}, beta={beta!r} contradicts {why}, which gives "
            f"alpha={expected[0]!r}, beta={expected[1]!r}"
        )
    if appearances.size:
        most, total = int(appearances.max()), int(appearances.sum())
        if most > rollout_steps:
            raise ValueError(
                f"{where}: the tracker is ahead of the step: a prompt appears {most} times, "
                f"but only {rollout_steps} updates carried rollouts (step {step})"
            )
    else:
        total = 0
    if total < rollout_steps:
        raise ValueError(
            f"{where}: the tracker holds {total} appearances in all, fewer than the "
            f"{rollout_steps} updates with rollouts (step {step}) recorded"
        )
