"""CoBA-RL in TRL: ``CoBAGRPOTrainer`` trains a tiny GPT-2 for a few steps on CPU.

The model is built from a config and the tokenizer from a word list, so nothing is
downloaded. The reward is verifiable: a completion is correct when its first word is in
the prompt's answer set, so prompts range from always to never solved and the allocator
moves rollouts between them. Needs ``pip install 'coba-rl[trl]'``; without it the example
says so and stops. Run: ``python examples/trl_coba.py``.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile

import coba_rl

# -- configuration ---------------------------------------------------------------------
SEED = 0
WORDS = ["a", "b", "c", "d", "e", "f"]
ANSWERS = ["a b c d e f", "", "a b c", "a"]  # always, never, half, one in six
G = 4  # num_generations: the budget is len(ANSWERS) * G rows per generation batch
STEPS = 3


def correct(completions: list[str], answer: list[str], **_: object) -> list[float]:
    """1.0 when the completion's first word is one of the prompt's accepted answers."""
    return [
        1.0 if text.split() and text.split()[0] in ans.split() else 0.0
        for text, ans in zip(completions, answer, strict=True)
    ]


def main() -> None:
    if importlib.util.find_spec("trl") is None or importlib.util.find_spec("torch") is None:
        print("TRL is not installed: pip install 'coba-rl[trl]' to run this example.")
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything below is built locally

    import torch
    from datasets import Dataset
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast
    from trl import GRPOConfig

    from coba_rl.integrations.trl import CoBAGRPOTrainer, add_prompt_ids

    vocab = {w: i for i, w in enumerate(["<pad>", "<eos>", "<unk>", "q", *WORDS])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>"
    )
    torch.manual_seed(SEED)
    model = GPT2LMHeadModel(
        GPT2Config(
            vocab_size=len(vocab), n_positions=32, n_embd=16, n_layer=1, n_head=2,
            bos_token_id=1, eos_token_id=1, pad_token_id=0,
        )
    )  # fmt: skip
    prompts = [f"q {w}" for w in WORDS[: len(ANSWERS)]]
    dataset = add_prompt_ids(Dataset.from_dict({"prompt": prompts, "answer": ANSWERS}))

    with tempfile.TemporaryDirectory() as out:
        args = GRPOConfig(
            output_dir=out,
            per_device_train_batch_size=len(ANSWERS) * G,
            num_generations=G,
            max_completion_length=3,
            max_steps=STEPS,
            logging_steps=1,
            beta=0.0,
            report_to="none",
            save_strategy="no",
            use_cpu=True,
            seed=SEED,
            disable_tqdm=True,
            log_level="error",
        )
        trainer = CoBAGRPOTrainer(
            model=model,
            reward_funcs=correct,
            args=args,
            train_dataset=dataset,
            processing_class=tokenizer,
            coba_allocator=coba_rl.CoBAAllocator(coba_rl.CoBAConfig(n_low=2, n_up=3 * G)),
        )
        trainer.train()

    for entry in trainer.state.log_history:
        if "coba/budget" in entry:
            print(
                f"step {entry['step']}  reward {entry['reward']:.2f}  rollouts min/max = "
                f"{entry['coba/rollouts/min']:.0f}/{entry['coba/rollouts/max']:.0f}"
            )
    final = trainer.coba_allocator.allocate(list(range(len(ANSWERS))), len(ANSWERS) * G)
    print(f"next allocation for prompts 0..{len(ANSWERS) - 1}: {final.counts.tolist()}")


if __name__ == "__main__":
    main()
