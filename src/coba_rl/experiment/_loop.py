"""The training loop of the tiny-policy experiment: supervised warm start, then GRPO.

One GRPO step, as a verl or TRL trainer runs it with per-prompt counts:

0. (before) a supervised warm start on freshly generated problems (:func:`warm_start`);
1. the next ``M`` prompts of a seeded epoch shuffle (``drop_last``);
2. ``allocator.allocate(ids, B)`` gives the rollout count ``n_i`` of each prompt;
3. rows laid out with :func:`coba_rl.grpo.expand`, and every row sampled
   autoregressively from the policy at temperature 1, all rows in one batch;
4. the exact verifier scores each row (reward 1 or 0);
5. GRPO advantages on the ragged groups with :func:`coba_rl.grpo.group_advantages`
   (``ddof = 1``, ``eps = 1e-6``, as verl);
6. one Adam step on the token-mean policy-gradient loss (:func:`grpo_loss`);
7. ``allocator.update(row ids, rewards)`` (with every rollout's length for a
   :class:`TokenBudgetCoBA`).

Each step records the counts, the successes and the response length of every row, so
token budgets can be computed from the same loop.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from coba_rl.allocator import CoBAAllocator
from coba_rl.experiment._policy import (
    PolicyConfig,
    TinyTransformer,
    encode_prompts,
    generate,
    grpo_loss,
    sft_loss,
)
from coba_rl.experiment.task import ArithmeticTask, Problem
from coba_rl.grpo import expand, group_advantages
from coba_rl.sim import AllocatorLike
from coba_rl.types import Allocation

__all__ = ["GRPORun", "StepRecord", "TokenBudgetCoBA", "accuracy", "run_grpo", "warm_start"]


class TokenBudgetCoBA:
    """CoBA-RL spending a token budget worth ``budget`` uniform rollouts.

    ``allocate(ids, B)`` spends ``T = (B / M) * sum_i c_i`` expected tokens and no rollout
    cap, where ``c_i`` is prompt ``i``'s windowed mean response length (unknown lengths:
    the mean of the batch's known ones, or ``default_length`` when none is known). ``T``
    is what uniform GRPO with ``B / M`` rollouts per prompt would spend on this batch
    under the same length estimates, so at the full rollout budget the two spend equal
    expected tokens and at half the budget half of them. ``update`` passes every
    rollout's length on.

    Example:
      >>> import coba_rl
      >>> cfg = coba_rl.CoBAConfig(n_up=16, default_tokens_per_rollout=10.0)
      >>> a = TokenBudgetCoBA(coba_rl.CoBAAllocator(cfg), 10.0)
      >>> a.update([1, 1, 2, 2], [1, 0, 0, 0], lengths=[2, 4, 10, 10])
      >>> a.token_budget([1, 2, 3], 12)  # 4 rollouts each; prompt 3 costs (3 + 10) / 2
      78.0
      >>> a.allocate([1, 2, 3], 12).tokens <= 78.0
      True
    """

    def __init__(self, inner: CoBAAllocator, default_length: float) -> None:
        self.inner = inner
        self.default_length = float(default_length)

    def token_budget(self, prompt_ids: Any, budget: int) -> float:
        """``T`` for this batch (see the class docstring)."""
        ids = np.asarray(prompt_ids)
        c = self.inner.mean_lengths(ids)
        known = c[np.isfinite(c)]
        fill = float(known.mean()) if known.size else self.default_length
        return budget / ids.size * float(np.where(np.isfinite(c), c, fill).sum())

    def allocate(self, prompt_ids: Any, budget: int) -> Allocation:
        """Counts that spend at most :meth:`token_budget` expected tokens."""
        return self.inner.allocate(
            prompt_ids, None, token_budget=self.token_budget(prompt_ids, budget)
        )

    def update(self, prompt_ids: Any, rewards: Any, lengths: Any = None) -> None:
        """Record one step with the rollouts' lengths."""
        self.inner.update(prompt_ids, rewards, lengths=lengths)


