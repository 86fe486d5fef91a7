"""coba_rl.integrations.trl against the real TRL GRPOTrainer, on CPU, with no downloads.

A tiny GPT-2 is built from a config and a word-level tokenizer is built in the test
(``trl_toy``); the reward is verifiable: a completion is correct when its first word is in
the prompt's answer set. Both the stock GRPOTrainer and CoBAGRPOTrainer train for a few
steps through TRL's own ``Trainer.train()`` loop.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # before transformers / huggingface_hub are imported

import functools
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytestmark = pytest.mark.trl

torch = pytest.importorskip("torch")
trl = pytest.importorskip("trl")
transformers = pytest.importorskip("transformers")
datasets = pytest.importorskip("datasets")
tokenizers = pytest.importorskip("tokenizers")

from trl_toy import (  # noqa: E402
    Verifier,
    runs,
    tiny_model,
    tiny_tokenizer,
    toy_dataset,
)
from trl_toy import grpo_args as toy_args  # noqa: E402

import coba_rl  # noqa: E402
from coba_rl.integrations import STATE_FILENAME  # noqa: E402
from coba_rl.integrations import trl as ctrl  # noqa: E402

PROMPTS = 3  # every generation batch holds the whole dataset, so steps 2+ see known prompts
G = 4  # num_generations
PER_STEP = 3  # prompts per generation batch
ROWS = PER_STEP * G  # generation_batch_size
# prompt k accepts these first words: all, none, or half (so pass rates differ)
ANSWERS = ["*", "", "a b c d"]


def grpo_args(out: Path, max_steps: int, **kw: Any) -> Any:
    return toy_args(out, max_steps, ROWS, G, **kw)


def make_allocator(**kw: Any) -> coba_rl.CoBAAllocator:
    return coba_rl.CoBAAllocator(coba_rl.CoBAConfig(n_low=2, n_up=8, **kw))


class Recording:
    """Mixed into the trainer: keeps each generation batch's allocation and advantages."""

    def _generate_and_score_completions(self, inputs: Any) -> Any:
        out = super()._generate_and_score_completions(inputs)  # type: ignore[misc]
        self.record.append((self.last_allocation, out["advantages"].double().numpy().copy()))  # type: ignore[attr-defined]
        return out


def coba_trainer(
    out: Path,
    max_steps: int,
    verifier: Verifier,
    allocator: coba_rl.CoBAAllocator | None = None,
    token_budget: float | None = None,
    **kw: Any,
) -> Any:
    tok = tiny_tokenizer()
    cls = type("RecordingCoBA", (Recording, ctrl.CoBAGRPOTrainer), {})
    trainer = cls(
        model=tiny_model(tok),
        reward_funcs=verifier,
        args=grpo_args(out, max_steps, **kw),
        train_dataset=toy_dataset(ANSWERS),
        processing_class=tok,
        coba_allocator=make_allocator() if allocator is None else allocator,
        coba_token_budget=token_budget,
    )
    trainer.record = []
    return trainer


@pytest.mark.e2e
def test_stock_grpo_trainer_trains_with_uniform_groups(tmp_path: Path) -> None:
    tok = tiny_tokenizer()
    verifier = Verifier()
    trainer = trl.GRPOTrainer(
        model=tiny_model(tok),
        reward_funcs=verifier,
        args=grpo_args(tmp_path, 2),
        train_dataset=toy_dataset(ANSWERS),
        processing_class=tok,
    )
    trainer.train()
    assert trainer.state.global_step == 2
    assert len(verifier.calls) == 2
    for ids, _ in verifier.calls:
        assert sorted(Counter(ids).values()) == [G] * PER_STEP


@pytest.mark.e2e
def test_coba_trainer_rows_advantages_tracking_and_metrics(tmp_path: Path) -> None:
    verifier = Verifier()
    trainer = coba_trainer(tmp_path, 3, verifier)
    trainer.train()
    assert trainer.state.global_step == 3
    assert len(verifier.calls) == len(trainer.record) == 3

    reference = make_allocator()  # fed only with what the reward function saw
    uneven = False
    steps = zip(verifier.calls, verifier.lengths, trainer.record, strict=True)
    for (ids, rewards), lens, (alloc, adv) in steps:
        keys, lengths = runs(ids)
        # the generation batch keeps generation_batch_size rows, grouped per prompt
        assert len(ids) == ROWS and len(set(keys)) == len(keys) == PER_STEP
        # rows per prompt equal the allocation, which equals an independent allocator's
        assert lengths == alloc.counts.tolist()
        assert reference.allocate(keys, ROWS).counts.tolist() == lengths
        uneven |= len(set(lengths)) > 1
        reference.update(ids, rewards, lengths=lens)
        # advantages: (r - group mean) / (group std, Bessel-corrected, + 1e-4), per prompt
        r = np.array(rewards)
        pid = np.array(ids)
        for k in keys:
            g = r[pid == k]
            expected = (g - g.mean()) / (g.std(ddof=1) + 1e-4)
            np.testing.assert_allclose(adv[pid == k], expected, rtol=1e-5, atol=1e-6)
            assert abs(adv[pid == k].mean()) < 1e-6
    assert uneven, "the pass rates differ, so some step must allocate unevenly"
    assert trainer.coba_allocator.state_dict() == reference.state_dict()
    logged = [h for h in trainer.state.log_history if "coba/budget" in h]
    assert len(logged) == 3 and all(h["coba/budget"] == ROWS for h in logged)
    assert logged[-1]["coba/rollouts/max"] == trainer.record[-1][0].counts.max()


