"""The synthetic RLVR model: its world, GRPO's gradient, determinism and bad input."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

import coba_rl
from coba_rl import grpo
from coba_rl._validation import even_split
from coba_rl.sim import PASS_RATE_BINS, RLVRSimulator, SimConfig, TokenBudgetCoBA, run_simulation
from coba_rl.types import Allocation

SMALL = SimConfig(num_train=256, num_heldout=128)


class EvenSplit:
    """GRPO's uniform group size, as a minimal allocator (tests the model, not allocators)."""

    def allocate(self, prompt_ids: Any, budget: int) -> Allocation:
        return Allocation(counts=even_split(budget, len(prompt_ids)), budget=budget)

    def update(self, prompt_ids: Any, rewards: Any) -> None:
        pass


class Broken:
    """Returns one rollout too few (a consistent Allocation, for the wrong budget)."""

    def allocate(self, prompt_ids: Any, budget: int) -> Allocation:
        c = even_split(budget, len(prompt_ids))
        c[0] -= 1
        return Allocation(counts=c, budget=budget - 1)

    def update(self, prompt_ids: Any, rewards: Any) -> None:
        pass


def logistic(x: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    return 1.0 / (1.0 + np.exp(-x))


# -- the world -------------------------------------------------------------------------


def test_initial_pass_rates_look_like_math_rlvr() -> None:
    sim = RLVRSimulator(seed=0)
    p = sim.pass_rates()
    np.testing.assert_allclose(p, logistic(-sim.b_train), rtol=1e-12)  # theta = 0, m = 0
    near0, near1 = np.mean(p < 0.03), np.mean(p > 0.97)
    assert 0.28 < near0 < 0.42, near0  # "roughly a third near 0"
    assert 0.06 < near1 < 0.18, near1  # "a tenth near 1"
    spread = np.histogram(p[(p >= 0.1) & (p <= 0.9)], bins=8, range=(0.1, 0.9))[0]
    assert spread.min() > 0.02 * p.size  # every band in between is populated
    q = sim.heldout_pass_rates()
    assert abs(np.mean(q < 0.03) - near0) < 0.05 and abs(np.mean(q > 0.97) - near1) < 0.05


def test_features_are_unit_vectors_with_a_shared_loading() -> None:
    cfg = SimConfig(num_train=300, shared_loading=0.7)
    sim = RLVRSimulator(cfg, seed=1)
    np.testing.assert_allclose(np.linalg.norm(sim.z_train, axis=1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(sim.z_train[:, 0], 0.7)
    np.testing.assert_allclose(np.linalg.norm(sim.z_heldout, axis=1), 1.0, rtol=1e-12)


def test_world_and_batch_order_do_not_depend_on_the_counts() -> None:
    a, b = RLVRSimulator(SMALL, seed=5), RLVRSimulator(SMALL, seed=5)
    np.testing.assert_array_equal(a.b_train, b.b_train)
    for counts in (np.full(32, 2), np.full(32, 9)):
        ids_a, ids_b = a.next_batch(32), b.next_batch(32)
        np.testing.assert_array_equal(ids_a, ids_b)
        a.step(ids_a, counts)
        b.step(ids_b, counts[::-1] * 0 + 4)
    assert not np.array_equal(RLVRSimulator(SMALL, seed=6).b_train, a.b_train)


def test_batches_are_epochs_of_a_shuffle_dropping_the_remainder() -> None:
    sim = RLVRSimulator(SimConfig(num_train=10, num_heldout=4), seed=0)
    first = np.concatenate([sim.next_batch(3) for _ in range(3)])
    assert sim.epoch == 1 and np.unique(first).size == 9  # one epoch, no repeats
    nxt = sim.next_batch(3)  # only 1 prompt left in epoch 1: a new epoch starts
    assert sim.epoch == 2 and np.unique(nxt).size == 3


# -- GRPO's gradient -------------------------------------------------------------------


def closed_form_update(
    sim: RLVRSimulator, ids: np.ndarray[Any, Any], counts: np.ndarray[Any, Any], k: Any
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """The model's group gradient under plain SGD without gradient noise, per group (ddof = 0)."""
    cfg = sim.config
    theta, memo = sim.theta.copy(), sim.memo.copy()
    grad = np.zeros_like(theta)
    for i, n, ki in zip(ids, counts, k, strict=True):
        p = 1.0 / (1.0 + math.exp(-(float(sim.z_train[i] @ theta) + memo[i] - sim.b_train[i])))
        mu = ki / n
        sigma = math.sqrt(mu * (1.0 - mu))
        bracket = ki * (1 - mu) * (1 - p) + (n - ki) * mu * p
        g = bracket / (sigma + cfg.eps) * sim.z_train[i]
        grad += g
        memo[i] += cfg.lr_mem * float(g @ sim.z_train[i])
    theta = theta + cfg.lr * grad / counts.sum() - cfg.decay * (theta - sim.theta0)
    return theta, memo


@pytest.mark.parametrize("decay", [0.0, 0.05])
def test_gradient_matches_the_closed_form(decay: float) -> None:
    cfg = SimConfig(
        num_train=64,
        num_heldout=16,
        ddof=0,
        lr=0.7,
        lr_mem=0.3,
        decay=decay,
        optimizer="sgd",
        grad_noise=0.0,
    )
    sim = RLVRSimulator(cfg, seed=2)
    sim.theta = np.linspace(-0.5, 0.5, cfg.dim)  # a non-trivial starting policy
    ids = sim.next_batch(20)
    counts = np.array([1, 2, 3, 16, 40] * 4)
    rows = grpo.expand(counts)
    rewards = sim.sample_rewards(ids[rows])
    k = np.bincount(rows, weights=rewards, minlength=ids.size)
    assert ((k > 0) & (k < counts)).sum() >= 3  # the batch has mixed groups
    want_theta, want_memo = closed_form_update(sim, ids, counts, k)
    adv = grpo.group_advantages(rewards, rows, ddof=0, eps=cfg.eps)
    sim.policy_gradient_step(ids[rows], rewards, adv)
    np.testing.assert_allclose(sim.theta, want_theta, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(sim.memo, want_memo, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_zero_variance_groups_teach_nothing(optimizer: str) -> None:
    cfg = SimConfig(num_train=32, num_heldout=8, decay=0.0, optimizer=optimizer, grad_noise=1.0)
    sim = RLVRSimulator(cfg, seed=0)
    ids = np.array([3, 7, 11])
    row_ids = np.repeat(ids, [4, 8, 2])
    rewards = np.array([1.0] * 4 + [0.0] * 8 + [1.0] * 2)  # every group constant
    adv = grpo.group_advantages(rewards, row_ids)
    theta, memo = sim.theta.copy(), sim.memo.copy()
    s = sim.policy_gradient_step(row_ids, rewards, adv)
    assert s.tolist() == [0.0, 0.0, 0.0]
    np.testing.assert_array_equal(sim.theta, theta)
    np.testing.assert_array_equal(sim.memo, memo)


def test_skill_transfers_by_feature_similarity() -> None:
    cfg = SimConfig(
        num_train=200, num_heldout=50, lr=1.0, lr_mem=0.0, decay=0.0, optimizer="sgd", grad_noise=0
    )
    sim = RLVRSimulator(cfg, seed=3)
    logit0 = sim.z_train @ sim.theta - sim.b_train
    heldout0 = sim.heldout_accuracy()
    i = 17
    row_ids = np.full(8, i)
    rewards = np.array([1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0])
    sim.policy_gradient_step(row_ids, rewards, grpo.group_advantages(rewards, row_ids))
    delta = sim.z_train @ sim.theta - sim.b_train - logit0
    assert delta[i] > 0  # a mixed group raises its own prompt's pass rate ...
    cos = sim.z_train @ sim.z_train[i]
    np.testing.assert_allclose(delta, delta[i] * cos, rtol=1e-9, atol=1e-15)  # ... and transfers
    assert sim.heldout_accuracy() != heldout0


def test_memorisation_helps_only_the_prompt_itself() -> None:
    cfg = SimConfig(num_train=50, num_heldout=30, lr=0.0, lr_mem=0.5)
    sim = RLVRSimulator(cfg, seed=4)
    p0, heldout0 = sim.pass_rates(), sim.heldout_accuracy()
    row_ids = np.full(6, 9)
    rewards = np.array([1.0, 0.0, 1.0, 0.0, 0.0, 0.0])
    sim.policy_gradient_step(row_ids, rewards, grpo.group_advantages(rewards, row_ids))
    p1 = sim.pass_rates()
    assert p1[9] > p0[9]
    np.testing.assert_array_equal(np.delete(p1, 9), np.delete(p0, 9))
    assert sim.heldout_accuracy() == heldout0


def test_signed_rewards_give_the_same_update_as_binary() -> None:
    out = {}
    for reward in ("binary", "signed"):
        cfg = SimConfig(num_train=128, num_heldout=32, reward=reward)
        sim = RLVRSimulator(cfg, seed=7)
        res = sim.step(sim.next_batch(32), np.arange(32) % 7 + 2)
        out[reward] = (sim.theta.copy(), res.rewards)
    assert set(out["binary"][1].tolist()) == {0.0, 1.0}
    assert set(out["signed"][1].tolist()) == {-1.0, 1.0}
    np.testing.assert_array_equal(out["signed"][1] == 1.0, out["binary"][1] == 1.0)
    np.testing.assert_allclose(out["signed"][0], out["binary"][0], rtol=1e-5)


def test_per_prompt_weights_scale_each_group_by_mean_size_over_its_size() -> None:
    sim = RLVRSimulator(SimConfig(num_train=64, num_heldout=8), seed=0)
    ids = np.array([1, 2, 3])
    counts = np.array([2, 6, 16])
    rows = grpo.expand(counts)
    rewards = np.array([1.0, 0.0] + [1.0, 0.0, 0.0, 1.0, 0.0, 0.0] + [1.0] * 5 + [0.0] * 11)
    adv, w = grpo.group_advantages(rewards, rows, return_weights=True)
    plain = RLVRSimulator(SimConfig(num_train=64, num_heldout=8), seed=0)
    s_plain = plain.policy_gradient_step(ids[rows], rewards, adv)
    s_weighted = sim.policy_gradient_step(ids[rows], rewards, adv, w)
    np.testing.assert_allclose(s_weighted, s_plain * (24 / 3) / counts, rtol=1e-12)


# -- runs ------------------------------------------------------------------------------


def test_run_is_deterministic_under_a_seed() -> None:
    def run(seed: int) -> dict[str, Any]:
        alloc = coba_rl.CoBAAllocator(coba_rl.CoBAConfig(n_up=32))
        return run_simulation(
            alloc, steps=12, batch_size=32, budget=32 * 8, seed=seed, config=SMALL
        ).as_dict()

    a, b, c = run(11), run(11), run(12)
    assert json_equal(a, b)
    assert not json_equal(a, c)


def json_equal(a: dict[str, Any], b: dict[str, Any]) -> bool:
    import json

    return json.dumps(a) == json.dumps(b)


@pytest.mark.parametrize("variant", ["paper", "release"])
def test_run_records_add_up(variant: str) -> None:
    budget = 48 * 6
    alloc = coba_rl.CoBAAllocator(coba_rl.CoBAConfig(variant=variant, n_up=40))
    h = run_simulation(alloc, steps=20, batch_size=48, budget=budget, seed=0, config=SMALL)
    assert len(h.heldout_accuracy) == len(h.train_accuracy) == 21
    assert len(h.effective_ratio) == len(h.counts_by_bin) == 20
    eff = np.array(h.effective_ratio)
    np.testing.assert_allclose(eff * budget + np.array(h.zero_variance_rollouts), budget)
    assert ((eff >= 0) & (eff <= 1)).all()
    grid = np.array(h.counts_by_bin)
    n_in = np.array(h.prompts_by_bin)
    assert grid.shape == (20, len(PASS_RATE_BINS)) and (n_in.sum(axis=1) == 48).all()
    np.testing.assert_allclose(np.nansum(grid * n_in, axis=1), budget)
    assert np.isfinite(h.alpha).all() and all(
        a + b == 11.0 for a, b in zip(h.alpha, h.beta, strict=True)
    )
    fail = np.array(h.failure_rate)
    assert ((fail >= 0) & (fail <= 1)).all()


def test_uniform_grpo_improves_and_saturates_under_adam() -> None:
    """The default calibration: uniform GRPO at the default lr gains, then flattens."""
    h = run_simulation(EvenSplit(), steps=300, batch_size=256, budget=256 * 16, seed=0)
    acc = np.array(h.heldout_accuracy) * 100
    gain = acc[-1] - acc[0]
    assert 3.0 < gain < 25.0, gain
    assert abs(acc[-1] - acc[200]) < (acc[100] - acc[0]) / 3  # the last third adds little
    assert h.train_accuracy[-1] > h.heldout_accuracy[-1]  # memorisation shows on train only


def test_sgd_still_available() -> None:
    cfg = SimConfig(optimizer="sgd", lr=0.1, decay=0.01, num_train=512, num_heldout=256)
    h = run_simulation(EvenSplit(), steps=60, batch_size=64, budget=64 * 16, seed=0, config=cfg)
    assert h.heldout_accuracy[-1] > h.heldout_accuracy[0]


# -- bad input -------------------------------------------------------------------------


def test_config_rejects_bad_values() -> None:
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        SimConfig(learning_rate=0.1)  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="hard_share \\+ easy_share must not exceed 1"):
        SimConfig(hard_share=0.7, easy_share=0.4)
    with pytest.raises(ValidationError, match="greater than or equal to 2"):
        SimConfig(dim=1)
    with pytest.raises(ValidationError, match="Input should be 'binary' or 'signed'"):
        SimConfig(reward="ternary")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="frozen"):
        SMALL.lr = 2.0  # type: ignore[misc]


def test_simulator_rejects_bad_input() -> None:
    sim = RLVRSimulator(SMALL, seed=0)
    with pytest.raises(TypeError, match="seed must be a non-negative int"):
        RLVRSimulator(SMALL, seed=-1)
    with pytest.raises(ValueError, match=r"batch_size must be in \[1, num_train=256\], got 0"):
        sim.next_batch(0)
    with pytest.raises(ValueError, match=r"batch_size must be in \[1, num_train=256\], got 257"):
        sim.next_batch(257)
    with pytest.raises(TypeError, match="batch_size must be an int"):
        sim.next_batch(2.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"prompt ids must lie in \[0, num_train=256\)"):
        sim.pass_rates([0, 256])
    with pytest.raises(TypeError, match="training-set indices"):
        sim.sample_rewards(["a", "b"])
    with pytest.raises(ValueError, match="prompt_ids must be distinct"):
        sim.step([1, 1], [2, 2])
    with pytest.raises(ValueError, match="counts must have one entry per prompt"):
        sim.step([1, 2], [2, 2, 2])
    with pytest.raises(ValueError, match="same length"):
        sim.policy_gradient_step([1, 1], [1.0], [0.5, -0.5])
    with pytest.raises(ValueError, match=r"advantages must have shape \(2,\)"):
        sim.policy_gradient_step([1, 1], [1.0, 0.0], [0.5])
    with pytest.raises(ValueError, match="weights must be finite"):
        sim.policy_gradient_step([1, 1], [1.0, 0.0], [0.5, -0.5], [1.0, math.nan])


def test_run_simulation_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="steps must be a non-negative int"):
        run_simulation(EvenSplit(), steps=-1, batch_size=8, budget=16, config=SMALL)
    with pytest.raises(ValueError, match="expected 8 counts summing to the budget 32"):
        run_simulation(Broken(), steps=1, batch_size=8, budget=32, config=SMALL)


# -- the optimiser, the noise and interference -----------------------------------------


def test_adam_step_matches_a_hand_written_adam() -> None:
    """Two steps of Adam with AdamW-style decoupled decay toward the start, noise off."""
    cfg = SimConfig(num_train=64, num_heldout=16, lr=0.05, adam_decay=0.3, grad_noise=0.0)
    sim = RLVRSimulator(cfg, seed=5)
    m = v = np.zeros(cfg.dim)
    theta = sim.theta.copy()
    for t in (1, 2):
        ids = sim.next_batch(16)
        counts = np.full(16, 6)
        rows = grpo.expand(counts)
        rewards = sim.sample_rewards(ids[rows])
        adv = grpo.group_advantages(rewards, rows)
        p = sim.pass_rates(ids[rows])
        score = np.where(rewards == 1.0, 1.0 - p, -p)
        g = (adv * score) @ sim.z_train[ids[rows]] / rows.size  # ascent direction
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g * g
        step = (m / (1 - 0.9**t)) / (np.sqrt(v / (1 - 0.999**t)) + 1e-8)
        theta = theta + cfg.lr * step - cfg.lr * cfg.adam_decay * (theta - sim.theta0)
        sim.policy_gradient_step(ids[rows], rewards, adv)
        np.testing.assert_allclose(sim.theta, theta, rtol=1e-10, atol=1e-12)


def test_gradient_noise_is_zero_mean_and_shrinks_with_more_rollouts() -> None:
    """The noise only blurs the direction: averaged over draws it is the noiseless step."""
    base = {"num_train": 64, "num_heldout": 8, "optimizer": "sgd", "lr": 1.0, "decay": 0.0}
    clean = RLVRSimulator(SimConfig(**base, grad_noise=0.0), seed=1)  # type: ignore[arg-type]
    ids = np.arange(8)
    counts = np.full(8, 8)
    rows = grpo.expand(counts)
    rewards = np.tile([1.0, 0.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.0], 8)
    adv = grpo.group_advantages(rewards, rows)
    clean.policy_gradient_step(ids[rows], rewards, adv)
    steps = []
    for seed in range(400):
        noisy = RLVRSimulator(SimConfig(**base, grad_noise=1.0), seed=1)  # type: ignore[arg-type]
        noisy._noise_rng = np.random.default_rng(seed)
        noisy.policy_gradient_step(ids[rows], rewards, adv)
        steps.append(noisy.theta.copy())
    arr = np.array(steps)
    assert np.abs(arr - clean.theta).max() > 0.01  # each draw differs ...
    np.testing.assert_allclose(arr.mean(axis=0), clean.theta, atol=4 * arr.std(axis=0).max() / 20)


def test_prompts_interfere_a_step_can_hurt_another_prompt() -> None:
    cfg = SimConfig(num_train=300, num_heldout=8, optimizer="sgd", lr=1.0, decay=0.0,
                    lr_mem=0.0, grad_noise=0.0)  # fmt: skip
    sim = RLVRSimulator(cfg, seed=2)
    before = sim.pass_rates()
    row_ids = np.full(8, 11)
    rewards = np.array([1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0])
    sim.policy_gradient_step(row_ids, rewards, grpo.group_advantages(rewards, row_ids))
    after = sim.pass_rates()
    assert after[11] > before[11]
    assert (after < before).sum() > 10  # prompts whose specific part points away lose


def test_validation_set_is_separate_from_heldout_and_training() -> None:
    sim = RLVRSimulator(SimConfig(num_train=64, num_heldout=32, num_val=48), seed=0)
    assert sim.z_val.shape == (48, sim.config.dim)
    assert not np.isin(sim.b_val, sim.b_heldout).any() and not np.isin(sim.b_val, sim.b_train).any()
    same = RLVRSimulator(SimConfig(num_train=64, num_heldout=32, num_val=8), seed=0)
    np.testing.assert_array_equal(same.b_heldout, sim.b_heldout)  # val size leaves held-out alone
    assert 0.0 < sim.validation_accuracy() < 1.0


# -- response lengths ------------------------------------------------------------------


def sample_many(sim: RLVRSimulator, prompt: int, rows: int) -> tuple[Any, Any]:
    """``rows`` rollouts of one prompt at its current pass rate: (rewards, lengths)."""
    ids = np.full(rows, prompt)
    rewards = sim.sample_rewards(ids)
    return rewards, sim.sample_lengths(ids, rewards)


def test_lengths_grow_with_difficulty() -> None:
    """A prompt's mean length is 250 + 2500 (1 - p) e_i: harder prompts write longer."""
    cfg = SimConfig(num_train=64, num_heldout=8, length_limit=10**6)  # no truncation
    sim = RLVRSimulator(cfg, seed=3)
    p = sim.pass_rates()
    means = []
    for i in range(64):
        _, lengths = sample_many(sim, i, 4000)
        means.append(lengths.mean())
        want = 250.0 + 2500.0 * (1.0 - p[i]) * sim.length_factor[i]
        assert abs(lengths.mean() - want) < 0.05 * want, (i, lengths.mean(), want)
    # across prompts, harder (lower p) means longer, despite the per-prompt factor e_i
    order = np.argsort(p)
    hard, easy = np.array(means)[order[:20]], np.array(means)[order[-20:]]
    assert hard.mean() > 3 * easy.mean()
    assert np.corrcoef(p, means)[0, 1] < -0.7
    # the per-prompt factor is log-normal(0, 0.35), fixed for the run
    assert abs(np.log(sim.length_factor).std() - 0.35) < 0.1
    np.testing.assert_array_equal(sim.length_factor, RLVRSimulator(cfg, seed=3).length_factor)


def test_failures_are_longer_than_successes_of_the_same_prompt() -> None:
    sim = RLVRSimulator(SimConfig(num_train=256, num_heldout=8, length_limit=10**6), seed=0)
    p = sim.pass_rates()
    mid = int(np.argmin(np.abs(p - 0.5)))
    rewards, lengths = sample_many(sim, mid, 20000)
    ratio = lengths[rewards == 0].mean() / lengths[rewards == 1].mean()
    assert abs(ratio - 1.5) < 0.05, ratio


def test_lengths_stop_at_the_limit() -> None:
    cfg = SimConfig(num_train=256, num_heldout=8, length_limit=1000)
    sim = RLVRSimulator(cfg, seed=1)
    p = sim.pass_rates()
    hardest = int(np.argmin(p))  # mean about 250 + 2500 e_i > 1000
    _, lengths = sample_many(sim, hardest, 2000)
    assert lengths.max() == 1000 and (lengths == 1000).mean() > 0.5
    ids = sim.next_batch(64)
    out = sim.step(ids, np.full(64, 8))
    assert out.lengths.dtype == np.int64 and out.lengths.shape == (512,)
    assert out.lengths.min() >= 1 and out.lengths.max() <= 1000


def test_lengths_are_deterministic_under_a_seed() -> None:
    def lengths(seed: int) -> list[int]:
        sim = RLVRSimulator(SMALL, seed=seed)
        out: list[int] = []
        for _ in range(3):
            out += sim.step(sim.next_batch(16), np.full(16, 4)).lengths.tolist()
        return out

    assert lengths(4) == lengths(4)
    assert lengths(4) != lengths(5)


def test_the_length_model_never_moves_rewards_or_learning() -> None:
    """Lengths have their own random stream: changing every length constant leaves the
    rewards, the noise and the learning curve bit-for-bit alike; only the tokens move."""
    other = SMALL.model_copy(
        update={
            "length_limit": 300,
            "length_base": 10.0,
            "length_span": 90000.0,
            "length_prompt_spread": 0.0,
            "length_rollout_spread": 2.0,
            "failure_length_ratio": 4.0,
        }
    )
    runs = [
        run_simulation(EvenSplit(), steps=8, batch_size=32, budget=32 * 6, seed=2, config=c)
        for c in (SMALL, other)
    ]
    a, b = (h.as_dict() for h in runs)
    for key in ("generated_tokens", "truncated_rollouts"):
        assert a.pop(key) != b.pop(key)
    assert json_equal(a, b)
    assert max(runs[1].generated_tokens) <= 300 * 32 * 6


def test_a_step_trains_exactly_as_it_would_without_lengths() -> None:
    """``step`` equals its parts run by hand with no length drawn: rewards, advantages and
    the Adam step see the same random draws whether or not lengths are generated."""
    a, b = RLVRSimulator(SMALL, seed=7), RLVRSimulator(SMALL, seed=7)
    for _ in range(4):
        ids = a.next_batch(32)
        np.testing.assert_array_equal(ids, b.next_batch(32))
        counts = np.arange(32) % 5 + 2
        out = a.step(ids, counts)
        rows = grpo.expand(counts)
        rewards = b.sample_rewards(ids[rows])  # the pieces of step(), without sample_lengths
        adv = grpo.group_advantages(rewards, rows, ddof=1, eps=1e-6)
        b.policy_gradient_step(ids[rows], rewards, adv)
        np.testing.assert_array_equal(out.rewards, rewards)
        np.testing.assert_array_equal(a.theta, b.theta)
        np.testing.assert_array_equal(a.memo, b.memo)


def test_history_counts_rollouts_and_generated_tokens() -> None:
    budget = 32 * 6
    h = run_simulation(EvenSplit(), steps=5, batch_size=32, budget=budget, seed=0, config=SMALL)
    assert h.rollouts == [budget] * 5
    assert len(h.generated_tokens) == len(h.truncated_rollouts) == 5
    assert all(250 <= t / budget <= 4096 for t in h.generated_tokens)
    assert h.cumulative_tokens() == [0, *np.cumsum(h.generated_tokens).tolist()]
    assert all(math.isnan(x) for x in h.token_budget + h.expected_tokens)  # rollout-only
    # the recorded tokens are the rows' lengths: replay the same seed by hand
    sim = RLVRSimulator(SMALL, seed=0)
    ids = sim.next_batch(32)
    assert h.generated_tokens[0] == int(sim.step(ids, np.full(32, 6)).lengths.sum())


def test_token_budget_allocator_holds_its_budget_in_the_loop() -> None:
    """CoBA-RL by tokens: every step's expected tokens fit ``T``, ``T`` is the expected
    tokens of ``B`` uniform rollouts, and the rollouts it buys vary around ``B``."""
    limit = SMALL.length_limit
    inner = coba_rl.CoBAAllocator(
        coba_rl.CoBAConfig(n_up=64, default_tokens_per_rollout=float(limit))
    )
    alloc = TokenBudgetCoBA(inner, float(limit))
    budget = 32 * 8
    h = run_simulation(alloc, steps=24, batch_size=32, budget=budget, seed=0, config=SMALL)
    T, spent = np.array(h.token_budget), np.array(h.expected_tokens)
    assert np.isfinite(T).all() and (spent <= T * (1 + 1e-9)).all()
    assert (spent >= 0.9 * T).all()  # it fills the budget, not a fraction of it
    # first epoch (8 steps of 32 of 256 prompts): every length unknown, each costs the limit
    np.testing.assert_allclose(T[:8], budget * limit)
    assert h.rollouts[:8] == [budget] * 8
    assert len(set(h.rollouts[8:])) > 1 and h.rollouts[8:] != [budget] * 16
    # later steps: T is B / M times the batch's estimated lengths, which the update fed
    assert (T[8:] < 0.8 * budget * limit).all()
    seen = inner.mean_lengths(np.arange(256))
    assert np.isfinite(seen).all() and (seen >= 1).all() and (seen <= limit).all()
    # the tokens it actually generates stay near its expected spend
    ratio = sum(h.generated_tokens[8:]) / spent[8:].sum()
    assert 0.8 < ratio < 1.1, ratio


def test_config_rejects_bad_length_constants() -> None:
    with pytest.raises(ValidationError, match="length_limit\n  Input should be greater than"):
        SimConfig(length_limit=0)
    with pytest.raises(ValidationError, match="failure_length_ratio\n  Input should be greater"):
        SimConfig(failure_length_ratio=0.0)
    with pytest.raises(ValidationError, match="length_rollout_spread"):
        SimConfig(length_rollout_spread=-0.1)
    with pytest.raises(ValidationError, match="length_base"):
        SimConfig(length_base=math.nan)
