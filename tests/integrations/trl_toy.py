"""A toy verifiable task for the TRL tests: a tiny GPT-2, a word-level tokenizer, a verifier.

Everything is built locally (no downloads). The framework packages are imported inside the
functions, so this module imports without them (pytest's doctest collection imports it in
every environment). It is shared by the in-process tests and the ``torchrun`` worker.

A completion is correct when its first word is in the prompt's answer set (``"*"``
accepts everything, ``""`` nothing), so prompts range from always to never solved.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

WORDS = ["a", "b", "c", "d", "e", "f", "g", "h"]
VOCAB = ["<pad>", "<eos>", "<unk>", *WORDS, "q", "r", "s"]


def tiny_tokenizer() -> Any:
    """A word-level tokenizer over :data:`VOCAB` (pad 0, eos 1, unk 2)."""
    import tokenizers
    import transformers

    vocab = {w: i for i, w in enumerate(VOCAB)}
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>"
    )


def tiny_model(tokenizer: Any, seed: int = 0) -> Any:
    """A one-layer GPT-2 with random weights and no dropout (so forward passes repeat)."""
    import torch
    import transformers

    torch.manual_seed(seed)
    cfg = transformers.GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=32,
        n_embd=16,
        n_layer=1,
        n_head=2,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return transformers.GPT2LMHeadModel(cfg)


def toy_dataset(answers: list[str]) -> Any:
    """One prompt per answer set, with a ``prompt_id`` column (the row index)."""
    import datasets

    from coba_rl.integrations.trl import add_prompt_ids

    prompts = [f"q {WORDS[k % 8]} r {WORDS[k // 8]}" for k in range(len(answers))]
    return add_prompt_ids(datasets.Dataset.from_dict({"prompt": prompts, "answer": answers}))


def is_correct(text: str, answer: str) -> bool:
    """The verifier's rule for one completion."""
    words = text.split()
    return answer == "*" or (bool(words) and words[0] in answer.split())


class Verifier:
    """The verifiable reward; records each call's prompt ids, rewards and completions."""

    __name__ = "verifier"

    def __init__(self) -> None:
        self.calls: list[tuple[list[int], list[float]]] = []
        self.completions: list[list[str]] = []
        self.lengths: list[list[int]] = []  # completion tokens of each row, as TRL counts them

    def __call__(self, completions: list[str], answer: list[str], **kw: Any) -> list[float]:
        pairs = zip(completions, answer, strict=True)
        rewards = [1.0 if is_correct(c, a) else 0.0 for c, a in pairs]
        self.calls.append((list(kw["prompt_id"]), rewards))
        self.completions.append(list(completions))
        self.lengths.append([len(c) for c in kw["completion_ids"]])
        return rewards


def grpo_args(out: Path, max_steps: int, rows: int, num_generations: int, **kw: Any) -> Any:
    """A CPU ``GRPOConfig`` for the toy task; ``rows`` rows per device per step."""
    import trl

    settings: dict[str, Any] = {
        "save_strategy": "no",
        "max_completion_length": 3,
        "learning_rate": 1e-3,
        "beta": 0.0,
        "seed": 0,
        "data_seed": 0,
        **kw,
    }
    return trl.GRPOConfig(
        output_dir=str(out),
        per_device_train_batch_size=rows,
        num_generations=num_generations,
        max_steps=max_steps,
        logging_steps=1,
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        **settings,
    )


def runs(ids: list[int]) -> tuple[list[int], list[int]]:
    """Run-length encoding: the ids in order of their (contiguous) runs and the run lengths.

    >>> runs([7, 7, 3, 5, 5, 5])
    ([7, 3, 5], [2, 1, 3])
    """
    keys: list[int] = []
    lengths: list[int] = []
    for i in ids:
        if keys and keys[-1] == i:
            lengths[-1] += 1
        else:
            keys.append(i)
            lengths.append(1)
    return keys, lengths


def group_advantages_reference(rewards: list[float], ids: list[int]) -> list[float]:
    """TRL's GRPO advantage, per prompt group, written out independently of coba-rl.

    ``(r - mean) / (std + 1e-4)`` with the Bessel-corrected std of the row's own group.

    >>> [round(a, 4) for a in group_advantages_reference([1.0, 0.0, 1.0, 1.0], [0, 0, 1, 1])]
    [0.707, -0.707, 0.0, 0.0]
    """
    import math

    out = []
    for r, i in zip(rewards, ids, strict=True):
        group = [x for x, j in zip(rewards, ids, strict=True) if j == i]
        mean = sum(group) / len(group)
        var = sum((x - mean) ** 2 for x in group) / (len(group) - 1) if len(group) > 1 else 0.0
        out.append((r - mean) / (math.sqrt(var) + 1e-4))
    return out
