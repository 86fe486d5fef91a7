"""Quick start: CoBA-RL in a toy training loop, with a fixed rollout budget per step.

Each step draws a batch of prompts, asks the allocator how many rollouts each gets,
"generates" them (a coin flip with the prompt's true pass rate stands in for the policy
and the verifier), and feeds the rewards back. Run: ``python examples/quickstart.py``.
"""

from __future__ import annotations

import numpy as np

import coba_rl

# -- configuration ---------------------------------------------------------------------
SEED = 0
NUM_PROMPTS = 2_000  # dataset size
BATCH = 64  # prompts per step (M)
GROUP = 16  # GRPO's uniform group size; the budget is BATCH * GROUP
STEPS = 40

rng = np.random.default_rng(SEED)
true_pass_rate = rng.beta(0.6, 0.9, size=NUM_PROMPTS)  # stands in for the policy
allocator = coba_rl.CoBAAllocator(coba_rl.CoBAConfig(n_low=2, n_up=128))

for step in range(STEPS):
    prompt_ids = rng.choice(NUM_PROMPTS, size=BATCH, replace=False)  # stable dataset ids
    alloc = allocator.allocate(prompt_ids, BATCH * GROUP)
    assert alloc.counts.sum() == BATCH * GROUP

    # one row per rollout, prompts contiguous and in order (what a trainer generates)
    rows = np.repeat(prompt_ids, alloc.counts)
    rewards = (rng.random(rows.size) < true_pass_rate[rows]).astype(np.float64)
    allocator.update(rows, rewards)

    if step % 10 == 0 or step == STEPS - 1:
        m = alloc.metrics(prefix="coba/")
        print(
            f"step {step:3d}  alpha={m['coba/alpha']:.2f} beta={m['coba/beta']:.2f}  "
            f"rollouts min/mean/max = {m['coba/rollouts/min']:.0f}/"
            f"{m['coba/rollouts/mean']:.0f}/{m['coba/rollouts/max']:.0f}"
        )

print(f"tracked prompts: {len(allocator.tracker)}")
