"""One rank of a two-process CoBAGRPOTrainer run on CPU (gloo), launched with ``torchrun``.

``test_integration_trl_torchrun.py`` starts it as
``python -m torch.distributed.run --standalone --nproc_per_node=2 trl_torchrun_worker.py OUT``.
Each rank trains the toy task of ``trl_toy`` through TRL's real ``Trainer.train()`` and
writes ``OUT/rank<r>.json``: its allocations, the rows its reward function scored, its
advantages and its final allocator state. Framework imports happen inside :func:`main`,
so importing this module (pytest's doctest collection does) needs no framework.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

ANSWERS = ["*", "", "a b c d", "a b"]
G = 4
ROWS_PER_RANK = len(ANSWERS) * G // 2  # two ranks share one generation batch
STEPS = 3


def warmed_history() -> tuple[list[int], list[float]]:
    """One earlier step of feedback, so the first allocation is already uneven."""
    ids = [k for k in range(len(ANSWERS)) for _ in range(4)]
    return ids, [1.0] * 4 + [0.0] * 4 + [1.0, 0.0, 0.0, 0.0] + [1.0, 1.0, 0.0, 0.0]


def main(out: Path) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from trl_toy import Verifier, grpo_args, tiny_model, tiny_tokenizer, toy_dataset

    import coba_rl
    from coba_rl.integrations import trl as ctrl

    torch.set_num_threads(1)

    class Recording(ctrl.CoBAGRPOTrainer):  # type: ignore[misc, name-defined]
        steps: list[dict[str, Any]]

        def _generate_and_score_completions(self, inputs: Any) -> Any:
            output = super()._generate_and_score_completions(inputs)
            alloc = self.last_allocation
            self.steps.append(
                {
                    "counts": alloc.counts.tolist(),
                    "row_ids": self.last_row_prompt_ids.tolist(),
                    "local_advantages": output["advantages"].double().tolist(),
                }
            )
            return output

    allocator = coba_rl.CoBAAllocator(coba_rl.CoBAConfig(n_low=2, n_up=8))
    allocator.update(*warmed_history())
    tok = tiny_tokenizer()
    verifier = Verifier()
    trainer = Recording(
        model=tiny_model(tok),
        reward_funcs=verifier,
        args=grpo_args(
            out / "run", STEPS, ROWS_PER_RANK, G, save_strategy="steps", save_steps=STEPS
        ),
        train_dataset=toy_dataset(ANSWERS),
        processing_class=tok,
        coba_allocator=allocator,
    )
    trainer.steps = []
    trainer.train()
    acc = trainer.accelerator
    dist = torch.distributed
    result = {
        "rank": acc.process_index,
        "world_size": acc.num_processes,
        "backend": str(dist.get_backend()) if dist.is_initialized() else "",
        "generation_batch_size": trainer.args.generation_batch_size,
        "steps": trainer.steps,
        "local_rows": [
            {"ids": ids, "rewards": r, "lengths": n}
            for (ids, r), n in zip(verifier.calls, verifier.lengths, strict=True)
        ],
        "state": trainer.coba_allocator.state_dict(),
    }
    (out / f"rank{acc.process_index}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
