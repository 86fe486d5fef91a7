"""The README's usage, verbatim (tests/test_typing.py checks that it still matches)."""

# ruff: noqa: E402, B018
# fmt: off

# The setup the README's docs-test comment provides:
prompt_ids = list(range(64))
rollout_prompt_ids = [i for i in prompt_ids for _ in range(4)]
rewards = [float(k % 3 == 0) for k in range(len(rollout_prompt_ids))]

# The README block:
import coba_rl

cfg = coba_rl.CoBAConfig(variant="paper", n_low=2, n_up=128, kappa=11.0)

# stateless: you supply pass rates (NaN = never seen) and the smoothed failure rate
stats = coba_rl.BatchStats(pass_rates=[0.1, 0.5, float("nan")], failure_rate=0.6)
alloc = coba_rl.allocate(stats, 64, cfg)
alloc.counts                 # numpy int64, one count per prompt, sums to exactly 64
alloc.metrics(prefix="coba/")  # flat dict of finite floats for any logger (JSON-safe)

# stateful: tracks per-prompt pass rates and the failure-rate window for you
allocator = coba_rl.CoBAAllocator(cfg)
a = allocator.allocate(prompt_ids, 4096)        # stable ids (dataset index or string)
allocator.update(rollout_prompt_ids, rewards)   # once per step, one entry per rollout
allocator.save("allocator.json")                # atomic; resumes to the same next allocation
allocator = coba_rl.CoBAAllocator.load("allocator.json")