@pytest.mark.e2e
def test_token_budget_caps_the_expected_completion_tokens(tmp_path: Path) -> None:
    # Completions are 1-3 tokens (max_completion_length=3); before any length is known
    # every rollout costs the default 3. A budget of 24 tokens cannot pay for 12 rollouts
    # of 3 tokens, so the first batch is cut by tokens.
    budget = 24.0
    verifier = Verifier()
    trainer = coba_trainer(
        tmp_path, 3, verifier, make_allocator(default_tokens_per_rollout=3), budget
    )
    trainer.train()
    assert trainer.state.global_step == 3
    reference = make_allocator(default_tokens_per_rollout=3)
    trims = 0
    steps = zip(verifier.calls, verifier.lengths, trainer.record, strict=True)
    for (ids, rewards), lens, (alloc, _) in steps:
        keys, run_lengths = runs(ids)
        assert run_lengths == alloc.counts.tolist() and len(ids) == alloc.budget <= ROWS
        # an independent allocator fed what the reward function saw, rounded down to a
        # multiple of num_generations (one process, one accumulation step)
        expected = reference.allocate(keys, ROWS, token_budget=budget)
        trimmed = ctrl.trim_counts(expected.counts, G, n_low=2)
        assert trimmed.tolist() == run_lengths and len(ids) % G == 0
        trims += int(expected.budget != len(ids))
        assert alloc.tokens is not None and alloc.tokens <= budget
        assert float(alloc.costs @ alloc.counts) == pytest.approx(alloc.tokens)
        reference.update(ids, rewards, lengths=lens)
    first = trainer.record[0][0]
    assert first.binding == "tokens" and first.budget == 8  # 8 rollouts * 3 tokens = 24
    assert trims >= 1, "some step should have been rounded down to whole groups of G"
    assert trainer.coba_allocator.state_dict() == reference.state_dict()
    assert (
        trainer.coba_allocator.mean_lengths(keys).tolist() == reference.mean_lengths(keys).tolist()
    )
    logged = [h for h in trainer.state.log_history if "coba/tokens" in h]
    assert len(logged) == 3 and all(h["coba/tokens"] <= budget for h in logged)


@pytest.mark.e2e
def test_resume_gives_the_identical_next_allocation(tmp_path: Path) -> None:
    save = {"save_strategy": "steps", "save_steps": 2}
    full_verifier = Verifier()
    full = coba_trainer(tmp_path / "full", 3, full_verifier, **save)
    full.train()
    ckpt = tmp_path / "full" / "checkpoint-2"
    assert (ckpt / STATE_FILENAME).is_file()

    verifier = Verifier()
    resumed = coba_trainer(tmp_path / "resumed", 3, verifier, **save)
    resumed.train(resume_from_checkpoint=str(ckpt))
    assert len(resumed.record) == len(verifier.calls) == 1  # only step 3 ran
    # step 3 gets the same rows per prompt as in the uninterrupted run
    full_keys, full_lengths = runs(full_verifier.calls[2][0])
    keys, lengths = runs(verifier.calls[0][0])
    assert sorted(keys) == sorted(full_keys) == list(range(PROMPTS))
    resumed_counts = dict(zip(keys, lengths, strict=True))
    assert resumed_counts == dict(zip(full_keys, full_lengths, strict=True))
    assert lengths == resumed.record[0][0].counts.tolist()
    # a fresh allocator would have allocated differently, so the state was really restored
    assert make_allocator().allocate(keys, ROWS).counts.tolist() != lengths


def test_bad_setups_are_refused(tmp_path: Path) -> None:
    tok = tiny_tokenizer()
    no_ids = datasets.Dataset.from_dict({"prompt": ["q r"] * PROMPTS, "answer": ["*"] * PROMPTS})
    trainer = ctrl.CoBAGRPOTrainer(
        model=tiny_model(tok),
        reward_funcs=Verifier(),
        args=grpo_args(tmp_path, 1),
        train_dataset=no_ids,
        processing_class=tok,
        coba_allocator=make_allocator(),
    )
    with pytest.raises(ValueError, match="no 'prompt_id' column"):
        trainer.train()
    with pytest.raises(ValueError, match="already has a column 'prompt_id'"):
        ctrl.add_prompt_ids(toy_dataset(ANSWERS))


