"""Persistence shared by every stateful allocator: one versioned envelope, atomic files.

A saved state is a JSON object::

    {"format": "coba-rl.allocator", "version": STATE_VERSION,
     "allocator": "<class name>", "config": {...}, ...allocator-specific fields...}

:func:`make_envelope` builds it; :func:`open_envelope` checks the header and the exact
set of fields before an allocator parses its own part. Files are written atomically
(:func:`atomic_write_json`) and read with every failure turned into a ``ValueError``
that names the file (:func:`read_state_file`).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError

__all__ = [
    "STATE_FORMAT",
    "STATE_VERSION",
    "Persistent",
    "atomic_write_json",
    "check_same_config",
    "make_envelope",
    "open_envelope",
    "parse_config",
    "parse_step",
    "read_state_file",
]

#: Version of the ``state_dict`` layout; allocators refuse any other.
STATE_VERSION = 1
#: The ``format`` tag of every allocator state.
STATE_FORMAT = "coba-rl.allocator"

_HEADER = ("format", "version", "allocator", "config")

ConfigT = TypeVar("ConfigT", bound=BaseModel)


def atomic_write_json(path: str | os.PathLike[str], data: Any) -> None:
    """Write ``data`` as JSON to ``path`` atomically: a temporary file, fsync, then rename.

    A crash at any point leaves either the old file or the new one, never a torn file.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, allow_nan=True, separators=(",", ":"))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def read_state_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a JSON state file, turning every failure into a ``ValueError`` naming the file."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(
            f"state file {os.fspath(path)!r} is not valid JSON (truncated or corrupt?): {exc}"
        ) from None
    if not isinstance(data, dict):
        raise ValueError(f"state file {os.fspath(path)!r} does not hold a JSON object")
    return data


def make_envelope(allocator: str, config: BaseModel, body: Mapping[str, Any]) -> dict[str, Any]:
    """The versioned state of ``allocator``: the header, the config, then ``body``.

    >>> from coba_rl.config import CoBAConfig
    >>> s = make_envelope("X", CoBAConfig(), {"step": 0})
    >>> s["format"], s["version"], s["allocator"], s["step"]
    ('coba-rl.allocator', 1, 'X', 0)
    """
    return {
        "format": STATE_FORMAT,
        "version": STATE_VERSION,
        "allocator": allocator,
        "config": config.model_dump(mode="json"),
        **body,
    }


def open_envelope(state: Any, allocator: str, body_fields: Iterable[str]) -> dict[str, Any]:
    """Check the header of a saved state and that it holds exactly the expected fields.

    Args:
      state: what :func:`make_envelope` produced (possibly through JSON).
      allocator: the class name the state must be for.
      body_fields: the allocator-specific field names.

    Returns:
      ``state``, typed as a dict.

    Raises:
      ValueError: not a dict, another format, version or allocator, or other fields.
    """
    if not isinstance(state, dict):
        raise ValueError(f"allocator state must be a dict, got {type(state).__name__}")
    if state.get("format") != STATE_FORMAT:
        raise ValueError(f"not a coba-rl allocator state (format={state.get('format')!r})")
    if state.get("version") != STATE_VERSION:
        raise ValueError(
            f"unsupported state version {state.get('version')!r}; this coba-rl reads "
            f"version {STATE_VERSION}"
        )
    if state.get("allocator") != allocator:
        raise ValueError(f"state is for {state.get('allocator')!r}, not {allocator}")
    expected = set(_HEADER) | set(body_fields)
    if set(state) != expected:
        raise ValueError(f"allocator state has fields {sorted(state)}, expected {sorted(expected)}")
    return state


def parse_config(state: Mapping[str, Any], config_type: type[ConfigT]) -> ConfigT:
    """The ``config`` of a saved state, validated, or a ``ValueError``."""
    try:
        return config_type.model_validate(state["config"])
    except ValidationError as exc:
        raise ValueError(f"allocator state: invalid config: {exc}") from None


def parse_step(value: Any) -> int:
    """A saved step counter: an int ``>= 0``, or a ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"allocator state: step must be an int >= 0, got {value!r}")
    return value


def check_same_config(mine: BaseModel, theirs: BaseModel, cls_name: str) -> None:
    """Raise unless a loaded config equals the allocator's own, naming the fields that differ."""
    if mine == theirs:
        return
    a, b = mine.model_dump(), theirs.model_dump()
    diff = sorted(k for k in a if not _same(a[k], b[k]))
    raise ValueError(
        f"state was saved with a different config (fields {diff}); "
        f"use {cls_name}.from_state_dict to adopt it"
    )


def _same(x: Any, y: Any) -> bool:
    if isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y):
        return True
    return bool(x == y)


P = TypeVar("P", bound="Persistent[Any]")


class Persistent(Generic[ConfigT]):
    """Save, load and resume for an allocator with a pydantic ``config``.

    A subclass provides :meth:`state_dict` (built with :func:`make_envelope`) and
    ``_parse_state``, a classmethod that validates a state completely and returns a new
    allocator. Everything else (restoring in place, files) is shared, so every allocator
    resumes the same way and a failed load never leaves a half-restored object.
    """

    config: ConfigT

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume exactly, as plain JSON-ready data (versioned)."""
        raise NotImplementedError

    @classmethod
    def _parse_state(cls: type[P], state: Any) -> P:
        raise NotImplementedError

    def load_state_dict(self, state: Any) -> None:
        """Restore :meth:`state_dict` output. On any error, raise and change nothing.

        The saved config must equal this allocator's config; use :meth:`from_state_dict`
        to adopt the saved config instead.

        Raises:
          ValueError: malformed, wrong-version or inconsistent state, or a config mismatch.
        """
        new = self._parse_state(state)
        check_same_config(self.config, new.config, type(self).__name__)
        self.__dict__.update(new.__dict__)

    @classmethod
    def from_state_dict(cls: type[P], state: Any) -> P:
        """A new allocator, config included, from :meth:`state_dict` output."""
        return cls._parse_state(state)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write :meth:`state_dict` to ``path`` as JSON, atomically (temp file, then rename)."""
        atomic_write_json(path, self.state_dict())

    @classmethod
    def load(cls: type[P], path: str | os.PathLike[str]) -> P:
        """A new allocator from a file written by :meth:`save` (config included).

        Raises:
          FileNotFoundError: no such file.
          ValueError: the file is truncated, corrupt, of another version or inconsistent.
        """
        return cls.from_state_dict(read_state_file(path))
