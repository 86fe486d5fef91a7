"""Persistence shared by every stateful allocator: one versioned envelope, atomic files.

A saved state is a JSON object::

    {"format": "coba-rl.allocator", "version": STATE_VERSION,
     "allocator": "<class name>", "config": {...}, ...allocator-specific fields...}

:func:`make_envelope` builds it; :func:`open_envelope` checks the header and the exact
set of fields before an allocator parses its own part. Per-prompt integer arrays are
stored compactly (:func:`encode_ints`: the narrowest little-endian integer type, in
base64), so a million tracked prompts save and load in well under a second of encoding
work. Files are written atomically (:func:`atomic_write_json`) and read with every
failure turned into an error that names the file (:func:`read_state_file`).

Versions: 2 (current) stores arrays compactly and, for :class:`coba_rl.CoBAAllocator`,
the number of updates that carried rollouts. Version 1 files (coba-rl 0.1.0, arrays as
nested lists) still load: :func:`decode_ints` reads both forms, and fields added since
version 1 are passed to the allocator as ``None`` for it to derive.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import errno
import json
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ValidationError

from coba_rl._sync import Lockable, synchronized
from coba_rl._validation import as_int_array

__all__ = [
    "READABLE_VERSIONS",
    "STATE_FORMAT",
    "STATE_VERSION",
    "Persistent",
    "atomic_write_json",
    "check_same_config",
    "config_summary",
    "decode_ints",
    "encode_ints",
    "make_envelope",
    "open_envelope",
    "parse_config",
    "parse_step",
    "read_state_file",
]

#: Version of the ``state_dict`` layout written by this library.
STATE_VERSION = 2
#: Versions this library reads (older ones are upgraded on load).
READABLE_VERSIONS = (1, 2)
#: The ``format`` tag of every allocator state.
STATE_FORMAT = "coba-rl.allocator"

_HEADER = ("format", "version", "allocator", "config")
#: Integer types of the compact encoding, narrowest first (all little-endian).
_UNSIGNED = ("<u1", "<u2", "<u4")
_SIGNED = ("<i1", "<i2", "<i4", "<i8")

ConfigT = TypeVar("ConfigT", bound=BaseModel)
IntArray = NDArray[np.int64]


# -- compact arrays ------------------------------------------------------------------------


def encode_ints(values: Any) -> dict[str, Any]:
    """An int64 array as JSON-ready data: dtype, shape and base64 of its bytes.

    The dtype is the narrowest little-endian integer type that holds every value, so
    counts of a few rollouts take one byte each.

    >>> encode_ints([[1, 2], [3, 300]])
    {'dtype': '<u2', 'shape': [2, 2], 'data': 'AQACAAMALAE='}
    >>> decode_ints(encode_ints([-5, 2**40]), "x").tolist()
    [-5, 1099511627776]
    """
    arr = np.ascontiguousarray(values, dtype=np.int64)
    lo, hi = (int(arr.min()), int(arr.max())) if arr.size else (0, 0)
    candidates = (_UNSIGNED if lo >= 0 else ()) + _SIGNED
    dtype = next(d for d in candidates if np.iinfo(d).min <= lo and hi <= np.iinfo(d).max)
    data = base64.b64encode(arr.astype(dtype).tobytes()).decode("ascii")
    return {"dtype": dtype, "shape": list(arr.shape), "data": data}


def decode_ints(value: Any, name: str) -> IntArray:
    """An int64 array from :func:`encode_ints` output or from nested lists (version 1).

    Raises:
      ValueError: naming ``name``: another dtype, a bad shape, base64 or length, or (for
        lists) anything but integers.
    """
    if not isinstance(value, dict):
        return as_int_array(value, name)
    if set(value) != {"dtype", "shape", "data"}:
        raise ValueError(f"{name}: an encoded array has fields dtype, shape and data")
    dtype, shape, data = value["dtype"], value["shape"], value["data"]
    if dtype not in _UNSIGNED + _SIGNED:
        raise ValueError(f"{name}: dtype must be one of {list(_UNSIGNED + _SIGNED)}, got {dtype!r}")
    if not isinstance(shape, list) or not all(type(s) is int and 0 <= s <= 2**40 for s in shape):
        raise ValueError(f"{name}: shape must be a list of non-negative ints, got {shape!r}")
    if not isinstance(data, str):
        raise ValueError(f"{name}: data must be a base64 string")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"{name}: data is not valid base64 ({exc})") from None
    size = math.prod(shape)
    itemsize = np.dtype(dtype).itemsize
    if len(raw) != size * itemsize:
        raise ValueError(
            f"{name}: shape {shape} needs {size * itemsize} bytes of {dtype}, data has {len(raw)}"
        )
    return np.frombuffer(raw, dtype=dtype).astype(np.int64).reshape(shape)


# -- files ---------------------------------------------------------------------------------


def _named(exc: OSError, action: str, path: str) -> OSError:
    """``exc`` (same type and errno) with a message that names ``path``, not a temp file."""
    reason = exc.strerror or str(exc)
    if exc.errno is None:
        return type(exc)(f"cannot {action} {path!r}: {reason}")
    return type(exc)(exc.errno, f"cannot {action} {path!r}: {reason}")


def _open_temp(folder: Path, name: str) -> tuple[int, str]:
    """A new file next to the target, created with mode 0666 minus the umask."""
    for _ in range(100):
        tmp = os.path.join(folder, f".{name}.{os.urandom(4).hex()}.tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary file name")


def atomic_write_json(path: str | os.PathLike[str], data: Any) -> None:
    """Write ``data`` as JSON to ``path`` atomically: a temporary file, fsync, then rename.

    A crash at any point leaves either the old file or the new one, never a torn file.
    The file gets the permissions of any new file (``0666`` minus the umask). The folder
    must exist: a missing one is an error, not created silently.

    Raises:
      FileNotFoundError: the folder of ``path`` does not exist (the message names it).
      IsADirectoryError: ``path`` is a directory.
      OSError: any other failure, with its errno, naming ``path``.
    """
    name = os.fspath(path)
    target = Path(name)
    folder = target.parent
    action = "save allocator state to"
    if not folder.is_dir():
        if folder.exists():
            raise NotADirectoryError(
                errno.ENOTDIR, f"cannot {action} {name!r}: {str(folder)!r} is not a directory"
            )
        raise FileNotFoundError(
            errno.ENOENT,
            f"cannot {action} {name!r}: the folder {str(folder)!r} does not exist "
            "(create it first)",
        )
    if target.is_dir():
        raise IsADirectoryError(errno.EISDIR, f"cannot {action} {name!r}: it is a directory")
    payload = json.dumps(data, allow_nan=True, separators=(",", ":")).encode("ascii")
    try:
        fd, tmp = _open_temp(folder, target.name)
    except OSError as exc:
        raise _named(exc, action, name) from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise _named(exc, action, name) from None
        raise
    _fsync_folder(folder)


def _fsync_folder(folder: Path) -> None:
    """Make the rename durable where the platform allows (best effort)."""
    with contextlib.suppress(OSError, AttributeError):
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def read_state_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a JSON state file, turning every failure into an error naming the file.

    Raises:
      FileNotFoundError: no such file.
      IsADirectoryError: ``path`` is a directory.
      OSError: the file cannot be read (with its errno, naming ``path``).
      ValueError: the file is not valid JSON or does not hold a JSON object.
    """
    name = os.fspath(path)
    if os.path.isdir(name):
        raise IsADirectoryError(
            errno.EISDIR,
            f"cannot load allocator state from {name!r}: it is a directory, not a state file",
        )
    try:
        with open(name, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise _named(exc, "load allocator state from", name) from None
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(
            f"state file {name!r} is not valid JSON (truncated or corrupt?): {exc}"
        ) from None
    if not isinstance(data, dict):
        raise ValueError(f"state file {name!r} does not hold a JSON object")
    return data


# -- the envelope ------------------------------------------------------------------------------


def make_envelope(allocator: str, config: BaseModel, body: Mapping[str, Any]) -> dict[str, Any]:
    """The versioned state of ``allocator``: the header, the config, then ``body``.

    >>> from coba_rl.config import CoBAConfig
    >>> s = make_envelope("X", CoBAConfig(), {"step": 0})
    >>> s["format"], s["version"], s["allocator"], s["step"]
    ('coba-rl.allocator', 2, 'X', 0)
    """
    return {
        "format": STATE_FORMAT,
        "version": STATE_VERSION,
        "allocator": allocator,
        "config": config.model_dump(mode="json"),
        **body,
    }


def open_envelope(
    state: Any,
    allocator: str,
    body_fields: Iterable[str],
    added: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """Check the header of a saved state and that it holds exactly the expected fields.

    Args:
      state: what :func:`make_envelope` produced (possibly through JSON).
      allocator: the class name the state must be for.
      body_fields: the allocator-specific field names.
      added: the version that introduced a body field, for fields newer than version 1.
        A state of an older version must not hold them; they come back as ``None``.

    Returns:
      A shallow copy of ``state`` with every body field present.

    Raises:
      ValueError: not a dict, another format, version or allocator, or other fields.
    """
    if not isinstance(state, dict):
        raise ValueError(f"allocator state must be a dict, got {type(state).__name__}")
    if state.get("format") != STATE_FORMAT:
        raise ValueError(f"not a coba-rl allocator state (format={state.get('format')!r})")
    version = state.get("version")
    if type(version) is not int or version not in READABLE_VERSIONS:
        raise ValueError(
            f"unsupported state version {version!r}; this coba-rl reads versions "
            f"{', '.join(map(str, READABLE_VERSIONS))}"
        )
    if state.get("allocator") != allocator:
        raise ValueError(f"state is for {state.get('allocator')!r}, not {allocator}")
    since = added or {}
    fields = list(body_fields)
    present = [f for f in fields if since.get(f, 1) <= version]
    expected = set(_HEADER) | set(present)
    if set(state) != expected:
        raise ValueError(f"allocator state has fields {sorted(state)}, expected {sorted(expected)}")
    return {**dict.fromkeys(fields), **state}


def parse_config(state: Mapping[str, Any], config_type: type[ConfigT]) -> ConfigT:
    """The ``config`` of a saved state, validated, or a ``ValueError``."""
    try:
        return config_type.model_validate(state["config"])
    except ValidationError as exc:
        raise ValueError(f"allocator state: invalid config: {exc}") from None


def parse_step(value: Any, name: str = "step") -> int:
    """A saved step counter: an int ``>= 0``, or a ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"allocator state: {name} must be an int >= 0, got {value!r}")
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


def config_summary(config: BaseModel) -> str:
    """``Name(field=value, ...)`` with only the fields that differ from their defaults.

    >>> from coba_rl.config import CoBAConfig
    >>> config_summary(CoBAConfig(n_up=16, window=2))
    'CoBAConfig(n_up=16, window=2)'
    """
    fields = type(config).model_fields
    changed = [
        f"{k}={getattr(config, k)!r}"
        for k, info in fields.items()
        if not _same(getattr(config, k), info.default)
    ]
    return f"{type(config).__name__}({', '.join(changed)})"


P = TypeVar("P", bound="Persistent[Any]")

#: Attributes of the running object that a load keeps: its lock, its warnings shown.
_KEPT_ON_LOAD = ("_lock", "_reward_warned")


class Persistent(Lockable, Generic[ConfigT]):
    """Save, load, resume and locking for an allocator with a pydantic ``config``.

    A subclass provides :meth:`state_dict` (built with :func:`make_envelope`) and
    ``_parse_state``, a classmethod that validates a state completely and returns a new
    allocator. Everything else (restoring in place, files) is shared, so every allocator
    resumes the same way and a failed load never leaves a half-restored object.

    Every instance owns a re-entrant lock, made in ``__new__`` so that subclasses need
    not call ``super().__init__``; ``load_state_dict`` and ``save`` hold it, as must the
    subclass's own public methods (:func:`coba_rl._sync.synchronized`). Pickling and
    copying drop the lock and give the copy a fresh one.
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
        to adopt the saved config instead. The state is validated first, then swapped in
        under the allocator's lock, so a concurrent call sees the old or the new state.

        Raises:
          ValueError: malformed, wrong-version or inconsistent state, or a config mismatch.
        """
        new = self._parse_state(state)
        check_same_config(self.config, new.config, type(self).__name__)
        with self._lock:
            kept = {k: self.__dict__[k] for k in _KEPT_ON_LOAD if k in self.__dict__}
            self.__dict__.update(new.__dict__)
            self.__dict__.update(kept)

    @classmethod
    def from_state_dict(cls: type[P], state: Any) -> P:
        """A new allocator, config included, from :meth:`state_dict` output."""
        return cls._parse_state(state)

    @synchronized
    def save(self, path: str | os.PathLike[str]) -> None:
        """Write :meth:`state_dict` to ``path`` as JSON, atomically (temp file, then rename).

        The file follows the umask; the folder must exist. Holds the allocator's lock
        while it writes, so concurrent saves land in the order they were called.

        Raises:
          FileNotFoundError: the folder does not exist (the message names it).
          IsADirectoryError: ``path`` is a directory.
          OSError: the file cannot be written (the message names ``path``).
        """
        atomic_write_json(path, self.state_dict())

    @classmethod
    def load(cls: type[P], path: str | os.PathLike[str]) -> P:
        """A new allocator from a file written by :meth:`save` (config included).

        Raises:
          FileNotFoundError: no such file.
          IsADirectoryError: ``path`` is a directory.
          ValueError: the file is truncated, corrupt, of another version or inconsistent.
        """
        return cls.from_state_dict(read_state_file(path))
