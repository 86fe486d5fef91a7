"""Run the whole experiment: warm starts, the learning-rate search, the evaluation runs."""

from __future__ import annotations

import datetime
import os
import platform
import time
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import torch

import coba_rl
from coba_rl.experiment._loop import (
    GRPORun,
    TokenBudgetCoBA,
    describe_pass_rates,
    run_grpo,
    warm_start,
)
from coba_rl.experiment._policy import PolicyConfig
from coba_rl.experiment.settings import ExperimentSettings
from coba_rl.experiment.task import ArithmeticTask, make_splits
from coba_rl.sim import AllocatorLike

__all__ = ["NOTE", "machine_info", "make_allocator", "run_experiment"]

NOTE = (
    "A tiny decoder-only transformer trained from scratch on CPU on a generated addition "
    "task (exact verifier), warm-started by supervised learning, then trained by GRPO "
    "(Adam, token-mean loss) with each allocator's counts. A small model on a toy task: "
    "it tests the allocators on a real sampled policy, not what they do for an LLM."
)


def make_allocator(name: str, s: ExperimentSettings) -> AllocatorLike:
    """A fresh allocator called ``name`` with the bounds of ``s`` (window 1, paper constants).

    ``coba-paper-tokens`` is the paper variant spending a token budget
    (:class:`~coba_rl.experiment._loop.TokenBudgetCoBA`); before any length is known a
    rollout costs the task's answer-length limit.
    """
    if name == "coba-paper-tokens":
        limit = float(ArithmeticTask().max_answer_len)
        cfg = coba_rl.CoBAConfig(
            variant="paper", n_low=s.n_low, n_up=s.n_up, default_tokens_per_rollout=limit
        )
        return TokenBudgetCoBA(coba_rl.CoBAAllocator(cfg), limit)
    if name in ("coba-paper", "coba-release"):
        variant: Literal["paper", "release"] = "paper" if name == "coba-paper" else "release"
        return coba_rl.CoBAAllocator(
            coba_rl.CoBAConfig(variant=variant, n_low=s.n_low, n_up=s.n_up)
        )
    if name == "uniform":
        return coba_rl.UniformAllocator()
    if name == "knapsack-rl":
        return coba_rl.KnapsackRLAllocator(coba_rl.KnapsackConfig(n_low=s.n_low, n_up=s.n_up))
    raise ValueError(f"unknown allocator {name!r}")


