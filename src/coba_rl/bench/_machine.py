"""The machine and library versions stored beside every benchmark result."""

from __future__ import annotations

import os
import platform
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import numpy as np

__all__ = ["machine_info"]


def _cpu_model() -> str:
    """The CPU model from ``/proc/cpuinfo`` (Linux), else what :mod:`platform` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _version(package: str) -> str | None:
    try:
        return version(package)
    except PackageNotFoundError:
        return None


def machine_info() -> dict[str, Any]:
    """CPU model, logical cores, platform, Python, numpy, scipy and coba-rl versions.

    Returns:
      A JSON-ready dict with the keys ``cpu``, ``cores``, ``platform``, ``python``,
      ``numpy``, ``scipy`` and ``coba_rl``.

    Example:
      >>> sorted(machine_info())
      ['coba_rl', 'cores', 'cpu', 'numpy', 'platform', 'python', 'scipy']
    """
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": _version("scipy"),
        "coba_rl": _version("coba-rl"),
    }
