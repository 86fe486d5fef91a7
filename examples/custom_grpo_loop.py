"""A minimal numpy GRPO loop with per-prompt rollout counts, against the synthetic model.

Each step: draw a batch of prompts, ask the allocator for per-prompt counts, lay out one
row per rollout (``coba_rl.grpo.expand``), score the rows, compute GRPO advantages on the
ragged groups (``coba_rl.grpo.group_advantages``), take a policy-gradient step, and feed
the rewards back to the allocator. The "policy" and "verifier" are the synthetic model
of ``coba_rl.sim``; a real trainer replaces those two calls with generation, a reward
function and its optimiser. Run: ``python examples/custom_grpo_loop.py``.
"""

from __future__ import annotations

import numpy as np

import coba_rl
from coba_rl.sim import RLVRSimulator, SimConfig

# -- configuration ---------------------------------------------------------------------
SEED = 0
BATCH = 64  # prompts per step (M)
GROUP = 16  # GRPO's uniform group size; the budget is BATCH * GROUP
STEPS = 40
PER_PROMPT_WEIGHTS = True  # weight rows by G / n_i so each prompt counts equally

sim = RLVRSimulator(SimConfig(num_train=512, num_heldout=512), seed=SEED)
allocator = coba_rl.CoBAAllocator(coba_rl.CoBAConfig(variant="paper", n_low=2, n_up=64))
print(f"held-out accuracy before training: {sim.heldout_accuracy():.3f}")

for step in range(1, STEPS + 1):
    prompt_ids = sim.next_batch(BATCH)  # stable dataset ids
    alloc = allocator.allocate(prompt_ids, BATCH * GROUP)

    # one row per rollout, contiguous per prompt and in batch order
    rows = coba_rl.grpo.expand(alloc.counts)
    row_prompt_ids = prompt_ids[rows]
    rewards = sim.sample_rewards(row_prompt_ids)  # generation + verifier, {0, 1}

    # GRPO advantages on ragged groups, plus optional G / n_i row weights
    advantages, weights = coba_rl.grpo.group_advantages(
        rewards, rows, ddof=1, eps=1e-6, return_weights=True
    )
    sim.policy_gradient_step(
        row_prompt_ids, rewards, advantages, weights if PER_PROMPT_WEIGHTS else None
    )

    allocator.update(row_prompt_ids, rewards)  # one entry per rollout

    if step % 10 == 0:
        mixed = np.bincount(rows, weights=advantages != 0.0, minlength=BATCH) > 0
        print(
            f"step {step:3d}  held-out acc {sim.heldout_accuracy():.3f}  "
            f"rollouts {alloc.counts.min()}-{alloc.counts.max()}  "
            f"mixed-outcome groups {mixed.mean():.2f}  "
            f"next alpha {allocator.alpha:.2f}  failure rate {allocator.failure_rate:.2f}"
        )
