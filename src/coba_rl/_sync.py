"""Locking for objects shared between trainer threads.

Each stateful object (allocator, tracker) owns a re-entrant lock in ``_lock``; its public
methods are wrapped with :func:`synchronized`, so one call runs at a time and a method
may call another. Locks cannot be pickled: :func:`picklable_state` drops the lock and
:func:`restore_state` makes a fresh one, so copies and pickles keep working.
:class:`Lockable` packs both: the lock, made in ``__new__``, and the pickling pair.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any, TypeVar, cast

__all__ = ["Lockable", "new_lock", "picklable_state", "restore_state", "synchronized"]

_F = TypeVar("_F", bound=Callable[..., Any])
_L = TypeVar("_L", bound="Lockable")


def new_lock() -> threading.RLock:
    """A re-entrant lock: a locked method may call another locked method of its object."""
    return threading.RLock()


def synchronized(method: _F) -> _F:
    """Run ``method`` while holding ``self._lock``."""

    @functools.wraps(method)
    def locked(self: Any, /, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return method(self, *args, **kwargs)

    return cast(_F, locked)


def picklable_state(obj: Any) -> dict[str, Any]:
    """``obj.__dict__`` without its lock (for ``__getstate__``), copied under the lock."""
    with obj._lock:
        state = dict(obj.__dict__)
    state.pop("_lock", None)
    return state


def restore_state(obj: Any, state: dict[str, Any]) -> None:
    """Restore :func:`picklable_state` output (for ``__setstate__``) with a fresh lock."""
    obj.__dict__.update(state)
    obj._lock = new_lock()


class Lockable:
    """A base whose instances own ``_lock``, made in ``__new__`` (so subclasses need not
    call ``super().__init__``), and pickle and copy without it (a copy gets a fresh one)."""

    _lock: threading.RLock

    def __new__(cls: type[_L], *args: Any, **kwargs: Any) -> _L:  # the arguments are __init__'s
        obj = object.__new__(cls)  # object.__new__ takes only cls
        obj._lock = new_lock()
        return obj

    def __getstate__(self) -> dict[str, Any]:
        return picklable_state(self)

    def __setstate__(self, state: dict[str, Any]) -> None:
        restore_state(self, state)
