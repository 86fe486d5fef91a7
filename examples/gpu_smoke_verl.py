"""GPU smoke check: CoBA-RL's verl launcher on verl's V1 trainer with vLLM, for real.

Run it on a machine with a CUDA GPU, verl 0.9 with vLLM, and a small instruct model
on local disk (nothing is downloaded)::

    MODEL_PATH=/models/Qwen2.5-0.5B-Instruct python examples/gpu_smoke_verl.py

What it does, in a temporary folder (kept with ``KEEP=1``):

1. writes a tiny arithmetic data set in verl's format (``data_source="openai/gsm8k"``,
   so verl's built-in rule reward scores it) as two training files whose dataset indices
   overlap, and a validation file;
2. runs ``python -m coba_rl.integrations.verl`` (verl's ``ppo_trainer`` overrides plus
   ``coba.*``) for 4 steps of GRPO on one GPU, saving every 2 steps and dumping every
   rollout (``trainer.rollout_data_dir``);
3. runs it again to step 6 with ``trainer.resume_mode=auto``.

What it checks, each printed as ``PASS`` or ``FAIL``:

- ``global_step_{2,4,6}/coba_allocator.json`` exist and record 2, 4 and 6 updates, and
  16 distinct prompt ids (two files of 8 prompts with indices 0-7 each);
- in verl's rollout dump, every training step has ``train_batch_size * rollout.n``
  sessions, each prompt between ``n_low`` and ``n_up`` of them, and after the first
  appearances the counts differ between prompts (vLLM's agent loop honoured each
  prompt's ``__rollout_n__``);
- the resumed run restored the allocator (its step-6 state counts 6 updates, not 2).

CI has no GPU, so CI never runs this; on a machine without a CUDA GPU or without
``MODEL_PATH`` the script prints why and does nothing.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter, defaultdict
from pathlib import Path

from coba_rl import CoBAAllocator

BATCH, N, N_LOW, N_UP = 8, 4, 2, 12
PROMPTS_PER_FILE = 8


def main() -> None:
    reason = _why_not()
    if reason:
        print(f"gpu_smoke_verl: not run: {reason}")
        return
    root = Path(tempfile.mkdtemp(prefix="coba_verl_smoke_"))
    try:
        ok = _run(root, Path(os.environ["MODEL_PATH"]))
    finally:
        if os.environ.get("KEEP") != "1":
            shutil.rmtree(root, ignore_errors=True)
        else:
            print(f"kept {root}")
    print("gpu_smoke_verl: PASSED" if ok else "gpu_smoke_verl: FAILED")
    if not ok:
        raise SystemExit(1)


def _why_not() -> str | None:
    for module in ("verl", "vllm", "torch", "pandas"):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed (pip install 'coba-rl[verl]' vllm)"
    import torch

    if not torch.cuda.is_available():
        return "no CUDA GPU"
    model = os.environ.get("MODEL_PATH")
    if not model or not Path(model).is_dir():
        return "set MODEL_PATH to a local Hugging Face model folder (nothing is downloaded)"
    return None


def _write_data(root: Path) -> dict[str, Path]:
    import pandas as pd

    def rows(op: str, offset: int) -> list[dict[str, object]]:
        out = []
        for i in range(PROMPTS_PER_FILE):
            a, b = i + offset, 2 * i + 1
            answer = a + b if op == "+" else a * b
            out.append(
                {
                    "data_source": "openai/gsm8k",
                    "prompt": [
                        {
                            "role": "user",
                            "content": f"What is {a} {op} {b}? Reason briefly, then write "
                            "the final answer after '####'.",
                        }
                    ],
                    "ability": "math",
                    "reward_model": {"style": "rule", "ground_truth": str(answer)},
                    "extra_info": {"index": i, "split": "train"},
                }
            )
        return out

    files = {"a": root / "add.parquet", "b": root / "mul.parquet", "val": root / "val.parquet"}
    pd.DataFrame(rows("+", 3)).to_parquet(files["a"])
    pd.DataFrame(rows("*", 2)).to_parquet(files["b"])
    pd.DataFrame(rows("+", 40)[:4]).to_parquet(files["val"])
    return files


def _command(root: Path, files: dict[str, Path], model: Path, steps: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "coba_rl.integrations.verl",
        "algorithm.adv_estimator=grpo",
        f"data.train_files=[{files['a']},{files['b']}]",
        f"data.val_files=[{files['val']}]",
        f"data.train_batch_size={BATCH}",
        "data.max_prompt_length=128",
        "data.max_response_length=128",
        f"actor_rollout_ref.model.path={model}",
        f"actor_rollout_ref.rollout.n={N}",
        "actor_rollout_ref.rollout.name=vllm",
        "actor_rollout_ref.rollout.gpu_memory_utilization=0.4",
        "actor_rollout_ref.rollout.tensor_model_parallel_size=1",
        "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=8",
        "actor_rollout_ref.rollout.val_kwargs.n=2",
        "actor_rollout_ref.actor.ppo_mini_batch_size=8",
        "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=8",
        "actor_rollout_ref.actor.use_kl_loss=false",
        "algorithm.use_kl_in_reward=false",
        "trainer.n_gpus_per_node=1",
        "trainer.nnodes=1",
        "trainer.logger=[console]",
        f"trainer.default_local_dir={root / 'ckpt'}",
        f"trainer.rollout_data_dir={root / 'rollouts'}",
        f"trainer.total_training_steps={steps}",
        "trainer.save_freq=2",
        "trainer.test_freq=2",
        "trainer.resume_mode=auto",
        f"coba.bounds=[{N_LOW},{N_UP}]",
        "coba.window=2",
    ]


def _run(root: Path, model: Path) -> bool:
    files = _write_data(root)
    results: list[tuple[str, bool]] = []
    for steps in (4, 6):
        proc = subprocess.run(_command(root, files, model, steps), cwd=root, check=False)
        results.append((f"launcher run to step {steps} exits 0", proc.returncode == 0))
        if proc.returncode != 0:
            break
    for step, updates in ((2, 2), (4, 4), (6, 6)):
        path = root / "ckpt" / f"global_step_{step}" / "coba_allocator.json"
        state = json.loads(path.read_text()) if path.is_file() else {}
        results.append(
            (f"{path.name} at step {step} records {updates} updates", state.get("step") == updates)
        )
        tracked = len(CoBAAllocator.from_state_dict(state).tracker) if state else 0
        results.append((f"step {step}: 16 distinct prompt ids", tracked == 16))
    sessions = _sessions_per_step(root / "rollouts")
    results.append(("rollout dump has 6 training steps", sorted(sessions) == [1, 2, 3, 4, 5, 6]))
    uneven = False
    for step, per_prompt in sorted(sessions.items()):
        counts = list(per_prompt.values())
        results.append((f"step {step}: {BATCH * N} sessions in total", sum(counts) == BATCH * N))
        results.append(
            (
                f"step {step}: {N_LOW} to {N_UP} sessions per prompt",
                all(N_LOW <= c <= N_UP for c in counts),
            )
        )
        uneven = uneven or (step > 2 and len(set(counts)) > 1)
    results.append(("per-prompt session counts differ after the first epoch", uneven))
    for name, ok in results:
        print(f"{'PASS' if ok else 'FAIL'}  {name}")
    return all(ok for _, ok in results)


def _sessions_per_step(folder: Path) -> dict[int, dict[str, int]]:
    """Sessions per prompt uid of each step, from verl's rollout dump ({uid}_{session}_{i})."""
    out: dict[int, Counter[str]] = defaultdict(Counter)
    for path in folder.glob("*.jsonl"):
        step = int(path.stem)
        seen: set[tuple[str, str]] = set()
        for line in path.read_text().splitlines():
            uid, session, _ = json.loads(line)["uid"].rsplit("_", 2)
            if uid.startswith("pad"):  # rows verl adds to fill data-parallel batches
                continue
            if (uid, session) not in seen:
                seen.add((uid, session))
                out[step][uid] += 1
    return {k: dict(v) for k, v in out.items()}


if __name__ == "__main__":
    main()
