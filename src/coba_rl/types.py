"""The data that crosses the public API: a batch's statistics in, an allocation out."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, field_validator

from coba_rl._validation import check_pass_rates

__all__ = ["Allocation", "BatchStats"]


class BatchStats(BaseModel):
    """What an allocator needs to know about one batch of prompts.

    Attributes:
      pass_rates: one pass rate per prompt, in [0, 1]; ``NaN`` marks a never-seen prompt.
        Stored as a read-only float64 array.
      failure_rate: the smoothed global failure rate ``F_bar`` in [0, 1]. ``None`` means
        ``1 - mean`` of the known pass rates.

    Example:
      >>> s = BatchStats(pass_rates=[0.1, 0.5, float("nan")])
      >>> s.num_prompts, round(s.resolved_failure_rate(), 2)
      (3, 0.7)
      >>> BatchStats(pass_rates=[1.5])
      Traceback (most recent call last):
      ...
      pydantic_core._pydantic_core.ValidationError: 1 validation error for BatchStats
      pass_rates
        Value error, pass_rates[0] = 1.5 is outside [0, 1] (NaN marks unseen) ...
    """

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    pass_rates: NDArray[np.float64]
    failure_rate: float | None = Field(None, ge=0.0, le=1.0, allow_inf_nan=False)

    @field_validator("pass_rates", mode="before")
    @classmethod
    def _pass_rates(cls, v: Any) -> NDArray[np.float64]:
        return check_pass_rates(v)

    @property
    def num_prompts(self) -> int:
        """The batch size ``M``."""
        return int(self.pass_rates.size)

    def resolved_failure_rate(self) -> float | None:
        """``failure_rate``, or ``1 - mean`` of the known pass rates (``None`` if none known)."""
        if self.failure_rate is not None:
            return self.failure_rate
        known = self.pass_rates[~np.isnan(self.pass_rates)]
        if known.size == 0:
            return None
        return float(1.0 - np.mean(known))


@dataclass(frozen=True)
class Allocation:
    """The result of one allocation: a rollout count per prompt, and how it was reached.

    Attributes:
      counts: int64, shape ``(M,)``, in batch order; sums to exactly ``budget``.
      budget: the total budget ``B``.
      alpha, beta: the Beta shape used.
      tau: the saturation scale used by the greedy (``nan`` if the greedy did not run).
      pass_rates: the pass rates the allocator used (unseen already replaced).
      method: ``"greedy"``, ``"even_split"`` or a baseline's name.
      failure_rate: the smoothed failure rate behind ``alpha`` and ``beta``, if known.
      n_unseen: how many prompts had no pass rate.
    """

    counts: NDArray[np.int64]
    budget: int
    alpha: float = math.nan
    beta: float = math.nan
    tau: float = math.nan
    pass_rates: NDArray[np.float64] = field(default_factory=lambda: np.empty(0))
    method: str = "greedy"
    failure_rate: float = math.nan
    n_unseen: int = 0

    def __post_init__(self) -> None:
        self.counts.setflags(write=False)

    def __len__(self) -> int:
        return int(self.counts.size)

    def metrics(self, prefix: str = "") -> dict[str, float]:
        """A flat ``{name: float}`` summary for any logger (wandb, TensorBoard, verl, TRL).

        Keys: ``rollouts/{mean,min,max,std}``, ``budget``, ``prompts``, ``unseen``,
        ``at_floor`` and ``at_cap`` (shares of prompts at ``min`` / ``max`` count),
        ``zero_pass_share`` and ``full_pass_share`` (share of the budget spent on prompts
        with pass rate 0 or 1), ``alpha``, ``beta``, ``tau``, ``failure_rate``.

        Args:
          prefix: prepended to every key, e.g. ``"coba/"``.

        Example:
          >>> a = Allocation(counts=np.array([2, 6]), budget=8, alpha=8.2, beta=2.8, tau=3.0)
          >>> m = a.metrics(prefix="coba/")
          >>> m["coba/rollouts/max"], m["coba/alpha"]
          (6.0, 8.2)
        """
        c = self.counts.astype(np.float64)
        m: dict[str, float] = {
            "budget": float(self.budget),
            "prompts": float(c.size),
            "unseen": float(self.n_unseen),
            "alpha": float(self.alpha),
            "beta": float(self.beta),
            "tau": float(self.tau),
            "failure_rate": float(self.failure_rate),
        }
        if c.size:
            m.update(
                {
                    "rollouts/mean": float(c.mean()),
                    "rollouts/min": float(c.min()),
                    "rollouts/max": float(c.max()),
                    "rollouts/std": float(c.std()),
                    "at_floor": float(np.mean(c == c.min())),
                    "at_cap": float(np.mean(c == c.max())),
                }
            )
            if self.pass_rates.size == c.size and self.budget > 0:
                m["zero_pass_share"] = float(c[self.pass_rates == 0.0].sum() / self.budget)
                m["full_pass_share"] = float(c[self.pass_rates == 1.0].sum() / self.budget)
        return {prefix + k: v for k, v in m.items()}
