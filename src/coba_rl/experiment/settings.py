"""Settings of the tiny-policy experiment (no torch needed to read or validate them)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from coba_rl._cli import check_lr_grid, check_names, check_seeds

# The simulator's allocator names, in its order (tables and plots list them so):
# ``coba-paper-tokens`` spends, at budget ``B``, the expected tokens of ``B`` uniform
# rollouts; a run compares the first four unless told otherwise.
from coba_rl.simulate import ALLOCATORS, DEFAULT_ALLOCATORS

__all__ = ["ALLOCATORS", "DEFAULT_ALLOCATORS", "ExperimentSettings", "preset"]


class ExperimentSettings(BaseModel):
    """Everything an experiment run depends on (frozen; unknown keys are rejected).

    Attributes:
      seeds: evaluation seeds; each seed has its own warm start (model init, warm-start
        batches), batch order and sampling stream.
      tune_seed: the seed of the learning-rate search (its own warm start, or the warm
        start of the evaluation seed it equals; validation is disjoint from held-out).
      num_train, num_val, num_heldout: sizes of the disjoint prompt splits.
      data_seed: seeds the splits (the same prompts for every seed and allocator).
      batch_size: prompts per GRPO step ``M``.
      group_size: uniform GRPO's group size ``G``; the full budget is ``M * G``.
      half_budget: allocators also run at half the budget (may be empty).
      allocators: names from :data:`ALLOCATORS`, run at the full budget (default
        :data:`DEFAULT_ALLOCATORS`).
      n_low, n_up: per-prompt rollout bounds of Knapsack-RL and CoBA-RL.
      steps: GRPO steps per evaluation run; eval_every: evaluate after every so many.
      lr_grid: Adam learning rates tried for every (allocator, budget).
      tune_steps: GRPO steps of each learning-rate trial (scored on the validation split).
      sft_steps, sft_batch, sft_lr: the supervised warm start.
      d_model, n_heads, n_layers, d_mlp: the transformer.
      temperature: sampling temperature of the rollouts.
      threads: torch intra-op threads.

    Example:
      >>> s = ExperimentSettings()
      >>> s.budget(), s.configs()[:2]
      (128, [('uniform', 128), ('knapsack-rl', 128)])
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    seeds: tuple[int, ...] = (0, 1, 2)
    tune_seed: int = Field(default=100, ge=0)
    num_train: int = Field(default=256, ge=8)
    num_val: int = Field(default=256, ge=1)
    num_heldout: int = Field(default=512, ge=1)
    data_seed: int = Field(default=0, ge=0)
    batch_size: int = Field(default=16, ge=1)
    group_size: int = Field(default=8, ge=2)
    half_budget: tuple[str, ...] = ("coba-paper", "coba-release")
    allocators: tuple[str, ...] = DEFAULT_ALLOCATORS
    n_low: int = Field(default=2, ge=2)
    n_up: int = Field(default=32, ge=2)
    steps: int = Field(default=120, ge=1)
    eval_every: int = Field(default=10, ge=1)
    lr_grid: tuple[float, ...] = (3e-5, 1e-4, 3e-4)
    tune_steps: int = Field(default=40, ge=1)
    sft_steps: int = Field(default=700, ge=0)
    sft_batch: int = Field(default=64, ge=1)
    sft_lr: float = Field(default=3e-3, gt=0.0)
    d_model: int = Field(default=32, ge=8)
    n_heads: int = Field(default=4, ge=1)
    n_layers: int = Field(default=2, ge=1)
    d_mlp: int = Field(default=128, ge=8)
    temperature: float = Field(default=1.0, gt=0.0)
    threads: int = Field(default=1, ge=1)

    @field_validator("allocators", "half_budget")
    @classmethod
    def _known(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        check_names(v, ALLOCATORS)
        if len(set(v)) != len(v):
            raise ValueError(f"allocators must be distinct, got {list(v)}")
        return v

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        return check_seeds(v)

    @field_validator("lr_grid")
    @classmethod
    def _grid(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        return check_lr_grid(v)

    @model_validator(mode="after")
    def _consistent(self) -> ExperimentSettings:
        if not self.allocators:
            raise ValueError("allocators must not be empty")
        if self.n_low > self.n_up:
            raise ValueError(f"n_low ({self.n_low}) must not exceed n_up ({self.n_up})")
        if self.batch_size > self.num_train:
            raise ValueError(f"batch_size ({self.batch_size}) exceeds num_train ({self.num_train})")
        if self.d_model % self.n_heads:
            raise ValueError(
                f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})"
            )
        for name, b in self.configs():
            if (
                name != "uniform"
                and not self.batch_size * self.n_low <= b <= self.batch_size * self.n_up
            ):
                raise ValueError(
                    f"budget {b} is outside [M * n_low, M * n_up] = "
                    f"[{self.batch_size * self.n_low}, {self.batch_size * self.n_up}]"
                )
        return self

    def budget(self) -> int:
        """The full per-step budget ``M * G``."""
        return self.batch_size * self.group_size

    def configs(self) -> list[tuple[str, int]]:
        """Every (allocator, budget) pair: all allocators at full budget, then the halves."""
        full, half = self.budget(), self.budget() // 2
        return [(a, full) for a in self.allocators] + [(a, half) for a in self.half_budget]


def preset(name: str) -> dict[str, object]:
    """Overrides of the ``"full"`` (none), ``"quick"`` (a few minutes) and ``"smoke"`` presets.

    Example:
      >>> preset("smoke")["steps"]
      6
    """
    if name == "full":
        return {}
    if name == "quick":
        return {
            "seeds": (0,),
            "tune_seed": 0,
            "steps": 48,
            "tune_steps": 16,
            "eval_every": 8,
            "lr_grid": (1e-4, 3e-4),
        }
    if name == "smoke":
        return {
            "seeds": (0,),
            "steps": 6,
            "tune_steps": 3,
            "eval_every": 3,
            "lr_grid": (1e-3,),
            "sft_steps": 30,
            "num_train": 64,
            "num_val": 32,
            "num_heldout": 64,
            "batch_size": 8,
            "group_size": 4,
            "n_up": 16,
        }
    raise ValueError(f"unknown preset {name!r}; choose from full, quick, smoke")
