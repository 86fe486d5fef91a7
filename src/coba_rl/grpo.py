"""The small pieces every GRPO loop with per-prompt rollout counts needs.

With a uniform group size ``G`` a trainer can ``reshape(-1, G)``; with per-prompt counts
``n_i`` the groups are ragged. :func:`expand` lays the rows out, and
:func:`group_advantages` computes GRPO's group-normalised advantages on ragged groups,
matching verl's ``compute_grpo_outcome_advantage`` (``ddof=1``, ``eps=1e-6``) and TRL's
``GRPOTrainer`` (``scale_rewards``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal, cast, overload

import numpy as np
from numpy.typing import ArrayLike, NDArray

from coba_rl._validation import as_real_array, check_real

__all__ = ["expand", "group_advantages", "group_sizes"]

IntArray = NDArray[np.int64]
FloatArray = NDArray[np.float64]


def expand(counts: ArrayLike) -> IntArray:
    """The prompt index of each rollout row: prompt ``i`` repeated ``counts[i]`` times.

    Rows are contiguous per prompt and in prompt order, as verl's
    ``DataProto.sample_level_repeat`` and an ``n``-per-request vLLM call lay them out.

    Args:
      counts: non-negative integer counts, shape ``(M,)``.

    Returns:
      int64 array of length ``sum(counts)``.

    Raises:
      ValueError: counts not 1-D, negative or not integers.

    Example:
      >>> expand([2, 3, 1]).tolist()
      [0, 0, 1, 1, 1, 2]

    Complexity: O(sum(counts)).
    """
    c = np.asarray(counts)
    if c.ndim != 1:
        raise ValueError(f"counts must be 1-D, got shape {c.shape}")
    if c.dtype.kind not in "iu":
        if c.dtype.kind == "f" and np.all(np.isfinite(c)) and np.all(c == np.round(c)):
            c = c.astype(np.int64)
        else:
            raise ValueError(f"counts must be integers, got dtype {c.dtype}")
    if (c < 0).any():
        raise ValueError(f"counts must be non-negative, got {int(c.min())}")
    return np.repeat(np.arange(c.size, dtype=np.int64), c.astype(np.int64))


def group_sizes(group_ids: ArrayLike) -> tuple[IntArray, IntArray]:
    """Each row's group index (first-appearance order) and each group's size.

    Example:
      >>> inv, sizes = group_sizes(["b", "a", "b", "c"])
      >>> inv.tolist(), sizes.tolist()
      ([0, 1, 0, 2], [2, 1, 1])
    """
    try:
        ids = np.asarray(group_ids)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"group_ids must be a 1-D sequence of ids: {exc}") from None
    if ids.ndim != 1:
        raise ValueError(f"group_ids must be 1-D, got shape {ids.shape}")
    if ids.dtype.kind in "US" and not isinstance(group_ids, np.ndarray):
        # numpy turns [1, "1"] into ["1", "1"]: mixed ids would silently share a group.
        kinds = {type(g) for g in cast("Iterable[Any]", group_ids)}
        if not (all(issubclass(t, str) for t in kinds) or all(issubclass(t, bytes) for t in kinds)):
            names = sorted(t.__name__ for t in kinds)
            raise TypeError(f"group_ids must not mix strings with other types, got {names}")
    if ids.dtype.kind == "O" and ids.size:  # e.g. verl's uid array: strings are fine
        kinds = {type(g) for g in ids.tolist()}
        if not (
            all(issubclass(t, str) for t in kinds)
            or all(issubclass(t, (int, float)) for t in kinds)
        ):
            names = sorted(t.__name__ for t in kinds)
            raise TypeError(f"group_ids must be all strings or all numbers, got {names}")
    if ids.size == 0:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    _, first, inverse = np.unique(ids, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    # renumber groups by first appearance, so the result never depends on id order
    rank = np.empty(first.size, dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(first.size)
    inv = rank[inverse]
    return inv, np.bincount(inv, minlength=first.size).astype(np.int64)


@overload
def group_advantages(
    rewards: ArrayLike,
    group_ids: ArrayLike,
    *,
    ddof: int = ...,
    eps: float = ...,
    scale: bool = ...,
    singleton: Literal["zero", "raw", "error"] = ...,
    return_weights: Literal[False] = ...,
) -> FloatArray: ...


@overload
def group_advantages(
    rewards: ArrayLike,
    group_ids: ArrayLike,
    *,
    ddof: int = ...,
    eps: float = ...,
    scale: bool = ...,
    singleton: Literal["zero", "raw", "error"] = ...,
    return_weights: Literal[True],
) -> tuple[FloatArray, FloatArray]: ...


def group_advantages(
    rewards: ArrayLike,
    group_ids: ArrayLike,
    *,
    ddof: int = 1,
    eps: float = 1e-6,
    scale: bool = True,
    singleton: Literal["zero", "raw", "error"] = "zero",
    return_weights: bool = False,
) -> FloatArray | tuple[FloatArray, FloatArray]:
    r"""GRPO advantages for ragged groups: each reward normalised within its prompt's group.

    .. math::

        A_r = \frac{r - \mu_{g(r)}}{\sigma_{g(r)} + \epsilon}
        \quad (\text{or } r - \mu_{g(r)} \text{ when } scale \text{ is False})

    with ``mu`` and ``sigma`` the mean and standard deviation (``ddof``) of the rewards
    of the row's group. A group with identical rewards gets advantage 0: it carries no
    learning signal.

    Optionally also returns per-row weights ``G / n_g``, where ``n_g`` is the row's
    group size and ``G`` the mean group size. Because a loss averaged over rows gives a
    prompt with more rollouts proportionally more weight, multiplying each row's loss by
    its weight makes every prompt count equally, as with a uniform group size. The
    weights average to 1 over rows.

    Args:
      rewards: shape ``(N,)``, one scalar reward per rollout row.
      group_ids: shape ``(N,)``, the prompt (group) of each row: any ids, in any order.
      ddof: delta degrees of freedom of the std (1: Bessel-corrected, as verl's
        ``torch.std`` and TRL; 0: population).
      eps: added to the std before dividing.
      scale: divide by the std (TRL's ``scale_rewards``); if False, only centre.
      singleton: for groups of one row: ``"zero"`` (advantage 0), ``"raw"`` (verl's
        behaviour: mean 0 and std 1, so the advantage is ``r / (1 + eps)``) or
        ``"error"`` (raise).
      return_weights: also return the per-row weights ``G / n_g``.

    Returns:
      Advantages of shape ``(N,)``, and the weights if ``return_weights``.

    Raises:
      ValueError: mismatched lengths, non-finite rewards, a bad option, or a singleton
        group with ``singleton="error"``.

    Example:
      >>> adv = group_advantages([1.0, 0.0, 1.0, 1.0, 0.0], [7, 7, 3, 3, 3])
      >>> [round(float(a), 4) for a in adv]
      [0.7071, -0.7071, 0.5774, 0.5774, -1.1547]
      >>> _, w = group_advantages([1.0, 0.0, 1.0], ["a", "a", "b"], return_weights=True)
      >>> w.tolist()
      [0.75, 0.75, 1.5]

    Complexity: O(N log N) (grouping), O(N) memory.
    """
    r = as_real_array(rewards, "rewards")
    if r.ndim != 1:
        raise ValueError(f"rewards must be 1-D, got shape {r.shape}")
    ids = np.asarray(group_ids) if isinstance(group_ids, np.ndarray) else None
    if ids is None:
        try:
            ids = np.asarray(group_ids)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"group_ids must be a 1-D sequence of ids: {exc}") from None
    if ids.shape != r.shape:
        raise ValueError(
            f"rewards and group_ids must have the same length, got {r.size} and {ids.size}"
        )
    if not np.isfinite(r).all():
        raise ValueError("rewards must be finite (found NaN or inf)")
    if singleton not in ("zero", "raw", "error"):
        raise ValueError(f"singleton must be 'zero', 'raw' or 'error', got {singleton!r}")
    if isinstance(ddof, (bool, np.bool_)) or not isinstance(ddof, (int, np.integer)) or ddof < 0:
        raise ValueError(f"ddof must be an int >= 0, got {ddof!r}")
    eps = check_real(eps, "eps", lo=0.0)
    if not isinstance(scale, (bool, np.bool_)):
        raise TypeError(f"scale must be a bool, got {type(scale).__name__}")
    inv, sizes = group_sizes(group_ids)
    n = sizes.astype(np.float64)
    mean = np.bincount(inv, weights=r, minlength=sizes.size) / np.maximum(n, 1.0)
    centred = r - mean[inv]
    single = sizes[inv] == 1
    if single.any() and singleton == "error":
        raise ValueError(f"{int((sizes == 1).sum())} group(s) have a single row; keep n_low >= 2")
    if scale:
        ss = np.bincount(inv, weights=centred * centred, minlength=sizes.size)
        dof = n - ddof
        with np.errstate(invalid="ignore", divide="ignore"):
            std = np.where(dof > 0, np.sqrt(ss / np.where(dof > 0, dof, 1.0)), 0.0)
        denom = std[inv] + eps
        # denom is 0 only with eps = 0 and a constant group (centred = 0): advantage 0.
        adv = np.divide(centred, denom, out=np.zeros_like(centred), where=denom > 0)
    else:
        adv = centred
    if single.any():
        # "raw" is verl's rule for a lone row: mean 0 and std 1
        raw = r / (1.0 + eps) if scale else r
        adv = np.where(single, raw if singleton == "raw" else 0.0, adv)
    if not return_weights:
        return np.asarray(adv, dtype=np.float64)
    g_mean = r.size / max(sizes.size, 1)
    weights = g_mean / sizes[inv].astype(np.float64)
    return np.asarray(adv, dtype=np.float64), weights
