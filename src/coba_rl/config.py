"""Configuration of the CoBA-RL allocator: the released constants as validated defaults."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from coba_rl._validation import MAX_N_UP, MAX_WINDOW
from coba_rl.value import MAX_KAPPA

__all__ = ["CoBAConfig"]


class CoBAConfig(BaseModel):
    """Every constant of the CoBA-RL allocator, with the authors' released values as defaults.

    The model is frozen and rejects unknown keys, so a typo in a config file fails loudly
    instead of silently falling back to a default.

    Attributes:
      variant: ``"paper"`` runs Algorithm 1 over the whole batch; ``"release"`` runs the
        authors' released allocator (buckets, explore budget, fallback spreading).
      n_low, n_up: per-prompt rollout bounds (``1 <= n_low <= n_up <= 65536``). Keep
        ``n_low >= 2`` for GRPO: a group of one carries no advantage signal.
      kappa: ``alpha + beta`` of the Beta density, in ``(2, MAX_KAPPA]`` (``MAX_KAPPA`` =
        1000: above about 1019 the Beta normaliser is no longer a normal float and the
        released arithmetic loses the density; see :data:`coba_rl.value.MAX_KAPPA`).
      gamma: steepness of the sigmoid applied to failure rates at or below 0.5.
      window: how many past appearances (per prompt) and steps (failure rate) to average
        (at most 1024).
      tau: ``"adaptive"`` (from the batch's pass-rate variance) or a fixed positive float.
      tau_min, tau_max, var_max: the adaptive-tau constants.
      smoothing: pass rates are clipped to ``[smoothing, 1 - smoothing]`` in the value.
      exploration_budget_ratio: release variant: the largest share of the spare budget
        spent by the greedy on the explore bucket.
      fallback: release variant: how leftover budget is spread, ``"weighted"`` by
        ``(1 - p) ** weight_alpha`` or ``"uniform"``.
      weight_alpha: exponent of the weighted fallback.
      success_reward: a rollout succeeds when its reward equals this value.
      success_threshold: ``None`` (exact matching, as released) or a number: a rollout
        succeeds when its reward is at least this value (graded rewards).
      unseen_pass_rate: the pass rate assumed for never-seen prompts when some prompts
        of the batch have been seen (an all-unseen batch gets the even split).
      max_prompt_tokens: token-budget allocations only: a cap on any one prompt's
        expected tokens ``c_i n_i`` (one long group delays a synchronous step). Prompt
        ``i`` gets at most ``max(n_low, floor(max_prompt_tokens / c_i))`` rollouts: the
        floor ``n_low`` is never cut, so a prompt longer than the cap still gets
        ``n_low``. ``None`` (default): no cap. Rollout-only allocations ignore it.
      default_tokens_per_rollout: token-budget allocations only: the tokens per rollout
        of every prompt when no cost of the batch is known (a trainer would set its
        response-length limit). ``None`` (default): such a batch is refused.

    Example:
      >>> cfg = CoBAConfig(n_up=64)
      >>> cfg.variant, cfg.n_low, cfg.n_up, cfg.kappa
      ('paper', 2, 64, 11.0)
      >>> CoBAConfig(n_lo=2)
      Traceback (most recent call last):
      ...
      pydantic_core._pydantic_core.ValidationError: 1 validation error for CoBAConfig
      n_lo
        Extra inputs are not permitted ...
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    variant: Literal["paper", "release"] = "paper"
    n_low: int = Field(default=2, ge=1)
    n_up: int = Field(default=128, ge=1, le=MAX_N_UP)
    kappa: float = Field(default=11.0, gt=2.0, allow_inf_nan=False)
    gamma: float = Field(default=10.0, gt=0.0, allow_inf_nan=False)
    window: int = Field(default=1, ge=1, le=MAX_WINDOW)
    tau: Literal["adaptive"] | float = "adaptive"
    tau_min: float = Field(default=3.0, gt=0.0, allow_inf_nan=False)
    tau_max: float = Field(default=12.0, gt=0.0, allow_inf_nan=False)
    var_max: float = Field(default=0.1667, gt=0.0, allow_inf_nan=False)
    smoothing: float = Field(default=0.01, ge=0.0, lt=0.5)
    exploration_budget_ratio: float = Field(default=0.8, ge=0.0, le=1.0)
    fallback: Literal["weighted", "uniform"] = "weighted"
    weight_alpha: float = Field(default=1.0, ge=0.0, allow_inf_nan=False)
    success_reward: float = Field(default=1.0, allow_inf_nan=False)
    success_threshold: float | None = Field(default=None, allow_inf_nan=False)
    unseen_pass_rate: float = Field(default=0.5, ge=0.0, le=1.0)
    max_prompt_tokens: float | None = Field(default=None, gt=0.0, allow_inf_nan=False)
    default_tokens_per_rollout: float | None = Field(default=None, gt=0.0, allow_inf_nan=False)

    @field_validator("kappa")
    @classmethod
    def _kappa_exact(cls, v: float) -> float:
        if v > MAX_KAPPA:
            raise ValueError(
                f"kappa = {v} exceeds MAX_KAPPA = {MAX_KAPPA:g}: beyond it the Beta normaliser "
                "B(kappa/2, kappa/2) leaves the normal float range and the density is lost"
            )
        return v

    @field_validator("tau")
    @classmethod
    def _tau_positive(cls, v: str | float) -> str | float:
        if isinstance(v, float) and not (math.isfinite(v) and v > 0):
            raise ValueError(f"tau must be 'adaptive' or a finite positive float, got {v}")
        return v

    @model_validator(mode="after")
    def _bounds(self) -> CoBAConfig:
        if self.n_low > self.n_up:
            raise ValueError(f"n_low ({self.n_low}) must not exceed n_up ({self.n_up})")
        if self.tau_min > self.tau_max:
            raise ValueError(f"tau_min ({self.tau_min}) must not exceed tau_max ({self.tau_max})")
        return self
