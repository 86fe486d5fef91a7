"""Input checks shared by every public entry point.

Validation happens once, at the public boundary; the maths underneath assumes clean
input. Messages say what was expected and what was received.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from collections.abc import Set as AbcSet
from typing import Any, TypeVar

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel

IntArray = NDArray[np.int64]
FloatArray = NDArray[np.float64]

#: The largest value an int64 count (or budget) can hold.
INT64_MAX = int(np.iinfo(np.int64).max)
#: The largest per-prompt cap ``n_up`` accepted: the gain tables hold ``n_up - n_low``
#: columns per distinct pass rate, so an unbounded cap would be an unbounded allocation.
MAX_N_UP = 2**16
#: The largest pass-rate window accepted (appearances per prompt, or steps).
MAX_WINDOW = 2**10


_T = TypeVar("_T")
_ConfigT = TypeVar("_ConfigT", bound=BaseModel)


def check_instance(obj: Any, expected: type[_T], name: str) -> _T:
    """``obj`` if it is an ``expected``, else a ``TypeError`` naming both types.

    >>> check_instance([0.5], dict, "stats")
    Traceback (most recent call last):
    ...
    TypeError: stats must be a dict, got list ([0.5])
    """
    if not isinstance(obj, expected):
        raise TypeError(f"{name} must be a {expected.__name__}, got {_describe(obj)}")
    return obj


def check_config(config: Any, config_type: type[_ConfigT], name: str = "config") -> _ConfigT:
    """The config an entry point runs with: a ``config_type``, built from a dict, or the default.

    ``None`` gives ``config_type()``. A plain mapping (a Hydra or YAML config) is validated
    into a ``config_type``, so an unknown key or a bad value raises pydantic's
    ``ValidationError`` (a ``ValueError``) naming it. Anything else, another allocator's
    config included, raises ``TypeError`` naming the expected type.

    >>> from coba_rl.config import CoBAConfig
    >>> check_config({"n_up": 16}, CoBAConfig).n_up
    16
    >>> check_config(0.5, CoBAConfig)
    Traceback (most recent call last):
    ...
    TypeError: config must be a CoBAConfig (or a dict of its fields), got float (0.5)
    """
    if config is None:
        return config_type()
    if isinstance(config, config_type):
        return config
    if isinstance(config, Mapping) and not isinstance(config, BaseModel):
        return config_type.model_validate(dict(config))
    raise TypeError(
        f"{name} must be a {config_type.__name__} (or a dict of its fields), got "
        f"{_describe(config)}"
    )


def _describe(obj: Any) -> str:
    """A type name, with a short repr of the value where that helps."""
    if isinstance(obj, BaseModel):
        return type(obj).__name__
    text = repr(obj)
    return f"{type(obj).__name__} ({text if len(text) <= 40 else text[:37] + '...'})"


class BudgetWarning(UserWarning):
    """The budget is below ``M * n_low``; the batch gets the even split instead."""


def check_budget(budget: Any, m: int, n_low: int, n_up: int) -> int:
    """Return ``budget`` as an int, or raise if it cannot be spent on ``m`` prompts.

    Warns (:class:`BudgetWarning`) when it is below the floor ``m * n_low``.
    """
    if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)):
        raise TypeError(f"budget must be an int, got {type(budget).__name__} ({budget!r})")
    b = int(budget)
    if b < 0:
        raise ValueError(f"budget must be non-negative, got {b}")
    if b > INT64_MAX:
        raise ValueError(f"budget {b} does not fit in int64 (the counts' dtype)")
    if m == 0:
        if b > 0:
            raise ValueError(f"a positive budget ({b}) cannot be spent on an empty batch")
        return b
    if b > m * n_up:
        raise ValueError(
            f"budget {b} exceeds M * n_up = {m} * {n_up} = {m * n_up}: it cannot be spent "
            "exactly; raise n_up or lower the budget"
        )
    if b < m * n_low:
        warnings.warn(
            f"budget {b} is below M * n_low = {m} * {n_low} = {m * n_low}; "
            "using the even split (budget // M each, remainder to the first prompts)",
            BudgetWarning,
            stacklevel=3,
        )
    return b


def check_pass_rates(pass_rates: Any, name: str = "pass_rates") -> FloatArray:
    """A 1-D float64 copy of ``pass_rates``; values in [0, 1] or NaN (unseen)."""
    raw = pass_rates if isinstance(pass_rates, np.ndarray) else None
    if raw is None:
        try:
            raw = np.asarray(pass_rates)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{name} must be a 1-D sequence of floats: {exc}") from None
    if raw.dtype.kind in "USO" and raw.size:
        kinds = {type(x).__name__ for x in raw.reshape(-1).tolist()}
        if not kinds <= {"float", "int"}:
            raise TypeError(f"{name} must hold numbers (NaN for unseen), got {sorted(kinds)}")
    if raw.dtype.kind == "c":
        raise TypeError(f"{name} must be real numbers, got complex values")
    try:
        arr = np.array(raw, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be a 1-D sequence of floats: {exc}") from None
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got an array of shape {arr.shape}")
    finite = np.isfinite(arr)
    if np.isinf(arr).any():
        bad = int(np.flatnonzero(np.isinf(arr))[0])
        raise ValueError(f"{name}[{bad}] = {arr[bad]} is infinite; pass rates lie in [0, 1]")
    out_of_range = finite & ((arr < 0.0) | (arr > 1.0))
    if out_of_range.any():
        bad = int(np.flatnonzero(out_of_range)[0])
        raise ValueError(f"{name}[{bad}] = {arr[bad]} is outside [0, 1] (NaN marks unseen)")
    arr.setflags(write=False)
    return arr


def even_split(budget: int, m: int) -> IntArray:
    """``budget // m`` each, the first ``budget % m`` prompts one more ([Rules][rules-even-split]).

    >>> even_split(10, 4).tolist()
    [3, 3, 2, 2]
    """
    for name, v in (("budget", budget), ("m", m)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise TypeError(f"{name} must be an int, got {type(v).__name__} ({v!r})")
        if not 0 <= int(v) <= INT64_MAX:
            raise ValueError(f"{name} must lie in [0, 2**63 - 1], got {v}")
    budget, m = int(budget), int(m)
    if m == 0 and budget > 0:
        raise ValueError(f"a positive budget ({budget}) cannot be split over zero prompts")
    counts = np.full(m, budget // m if m else 0, dtype=np.int64)
    if m:
        counts[: budget % m] += 1
    return counts


_INT_TYPES = (int, np.integer)


def as_id_array(prompt_ids: Any, name: str = "prompt_ids") -> NDArray[Any]:
    """Prompt ids as a 1-D int64 or unicode array; all ints or all strings.

    Ids are the trainer's stable prompt identifiers (a dataset index or a string key),
    never a per-step uid.
    """
    if isinstance(prompt_ids, np.ndarray):
        arr = prompt_ids
        if arr.ndim != 1:
            raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
        if arr.dtype.kind in "iu":
            if arr.dtype.kind == "u" and arr.size and int(arr.max()) > np.iinfo(np.int64).max:
                raise ValueError(f"{name} must fit in int64")
            return arr.astype(np.int64, copy=False)
        if arr.dtype.kind == "U":
            return arr
        if arr.dtype.kind != "O":
            raise TypeError(f"{name} must be ints or strings, got an array of dtype {arr.dtype}")
        items: Sequence[Any] = arr.tolist()
    elif isinstance(prompt_ids, (AbcSet, Mapping)):
        raise TypeError(
            f"{name} must be an ordered sequence (list, tuple or array), got a "
            f"{type(prompt_ids).__name__}: its order, and so the order of the counts, is not "
            "defined"
        )
    elif isinstance(prompt_ids, (str, bytes)) or not isinstance(prompt_ids, Sequence):
        try:
            items = list(prompt_ids)
        except TypeError:
            raise TypeError(
                f"{name} must be a sequence of ints or strings, got {type(prompt_ids).__name__}"
            ) from None
        if isinstance(prompt_ids, (str, bytes)):
            raise TypeError(
                f"{name} must be a sequence of ids, not a single {type(prompt_ids).__name__}"
            )
    else:
        items = prompt_ids
    if len(items) == 0:
        return np.empty(0, dtype=np.int64)
    kinds = set(map(type, items))
    if all(issubclass(t, _INT_TYPES) and not issubclass(t, (bool, np.bool_)) for t in kinds):
        try:
            return np.array(items, dtype=np.int64)
        except OverflowError:
            raise ValueError(f"{name} must fit in int64") from None
    if all(issubclass(t, str) for t in kinds):
        # numpy strips trailing NULs, which would merge "a" and "a\x00": refuse them.
        if "\x00" in "".join(items):
            raise ValueError(f"{name}: string ids must not contain NUL characters")
        return np.array(items, dtype=np.str_)
    names = sorted(t.__name__ for t in kinds)
    raise TypeError(f"{name} must be all ints or all strings, got element types {names}")


def check_unique_ids(ids: NDArray[Any], name: str = "prompt_ids") -> None:
    """Raise if an id occurs twice (each prompt of a batch needs its own count)."""
    if ids.size < 2:
        return
    s = np.sort(ids)
    dup = s[1:] == s[:-1]
    if dup.any():
        first = s[1:][dup][0]
        raise ValueError(
            f"duplicate prompt id {first.item()!r} in {name}: each prompt of a batch must have a "
            "distinct stable id (verl defaults a missing dataset index to 0)"
        )


def as_real_array(x: Any, name: str) -> FloatArray:
    """``x`` as a float64 array (any shape); ints, floats and bools only.

    Strings, bytes, complex numbers and other objects raise ``TypeError`` instead of
    being parsed or silently truncated to their real part.
    """
    try:
        raw = np.asarray(x)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be an array of real numbers: {exc}") from None
    if raw.dtype.kind == "O" and raw.size:
        kinds = {type(v) for v in raw.reshape(-1).tolist()}
        if not all(issubclass(t, (int, float)) for t in kinds):
            names = sorted(t.__name__ for t in kinds)
            raise TypeError(f"{name} must hold real numbers, got element types {names}")
    elif raw.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold real numbers, got an array of dtype {raw.dtype}")
    try:
        return np.asarray(raw, dtype=np.float64)
    except OverflowError:
        raise ValueError(f"{name} holds a number too large for a float") from None


def as_int_array(x: Any, name: str) -> IntArray:
    """``x`` (saved state: nested lists of ints) as an int64 array; anything else raises.

    Floats, strings and other objects are refused rather than converted.
    """
    try:
        raw = np.asarray(x)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must hold integers: {exc}") from None
    if raw.size == 0:
        return np.zeros(raw.shape, dtype=np.int64)
    if raw.dtype.kind == "O":
        if not all(type(v) is int for v in raw.reshape(-1).tolist()):
            raise ValueError(f"{name} must hold integers")
    elif raw.dtype.kind not in "iu":
        raise ValueError(f"{name} must hold integers, got {raw.dtype}")
    try:
        if raw.dtype.kind == "u" and int(raw.max()) > INT64_MAX:
            raise OverflowError
        return np.asarray(raw, dtype=np.int64)
    except OverflowError:
        raise ValueError(f"{name} holds a number that does not fit in int64") from None


def check_real(v: Any, name: str, lo: float = -np.inf, hi: float = np.inf) -> float:
    """``v`` as a finite Python float in ``[lo, hi]``; bools and non-numbers raise."""
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a real number, got {type(v).__name__} ({v!r})")
    try:
        f = float(v)
    except OverflowError:
        raise ValueError(f"{name} = {v} is too large") from None
    if not (math.isfinite(f) and lo <= f <= hi):
        raise ValueError(f"{name} must be finite and in [{lo}, {hi}], got {v!r}")
    return f


def check_bounds(n_low: Any, n_up: Any) -> tuple[int, int]:
    """Per-prompt bounds as ints with ``1 <= n_low <= n_up <= MAX_N_UP``."""
    for name, v in (("n_low", n_low), ("n_up", n_up)):
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
            raise TypeError(f"{name} must be an int, got {type(v).__name__} ({v!r})")
    if not 1 <= n_low <= n_up <= MAX_N_UP:
        raise ValueError(
            f"bounds must satisfy 1 <= n_low <= n_up <= {MAX_N_UP}, got n_low={n_low}, n_up={n_up}"
        )
    return int(n_low), int(n_up)


def check_rewards(rewards: Any, n: int) -> FloatArray:
    """Rewards as a finite 1-D float64 array of length ``n``."""
    arr = as_real_array(rewards, "rewards")
    if arr.ndim != 1:
        raise ValueError(f"rewards must be 1-D, got shape {arr.shape}")
    if arr.size != n:
        raise ValueError(
            f"prompt_ids and rewards must have the same length (one entry per rollout), "
            f"got {n} ids and {arr.size} rewards"
        )
    if not np.isfinite(arr).all():
        bad = int(np.flatnonzero(~np.isfinite(arr))[0])
        raise ValueError(f"rewards[{bad}] = {arr[bad]} is not finite")
    return arr


def check_costs(costs: Any, name: str = "costs") -> FloatArray:
    """A read-only 1-D float64 copy of per-prompt token costs: finite and positive, or NaN."""
    arr = np.array(as_real_array(costs, name), dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got an array of shape {arr.shape}")
    bad = ~np.isnan(arr) & ~(np.isfinite(arr) & (arr > 0))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"{name}[{i}] = {arr[i]}: tokens per rollout must be finite and positive "
            "(NaN marks unknown)"
        )
    arr.setflags(write=False)
    return arr


def check_token_budget(token_budget: Any) -> float:
    """A token budget as a finite non-negative float."""
    if isinstance(token_budget, (bool, np.bool_)) or not isinstance(
        token_budget, (int, float, np.integer, np.floating)
    ):
        raise TypeError(
            f"token_budget must be a number of tokens, got {type(token_budget).__name__} "
            f"({token_budget!r})"
        )
    t = float(token_budget)
    if not math.isfinite(t) or t < 0:
        raise ValueError(f"token_budget must be finite and non-negative, got {t}")
    return t


def check_lengths(lengths: Any, n: int) -> IntArray:
    """Response lengths (tokens) as a 1-D int64 array of length ``n``, each ``>= 0``."""
    arr = as_real_array(lengths, "lengths")
    if arr.ndim != 1:
        raise ValueError(f"lengths must be 1-D, got shape {arr.shape}")
    if arr.size != n:
        raise ValueError(
            f"prompt_ids and lengths must have the same length (one entry per rollout), "
            f"got {n} ids and {arr.size} lengths"
        )
    bad = ~np.isfinite(arr) | (arr < 0) | (arr != np.round(arr)) | (arr > 2**40)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"lengths[{i}] = {arr[i]}: a response length is a whole number of tokens >= 0"
        )
    return arr.astype(np.int64)


def rollouts_only(allocator: str, budget: int | None, token_budget: float | None) -> int:
    """``budget`` for an allocator that counts rollouts only; refuse a token budget."""
    if token_budget is not None:
        raise ValueError(
            f"{allocator} allocates rollouts only and does not support token_budget; use "
            "CoBAAllocator for a token budget, or pass token_budget=None"
        )
    if budget is None:
        raise TypeError(f"{allocator}.allocate needs a rollout budget (an int), got None")
    return budget