class NotReached(Exception):
    """Raised by a patched ``GRPOTrainer.__init__``: TRL started building the trainer."""


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"rollout_func": lambda prompts, trainer: {}}, "does not support rollout_func"),
        ({"config": {"multi_objective_aggregation": "normalize_then_sum"}}, "normalize_then_sum"),
        ({"config": {"remove_unused_columns": True}}, "remove_unused_columns=True drops"),
        ({"allocator": coba_rl.CoBAConfig(n_low=2, n_up=G - 1)}, r"must contain num_generations"),
        ({"allocator": coba_rl.CoBAConfig(n_low=G + 1, n_up=16)}, r"must contain num_generations"),
        # refused before vLLM's server client or colocated engine would be built
        (
            {"rollout_func": lambda prompts, trainer: {}, "config": {"use_vllm": True}},
            "does not support rollout_func",
        ),
    ],
    ids=["rollout_func", "normalize_then_sum", "remove_unused_columns", "n_up", "n_low", "vllm"],
)
def test_unsupported_setups_are_refused_before_trl_builds_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, setting: dict[str, Any], message: str
) -> None:
    @functools.wraps(trl.GRPOTrainer.__init__)  # keeps the signature the checks bind to
    def not_reached(self: Any, *args: Any, **kwargs: Any) -> None:
        raise NotReached

    monkeypatch.setattr(trl.GRPOTrainer, "__init__", not_reached)
    tok = tiny_tokenizer()
    config = {"vllm_mode": "server", **setting.get("config", {})}
    extra = {"rollout_func": setting["rollout_func"]} if "rollout_func" in setting else {}
    allocator = coba_rl.CoBAAllocator(setting.get("allocator", coba_rl.CoBAConfig(n_up=8)))
    with pytest.raises(ValueError, match=message):
        ctrl.CoBAGRPOTrainer(
            model=tiny_model(tok),
            reward_funcs=Verifier(),
            args=grpo_args(tmp_path, 1, **config),
            train_dataset=toy_dataset(ANSWERS),
            processing_class=tok,
            coba_allocator=allocator,
            **extra,
        )
    # the same arguments without the unsupported part do reach GRPOTrainer.__init__
    with pytest.raises(NotReached):
        ctrl.CoBAGRPOTrainer(
            model=tiny_model(tok),
            reward_funcs=Verifier(),
            args=grpo_args(tmp_path, 1, vllm_mode="server"),
            train_dataset=toy_dataset(ANSWERS),
            processing_class=tok,
            coba_allocator=make_allocator(),
        )
    with pytest.raises(TypeError, match="must be a CoBAAllocator"):
        ctrl.CoBAGRPOTrainer(model=None, coba_allocator=object())


def test_one_id_for_two_prompts_is_refused() -> None:
    rows = [{"prompt": "x", "prompt_id": 1}, {"prompt": "y", "prompt_id": 1}]
    with pytest.raises(ValueError, match=r"prompt id 1 .* shared by different prompts"):
        ctrl._check_one_prompt_per_id(rows, np.array([1, 1]), "prompt_id")


def test_server_mode_is_refused_early_on_a_trl_without_the_seam(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A TRL whose _generate_single_turn lacks num_generations cannot send n=1 per row."""

    @functools.wraps(trl.GRPOTrainer.__init__)
    def not_reached(self: Any, *args: Any, **kwargs: Any) -> None:
        raise NotReached

    def old_style(self: Any, prompts: Any, images: Any) -> Any:
        raise AssertionError("not called")

    monkeypatch.setattr(trl.GRPOTrainer, "__init__", not_reached)
    monkeypatch.setattr(trl.GRPOTrainer, "_generate_single_turn", old_style)
    tok = tiny_tokenizer()
    kwargs = {
        "model": tiny_model(tok),
        "reward_funcs": Verifier(),
        "train_dataset": toy_dataset(ANSWERS),
        "processing_class": tok,
        "coba_allocator": make_allocator(),
    }
    with pytest.raises(ValueError, match="vLLM server mode needs"):
        ctrl.CoBAGRPOTrainer(
            args=grpo_args(tmp_path, 1, use_vllm=True, vllm_mode="server"), **kwargs
        )
    with pytest.raises(NotReached):  # colocate mode does not need the seam
        ctrl.CoBAGRPOTrainer(
            args=grpo_args(tmp_path, 1, use_vllm=True, vllm_mode="colocate"), **kwargs
        )
