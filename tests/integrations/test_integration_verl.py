"""coba_rl.integrations.verl against the real verl package on CPU (no GPU, no Ray workers).

Every ``DataProto``, the GRPO advantage and the checkpoint code paths are verl's own; only
the Ray worker groups (actor update, checkpoint writer) are replaced by small stand-ins.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytestmark = pytest.mark.verl

torch = pytest.importorskip("torch")
protocol = pytest.importorskip("verl.protocol")
core_algos = pytest.importorskip("verl.trainer.ppo.core_algos")
ray_trainer = pytest.importorskip("verl.trainer.ppo.ray_trainer")

from omegaconf import OmegaConf  # noqa: E402  (after the importorskips)

import coba_rl  # noqa: E402
from coba_rl.grpo import group_advantages  # noqa: E402
from coba_rl.integrations import STATE_FILENAME  # noqa: E402
from coba_rl.integrations import verl as cverl  # noqa: E402

DataProto = protocol.DataProto
N = 4  # rollout.n
RESP_LEN = 5


def prompt_batch(indices: list[int], seed: int = 0) -> Any:
    """A prompt batch as RayPPOTrainer.fit builds it: tensors, dataset index, fresh uids."""
    g = torch.Generator().manual_seed(seed)
    m = len(indices)
    batch = DataProto.from_single_dict(
        {
            "input_ids": torch.randint(0, 50, (m, 6), generator=g),
            "attention_mask": torch.ones(m, 6, dtype=torch.long),
            "index": np.array(indices, dtype=object),
            "data_source": np.array(["toy"] * m, dtype=object),
        }
    )
    batch.non_tensor_batch["uid"] = np.array([str(uuid.uuid4()) for _ in range(m)], dtype=object)
    return batch


def warmed_allocator(indices: list[int], n_up: int = 3 * N) -> coba_rl.CoBAAllocator:
    """An allocator with one step of history, so its counts are uneven."""
    alloc = coba_rl.CoBAAllocator(coba_rl.CoBAConfig(n_low=2, n_up=n_up))
    rates = np.linspace(0.0, 1.0, len(indices))
    ids = np.repeat(indices, N)
    rewards = (np.tile(np.arange(N), len(indices)) < np.repeat(rates * N, N)).astype(float)
    alloc.update(ids, rewards)
    return alloc


def test_repeat_rows_on_a_real_dataproto_keeps_uid_and_index() -> None:
    indices = [17, 3, 42, 8, 25]
    batch = prompt_batch(indices)
    counts = warmed_allocator(indices).allocate(indices, len(indices) * N).counts
    assert len(set(counts.tolist())) > 1  # the test needs uneven counts

    out = cverl.repeat_rows(batch, counts, total=len(indices) * N)

    assert len(out) == len(indices) * N
    rows = np.repeat(np.arange(len(indices)), counts)
    assert out.non_tensor_batch["index"].tolist() == [indices[i] for i in rows]
    assert out.non_tensor_batch["uid"].tolist() == batch.non_tensor_batch["uid"][rows].tolist()
    torch.testing.assert_close(out.batch["input_ids"], batch.batch["input_ids"][rows])


def test_repeat_rows_refuses_a_wrong_total() -> None:
    batch = prompt_batch([1, 2, 3])
    with pytest.raises(ValueError, match=r"counts sum to 11, but verl needs exactly 12 rows"):
        cverl.repeat_rows(batch, [4, 4, 3], total=12)
    with pytest.raises(ValueError, match="counts has 2 entries but the batch has 3"):
        cverl.repeat_rows(batch, [6, 6])


def test_dataset_indices_detects_the_default_zero_and_missing_column() -> None:
    # RLHFDataset turns a missing extra_info["index"] into 0 for every row
    with pytest.raises(ValueError, match=r"duplicate prompt id 0 .*defaults a missing dataset"):
        cverl.dataset_indices(prompt_batch([0, 0, 0]))
    batch = prompt_batch([1, 2])
    batch.non_tensor_batch.pop("index")
    with pytest.raises(ValueError, match=r"no non-tensor column 'index'.*extra_info"):
        cverl.dataset_indices(batch)
    assert cverl.dataset_indices(prompt_batch([5, 1, 9])).tolist() == [5, 1, 9]


def _scored(expanded: Any, scores: np.ndarray) -> None:
    """Put each row's outcome score on its last response token, as verl's reward does."""
    rows = len(expanded)
    tlr = torch.zeros(rows, RESP_LEN)
    tlr[:, -1] = torch.as_tensor(scores, dtype=torch.float32)
    expanded.batch["token_level_scores"] = tlr
    expanded.batch["token_level_rewards"] = tlr.clone()
    expanded.batch["response_mask"] = torch.ones(rows, RESP_LEN)


@pytest.mark.parametrize("norm_by_std", [True, False])
@pytest.mark.parametrize("n_low", [1, 2])
def test_verl_grpo_advantage_equals_group_advantages(norm_by_std: bool, n_low: int) -> None:
    rng = np.random.default_rng(7)
    indices = list(range(100, 112))
    cfg = coba_rl.CoBAConfig(n_low=n_low, n_up=3 * N)
    alloc = coba_rl.CoBAAllocator(cfg)
    alloc.update(np.repeat(indices, N), rng.integers(0, 2, len(indices) * N).astype(float))
    counts = alloc.allocate(indices, len(indices) * N).counts
    expanded = cverl.repeat_rows(prompt_batch(indices, seed=1), counts, total=len(indices) * N)
    scores = np.where(rng.random(len(expanded)) < 0.5, 1.0, 0.0)
    scores[:3] = [0.25, 0.75, 0.5]  # non-binary rewards too
    _scored(expanded, scores)

    # verl's own entry point (ray_trainer.compute_advantage -> compute_grpo_outcome_advantage)
    out = ray_trainer.compute_advantage(
        expanded,
        adv_estimator=core_algos.AdvantageEstimator.GRPO,
        norm_adv_by_std_in_grpo=norm_by_std,
    )
    verl_adv = out.batch["advantages"][:, -1].double().numpy()

    ours = group_advantages(
        scores,
        expanded.non_tensor_batch["uid"],
        ddof=1,
        eps=1e-6,
        scale=norm_by_std,
        singleton="raw",  # verl: mean 0, std 1 for a group of one
    )
    np.testing.assert_allclose(verl_adv, ours, rtol=1e-5, atol=1e-6)
    # every token of a row carries the row's advantage
    adv = out.batch["advantages"]
    torch.testing.assert_close(adv, adv[:, -1:].expand_as(adv))


def test_singleton_group_gets_the_raw_reward_in_verl() -> None:
    """Why n_low >= 2: verl gives a lone rollout mean 0 and std 1, i.e. its raw reward."""
    expanded = cverl.repeat_rows(prompt_batch([1, 2]), [1, 3])
    _scored(expanded, np.array([1.0, 1.0, 0.0, 0.0]))
    adv, _ = core_algos.compute_grpo_outcome_advantage(
        expanded.batch["token_level_rewards"],
        expanded.batch["response_mask"],
        expanded.non_tensor_batch["uid"],
    )
    assert adv[0, -1].item() == pytest.approx(1.0 / (1.0 + 1e-6))
    zeroed = group_advantages([1.0, 1.0, 0.0, 0.0], expanded.non_tensor_batch["uid"])
    assert zeroed[0] == 0.0


# -- the trainer mixin, driven through verl's own methods --------------------------------


class _StubActor:
    """Stands in for the Ray actor update, which needs GPU worker groups."""

    def _update_actor(self, batch: Any) -> Any:
        return DataProto(meta_info={"metrics": {"actor/pg_loss": [0.5, 0.7]}})


class _StubWorkerGroup:
    def __init__(self) -> None:
        self.saved: list[str] = []
        self.loaded: list[str] = []

    def save_checkpoint(self, local_path: str, *args: Any, **kwargs: Any) -> None:
        os.makedirs(local_path, exist_ok=True)
        self.saved.append(local_path)

    def load_checkpoint(self, local_path: str, *args: Any, **kwargs: Any) -> None:
        self.loaded.append(local_path)


class _StubLoader:
    def __len__(self) -> int:
        return 100

    def state_dict(self) -> dict[str, int]:
        return {"pos": 3}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.state = state


class Trainer(cverl.CoBARayTrainerMixin, _StubActor, ray_trainer.RayPPOTrainer):
    pass


def make_trainer(root: Path, allocator: coba_rl.CoBAAllocator) -> Any:
    t = object.__new__(Trainer)  # RayPPOTrainer.__init__ builds Ray resource pools
    t.config = OmegaConf.create(
        {
            "actor_rollout_ref": {"rollout": {"n": N}, "actor": {"checkpoint": {}}},
            "coba": {"prompt_id": "index"},  # the dataset index alone: one training file
            "trainer": {
                "default_local_dir": str(root),
                "default_hdfs_dir": None,
                "resume_mode": "auto",
                "resume_from_path": None,
                "del_local_ckpt_after_load": False,
            },
        }
    )
    t.actor_rollout_wg = _StubWorkerGroup()
    t.train_dataloader = _StubLoader()
    t.use_critic = False
    t.global_steps = 0
    t.attach_coba(allocator)
    return t


def toy_pass_rate(index: int) -> float:
    return (index % 5) / 4.0  # 0, .25, .5, .75, 1


def fit_step(t: Any, indices: list[int], seed: int) -> Any:
    """The data path of one RayPPOTrainer.fit step, in fit's order, with toy generation."""
    rng = np.random.default_rng(seed)
    batch = prompt_batch(indices, seed=seed)
    gen_batch = t._get_gen_batch(batch)
    gen_out = gen_batch.repeat(repeat_times=N, interleave=True)
    rows = len(gen_out)
    gen_out.batch = protocol.TensorDict(
        {"responses": torch.zeros(rows, RESP_LEN, dtype=torch.long)}, batch_size=(rows,)
    )
    batch = batch.repeat(repeat_times=N, interleave=True)
    batch = batch.union(gen_out)
    # _balance_batch reorders rows; feeding back must not depend on row order
    batch.reorder(torch.as_tensor(rng.permutation(len(batch))))
    ids = np.array([t._coba_uid_to_id[u] for u in batch.non_tensor_batch["uid"]])
    p = np.array([toy_pass_rate(i) for i in ids])
    _scored(batch, (rng.random(len(batch)) < p).astype(float))
    lengths = rng.integers(1, RESP_LEN + 1, len(batch))  # ragged responses, right-padded
    batch.batch["response_mask"] = (
        torch.arange(RESP_LEN) < torch.as_tensor(lengths)[:, None]
    ).float()
    batch.non_tensor_batch["toy_length"] = lengths  # what the reference is fed
    batch = ray_trainer.compute_advantage(batch, adv_estimator=core_algos.AdvantageEstimator.GRPO)
    out = t._update_actor(batch)
    return batch, ray_trainer.reduce_metrics(out.meta_info["metrics"])