def accuracy(net: TinyTransformer, task: ArithmeticTask, problems: Sequence[Problem]) -> float:
    """Greedy exact-match accuracy on ``problems``, in [0, 1]."""
    batch = generate(net, encode_prompts(task, problems), task.max_answer_len, greedy=True)
    return float(
        np.mean([task.verify(p, r) for p, r in zip(problems, batch.responses(), strict=True)])
    )


def warm_start(
    task: ArithmeticTask,
    exclude: Collection[Problem],
    *,
    seed: int,
    steps: int,
    batch_size: int,
    lr: float,
    policy: PolicyConfig,
    progress: Callable[[int], None] | None = None,
) -> dict[str, torch.Tensor]:
    """Train a fresh policy by supervised learning on reference answers; return its weights.

    Every batch is freshly generated (a supervised set separate from the RL prompts, as
    in practice), never containing a problem of ``exclude`` (the validation and held-out
    prompts). Adam, constant ``lr``.
    """
    net = TinyTransformer(policy, seed=seed)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 1]))
    banned = set(exclude)
    for s in range(steps):
        batch: list[Problem] = []
        while len(batch) < batch_size:
            batch.extend(p for p in task.sample(rng, batch_size - len(batch)) if p not in banned)
        loss = sft_loss(net, task, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if progress is not None:
            progress(s + 1)
    return copy.deepcopy(net.state_dict())


@dataclass
class StepRecord:
    """What one GRPO step did.

    Attributes:
      prompt_ids: the batch (training-set indices), shape ``(M,)``.
      counts: rollouts per prompt, shape ``(M,)``.
      successes: rewarded rollouts per prompt, shape ``(M,)``.
      response_lengths: tokens generated by each rollout row (end token included), in row
        order (rows of prompt ``i`` are contiguous, as :func:`coba_rl.grpo.expand` lays them).
    """

    prompt_ids: list[int]
    counts: list[int]
    successes: list[int]
    response_lengths: list[int]

    @property
    def tokens(self) -> int:
        """Tokens generated in this step."""
        return int(sum(self.response_lengths))

    def prompt_lengths(self) -> list[float]:
        """Mean response length of each prompt of the batch (its rollouts' tokens / n_i)."""
        rows = expand(np.asarray(self.counts, dtype=np.int64))
        sums = np.bincount(rows, weights=self.response_lengths, minlength=len(self.counts))
        return (sums / np.maximum(np.asarray(self.counts), 1)).tolist()


@dataclass
class GRPORun:
    """One GRPO run: evaluations and per-step records.

    Attributes:
      eval_steps: the steps after which the policy was evaluated (0 = before training).
      accuracy: the evaluation accuracy (held-out or validation) at each of ``eval_steps``.
      rollouts: cumulative rollouts at each of ``eval_steps``.
      tokens: cumulative generated tokens at each of ``eval_steps``.
      steps: one :class:`StepRecord` per step.
    """

    eval_steps: list[int] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)
    rollouts: list[int] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    steps: list[StepRecord] = field(default_factory=list)


