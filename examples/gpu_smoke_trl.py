"""GPU smoke test: CoBAGRPOTrainer with vLLM in colocate mode, on one GPU.

Run it on a machine with a CUDA GPU, TRL and vLLM (``pip install 'coba-rl[trl]' vllm``)::

    python examples/gpu_smoke_trl.py --run                  # tiny GPT-2, built locally
    python examples/gpu_smoke_trl.py --run --model /path/to/local/checkpoint

Without ``--run`` it only prints what it checks and whether this machine can run it: the
test suite runs every example, and this one must never start vLLM there. With
``--run --backend transformers --device cpu`` it rehearses the same training run and the
checks that do not involve vLLM on CPU.

The default model is a two-layer GPT-2 built from a config and saved, with a word-level
tokenizer, to a temporary folder, so nothing is downloaded. The allocator is warmed with
one step of made-up feedback, so the very first allocation is already uneven. Checks,
each printed as ``PASS``/``FAIL`` (exit status 1 if any fails):

1. vLLM got one request with ``n=1`` per row of every generation batch
   (``generation_batch_size`` requests per batch);
2. each prompt was requested exactly ``counts[i]`` times, contiguously, in allocation
   order, and the reward function scored the same rows;
3. every allocation spends exactly the budget, and at least one is uneven;
4. the advantages are centred within each prompt's group;
5. the allocator received feedback once per generation batch, and ``coba_allocator.json``
   was saved in the last checkpoint;
6. vLLM sampled from the trained weights: TRL's logged mean ``|logp_vLLM - logp_trainer|``
   (``sampling/sampling_logp_difference/mean``) stays below 0.5 nats on every step
   (stale weights would make it grow with training).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

WORDS = ["a", "b", "c", "d", "e", "f", "g", "h"]
ANSWERS = ["*", "", "a b c d", "a b", "a b c d e f", "a"]  # from always to rarely solved
G = 4  # num_generations: the budget is len(ANSWERS) * G rows per generation batch


def correct(completions: list[str], answer: list[str], **_: Any) -> list[float]:
    """1.0 when the completion's first word is one of the prompt's accepted answers."""
    out = []
    for text, ans in zip(completions, answer, strict=True):
        words = text.split()
        out.append(1.0 if ans == "*" or (words and words[0] in ans.split()) else 0.0)
    return out


def missing(backend: str, device: str) -> str | None:
    """Why this machine cannot run the smoke test, or ``None``."""
    for module in ("torch", "trl"):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed (pip install 'coba-rl[trl]')"
    if backend == "vllm" and importlib.util.find_spec("vllm") is None:
        return "vLLM is not installed (pip install vllm)"
    import torch

    if (backend == "vllm" or device == "cuda") and not torch.cuda.is_available():
        return "no CUDA GPU is visible"
    return None


def build_model(folder: Path) -> None:
    """Save a tiny GPT-2 and a word-level tokenizer into ``folder`` (vLLM loads from disk)."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["<pad>", "<eos>", "<unk>", "q", *WORDS])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>"
    )
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=len(vocab), n_positions=64, n_embd=128, n_layer=2, n_head=2,
        bos_token_id=1, eos_token_id=1, pad_token_id=0,
    )  # fmt: skip
    GPT2LMHeadModel(config).to(torch.bfloat16).save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def run(opts: argparse.Namespace) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import numpy as np
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig

    import coba_rl
    from coba_rl.integrations.trl import CoBAGRPOTrainer, add_prompt_ids

    use_vllm = opts.backend == "vllm"
    results: list[tuple[bool, str]] = []

    def check(ok: bool, what: str) -> None:
        results.append((bool(ok), what))
        print(f"{'PASS' if ok else 'FAIL'}  {what}", flush=True)

    class Recording(CoBAGRPOTrainer):  # type: ignore[misc, valid-type]
        """Keeps each generation batch's allocation, row ids and advantages."""

        batches: list[dict[str, Any]]

        def _generate_and_score_completions(self, inputs: Any) -> Any:
            out = super()._generate_and_score_completions(inputs)
            if self.model.training:
                advantages = out["advantages"].float().cpu().numpy()
                self.batches.append(
                    {
                        "alloc": self.last_allocation,
                        "row_ids": self.last_row_prompt_ids,
                        "advantages": advantages,
                    }
                )
            return out

    scored: list[list[int]] = []

    def reward(completions: list[str], answer: list[str], **kw: Any) -> list[float]:
        scored.append(list(kw["prompt_id"]))
        return correct(completions, answer)

    reward.__name__ = "correct"

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(opts.model) if opts.model else Path(tmp) / "tiny-gpt2"
        if not opts.model:
            build_model(folder)
        dtype = torch.bfloat16 if opts.device == "cuda" else torch.float32
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
        tokenizer = AutoTokenizer.from_pretrained(folder)
        prompts = [f"q {w}" for w in WORDS[: len(ANSWERS)]]
        dataset = add_prompt_ids(Dataset.from_dict({"prompt": prompts, "answer": ANSWERS}))
        rows = len(ANSWERS) * G
        settings: dict[str, Any] = {}
        if use_vllm:
            settings = {
                "use_vllm": True,
                "vllm_mode": "colocate",
                "vllm_gpu_memory_utilization": 0.3,
                "vllm_max_model_length": 64,
            }
        args = GRPOConfig(
            output_dir=str(Path(tmp) / "out"),
            per_device_train_batch_size=rows,
            num_generations=G,
            max_completion_length=4,
            max_steps=opts.steps,
            learning_rate=1e-3,
            beta=0.0,
            logging_steps=1,
            save_strategy="steps",
            save_steps=opts.steps,
            report_to="none",
            use_cpu=opts.device == "cpu",
            bf16=opts.device == "cuda",
            seed=0,
            disable_tqdm=True,
            log_level="error",
            **settings,
        )
        allocator = coba_rl.CoBAAllocator(coba_rl.CoBAConfig(n_low=2, n_up=3 * G))
        warm_ids = [k for k in range(len(ANSWERS)) for _ in range(4)]
        warm_rewards = [[1.0] * 4, [0.0] * 4, [1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0], [0] * 4]
        allocator.update(warm_ids, [float(r) for rs in warm_rewards for r in rs])
        steps_before = allocator.step
        trainer = Recording(
            model=model,
            reward_funcs=reward,
            args=args,
            train_dataset=dataset,
            processing_class=tokenizer,
            coba_allocator=allocator,
        )
        trainer.batches = []
        requests: list[list[tuple[tuple[int, ...], int]]] = []
        if use_vllm:
            llm = trainer.vllm_generation.llm
            generate = llm.generate

            def recording_generate(prompts: Any, *a: Any, **kw: Any) -> Any:
                params = kw.get("sampling_params", a[0] if a else None)
                n = getattr(params, "n", None)
                requests.append([(tuple(p["prompt_token_ids"]), n) for p in prompts])
                return generate(prompts, *a, **kw)

            llm.generate = recording_generate
        trainer.train()
        saved = Path(args.output_dir) / f"checkpoint-{opts.steps}" / "coba_allocator.json"
        has_state = saved.is_file()

    token_ids = {tuple(tokenizer(p)["input_ids"]): k for k, p in enumerate(prompts)}
    batches = trainer.batches
    print(f"{len(batches)} generation batches of {rows} rows; counts per batch:")
    for b in batches:
        ids, n = np.unique(b["row_ids"], return_counts=True)
        print("   ", {int(i): int(c) for i, c in zip(ids, n, strict=True)})

    if use_vllm:
        ok = len(requests) == len(batches) and all(
            len(r) == rows and all(n == 1 for _, n in r) for r in requests
        )
        check(ok, f"vLLM got {rows} requests with n=1 per generation batch")
        ok = all(
            [token_ids.get(p, -1) for p, _ in r] == b["row_ids"].tolist()
            for r, b in zip(requests, batches, strict=False)
        )
        check(ok, "vLLM requests follow the allocation, prompt by prompt, in row order")
    ok = len(scored) == len(batches) and all(
        s == b["row_ids"].tolist() for s, b in zip(scored, batches, strict=True)
    )
    check(ok, "the reward function scored the allocated rows in order")
    check(
        all(int(b["alloc"].counts.sum()) == rows for b in batches),
        f"every allocation spends exactly the budget ({rows})",
    )
    check(any(len(set(b["alloc"].counts.tolist())) > 1 for b in batches), "an uneven allocation")
    centred = True
    for b in batches:
        for pid in np.unique(b["row_ids"]):
            centred &= abs(float(b["advantages"][b["row_ids"] == pid].mean())) < 1e-3
    check(centred, "advantages are centred within each prompt group")
    check(
        allocator.step - steps_before == len(batches) and has_state,
        "the allocator got feedback every batch and was saved in the checkpoint",
    )
    if use_vllm:
        key = "sampling/sampling_logp_difference/mean"
        diffs = [h[key] for h in trainer.state.log_history if key in h]
        print(f"    mean |logp_vLLM - logp_trainer| per step: {[round(d, 4) for d in diffs]}")
        check(bool(diffs) and max(diffs) < 0.5, "vLLM samples from the trained weights")
    failed = sum(not ok for ok, _ in results)
    print(f"{len(results) - failed}/{len(results)} checks passed")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--run", action="store_true", help="run the smoke test")
    parser.add_argument("--backend", choices=["vllm", "transformers"], default="vllm")
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--model", help="a local checkpoint folder (default: a tiny GPT-2)")
    parser.add_argument("--steps", type=int, default=3)
    # parse_known_args: the test suite runs this file with pytest's own arguments
    opts, _ = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    if opts.backend == "vllm" and opts.device == "cpu":
        parser.error("vLLM colocate mode needs --device cuda")
    reason = missing(opts.backend, opts.device)
    if not opts.run:
        print("GPU smoke test for CoBAGRPOTrainer with vLLM colocate mode (checks 1-6 in")
        print("the module docstring). Start it with: python examples/gpu_smoke_trl.py --run")
        print(f"This machine: {'ready' if reason is None else 'cannot run it: ' + reason}.")
        return 0
    if reason is not None:
        print(f"cannot run the smoke test: {reason}", file=sys.stderr)
        return 2
    return run(opts)


if __name__ == "__main__":
    status = main()
    if status:
        sys.exit(status)