def test_mixin_runs_fits_data_path_and_logs_metrics(tmp_path: Path) -> None:
    indices = list(range(20))
    t = make_trainer(tmp_path, coba_rl.CoBAAllocator(coba_rl.CoBAConfig(n_low=2, n_up=3 * N)))
    reference = coba_rl.CoBAAllocator(coba_rl.CoBAConfig(n_low=2, n_up=3 * N))
    for step in range(3):
        batch, metrics = fit_step(t, indices, seed=step)
        alloc = t.last_allocation
        assert alloc is not None and len(batch) == len(indices) * N
        expected = reference.allocate(indices, len(indices) * N)
        np.testing.assert_array_equal(alloc.counts, expected.counts)
        # rows per dataset index equal the allocation
        idx, seen = np.unique(batch.non_tensor_batch["index"].astype(int), return_counts=True)
        assert dict(zip(idx.tolist(), seen.tolist(), strict=True)) == {
            i: c for i, c in zip(indices, alloc.counts.tolist(), strict=True) if c
        }
        reference.update(
            batch.non_tensor_batch["index"].astype(int),
            batch.batch["token_level_scores"].sum(-1).numpy(),
            lengths=batch.non_tensor_batch["toy_length"],
        )
        assert metrics["coba/budget"] == len(indices) * N
        assert metrics["coba/rollouts/max"] == alloc.counts.max()
        assert metrics["actor/pg_loss"] == pytest.approx(0.6)
    assert t.coba_allocator.state_dict() == reference.state_dict()
    assert len(set(t.last_allocation.counts.tolist())) > 1


