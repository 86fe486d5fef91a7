"""CoBA-RL on verl's own data path: DataProto repeats, verl's GRPO advantage, a checkpoint.

Three training steps as ``RayPPOTrainer.fit`` runs them, on CPU and without Ray workers:
allocate over the batch's dataset indices, repeat the prompt batch with
``DataProto.sample_level_repeat`` (``repeat_rows``), score the rows with a toy verifier,
compute verl's ``compute_grpo_outcome_advantage``, feed the scores back, and save the
allocator beside a ``global_step_N`` folder. A real run uses the launcher,
``python -m coba_rl.integrations.verl`` with verl's overrides (see
docs/integrations/verl.md). Needs ``pip install 'coba-rl[verl]'``; without it the
example says so and stops. Run: ``python examples/verl_coba.py``.
"""

from __future__ import annotations

import importlib.util
import tempfile
import uuid
from pathlib import Path

import numpy as np

import coba_rl

# -- configuration ---------------------------------------------------------------------
SEED = 0
NUM_PROMPTS = 200  # dataset size
BATCH = 16  # train_batch_size (prompts per step)
N = 8  # rollout.n: the budget is BATCH * N rows, exactly
STEPS = 3


def main() -> None:
    if importlib.util.find_spec("verl") is None or importlib.util.find_spec("torch") is None:
        print("verl is not installed: pip install 'coba-rl[verl]' to run this example.")
        return

    import torch
    from verl.protocol import DataProto
    from verl.trainer.ppo.core_algos import compute_grpo_outcome_advantage

    from coba_rl.integrations.verl import (
        dataset_indices,
        feed_back,
        load_allocator,
        map_uids,
        repeat_rows,
        save_allocator,
    )

    rng = np.random.default_rng(SEED)
    true_pass_rate = rng.beta(0.6, 0.9, size=NUM_PROMPTS)  # stands in for the policy
    allocator = coba_rl.CoBAAllocator(coba_rl.CoBAConfig(n_low=2, n_up=4 * N))

    for step in range(1, STEPS + 1):
        index = rng.choice(NUM_PROMPTS, size=BATCH, replace=False)
        batch = DataProto.from_single_dict(
            {
                "input_ids": torch.zeros(BATCH, 4, dtype=torch.long),
                "index": np.array(index.tolist(), dtype=object),  # from extra_info["index"]
                "uid": np.array([str(uuid.uuid4()) for _ in range(BATCH)], dtype=object),
            }
        )
        ids = dataset_indices(batch)  # refuses duplicate indices (verl's default of 0)
        alloc = allocator.allocate(ids, BATCH * N)
        uid_to_id = map_uids(batch, ids)
        batch = repeat_rows(batch, alloc.counts, total=BATCH * N)  # was batch.repeat(N)

        rows = batch.non_tensor_batch["index"].astype(int)
        scores = (rng.random(len(batch)) < true_pass_rate[rows]).astype(np.float32)
        token_scores = torch.zeros(len(batch), 3)
        token_scores[:, -1] = torch.from_numpy(scores)  # the outcome reward, last token
        batch.batch["token_level_scores"] = token_scores
        adv, _ = compute_grpo_outcome_advantage(
            token_scores, torch.ones_like(token_scores), batch.non_tensor_batch["uid"]
        )
        feed_back(allocator, batch, uid_to_id=uid_to_id)

        m = alloc.metrics(prefix="coba/")
        print(
            f"step {step}  rows {len(batch)}  rollouts min/mean/max = "
            f"{m['coba/rollouts/min']:.0f}/{m['coba/rollouts/mean']:.0f}/"
            f"{m['coba/rollouts/max']:.0f}  |adv| mean {adv[:, -1].abs().mean():.3f}"
        )

    with tempfile.TemporaryDirectory() as root:
        step_dir = Path(root) / f"global_step_{STEPS}"
        save_allocator(allocator, step_dir)
        resumed = coba_rl.CoBAAllocator(allocator.config)
        assert load_allocator(resumed, step_dir)
        nxt = rng.choice(NUM_PROMPTS, size=BATCH, replace=False)
        same = np.array_equal(
            resumed.allocate(nxt, BATCH * N).counts, allocator.allocate(nxt, BATCH * N).counts
        )
        print(f"resumed from global_step_{STEPS}: next allocation identical = {same}")


if __name__ == "__main__":
    main()