def run_grpo(
    allocator: AllocatorLike,
    task: ArithmeticTask,
    train: Sequence[Problem],
    evaluate_on: Sequence[Problem],
    *,
    weights: dict[str, torch.Tensor],
    policy: PolicyConfig,
    seed: int,
    steps: int,
    batch_size: int,
    budget: int,
    lr: float,
    eval_every: int,
    temperature: float = 1.0,
    progress: Callable[[int], None] | None = None,
) -> GRPORun:
    """Train a copy of the warm-started policy with GRPO, asking ``allocator`` for the counts.

    Under one ``seed`` every allocator sees the same batch order; the sampling stream is
    seeded too, so a run is reproducible on one machine and thread count. The counts must
    sum to ``budget``, except for a :class:`TokenBudgetCoBA`, which spends tokens.
    """
    net = TinyTransformer(policy, seed=seed)
    net.load_state_dict(weights)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    order_rng = np.random.default_rng(np.random.SeedSequence([int(seed), 2]))
    gen = torch.Generator().manual_seed(int(seed) * 1000 + 3)
    n = len(train)
    order = np.empty(0, dtype=np.int64)
    cursor = 0
    run = GRPORun()
    total_rollouts = total_tokens = 0

    def evaluate(step: int) -> None:
        run.eval_steps.append(step)
        run.accuracy.append(accuracy(net, task, evaluate_on))
        run.rollouts.append(total_rollouts)
        run.tokens.append(total_tokens)

    evaluate(0)
    for t in range(1, steps + 1):
        if cursor + batch_size > order.size:
            order, cursor = order_rng.permutation(n), 0
        ids = order[cursor : cursor + batch_size]
        cursor += batch_size
        counts = np.asarray(allocator.allocate(ids, budget).counts, dtype=np.int64)
        by_tokens = isinstance(allocator, TokenBudgetCoBA)
        if counts.shape != ids.shape or (not by_tokens and int(counts.sum()) != budget):
            raise ValueError(
                f"allocator returned {counts.size} counts summing to {int(counts.sum())}; "
                f"expected {ids.size} summing to {budget}"
            )
        rows = expand(counts)
        row_problems = [train[int(ids[r])] for r in rows]
        batch = generate(
            net,
            encode_prompts(task, row_problems),
            task.max_answer_len,
            generator=gen,
            temperature=temperature,
        )
        rewards = np.array(
            [task.verify(p, r) for p, r in zip(row_problems, batch.responses(), strict=True)]
        )
        adv = group_advantages(rewards, rows, ddof=1, eps=1e-6)
        loss = grpo_loss(net, batch, torch.as_tensor(adv, dtype=torch.float32))
        opt.zero_grad()
        loss.backward()
        opt.step()
        lengths = batch.lengths
        if isinstance(allocator, TokenBudgetCoBA):
            allocator.update(ids[rows], rewards, lengths=lengths)
        else:
            allocator.update(ids[rows], rewards)
        total_rollouts += int(rows.size)
        total_tokens += int(lengths.sum())
        run.steps.append(
            StepRecord(
                prompt_ids=ids.tolist(),
                counts=counts.tolist(),
                successes=np.bincount(rows, weights=rewards, minlength=ids.size)
                .astype(np.int64)
                .tolist(),
                response_lengths=lengths.tolist(),
            )
        )
        if t % eval_every == 0 or t == steps:
            evaluate(t)
        if progress is not None:
            progress(t)
    return run


def describe_pass_rates(
    weights: dict[str, torch.Tensor],
    policy: PolicyConfig,
    task: ArithmeticTask,
    problems: Sequence[Problem],
    *,
    samples: int,
    seed: int,
) -> dict[str, Any]:
    """Sampled pass rates of the warm-started policy on ``problems`` (``samples`` each).

    Returns the share of prompts solved by every sample, by none and in between, and the
    mean pass rate per difficulty level.
    """
    net = TinyTransformer(policy, seed=seed)
    net.load_state_dict(weights)
    gen = torch.Generator().manual_seed(int(seed) * 1000 + 5)
    rows = np.repeat(np.arange(len(problems)), samples)
    row_problems = [problems[int(r)] for r in rows]
    batch = generate(net, encode_prompts(task, row_problems), task.max_answer_len, generator=gen)
    rewards = np.array(
        [task.verify(p, r) for p, r in zip(row_problems, batch.responses(), strict=True)]
    )
    rate = np.bincount(rows, weights=rewards, minlength=len(problems)) / samples
    levels = np.array([task.level(p) for p in problems])
    return {
        "samples": samples,
        "all_pass": float(np.mean(rate == 1.0)),
        "all_fail": float(np.mean(rate == 0.0)),
        "mixed": float(np.mean((rate > 0) & (rate < 1))),
        "mean_pass_rate": float(rate.mean()),
        "by_level": {
            f"{k}x{d}": float(rate[levels == i].mean()) if (levels == i).any() else None
            for i, (k, d) in enumerate(task.levels)
        },
    }