def machine_info() -> dict[str, Any]:
    """The machine and versions a run used."""
    try:
        load: list[float] | None = [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover (not on every platform)
        load = None
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_average": load,
        "torch_threads": torch.get_num_threads(),
        "versions": {
            "coba_rl": coba_rl.__version__,
            "torch": torch.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
    }


def _run_record(run: GRPORun) -> dict[str, Any]:
    return {
        "eval_steps": run.eval_steps,
        "rollouts": run.rollouts,
        "tokens": run.tokens,
        "tokens_per_step": [s.tokens for s in run.steps],
        "steps": [
            {
                "prompt_ids": s.prompt_ids,
                "counts": s.counts,
                "successes": s.successes,
                "response_lengths": s.response_lengths,
            }
            for s in run.steps
        ],
    }


def _score(acc: list[float]) -> float:
    """Tuning score: mean accuracy over the second half of the evaluations (less noisy)."""
    tail = acc[len(acc) // 2 :] if len(acc) > 1 else acc
    return float(np.mean(tail))


def run_experiment(
    settings: ExperimentSettings,
    progress: Callable[[int, int, str], None] | None = None,
) -> dict[str, Any]:
    """Run everything in ``settings``; return the JSON-ready record (see ``results.json``).

    Order: warm starts (the tuning seed and every evaluation seed, shared by all
    allocators of that seed), then for every (allocator, budget) each learning rate of the
    grid for ``tune_steps`` steps on the tuning seed, scored on the validation split, then
    every (allocator, budget, seed) for ``steps`` steps with its chosen learning rate,
    evaluated on the held-out split.
    """
    s = settings
    torch.set_num_threads(s.threads)
    t_start = time.perf_counter()
    info_start = machine_info()
    task = ArithmeticTask()
    train, val, heldout = make_splits(task, s.data_seed, (s.num_train, s.num_val, s.num_heldout))
    policy = PolicyConfig(
        d_model=s.d_model,
        n_heads=s.n_heads,
        n_layers=s.n_layers,
        d_mlp=s.d_mlp,
        max_len=task.max_prompt_len + task.max_answer_len + 1,
    )
    configs = s.configs()
    warm_seeds = list(dict.fromkeys([s.tune_seed, *s.seeds]))
    total = (
        len(warm_seeds) * s.sft_steps
        + len(configs) * len(s.lr_grid) * s.tune_steps
        + len(configs) * len(s.seeds) * s.steps
    )
    done = 0

    def ticker(label: str) -> Callable[[int], None]:
        base = done

        def tick(k: int) -> None:
            if progress is not None:
                progress(base + k, total, label)

        return tick

    weights: dict[int, dict[str, torch.Tensor]] = {}
    warm_info: dict[str, Any] = {}
    for seed in warm_seeds:
        weights[seed] = warm_start(
            task,
            [*val, *heldout],
            seed=seed,
            steps=s.sft_steps,
            batch_size=s.sft_batch,
            lr=s.sft_lr,
            policy=policy,
            progress=ticker(f"warm start seed={seed}"),
        )
        done += s.sft_steps
        warm_info[str(seed)] = describe_pass_rates(
            weights[seed], policy, task, train, samples=s.group_size, seed=seed
        )

    tuning: list[dict[str, Any]] = []
    chosen: dict[tuple[str, int], float] = {}
    for name, budget in configs:
        best: tuple[float, float] | None = None
        for lr in s.lr_grid:
            run = run_grpo(
                make_allocator(name, s),
                task,
                train,
                val,
                weights=weights[s.tune_seed],
                policy=policy,
                seed=s.tune_seed,
                steps=s.tune_steps,
                batch_size=s.batch_size,
                budget=budget,
                lr=lr,
                eval_every=max(1, min(s.eval_every, s.tune_steps)),
                temperature=s.temperature,
                progress=ticker(f"lr search {name} B={budget} lr={lr:g}"),
            )
            done += s.tune_steps
            score = _score(run.accuracy)
            tuning.append(
                {
                    "allocator": name,
                    "budget": budget,
                    "lr": lr,
                    "eval_steps": run.eval_steps,
                    "validation_accuracy": run.accuracy,
                    "score": score,
                }
            )
            if best is None or score > best[0]:  # ties keep the smaller lr
                best = (score, lr)
        assert best is not None
        chosen[(name, budget)] = best[1]

    runs: list[dict[str, Any]] = []
    for name, budget in configs:
        for seed in s.seeds:
            lr = chosen[(name, budget)]
            t0 = time.perf_counter()
            run = run_grpo(
                make_allocator(name, s),
                task,
                train,
                heldout,
                weights=weights[seed],
                policy=policy,
                seed=seed,
                steps=s.steps,
                batch_size=s.batch_size,
                budget=budget,
                lr=lr,
                eval_every=s.eval_every,
                temperature=s.temperature,
                progress=ticker(f"{name} B={budget} seed={seed}"),
            )
            done += s.steps
            runs.append(
                {
                    "allocator": name,
                    "seed": seed,
                    "budget": budget,
                    "lr": lr,
                    "heldout_accuracy": run.accuracy,
                    "seconds": time.perf_counter() - t0,
                    **_run_record(run),
                }
            )
    return {
        "note": NOTE,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": info_start,
        "load_average_end": machine_info()["load_average"],
        "wall_seconds": time.perf_counter() - t_start,
        "settings": s.model_dump(mode="json"),
        "optimizer": {"name": "adam", "betas": [0.9, 0.999], "eps": 1e-8},
        "loss_aggregation": "token-mean",
        "task": {
            "levels": [list(lv) for lv in task.levels],
            "splits": {"train": len(train), "validation": len(val), "heldout": len(heldout)},
        },
        "warm_start": warm_info,
        "tuning": tuning,
        "chosen_lr": [{"allocator": a, "budget": b, "lr": lr} for (a, b), lr in chosen.items()],
        "runs": runs,
    }
