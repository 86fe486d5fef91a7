"""coba-rl: capability-oriented rollout budget allocation for GRPO-style RLVR trainers.

Each training step, :func:`allocate` (stateless) or :class:`CoBAAllocator` (stateful)
splits a fixed rollout budget over the batch's prompts, in place of GRPO's uniform
group size. The method is CoBA-RL (Yao et al., arXiv 2602.03048).

Example:
  >>> import coba_rl
  >>> stats = coba_rl.BatchStats(pass_rates=[0.0, 0.25, 0.5, 0.75, 1.0], failure_rate=0.6)
  >>> coba_rl.allocate(stats, 5 * 16).counts.tolist()
  [2, 2, 45, 29, 2]
"""

from coba_rl import grpo, knapsack, rewards, sim, solvers, value
from coba_rl._validation import BudgetWarning, even_split
from coba_rl.allocator import STATE_VERSION, CoBAAllocator
from coba_rl.coba import allocate, initial_shape
from coba_rl.config import CoBAConfig
from coba_rl.knapsack import (
    KnapsackConfig,
    KnapsackRLAllocator,
    RolloutHistory,
    knapsack_allocate,
    knapsack_value,
)
from coba_rl.protocol import Allocator
from coba_rl.rewards import RewardWarning
from coba_rl.tracker import PassRateTracker
from coba_rl.types import Allocation, BatchStats
from coba_rl.uniform import UniformAllocator, UniformConfig
from coba_rl.value import (
    adaptive_tau,
    beta_pdf,
    beta_shape,
    capability_value,
    marginal_gains,
    transform_failure_rate,
)

__version__ = "0.1.0"

__all__ = [
    "STATE_VERSION",
    "Allocation",
    "Allocator",
    "BatchStats",
    "BudgetWarning",
    "CoBAAllocator",
    "CoBAConfig",
    "KnapsackConfig",
    "KnapsackRLAllocator",
    "PassRateTracker",
    "RewardWarning",
    "RolloutHistory",
    "UniformAllocator",
    "UniformConfig",
    "__version__",
    "adaptive_tau",
    "allocate",
    "beta_pdf",
    "beta_shape",
    "capability_value",
    "even_split",
    "grpo",
    "initial_shape",
    "knapsack",
    "knapsack_allocate",
    "knapsack_value",
    "marginal_gains",
    "rewards",
    "sim",
    "solvers",
    "transform_failure_rate",
    "value",
]