def test_mixin_refuses_rows_that_do_not_match(tmp_path: Path) -> None:
    t = make_trainer(tmp_path, coba_rl.CoBAAllocator(coba_rl.CoBAConfig(n_low=2, n_up=8)))
    batch = prompt_batch([1, 2, 3])
    t._get_gen_batch(batch)
    with pytest.raises(ValueError, match=r"expected fit to call repeat\(repeat_times=4"):
        batch.repeat(repeat_times=2, interleave=True)
    uniform = prompt_batch([1, 2, 3]).repeat(repeat_times=N)  # fresh uids: not this step's
    _scored(uniform, np.zeros(len(uniform)))
    with pytest.raises(ValueError, match="was not allocated this step"):
        t.coba_feed_back(uniform)


def test_checkpoint_round_trip_resumes_the_same_next_allocation(tmp_path: Path) -> None:
    indices = list(range(10, 30))
    cfg = coba_rl.CoBAConfig(n_low=2, n_up=3 * N, window=2)
    t = make_trainer(tmp_path, coba_rl.CoBAAllocator(cfg))
    for step in range(2):
        t.global_steps = step + 1
        fit_step(t, indices, seed=10 + step)
    t._save_checkpoint()  # verl's own _save_checkpoint, then ours
    step_dir = tmp_path / "global_step_2"
    assert (step_dir / STATE_FILENAME).is_file() and (step_dir / "data.pt").is_file()
    assert (tmp_path / "latest_checkpointed_iteration.txt").read_text() == "2"

    resumed = make_trainer(tmp_path, coba_rl.CoBAAllocator(cfg))
    resumed._load_checkpoint()  # verl finds global_step_2 through the tracker file
    assert resumed.global_steps == 2
    assert resumed.train_dataloader.state == {"pos": 3}
    assert resumed.coba_allocator.state_dict() == t.coba_allocator.state_dict()
    nxt = list(range(0, 40, 2))
    np.testing.assert_array_equal(
        resumed.coba_allocator.allocate(nxt, len(nxt) * N).counts,
        t.coba_allocator.allocate(nxt, len(nxt) * N).counts,
    )


