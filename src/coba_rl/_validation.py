"""Input checks shared by every public entry point.

Validation happens once, at the public boundary; the maths underneath assumes clean
input. Messages say what was expected and what was received.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

IntArray = NDArray[np.int64]
FloatArray = NDArray[np.float64]


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
    """``budget // m`` each, the first ``budget % m`` prompts one more (spec section 1).

    >>> even_split(10, 4).tolist()
    [3, 3, 2, 2]
    """
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


def check_rewards(rewards: Any, n: int) -> FloatArray:
    """Rewards as a finite 1-D float64 array of length ``n``."""
    try:
        arr = np.asarray(rewards, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"rewards must be a 1-D sequence of floats: {exc}") from None
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
