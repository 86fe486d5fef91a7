"""Collection rules for the whole suite (tests/ and the doctests under src/coba_rl/)."""

from __future__ import annotations

import importlib.util

# The experiment's policy, loop and runner import torch (the [experiment] extra); without
# it their doctests cannot be collected. tests/test_experiment.py skips its torch part.
collect_ignore_glob = [] if importlib.util.find_spec("torch") else ["src/coba_rl/experiment/_*.py"]