def test_resume_without_state_warns_and_other_config_is_refused(tmp_path: Path) -> None:
    t = make_trainer(tmp_path, coba_rl.CoBAAllocator(coba_rl.CoBAConfig(n_up=8)))
    t.global_steps = 1
    t._save_checkpoint()
    (tmp_path / "global_step_1" / STATE_FILENAME).rename(tmp_path / "moved.json")
    fresh = make_trainer(tmp_path, coba_rl.CoBAAllocator(coba_rl.CoBAConfig(n_up=8)))
    with pytest.warns(RuntimeWarning, match="allocator starts fresh"):
        fresh._load_checkpoint()
    (tmp_path / "moved.json").rename(tmp_path / "global_step_1" / STATE_FILENAME)
    other = make_trainer(tmp_path, coba_rl.CoBAAllocator(coba_rl.CoBAConfig(n_up=9)))
    with pytest.raises(ValueError, match=r"different config \(fields \['n_up'\]\)"):
        other._load_checkpoint()


def test_validation_keeps_uniform_repeats(tmp_path: Path) -> None:
    t = make_trainer(tmp_path, coba_rl.CoBAAllocator(coba_rl.CoBAConfig(n_up=8)))
    t._coba_validating = True  # what _validate sets around verl's validation loop
    gen = t._get_gen_batch(prompt_batch([0, 0]))  # no id check, no allocation
    assert t.last_allocation is None
    assert len(gen.repeat(repeat_times=3, interleave=True)) == 6


def test_coba_trainer_class_is_a_ray_ppo_trainer() -> None:
    cls = cverl.coba_trainer_class()
    assert issubclass(cls, ray_trainer.RayPPOTrainer)
    assert cls.__mro__[1] is cverl.CoBARayTrainerMixin
