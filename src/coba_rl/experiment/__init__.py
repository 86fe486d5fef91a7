"""``coba-rl experiment``: rollout allocators on a real, tiny, sampled policy (needs torch).

A small decoder-only transformer is built from a config and trained from scratch on CPU
on a generated addition task with an exact verifier (:mod:`coba_rl.experiment.task`):
a short supervised warm start, then GRPO with Adam and verl's token-mean loss, with the
per-prompt rollout counts of uniform GRPO, Knapsack-RL and CoBA-RL (paper and release).
Each (allocator, budget) gets its learning rate from the same small grid on a
validation split, and every comparison runs over several seeds.

Install with ``pip install 'coba-rl[experiment]'``. The public modules here (the task,
the settings and the report) do not need torch; the policy, the training loop and the
runner (private modules, used by the command) do.
"""

from __future__ import annotations

from coba_rl.experiment.settings import ALLOCATORS, ExperimentSettings, preset
from coba_rl.experiment.task import ArithmeticTask, make_splits

__all__ = ["ALLOCATORS", "ArithmeticTask", "ExperimentSettings", "make_splits", "preset"]
