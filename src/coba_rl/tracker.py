"""Per-prompt pass-rate tracking over a window of appearances, in flat numpy arrays.

Each training step that contains a prompt is one *appearance*, recorded as (successes,
rollouts). A prompt's pass rate is its total successes over total rollouts across its
last ``window`` appearances ([Rules: windowed pass rate][rules-pass-rate]).

When rollouts come with their response lengths, each appearance also keeps the tokens
its rollouts generated, and a prompt's mean response length is its total tokens over
total rollouts across the same window (appearances recorded without lengths are left
out of it) ([Rules: token budgets][rules-token-budget]). The token columns exist only
once lengths were recorded, so a tracker that never sees lengths costs nothing more.

Storage is columnar: one int64/unicode key array plus ``(N, window)`` count arrays, so a
million tracked prompts cost tens of megabytes rather than a million Python objects.
Looking ids up never adds them; only :meth:`PassRateTracker.record` does.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from coba_rl._persist import decode_ints, encode_ints
from coba_rl._sync import Lockable, synchronized
from coba_rl._validation import MAX_WINDOW, as_id_array, check_lengths, check_rewards
from coba_rl.rewards import success_mask

__all__ = ["PassRateTracker"]

IntArray = NDArray[np.int64]
FloatArray = NDArray[np.float64]

#: The largest count a saved state may hold: sums over a window stay far from int64 limits.
MAX_COUNT = 2**53


class PassRateTracker(Lockable):
    """Windowed per-prompt pass rates keyed by stable prompt ids (all ints or all strings).

    Slots are assigned in the order ids are first recorded, and every per-step quantity is
    reported in slot order, so results never depend on hash order.

    Safe to share between threads: every public method holds the tracker's lock.

    Args:
      window: how many past appearances make up a prompt's pass rate (``>= 1``).

    Example:
      >>> t = PassRateTracker(window=2)
      >>> t.record([7, 7, 9, 9], [1.0, 0.0, 1.0, 1.0], success_reward=1.0).tolist()
      [0.5, 1.0]
      >>> t.pass_rates([9, 7, 3]).tolist()
      [1.0, 0.5, nan]
      >>> len(t)  # looking up id 3 did not add it
      2
    """

    def __init__(self, window: int = 1) -> None:
        if (
            isinstance(window, bool)
            or not isinstance(window, (int, np.integer))
            or not 1 <= window <= MAX_WINDOW
        ):
            raise ValueError(f"window must be an int >= 1 and <= {MAX_WINDOW}, got {window!r}")
        self.window = int(window)
        self._keys: NDArray[Any] = np.empty(0, dtype=np.int64)
        self._kind: str | None = None  # "int" or "str", fixed by the first recorded id
        self._order: IntArray = np.empty(0, dtype=np.int64)  # slots sorted by key
        self._succ: IntArray = np.zeros((0, self.window), dtype=np.int64)
        self._total: IntArray = np.zeros((0, self.window), dtype=np.int64)
        self._appearances: IntArray = np.zeros(0, dtype=np.int64)
        # Tokens of each appearance, -1 where recorded without lengths; None until the
        # first lengths arrive.
        self._tokens: IntArray | None = None

    def __repr__(self) -> str:
        return f"PassRateTracker(window={self.window}, prompts={len(self)})"

    def __len__(self) -> int:
        return int(self._keys.size)

    @property
    def id_kind(self) -> str | None:
        """``"int"`` or ``"str"`` once an id was recorded, else ``None``."""
        return self._kind

    @staticmethod
    def _kind_of(ids: NDArray[Any]) -> str:
        return "str" if ids.dtype.kind == "U" else "int"

    def _check_kind(self, ids: NDArray[Any]) -> None:
        if self._kind is not None and ids.size and self._kind_of(ids) != self._kind:
            raise TypeError(
                f"this tracker holds {self._kind} prompt ids; got {self._kind_of(ids)} ids"
            )

    @synchronized
    def lookup(self, prompt_ids: Any) -> IntArray:
        """Slot of each id, ``-1`` where the id was never recorded. Never grows the state.

        Complexity: O(n log N) for n ids and N tracked prompts.
        """
        ids = as_id_array(prompt_ids)
        self._check_kind(ids)
        return self._lookup(ids)

    def _lookup(self, ids: NDArray[Any]) -> IntArray:
        if self._keys.size == 0 or ids.size == 0:
            return np.full(ids.size, -1, dtype=np.int64)
        sorted_keys = self._keys[self._order]
        pos = np.searchsorted(sorted_keys, ids)
        pos_c = np.minimum(pos, sorted_keys.size - 1)
        found = sorted_keys[pos_c] == ids
        return np.where(found, self._order[pos_c], -1).astype(np.int64)

    @synchronized
    def pass_rates(self, prompt_ids: Any) -> FloatArray:
        """Windowed pass rate of each id; ``NaN`` for ids with no recorded rollouts.

        Complexity: O(n log N + n * window).
        """
        slots = self.lookup(prompt_ids)
        return self._rates(slots)

    @synchronized
    def mean_lengths(self, prompt_ids: Any) -> FloatArray:
        """Windowed mean response length (tokens per rollout) of each id.

        ``NaN`` for ids never recorded or whose appearances in the window carried no
        lengths. Never grows the state.

        Example:
          >>> t = PassRateTracker(window=2)
          >>> _ = t.record([1, 1, 2], [1.0, 0.0, 1.0], lengths=[100, 300, 50])
          >>> _ = t.record([1], [0.0])  # no lengths: left out of the mean
          >>> t.mean_lengths([1, 2, 3]).tolist()
          [200.0, 50.0, nan]

        Complexity: O(n log N + n * window).
        """
        slots = self.lookup(prompt_ids)
        out = np.full(slots.size, np.nan)
        if self._tokens is None:
            return out
        known = slots >= 0
        s = slots[known]
        tok = self._tokens[s]
        has = tok >= 0
        tokens = np.where(has, tok, 0).sum(axis=1)
        total = np.where(has, self._total[s], 0).sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[known] = np.where(total > 0, tokens / np.maximum(total, 1), np.nan)
        return out

    def _rates(self, slots: IntArray) -> FloatArray:
        out = np.full(slots.size, np.nan)
        known = slots >= 0
        s = slots[known]
        succ = self._succ[s].sum(axis=1)
        total = self._total[s].sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[known] = np.where(total > 0, succ / np.maximum(total, 1), np.nan)
        return out

    @synchronized
    def record(
        self,
        prompt_ids: Any,
        rewards: Any,
        success_reward: float = 1.0,
        success_threshold: float | None = None,
        lengths: Any = None,
    ) -> FloatArray:
        """Record one step's rollouts: one (id, reward) pair per rollout.

        Each distinct id gets one new appearance (successes, rollouts), pushing its
        oldest out of the window. With ``lengths`` (one response length in tokens per
        rollout), the appearance also holds its tokens, for :meth:`mean_lengths`. A
        rollout succeeds when its reward equals ``success_reward``, or, if
        ``success_threshold`` is set, when it is at least ``success_threshold`` (see
        :mod:`coba_rl.rewards`).

        Raises:
          ValueError: ``rewards`` or ``lengths`` not of the same length as ``prompt_ids``,
            a reward that is not finite, a length that is not a whole number ``>= 0``.
          TypeError: ids that are not all ints or all strings (or not of this tracker's kind).

        Returns:
          This step's success fraction of each distinct id, in slot order (the order
          ids were first recorded), which is what the failure rate averages.

        Complexity: O(n + r log r + N) for n rollouts in r runs of equal ids (a run per
        prompt when its rollouts are contiguous) and N tracked prompts.
        """
        ids = as_id_array(prompt_ids)
        self._check_kind(ids)
        r = check_rewards(rewards, ids.size)
        lens = None if lengths is None else check_lengths(lengths, ids.size)
        if ids.size == 0:
            return np.empty(0)
        # Trainers emit a prompt's rollouts together: collapse runs of equal ids first,
        # so that the sort below sees one entry per run instead of one per rollout.
        starts = np.flatnonzero(np.concatenate(([True], ids[1:] != ids[:-1])))
        run_succ = np.add.reduceat(
            success_mask(r, success_reward, success_threshold).astype(np.int64), starts
        )
        run_total = np.diff(np.append(starts, ids.size))
        uniq, first_pos, inverse = np.unique(ids[starts], return_index=True, return_inverse=True)
        inverse = inverse.reshape(-1)
        succ = np.bincount(inverse, weights=run_succ, minlength=uniq.size)
        total = np.bincount(inverse, weights=run_total, minlength=uniq.size).astype(np.int64)
        slots = self._lookup(uniq)
        new = slots < 0
        if new.any():
            # New ids take slots in order of first appearance in this call.
            new_idx = np.flatnonzero(new)
            new_idx = new_idx[np.argsort(first_pos[new_idx], kind="stable")]
            slots[new_idx] = self._grow(uniq[new_idx])
        ring = self._appearances[slots] % self.window
        self._succ[slots, ring] = succ.astype(np.int64)
        self._total[slots, ring] = total
        if lens is not None and self._tokens is None:
            self._tokens = np.full(self._total.shape, -1, dtype=np.int64)
        if self._tokens is not None:
            if lens is None:
                self._tokens[slots, ring] = -1
            else:
                run_tok = np.add.reduceat(lens, starts)
                tok = np.bincount(inverse, weights=run_tok, minlength=uniq.size)
                self._tokens[slots, ring] = np.round(tok).astype(np.int64)
        self._appearances[slots] += 1
        by_slot = np.argsort(slots, kind="stable")
        return np.asarray(succ[by_slot] / total[by_slot], dtype=np.float64)

    def _grow(self, new_keys: NDArray[Any]) -> IntArray:
        start = self._keys.size
        n = new_keys.size
        slots = np.arange(start, start + n, dtype=np.int64)
        if self._kind is None:
            self._kind = self._kind_of(new_keys)
            self._keys = new_keys.copy()
            self._order = np.argsort(self._keys, kind="stable").astype(np.int64)
        else:
            # Merge the sorted new keys into the sorted order: O(N + n log n), where a
            # fresh argsort of all N keys would cost O(N log N) on every call.
            by_key = np.argsort(new_keys, kind="stable")
            pos = np.searchsorted(self._keys[self._order], new_keys[by_key])
            self._order = np.insert(self._order, pos, slots[by_key])
            self._keys = np.concatenate([self._keys, new_keys])
        self._succ = np.concatenate([self._succ, np.zeros((n, self.window), np.int64)])
        self._total = np.concatenate([self._total, np.zeros((n, self.window), np.int64)])
        self._appearances = np.concatenate([self._appearances, np.zeros(n, np.int64)])
        if self._tokens is not None:
            self._tokens = np.concatenate([self._tokens, np.full((n, self.window), -1, np.int64)])
        return slots

    # -- persistence -------------------------------------------------------------------

    @synchronized
    def state_dict(self) -> dict[str, Any]:
        """JSON-ready data that :meth:`from_state_dict` restores exactly.

        Integer ids and every count array are stored compactly
        (:func:`coba_rl._persist.encode_ints`); string ids as a list of strings. The
        per-appearance ``tokens`` (``-1``: recorded without lengths) are present only
        once lengths were recorded, so states without lengths keep their old layout.
        """
        ids: Any = self._keys.tolist() if self._kind == "str" else encode_ints(self._keys)
        out = {
            "window": self.window,
            "id_kind": self._kind,
            "ids": ids,
            "successes": encode_ints(self._succ),
            "totals": encode_ints(self._total),
            "appearances": encode_ints(self._appearances),
        }
        if self._tokens is not None:
            out["tokens"] = encode_ints(self._tokens)
        return out

    @classmethod
    def from_state_dict(cls, state: Any) -> PassRateTracker:
        """Rebuild a tracker from :meth:`state_dict` output, validating every field.

        Raises:
          ValueError: on a missing field, a wrong shape or an inconsistent value.
        """
        if not isinstance(state, dict):
            raise ValueError(f"tracker state must be a dict, got {type(state).__name__}")
        expected = {"window", "id_kind", "ids", "successes", "totals", "appearances"}
        if set(state) != expected and set(state) != expected | {"tokens"}:
            raise ValueError(
                f"tracker state has fields {sorted(state)}, expected {sorted(expected)}"
            )
        window = state["window"]
        if isinstance(window, bool) or not isinstance(window, int) or not 1 <= window <= MAX_WINDOW:
            raise ValueError(
                f"tracker state: window must be an int >= 1 and <= {MAX_WINDOW}, got {window!r}"
            )
        t = cls(window)
        kind = state["id_kind"]
        if kind not in (None, "int", "str"):
            raise ValueError(f"tracker state: id_kind must be 'int', 'str' or null, got {kind!r}")
        ids_raw = state["ids"]
        if isinstance(ids_raw, dict):  # compact int ids (version 2)
            ids = decode_ints(ids_raw, "tracker state: ids").reshape(-1)
        elif isinstance(ids_raw, list):  # string ids, or int ids of version 1
            try:
                ids = as_id_array(ids_raw, name="tracker state ids")
            except TypeError as exc:
                raise ValueError(str(exc)) from None
        else:
            raise ValueError("tracker state: ids must be a list or an encoded int array")
        n = int(ids.size)
        if n and t._kind_of(ids) != kind:
            raise ValueError(f"tracker state: ids are not all of kind {kind!r}")
        if n == 0 and kind is not None:
            raise ValueError("tracker state: id_kind is set but there are no ids")
        order = np.argsort(ids).astype(np.int64)  # ids are unique once checked: any sort
        if n > 1 and bool((ids[order[1:]] == ids[order[:-1]]).any()):
            raise ValueError("tracker state: duplicate ids")

        def int_array(name: str, shape: tuple[int, ...]) -> IntArray:
            arr = decode_ints(state[name], f"tracker state: {name}")
            if arr.size == 0:
                arr = arr.reshape(shape)
            if arr.shape != shape:
                raise ValueError(f"tracker state: {name} has shape {arr.shape}, expected {shape}")
            if (arr < 0).any():
                raise ValueError(f"tracker state: {name} has negative entries")
            if (arr > MAX_COUNT).any():
                raise ValueError(f"tracker state: {name} has entries above 2**53")
            return arr

        succ = int_array("successes", (n, window))
        total = int_array("totals", (n, window))
        appearances = int_array("appearances", (n,))
        if (succ > total).any():
            raise ValueError("tracker state: successes exceed totals")
        tokens: IntArray | None = None
        if "tokens" in state:
            tokens = decode_ints(state["tokens"], "tracker state: tokens")
            if tokens.size == 0:
                tokens = tokens.reshape((n, window))
            if tokens.shape != (n, window):
                raise ValueError(
                    f"tracker state: tokens has shape {tokens.shape}, expected {(n, window)}"
                )
            if (tokens < -1).any() or (tokens > MAX_COUNT).any():
                raise ValueError(
                    "tracker state: tokens must lie in [-1, 2**53] (-1: recorded without lengths)"
                )
        t._kind = kind
        t._keys = ids if n else np.empty(0, dtype=np.int64)
        t._succ, t._total, t._appearances = succ, total, appearances
        t._tokens = tokens
        t._order = order if n else np.empty(0, dtype=np.int64)
        try:
            t._check()
        except AssertionError as exc:
            raise ValueError(
                f"tracker state is inconsistent: {exc or 'invariant failed'}"
            ) from None
        return t

    @synchronized
    def nbytes(self) -> int:
        """Bytes held by the tracker's arrays."""
        return int(
            self._keys.nbytes
            + self._order.nbytes
            + self._succ.nbytes
            + self._total.nbytes
            + self._appearances.nbytes
            + (0 if self._tokens is None else self._tokens.nbytes)
        )

    @synchronized
    def _check(self) -> None:
        """Raise ``AssertionError`` if an invariant fails (cheap; stress tests run it each step)."""
        n = self._keys.size
        _require(self._succ.shape == (n, self.window), "successes shape")
        _require(self._total.shape == (n, self.window), "totals shape")
        _require(self._appearances.shape == (n,), "appearances shape")
        _require(self._order.shape == (n,), "order shape")
        _require(
            bool((self._succ >= 0).all() and (self._succ <= self._total).all()),
            "successes must lie in [0, totals]",
        )
        _require(bool((self._appearances >= 0).all()), "negative appearance count")
        if self._tokens is not None:
            _require(self._tokens.shape == (n, self.window), "tokens shape")
            _require(bool((self._tokens >= -1).all()), "tokens below -1")
            _require(
                bool((self._tokens[self._total == 0] == -1).all()),
                "an empty window column holds tokens",
            )
        if n:
            _require(self._kind == self._kind_of(self._keys), "id kind does not match the ids")
            sorted_keys = self._keys[self._order]
            _require(
                bool((sorted_keys[1:] > sorted_keys[:-1]).all()), "ids must be unique and ordered"
            )
            # every appearance holds >= 1 rollout; unfilled window columns are empty
            filled = np.minimum(self._appearances, self.window)
            _require(
                np.array_equal((self._total > 0).sum(axis=1), filled),
                "window columns do not match the appearance counts",
            )
            _require(
                bool((self._appearances >= 1).all()),
                "every tracked prompt has at least one appearance",
            )


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)
