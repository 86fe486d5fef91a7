"""The data that crosses the public API: a batch's statistics in, an allocation out."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias, TypeVar

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from coba_rl._validation import check_costs, check_pass_rates

__all__ = ["Allocation", "BatchStats", "PassRatesLike"]

#: What :class:`BatchStats` accepts as pass rates: a sequence of floats or a numpy array.
PassRatesLike: TypeAlias = Sequence[float] | NDArray[Any]

_ArrayT = TypeVar("_ArrayT", bound="np.ndarray[Any, Any]")

#: The values of :attr:`Allocation.binding` (besides ``None``).
BINDINGS = ("tokens", "rollouts", "tokens+rollouts", "none")


class BatchStats(BaseModel):
    """What an allocator needs to know about one batch of prompts.

    Attributes:
      pass_rates: one pass rate per prompt, in [0, 1]; ``NaN`` marks a never-seen prompt.
        Accepts a list, tuple or numpy array; stored as a read-only float64 array.
      failure_rate: the smoothed global failure rate ``F_bar`` in [0, 1]. ``None`` (the
        library's value for "unknown") means ``1 - mean`` of the known pass rates.
      costs: ``None`` or one expected number of tokens per rollout per prompt (the
        prompt's mean response length), positive and finite; ``NaN`` marks unknown.
        Only a token budget reads them (see :func:`coba_rl.allocate`): an unknown cost
        is the mean of the known ones; with none known (or ``costs=None``) every prompt
        costs ``config.default_tokens_per_rollout``, and without that default a token
        budget is refused. Stored as a read-only float64 array.

    Example:
      >>> s = BatchStats(pass_rates=[0.1, 0.5, float("nan")])
      >>> s.num_prompts, round(s.resolved_failure_rate(), 2)
      (3, 0.7)
      >>> BatchStats(pass_rates=[0.1, 0.5], costs=[300, float("nan")]).costs.tolist()
      [300.0, nan]
      >>> BatchStats(pass_rates=[1.5])
      Traceback (most recent call last):
      ...
      pydantic_core._pydantic_core.ValidationError: 1 validation error for BatchStats
      pass_rates
        Value error, pass_rates[0] = 1.5 is outside [0, 1] (NaN marks unseen) ...
    """

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    pass_rates: NDArray[np.float64]
    failure_rate: float | None = Field(default=None, ge=0.0, le=1.0, allow_inf_nan=False)
    costs: NDArray[np.float64] | None = None

    # The explicit signature is what type checkers see (no plugin needed): array-likes in;
    # the field itself is always the validated float64 array.
    def __init__(
        self,
        *,
        pass_rates: PassRatesLike,
        failure_rate: float | None = None,
        costs: PassRatesLike | None = None,
    ) -> None:
        super().__init__(pass_rates=pass_rates, failure_rate=failure_rate, costs=costs)

    @field_validator("pass_rates", mode="before")
    @classmethod
    def _pass_rates(cls, v: Any) -> NDArray[np.float64]:
        return check_pass_rates(v)

    @field_validator("costs", mode="before")
    @classmethod
    def _costs(cls, v: Any) -> NDArray[np.float64] | None:
        return None if v is None else check_costs(v)

    @model_validator(mode="after")
    def _costs_per_prompt(self) -> BatchStats:
        if self.costs is not None and self.costs.shape != self.pass_rates.shape:
            raise ValueError(
                f"costs must hold one value per prompt ({self.pass_rates.size}), got "
                f"{self.costs.size}"
            )
        return self

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


@dataclass(frozen=True, eq=False, repr=False)
class Allocation:
    """The result of one allocation: a rollout count per prompt, and how it was reached.

    An ``Allocation`` is a value: it is immutable (its arrays are read-only; a writable
    array it is given is copied, so the caller's array stays the caller's),
    compares equal to another with the same fields (arrays element-wise, ``NaN`` pass
    rates equal), hashes consistently with that, and checks itself when built.

    Attributes:
      counts: int64, shape ``(M,)``, in batch order, non-negative; sums to exactly
        ``budget``.
      budget: the total budget ``B``. Under a token budget, the rollouts the allocation
        spends (at most the rollout budget given, if any).
      alpha, beta: the Beta shape used (``None`` for an allocator without one).
      tau: the saturation scale used by the greedy (``None`` if the greedy did not run).
      pass_rates: the pass rates the allocator used (unseen already replaced, or ``NaN``
        where the allocator keeps them unseen); empty if not recorded.
      method: ``"greedy"``, ``"even_split"`` or a baseline's name.
      failure_rate: the smoothed failure rate behind ``alpha`` and ``beta`` (``None``
        before the first update, or for an allocator without one).
      n_unseen: how many prompts had no pass rate.
      n_low, n_up: the allocator's per-prompt bounds (``None`` for an allocator without
        bounds); :meth:`metrics` reports the shares of prompts at them.
      token_budget: the token budget ``T`` (``None`` for a rollout-only allocation).
      tokens: the expected tokens ``sum_i c_i n_i`` of the counts (``None`` unless costs
        were used).
      costs: the per-prompt tokens per rollout ``c_i`` used (unknown ones filled in);
        empty if not recorded.
      binding: which constraint stopped a token-budget allocation: ``"tokens"``,
        ``"rollouts"``, ``"tokens+rollouts"`` or ``"none"`` (every prompt at its cap, or
        no rollout left with a positive value); ``None`` for a rollout-only allocation.
      gap: a certified upper bound on how far the allocation's value lies below the
        optimum under the same constraints (``0.0`` when provably optimal); ``None``
        for a rollout-only allocation.

    Every scalar that is not known is ``None``, never ``NaN`` (``NaN`` is refused).
    Inside ``pass_rates``, ``NaN`` marks a never-seen prompt, as in :class:`BatchStats`.

    Raises:
      TypeError: non-integer counts, budget, bounds or ``n_unseen``.
      ValueError: counts that are not 1-D, negative or do not sum to ``budget``; a
        ``NaN`` or infinite ``alpha``, ``beta``, ``tau`` or ``failure_rate``; pass rates
        of another length; ``n_low > n_up``; ``n_unseen`` outside ``[0, M]``.

    Example:
      >>> a = Allocation(counts=np.array([2, 6]), budget=8, alpha=8.2)
      >>> a == Allocation(counts=np.array([2, 6]), budget=8, alpha=8.2)
      True
      >>> a
      Allocation(method='greedy', prompts=2, budget=8, counts=[2 6], min=2, max=6, alpha=8.2)
      >>> Allocation(counts=np.array([2, 5]), budget=8)
      Traceback (most recent call last):
      ...
      ValueError: Allocation: counts sum to 7, not to the budget 8
    """

    counts: NDArray[np.int64]
    budget: int
    alpha: float | None = None
    beta: float | None = None
    tau: float | None = None
    pass_rates: NDArray[np.float64] = field(default_factory=lambda: _read_only(np.empty(0)))
    method: str = "greedy"
    failure_rate: float | None = None
    n_unseen: int = 0
    n_low: int | None = None
    n_up: int | None = None
    token_budget: float | None = None
    tokens: float | None = None
    costs: NDArray[np.float64] = field(default_factory=lambda: _read_only(np.empty(0)))
    binding: str | None = None
    gap: float | None = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        budget = _as_int(self.budget, "budget")
        if budget < 0:
            raise ValueError(f"Allocation: budget must be non-negative, got {budget}")
        set_(self, "budget", budget)
        set_(self, "counts", _counts(self.counts, budget))
        m = int(self.counts.size)
        for name in ("alpha", "beta", "tau", "failure_rate", "token_budget", "tokens", "gap"):
            set_(self, name, _optional_real(getattr(self, name), name))
        costs = np.asarray(self.costs, dtype=np.float64)
        if costs.ndim != 1 or costs.size not in (0, m):
            raise ValueError(
                f"Allocation: costs must be empty or hold one cost per prompt ({m}), got "
                f"shape {costs.shape}"
            )
        set_(self, "costs", costs if not costs.flags.writeable else _read_only(costs))
        if self.binding not in (None, *BINDINGS):
            raise ValueError(
                f"Allocation: binding must be None or one of {BINDINGS}, got {self.binding!r}"
            )
        rates = np.asarray(self.pass_rates, dtype=np.float64)
        if rates.ndim != 1 or rates.size not in (0, m):
            raise ValueError(
                f"Allocation: pass_rates must be empty or hold one rate per prompt ({m}), got "
                f"shape {rates.shape}"
            )
        set_(self, "pass_rates", rates if not rates.flags.writeable else _read_only(rates))
        if not isinstance(self.method, str):
            raise TypeError(f"Allocation: method must be a str, got {type(self.method).__name__}")
        n_unseen = _as_int(self.n_unseen, "n_unseen")
        if not 0 <= n_unseen <= m:
            raise ValueError(f"Allocation: n_unseen must lie in [0, {m}], got {n_unseen}")
        set_(self, "n_unseen", n_unseen)
        bounds = [
            None if b is None else _as_int(b, n)
            for n, b in (("n_low", self.n_low), ("n_up", self.n_up))
        ]
        if bounds[0] is not None and bounds[1] is not None and not 0 <= bounds[0] <= bounds[1]:
            raise ValueError(
                f"Allocation: need 0 <= n_low <= n_up, got n_low={bounds[0]}, n_up={bounds[1]}"
            )
        set_(self, "n_low", bounds[0])
        set_(self, "n_up", bounds[1])

    def __len__(self) -> int:
        return int(self.counts.size)

    def _key(self) -> tuple[Any, ...]:
        return (
            self.budget,
            self.method,
            self.alpha,
            self.beta,
            self.tau,
            self.failure_rate,
            self.n_unseen,
            self.n_low,
            self.n_up,
            self.token_budget,
            self.tokens,
            self.binding,
            self.gap,
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Allocation):
            return NotImplemented
        return (
            self._key() == other._key()
            and np.array_equal(self.counts, other.counts)
            and np.array_equal(self.pass_rates, other.pass_rates, equal_nan=True)
            and np.array_equal(self.costs, other.costs)
        )

    def __hash__(self) -> int:
        # Equal allocations have equal keys and counts; pass rates are left out (NaN).
        return hash((self._key(), self.counts.tobytes()))

    def __repr__(self) -> str:
        c = self.counts
        shown = np.array2string(c, threshold=8, edgeitems=3, max_line_width=10**6)
        parts = [f"method={self.method!r}", f"prompts={c.size}", f"budget={self.budget}"]
        parts.append(f"counts={shown}")
        if c.size:
            parts += [f"min={int(c.min())}", f"max={int(c.max())}"]
        names = ("n_low", "n_up", "alpha", "beta", "tau", "failure_rate", "token_budget", "tokens")
        for name in names:
            v = getattr(self, name)
            if v is not None:
                parts.append(f"{name}={v:.6g}" if isinstance(v, float) else f"{name}={v}")
        if self.binding is not None:
            parts.append(f"binding={self.binding!r}")
        if self.n_unseen:
            parts.append(f"n_unseen={self.n_unseen}")
        return f"Allocation({', '.join(parts)})"

    def metrics(self, prefix: str = "") -> dict[str, float]:
        """A flat ``{name: float}`` summary for any logger (wandb, TensorBoard, verl, TRL).

        Every value is a finite float, so ``json.dumps(m, allow_nan=False)`` works; a key
        whose value is not defined is left out rather than reported as ``NaN``.

        Always present:

        * ``budget``, ``prompts``, ``unseen``: ``B``, ``M`` and the prompts without a pass
          rate.

        When the batch is not empty:

        * ``rollouts/mean``, ``rollouts/min``, ``rollouts/max``, ``rollouts/std``: the
          distribution of the counts (population std);
        * ``at_floor``, ``at_cap``: the shares of prompts whose count is at or below
          ``n_low`` / at or above ``n_up`` (only when the allocation knows its bounds; the
          uniform baseline has none);
        * ``zero_pass_share``, ``full_pass_share``: the share of the budget spent on prompts
          with pass rate 0 / 1 (only with pass rates and a positive budget).

        When defined (see the attributes): ``alpha``, ``beta``, ``tau``, ``failure_rate``.

        For a token-budget allocation (see :func:`coba_rl.allocate`):

        * ``tokens``: the expected tokens of the counts; ``token_budget`` and
          ``tokens/used``, the share of it spent (when it is positive);
        * ``tokens/prompt_max``: the largest expected tokens of one prompt's group
          (``c_i n_i``, what a straggler cap bounds), when the batch is not empty;
        * ``bound/tokens``, ``bound/rollouts``: 1.0 when that constraint stopped the
          allocation, else 0.0;
        * ``gap``: the certified distance to the optimum.

        Args:
          prefix: prepended to every key, e.g. ``"coba/"``.

        Example:
          >>> a = Allocation(counts=np.array([2, 6]), budget=8, alpha=8.2, beta=2.8,
          ...                n_low=2, n_up=8)
          >>> m = a.metrics(prefix="coba/")
          >>> m["coba/rollouts/max"], m["coba/alpha"], m["coba/at_floor"], m["coba/at_cap"]
          (6.0, 8.2, 0.5, 0.0)
          >>> "coba/tau" in m  # not known: left out, never NaN
          False
        """
        c = self.counts.astype(np.float64)
        m: dict[str, float] = {
            "budget": float(self.budget),
            "prompts": float(c.size),
            "unseen": float(self.n_unseen),
        }
        for name in ("alpha", "beta", "tau", "failure_rate", "tokens", "token_budget", "gap"):
            v = getattr(self, name)
            if v is not None:
                m[name] = float(v)
        if self.tokens is not None and self.token_budget:
            m["tokens/used"] = self.tokens / self.token_budget
        if self.binding is not None:
            m["bound/tokens"] = float("tokens" in self.binding)
            m["bound/rollouts"] = float("rollouts" in self.binding)
        if self.costs.size and c.size:
            m["tokens/prompt_max"] = float((self.costs * c).max())
        if c.size:
            m.update(
                {
                    "rollouts/mean": float(c.mean()),
                    "rollouts/min": float(c.min()),
                    "rollouts/max": float(c.max()),
                    "rollouts/std": float(c.std()),
                }
            )
            if self.n_low is not None:
                m["at_floor"] = float(np.mean(self.counts <= self.n_low))
            if self.n_up is not None:
                m["at_cap"] = float(np.mean(self.counts >= self.n_up))
            if self.pass_rates.size == c.size and self.budget > 0:
                m["zero_pass_share"] = float(c[self.pass_rates == 0.0].sum() / self.budget)
                m["full_pass_share"] = float(c[self.pass_rates == 1.0].sum() / self.budget)
        return {prefix + k: v for k, v in m.items()}


def _owned(a: _ArrayT) -> _ArrayT:
    """Mark a freshly built array read-only and hand it to an :class:`Allocation` uncopied.

    Only for arrays nobody else holds (the allocators' own results): :class:`Allocation`
    copies writable arrays, which at 10**6 prompts costs tens of milliseconds a step.
    """
    a.setflags(write=False)
    return a


def _read_only(a: NDArray[Any]) -> NDArray[Any]:
    out: NDArray[Any] = a.copy()
    out.setflags(write=False)
    return out


def _as_int(v: Any, name: str) -> int:
    if type(v) is int:  # the common case, checked first (an Allocation is built every step)
        return v
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
        raise TypeError(f"Allocation: {name} must be an int, got {type(v).__name__} ({v!r})")
    return int(v)


def _trusted_allocation(
    counts: NDArray[np.int64],
    budget: int,
    pass_rates: NDArray[np.float64],
    **fields: Any,
) -> Allocation:
    """An :class:`Allocation` from the library's own solvers, without re-validating it.

    For the per-step path only: ``counts`` must be a read-only int64 array built by a
    solver, ``pass_rates`` a read-only float64 array of the same length, ``budget`` an
    int and every other field already of its declared type (Python floats and ints, or
    ``None``). Field-by-field validation costs more than the O(M) allocation at small
    ``M``; the one check kept is the contract itself, that the counts sum to the budget.
    """
    total = int(np.add.reduce(counts, dtype=np.int64)) if counts.size else 0
    if total != budget:  # a solver bug, never bad input
        raise AssertionError(f"internal error: counts sum to {total}, not to the budget {budget}")
    out = object.__new__(Allocation)
    state = out.__dict__
    state.update(_ALLOCATION_DEFAULTS)
    state.update(fields, counts=counts, budget=budget, pass_rates=pass_rates)
    return out


def _optional_real(v: Any, name: str) -> float | None:
    if v is None:
        return None
    if type(v) is float and math.isfinite(v):  # the common case, checked first
        return v
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise TypeError(f"Allocation: {name} must be a float or None, got {type(v).__name__}")
    f = float(v)
    if not math.isfinite(f):
        raise ValueError(f"Allocation: {name} = {f} is not finite; use None for an unknown value")
    return f


def _counts(counts: Any, budget: int) -> NDArray[np.int64]:
    arr = np.asarray(counts)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"Allocation: counts must be an integer array, got dtype {arr.dtype}")
    if arr.ndim != 1:
        raise ValueError(f"Allocation: counts must be 1-D, got shape {arr.shape}")
    # The reductions themselves, without the ndarray-method wrappers (built every step).
    if arr.size and int(np.minimum.reduce(arr)) < 0:
        raise ValueError(f"Allocation: counts must be non-negative, got {int(arr.min())}")
    out = arr.astype(np.int64, copy=False)
    total = int(np.add.reduce(out, dtype=np.int64)) if out.size else 0
    if total != budget:
        raise ValueError(f"Allocation: counts sum to {total}, not to the budget {budget}")
    if out.flags.writeable or out.dtype != np.int64:
        out = _read_only(out)
    return out


#: Field defaults of :class:`Allocation` (the empty arrays are read-only, so shared).
_ALLOCATION_DEFAULTS: dict[str, Any] = {
    f.name: f.default_factory() if callable(f.default_factory) else f.default
    for f in dataclasses.fields(Allocation)
    if f.name not in ("counts", "budget")
}
