"""Conventions shared by every ``coba-rl`` subcommand.

- Every option's help shows its default (:class:`DefaultsHelpFormatter`).
- Bad input is reported on one line, ``<prog>: error: <what is wrong>``, with exit status 2
  (:class:`CommandParser`, :func:`exit_usage`, :class:`UsageError`, :func:`run_guarded`).
- Settings models are validated up front and their errors named in option terms
  (:func:`validated`, :func:`validation_message`).
- The output folder is checked before any work starts (:func:`check_output_dir`).
- Settings fields that several commands share are checked alike (:func:`check_names`,
  :func:`check_seeds`, :func:`check_lr_grid`).
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from pydantic import BaseModel, ValidationError

__all__ = [
    "USAGE_ERROR",
    "CommandParser",
    "DefaultsHelpFormatter",
    "UsageError",
    "check_lr_grid",
    "check_names",
    "check_output_dir",
    "check_seeds",
    "exit_usage",
    "run_guarded",
    "show_default",
    "validated",
    "validation_message",
]

#: Exit status of every usage error (argparse's own convention).
USAGE_ERROR = 2

_Model = TypeVar("_Model", bound=BaseModel)


class UsageError(Exception):
    """Bad command-line input; :func:`run_guarded` reports it on one line and exits 2."""


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def exit_usage(prog: str, message: str) -> NoReturn:
    """Print ``<prog>: error: <message>`` as one line on stderr and exit with status 2."""
    print(f"{prog}: error: {_one_line(message)}", file=sys.stderr)
    raise SystemExit(USAGE_ERROR)


def show_default(value: object) -> str:
    """A default as a user would type it on the command line.

    Example:
      >>> show_default([0, 1, 2]), show_default(("a", "b")), show_default(1.0)
      ('0 1 2', 'a b', '1.0')
      >>> show_default(Path("results") / "sim")
      'results/sim'
    """
    if isinstance(value, (list, tuple)):
        return " ".join(show_default(v) for v in value)
    if isinstance(value, os.PathLike):
        return Path(value).as_posix()
    return str(value)


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Append ``(default: ...)`` to the help of every option.

    On/off flags (``store_true``, ``store_false``) show ``(default: off)`` or
    ``(default: on)``; ``--help`` and ``--version`` show nothing. An option whose help
    already says ``default`` (for example ``default: 20; 1 with --quick``) is left as is.

    Example:
      >>> p = argparse.ArgumentParser(formatter_class=DefaultsHelpFormatter)
      >>> _ = p.add_argument("--quiet", action="store_true", help="no progress bar")
      >>> "no progress bar (default: off)" in p.format_help()
      True
    """

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if action.default is None or action.default is argparse.SUPPRESS or "default" in text:
            return text
        if action.nargs == 0:
            if not isinstance(action.default, bool):
                return text
            shown = "on" if action.default else "off"
        else:
            shown = show_default(action.default).replace("%", "%%")  # argparse %-formats help
        return f"{text} (default: {shown})" if text else f"default: {shown}"


class CommandParser(argparse.ArgumentParser):
    """An :class:`argparse.ArgumentParser` whose errors are one line, with exit status 2.

    It shows defaults in ``--help`` (:class:`DefaultsHelpFormatter`); subparsers created
    with ``add_subparsers().add_parser(...)`` are of this class too.

    Example:
      >>> p = CommandParser(prog="demo")
      >>> _ = p.add_argument("--n", type=int, default=3, help="how many")
      >>> "how many (default: 3)" in p.format_help()
      True
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", DefaultsHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        """Report ``message`` on one line (no usage block) and exit with status 2."""
        exit_usage(self.prog, f"{message} (see '{self.prog} --help')")


def validation_message(exc: ValidationError, *, as_options: bool = False) -> str:
    """A pydantic :class:`~pydantic.ValidationError` as one line, without links.

    Each error reads ``<field>: <message> (got <input>)``; several are joined by ``"; "``.
    With ``as_options`` a field is named as its command-line option (``sim.num_train`` ->
    ``--num-train``): the last name in its location, ``_`` -> ``-``.

    Example:
      >>> from pydantic import BaseModel, Field
      >>> class S(BaseModel):
      ...     n_low: int = Field(default=2, ge=1)
      >>> try:
      ...     S(n_low=0)
      ... except ValidationError as exc:
      ...     print(validation_message(exc, as_options=True))
      --n-low: input should be greater than or equal to 1 (got 0)
    """
    parts: list[str] = []
    for err in exc.errors(include_url=False):
        msg = re.sub(r"^(Value|Assertion) error, ", "", err["msg"])
        if len(msg) > 1 and msg[0].isupper() and msg[1].islower():
            msg = msg[0].lower() + msg[1:]
        names = [str(x) for x in err["loc"] if isinstance(x, str)]
        if not names:  # a whole-model check: its message names the fields itself
            parts.append(msg)
            continue
        field = "--" + names[-1].replace("_", "-") if as_options else ".".join(names)
        if err["type"] == "value_error":  # a custom check, whose message shows the value
            parts.append(f"{field}: {msg}")
            continue
        shown = repr(err.get("input"))
        shown = shown if len(shown) <= 40 else shown[:37] + "..."
        parts.append(f"{field}: {msg} (got {shown})")
    return _one_line("; ".join(parts))


def validated(model: type[_Model], values: Mapping[str, Any]) -> _Model:
    """``model(**values)``, or a :class:`UsageError` that names the bad options on one line."""
    try:
        return model(**values)
    except ValidationError as exc:
        raise UsageError(validation_message(exc, as_options=True)) from None


def check_output_dir(path: str | os.PathLike[str]) -> Path:
    """Create ``path`` if needed and prove it writable, before any work starts.

    Returns:
      The folder as a :class:`~pathlib.Path`.

    Raises:
      UsageError: the folder cannot be created (``/proc/x``, a path under a file) or a
        file cannot be written in it.

    Example:
      >>> with tempfile.NamedTemporaryFile() as file:  # a folder cannot live under a file
      ...     check_output_dir(Path(file.name) / "results")
      Traceback (most recent call last):
      ...
      coba_rl._cli.UsageError: cannot create the output folder '...results': Not a directory
    """
    out = Path(path)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(
            f"cannot create the output folder '{out}': {exc.strerror or exc}"
        ) from None
    try:
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as exc:
        raise UsageError(
            f"cannot write in the output folder '{out}': {exc.strerror or exc}"
        ) from None
    return out


def check_names(names: tuple[str, ...], choices: tuple[str, ...]) -> None:
    """Raise ``ValueError`` naming the first of ``names`` that is not one of ``choices``."""
    for name in names:
        if name not in choices:
            raise ValueError(f"unknown allocator {name!r}; choose from {', '.join(choices)}")


def check_seeds(seeds: tuple[int, ...]) -> tuple[int, ...]:
    """``seeds``, checked to be non-empty, distinct and non-negative."""
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise ValueError(f"seeds must be non-empty, distinct and >= 0, got {list(seeds)}")
    return seeds


def check_lr_grid(grid: tuple[float, ...]) -> tuple[float, ...]:
    """A learning-rate grid, checked non-empty, finite and positive; sorted, duplicates dropped."""
    if not grid or not all(math.isfinite(x) and x > 0 for x in grid):
        raise ValueError(f"lr_grid must be non-empty and positive, got {list(grid)}")
    return tuple(sorted(set(grid)))


def run_guarded(prog: str, body: Callable[[], int]) -> int:
    """Run a subcommand's ``body``; a :class:`UsageError` becomes a one-line error, exit 2.

    Ctrl-C prints ``<prog>: interrupted`` and returns 130 instead of a traceback.

    Example:
      >>> def body() -> int:
      ...     raise UsageError("--n must be positive")
      >>> import contextlib, io
      >>> err = io.StringIO()
      >>> with contextlib.redirect_stderr(err):
      ...     try:
      ...         run_guarded("demo", body)
      ...     except SystemExit as stop:
      ...         print(stop.code)
      2
      >>> err.getvalue()
      'demo: error: --n must be positive\\n'
    """
    try:
        return body()
    except UsageError as exc:
        exit_usage(prog, str(exc))
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
