"""End-to-end: CoBA-RL inside verl's own training loops, on CPU, with the workers stubbed.

What is verl's own code here: the ``ppo_trainer`` Hydra config, ``RLHFDataset`` over
parquet files, the ``StatefulDataLoader``, ``RayPPOTrainer.fit`` (legacy V0) and
``PPOTrainer.fit`` / ``step`` / ``_step_once`` of the synchronous V1 trainer, V1's replay
buffer, ``AgentLoopWorkerTQ.generate_sequences`` / ``_run_prompt`` (which pops
``__rollout_n__``) and ``_agent_loop_postprocess``, ``_balance_batch`` (dp=2),
``compute_advantage``, ``_validate``, ``_save_checkpoint`` / ``_load_checkpoint`` and
verl's metrics and ``Tracking``.

What is stubbed: everything that needs GPUs or a Ray cluster. The actor worker group
(``compute_log_prob``, ``update_actor``, ``save_checkpoint``) records what it receives;
the rollout (V0: ``async_rollout_manager``; V1: the LLM call inside the agent loop)
answers every session with a toy response whose reward is a deterministic Bernoulli draw
from the prompt's fixed pass rate; the weight sync (``checkpoint_manager``) does nothing;
and V1's TransferQueue (a Ray-actor key-value store) is an in-memory dict with the same
key-value calls. The tokenizer only decodes ids.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import subprocess
import sys
import warnings
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

pytestmark = [pytest.mark.verl, pytest.mark.e2e]

torch = pytest.importorskip("torch")
pd = pytest.importorskip("pandas")
pytest.importorskip("verl.trainer.ppo.ray_trainer")
pytest.importorskip("transfer_queue")
hydra = pytest.importorskip("hydra")

from hydra import compose, initialize_config_module  # noqa: E402
from tensordict import NonTensorData, NonTensorStack, TensorDict  # noqa: E402
from transfer_queue import KVBatchMeta  # noqa: E402
from verl.experimental.agent_loop.agent_loop import (  # noqa: E402
    AgentLoopMetrics,
    AgentLoopOutput,
)
from verl.protocol import DataProto  # noqa: E402
from verl.trainer.ppo import padding_utils  # noqa: E402
from verl.trainer.ppo.utils import Role, create_rl_dataset  # noqa: E402
from verl.trainer.ppo.v1 import agent_loop_tq, replay_buffer, trainer_base  # noqa: E402
from verl.utils import tensordict_utils as tu  # noqa: E402
from verl.utils.tracking import Tracking  # noqa: E402

import coba_rl  # noqa: E402
from coba_rl.allocator import read_state_file  # noqa: E402
from coba_rl.integrations import STATE_FILENAME  # noqa: E402
from coba_rl.integrations.verl import (  # noqa: E402
    coba_trainer_class,
    coba_v1_trainer_class,
    launcher,
    prompt_ids,
)

N = 4  # rollout.n
BATCH = 4  # data.train_batch_size
N_UP = 12
TRACKER = "latest_checkpointed_iteration.txt"


# -- data and rewards ----------------------------------------------------------------------


def pass_rate(text: str) -> float:
    """A fixed toy pass rate per prompt (0, .25, .5, .75 or 1)."""
    return int(hashlib.sha1(text.encode()).hexdigest(), 16) % 5 / 4.0


def toy_reward(text: str, step: int, session: int) -> float:
    """A deterministic Bernoulli(pass_rate) draw per (prompt, step, session)."""
    h = int(hashlib.sha1(f"{text}|{step}|{session}".encode()).hexdigest(), 16) % 10_000
    return 1.0 if h / 10_000 < pass_rate(text) else 0.0


def toy_length(text: str, step: int, session: int) -> int:
    """A deterministic response length (2 to 7 tokens, within max_response_length=8)."""
    return 2 + int(hashlib.sha1(f"len|{text}|{step}|{session}".encode()).hexdigest(), 16) % 6


def windowed_mean_lengths(
    appearances: dict[str, list[list[int]]], texts: list[str], window: int = 2
) -> list[float]:
    """Each prompt's mean response length over its last ``window`` appearances."""
    return [float(np.mean(np.concatenate(appearances[t][-window:]))) for t in texts]


def text_ids(texts: list[str]) -> Any:
    """The allocator's prompt ids of the toy prompts (dataset index: the third word)."""
    return prompt_ids(
        [int(t.split()[2]) for t in texts], [[{"role": "user", "content": t}] for t in texts]
    )


def write_parquet(path: Path, texts: list[str], source: str) -> None:
    """A verl-format RL dataset file; extra_info.index restarts at 0 in every file."""
    rows = [
        {
            "data_source": source,
            "prompt": [{"role": "user", "content": text}],
            "ability": "math",
            "reward_model": {"style": "rule", "ground_truth": "1"},
            "extra_info": {"index": i, "split": "train"},
        }
        for i, text in enumerate(texts)
    ]
    pd.DataFrame(rows).to_parquet(path)


@pytest.fixture(scope="module")
def data_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("verl_data")
    files = {"a": root / "a.parquet", "b": root / "b.parquet", "val": root / "val.parquet"}
    write_parquet(files["a"], [f"what is {i} + {i}?" for i in range(4)], "set_a")
    write_parquet(files["b"], [f"what is {i} * {i}?" for i in range(4)], "set_b")
    write_parquet(files["val"], [f"what is {i} - 1?" for i in range(3)], "set_val")
    return files


def verl_config(files: dict[str, Path], ckpt: Path, *overrides: str) -> Any:
    """verl's real ppo_trainer config, composed by Hydra, for a tiny GRPO run."""
    with initialize_config_module("verl.trainer.config", version_base=None):
        return compose("ppo_trainer", overrides=[*base_overrides(files, ckpt), *overrides])


def base_overrides(files: dict[str, Path], ckpt: Path) -> list[str]:
    return [
        f"data.train_files=[{files['a']},{files['b']}]",
        f"data.val_files=[{files['val']}]",
        f"data.train_batch_size={BATCH}",
        "data.dataloader_num_workers=0",
        "data.shuffle=false",
        "data.max_prompt_length=16",
        "data.max_response_length=8",
        f"actor_rollout_ref.rollout.n={N}",
        "actor_rollout_ref.rollout.val_kwargs.n=2",
        "actor_rollout_ref.actor.ppo_mini_batch_size=4",
        "actor_rollout_ref.actor.use_kl_loss=false",
        "actor_rollout_ref.rollout.agent.num_workers=1",
        "algorithm.adv_estimator=grpo",
        "algorithm.use_kl_in_reward=false",
        "trainer.logger=[console]",
        "trainer.n_gpus_per_node=2",
        f"trainer.default_local_dir={ckpt}",
        "trainer.balance_batch=true",
        "trainer.save_freq=1",
        "trainer.test_freq=2",
        "trainer.val_before_train=true",
    ]


class StubTokenizer:
    eos_token_id = 1
    pad_token_id = 0

    def decode(self, ids: Any, skip_special_tokens: bool = True) -> str:
        return " ".join(str(int(i)) for i in ids)


def prompt_text(raw_prompt: Any) -> str:
    return str(raw_prompt[0]["content"])


@contextlib.contextmanager
def recorded_logs() -> Iterator[list[tuple[int, dict[str, Any]]]]:
    """Record what verl's Tracking logs (the console backend prints it too)."""
    logged: list[tuple[int, dict[str, Any]]] = []
    original = Tracking.log

    def log(self: Any, data: dict[str, Any], step: int, *args: Any, **kwargs: Any) -> None:
        logged.append((step, dict(data)))

    Tracking.log = log  # type: ignore[method-assign]
    try:
        yield logged
    finally:
        Tracking.log = original  # type: ignore[method-assign]


def empirical_pass_rates(sessions: list[tuple[str, float]]) -> dict[str, list[float]]:
    out: dict[str, list[float]] = defaultdict(list)
    for text, r in sessions:
        out[text].append(r)
    return out


# -- the legacy RayPPOTrainer (V0), workers stubbed ------------------------------------------


class StubRollout:
    """Stands in for verl's agent-loop rollout manager of the legacy trainer."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def generate_sequences(self, gen: DataProto) -> DataProto:
        rows = len(gen)
        validate = bool(gen.meta_info.get("validate", False))
        step = int(gen.meta_info.get("global_steps", 0))
        texts = [prompt_text(p) for p in gen.non_tensor_batch["raw_prompt"]]
        uids = [str(u) for u in gen.non_tensor_batch["uid"]]
        session: Counter[str] = Counter()
        scores, lengths = [], []
        for u, t in zip(uids, texts, strict=True):
            scores.append(toy_reward(t, step, session[u]))
            lengths.append(toy_length(t, step, session[u]))
            session[u] += 1
        self.calls.append(
            {
                "validate": validate,
                "step": step,
                "uids": uids,
                "texts": texts,
                "scores": scores,
                "lengths": lengths,
            }
        )
        p, r = 4, 8  # r: data.max_response_length; ragged responses, right-padded
        prompts = torch.full((rows, p), 5, dtype=torch.long)
        response_mask = (torch.arange(r) < torch.tensor(lengths)[:, None]).long()
        responses = torch.where(response_mask.bool(), 7, 0)
        rm_scores = torch.zeros(rows, r)
        rm_scores[torch.arange(rows), torch.tensor(lengths) - 1] = torch.tensor(scores)
        return DataProto.from_dict(
            tensors={
                "prompts": prompts,
                "responses": responses,
                "input_ids": torch.cat([prompts, responses], 1),
                "attention_mask": torch.cat([torch.ones_like(prompts), response_mask], 1),
                "position_ids": torch.arange(p + r).expand(rows, -1).clone(),
                "response_mask": response_mask,
                "rm_scores": rm_scores,
            },
            non_tensors={
                "multi_modal_inputs": np.array([{} for _ in range(rows)], dtype=object),
                "__num_turns__": np.full(rows, 2, dtype=np.int32),
            },
            meta_info={"timing": {}},
        )


class StubActorGroup:
    """Stands in for the actor/rollout Ray worker group (2 data-parallel ranks)."""

    def __init__(self) -> None:
        self._dispatch_info: dict[str, Any] = {}
        self.updates: list[Any] = []
        self.saved: list[str] = []
        self.loaded: list[str] = []

    def _query_dispatch_info(self, role: str) -> list[int]:
        return [0, 1]  # dp rank of each worker: dp = 2

    def compute_log_prob(self, td: Any) -> Any:  # V0: no-padding nested input, same out
        ids = td["input_ids"]
        zeros = torch.nested.nested_tensor_from_jagged(
            torch.zeros_like(ids.values(), dtype=torch.float32), offsets=ids.offsets()
        )
        return TensorDict(
            {"log_probs": zeros, "entropy": zeros.clone(), "metrics": NonTensorData({"mfu": 0.0})},
            batch_size=td.batch_size,
        )

    def update_actor(self, batch: Any) -> Any:
        self.updates.append(batch)
        metrics = {"mfu": 0.0, "pg_loss": 0.5}
        if isinstance(batch, KVBatchMeta):  # V1
            return {"metrics": metrics}
        return TensorDict({"metrics": NonTensorData(metrics)}, batch_size=[])

    def save_checkpoint(self, local_path: str, *args: Any, **kwargs: Any) -> None:
        os.makedirs(local_path, exist_ok=True)
        self.saved.append(local_path)

    def load_checkpoint(self, local_path: str, *args: Any, **kwargs: Any) -> None:
        self.loaded.append(local_path)


class StubWeightSync:
    def update_weights(self, *args: Any) -> None:
        pass

    def sleep_replicas(self) -> None:
        pass


def make_v0_trainer(cfg: Any, allocator: coba_rl.CoBAAllocator | None = None) -> Any:
    """verl's RayPPOTrainer.__init__ with CoBA-RL mixed in; init_workers' Ray parts stubbed."""
    tok = StubTokenizer()
    train = create_rl_dataset(cfg.data.train_files, cfg.data, tok, None)
    val = create_rl_dataset(cfg.data.val_files, cfg.data, tok, None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # RayPPOTrainer is deprecated
        trainer = coba_trainer_class()(
            config=cfg,
            tokenizer=tok,
            role_worker_mapping={Role.ActorRollout: object},
            resource_pool_manager=SimpleNamespace(get_n_gpus=lambda: 2),
            train_dataset=train,
            val_dataset=val,
            coba_allocator=allocator,
        )
    trainer.actor_rollout_wg = StubActorGroup()
    trainer.async_rollout_manager = StubRollout()
    trainer.checkpoint_manager = StubWeightSync()
    return trainer


def v0_train_counts(trainer: Any) -> dict[int, dict[str, int]]:
    """Rows per prompt text of each training step's generation call."""
    return {
        c["step"]: dict(Counter(c["texts"]))
        for c in trainer.async_rollout_manager.calls
        if not c["validate"]
    }


def run_fit(trainer: Any) -> list[tuple[int, dict[str, Any]]]:
    with recorded_logs() as logged:
        trainer.fit()
    return logged


@pytest.fixture
def cobacfg() -> coba_rl.CoBAConfig:
    return coba_rl.CoBAConfig(n_low=2, n_up=N_UP, window=2)


def test_v0_fit_allocates_per_prompt_feeds_back_and_validates_at_fixed_n(
    data_files: dict[str, Path], tmp_path: Path, cobacfg: coba_rl.CoBAConfig
) -> None:
    cfg = verl_config(
        data_files, tmp_path / "ckpt", "trainer.use_v1=false", "trainer.total_training_steps=5"
    )
    trainer = make_v0_trainer(cfg, coba_rl.CoBAAllocator(cobacfg))
    logged = run_fit(trainer)

    counts = v0_train_counts(trainer)
    assert sorted(counts) == [1, 2, 3, 4, 5]
    for step, per_prompt in counts.items():
        assert sum(per_prompt.values()) == BATCH * N, step  # the row total verl expects
        assert all(2 <= c <= N_UP for c in per_prompt.values())
    # epoch 1 sees every prompt for the first time (even split); later steps are uneven
    assert set(counts[1].values()) == {N}
    assert any(len(set(counts[s].values())) > 1 for s in (3, 4, 5))

    # each prompt's rows reached the actor update with the counts the rollout produced,
    # after _balance_batch split them over dp=2 ranks
    updates = trainer.actor_rollout_wg.updates
    assert len(updates) == 5
    for upd, step in zip(updates, sorted(counts), strict=True):
        raw = upd["raw_prompt"] if "raw_prompt" in upd.keys() else None  # noqa: SIM118
        assert raw is None  # verl keeps raw_prompt out of the update; use the uid instead
        uids = list(upd["uid"])
        assert len(uids) == BATCH * N
        assert sorted(Counter(uids).values()) == sorted(counts[step].values())
    train_logs = [(s, m) for s, m in logged if "coba/budget" in m]
    assert [s for s, _ in train_logs] == [1, 2, 3, 4, 5]
    for s, m in train_logs:
        assert m["coba/budget"] == BATCH * N
        assert m["coba/rollouts/max"] == max(counts[s].values())
        assert "global_seqlen/balanced_max" in m  # _balance_batch ran (dp=2)
        assert m["actor/pg_loss"] == pytest.approx(0.5)

    # feedback: the allocator's windowed pass rate of every prompt equals its successes
    # over rollouts in its last two appearances, counted here from the stub's own draws
    sessions: dict[str, list[list[float]]] = defaultdict(list)
    lengths: dict[str, list[list[int]]] = defaultdict(list)
    for c in trainer.async_rollout_manager.calls:
        if not c["validate"]:
            per: dict[str, list[float]] = defaultdict(list)
            per_len: dict[str, list[int]] = defaultdict(list)
            for t, r, n in zip(c["texts"], c["scores"], c["lengths"], strict=True):
                per[t].append(r)
                per_len[t].append(n)
            for t, rs in per.items():
                sessions[t].append(rs)
                lengths[t].append(per_len[t])
    assert len(sessions) == 8  # two files x four prompts, indices 0-3 in each
    texts = sorted(sessions)
    msgs = [[{"role": "user", "content": t}] for t in texts]
    indices = [int(t.split()[2]) for t in texts]
    ids = prompt_ids(indices, msgs)
    expected = [np.mean(np.concatenate(sessions[t][-2:])) for t in texts]
    np.testing.assert_allclose(trainer.coba_allocator.pass_rates(ids), expected)
    assert trainer.coba_allocator.step == 5
    # and its windowed mean response length equals the stub's lengths (response_mask sums)
    mean_lengths = windowed_mean_lengths(lengths, texts)
    assert len(set(mean_lengths)) > 1
    np.testing.assert_allclose(trainer.coba_allocator.mean_lengths(ids), mean_lengths)

    # validation kept val_kwargs.n = 2 rollouts per prompt (before training, at steps 2, 4, 5)
    vals = [c for c in trainer.async_rollout_manager.calls if c["validate"]]
    assert [c["step"] for c in vals] == [0, 2, 4, 5]
    for c in vals:
        assert set(Counter(c["uids"]).values()) == {2}


def test_v0_prompt_ids_from_index_alone_collide_across_files(
    data_files: dict[str, Path], tmp_path: Path
) -> None:
    """Why the default id includes the prompt: indices restart at 0 in every file."""
    cfg = verl_config(
        data_files,
        tmp_path / "ckpt",
        "trainer.use_v1=false",
        "trainer.total_training_steps=2",
        "+coba.prompt_id=index",
        "+coba.n_up=12",
    )
    trainer = make_v0_trainer(cfg)
    run_fit(trainer)
    tracker = trainer.coba_allocator.tracker
    assert len(tracker) == 4  # 8 prompts in two files, but only 4 ids: histories are mixed
    assert np.isfinite(tracker.pass_rates([0, 1, 2, 3])).all()


def _state(path: Path) -> dict[str, Any]:
    return read_state_file(path)


def test_v0_resume_auto_and_resume_path_continue_the_same_allocations(
    data_files: dict[str, Path], tmp_path: Path, cobacfg: coba_rl.CoBAConfig
) -> None:
    v0 = ("trainer.use_v1=false", "trainer.val_before_train=false", "trainer.test_freq=0")
    # the uninterrupted run: 5 steps, a checkpoint every step
    full = make_v0_trainer(
        verl_config(data_files, tmp_path / "full", *v0, "trainer.total_training_steps=5"),
        coba_rl.CoBAAllocator(cobacfg),
    )
    run_fit(full)
    full_counts = v0_train_counts(full)

    # auto: 3 steps, then a new trainer resumes from the tracker file and runs to step 5
    first = make_v0_trainer(
        verl_config(data_files, tmp_path / "auto", *v0, "trainer.total_training_steps=3"),
        coba_rl.CoBAAllocator(cobacfg),
    )
    run_fit(first)
    assert (tmp_path / "auto" / TRACKER).read_text() == "3"
    resumed = make_v0_trainer(
        verl_config(
            data_files,
            tmp_path / "auto",
            *v0,
            "trainer.total_training_steps=5",
            "trainer.resume_mode=auto",
        ),
        coba_rl.CoBAAllocator(cobacfg),
    )
    run_fit(resumed)
    assert resumed.actor_rollout_wg.loaded == [str(tmp_path / "auto" / "global_step_3" / "actor")]
    got = v0_train_counts(resumed)
    assert sorted(got) == [4, 5]
    assert {s: got[s] for s in (4, 5)} == {s: full_counts[s] for s in (4, 5)}
    for s in (4, 5):
        assert _state(tmp_path / "auto" / f"global_step_{s}" / STATE_FILENAME) == _state(
            tmp_path / "full" / f"global_step_{s}" / STATE_FILENAME
        )

    # resume_path: from the full run's step 2 into a new folder; the state lands in the
    # new step folders and the folder resumed from is left as it was
    source = tmp_path / "full" / "global_step_2" / STATE_FILENAME
    before = source.read_bytes()
    other = make_v0_trainer(
        verl_config(
            data_files,
            tmp_path / "other",
            *v0,
            "trainer.total_training_steps=5",
            "trainer.resume_mode=resume_path",
            f"trainer.resume_from_path={tmp_path / 'full' / 'global_step_2'}",
        ),
        coba_rl.CoBAAllocator(cobacfg),
    )
    run_fit(other)
    got = v0_train_counts(other)
    assert {s: got[s] for s in (3, 4, 5)} == {s: full_counts[s] for s in (3, 4, 5)}
    assert source.read_bytes() == before
    for s in (3, 4, 5):
        assert _state(tmp_path / "other" / f"global_step_{s}" / STATE_FILENAME) == _state(
            tmp_path / "full" / f"global_step_{s}" / STATE_FILENAME
        )
    assert not (tmp_path / "other" / "global_step_2").exists()


def test_v0_allocator_is_saved_before_the_tracker_file(
    data_files: dict[str, Path], tmp_path: Path, cobacfg: coba_rl.CoBAConfig
) -> None:
    """A crash inside verl's save (after the actor, before the tracker) keeps a usable state."""
    cfg = verl_config(
        data_files, tmp_path / "ckpt", "trainer.use_v1=false", "trainer.total_training_steps=3"
    )
    trainer = make_v0_trainer(cfg, coba_rl.CoBAAllocator(cobacfg))
    loader = trainer.train_dataloader
    calls = {"n": 0}
    original = type(loader).state_dict

    def state_dict(self: Any) -> Any:  # verl saves data.pt just before the tracker file
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("disk full (injected)")
        return original(self)

    type(loader).state_dict = state_dict  # type: ignore[method-assign]
    try:
        with pytest.raises(OSError, match="injected"):
            run_fit(trainer)
    finally:
        type(loader).state_dict = original  # type: ignore[method-assign]
    assert (tmp_path / "ckpt" / TRACKER).read_text() == "1"
    assert (tmp_path / "ckpt" / "global_step_2" / STATE_FILENAME).is_file()
    assert not (tmp_path / "ckpt" / "global_step_2" / "data.pt").exists()


class StubCriticGroup:
    """Stands in for the critic Ray worker group: zero values, a fixed loss."""

    def __init__(self) -> None:
        self.updates = 0

    def infer_batch(self, td: Any) -> Any:
        ids = td["input_ids"]
        zeros = torch.nested.nested_tensor_from_jagged(
            torch.zeros_like(ids.values(), dtype=torch.float32), offsets=ids.offsets()
        )
        return SimpleNamespace(get=lambda: TensorDict({"values": zeros}, batch_size=td.batch_size))

    def save_checkpoint(self, local_path: str, *args: Any, **kwargs: Any) -> None:
        os.makedirs(local_path, exist_ok=True)

    def train_mini_batch(self, td: Any) -> Any:
        self.updates += 1
        out = TensorDict({"metrics": NonTensorData({"mfu": 0.0, "vf_loss": 0.1})}, batch_size=[])
        return SimpleNamespace(get=lambda: out)


def test_v0_critic_warmup_steps_still_feed_the_allocator(
    data_files: dict[str, Path], tmp_path: Path, cobacfg: coba_rl.CoBAConfig
) -> None:
    """verl skips the actor update during critic warmup; the critic update feeds back."""
    cfg = verl_config(
        data_files,
        tmp_path / "ckpt",
        "trainer.use_v1=false",
        "algorithm.adv_estimator=gae",
        "trainer.critic_warmup=2",
        "trainer.total_training_steps=3",
        "trainer.val_before_train=false",
        "trainer.test_freq=0",
    )
    trainer = make_v0_trainer(cfg, coba_rl.CoBAAllocator(cobacfg))
    trainer.critic_wg = StubCriticGroup()
    logged = run_fit(trainer)
    assert trainer.critic_wg.updates == 3
    # verl warms the critic up while critic_warmup > global_steps: step 1 has no actor update
    assert len(trainer.actor_rollout_wg.updates) == 2
    assert trainer.coba_allocator.step == 3  # every step reached the allocator
    steps = [s for s, m in logged if "coba/budget" in m and "critic/vf_loss" in m]
    assert steps == [1, 2, 3]


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("algorithm.filter_groups.enable=true", r"filter_groups \(DAPO"),
        ("actor_rollout_ref.actor.use_prefix_grouper=true", "use_prefix_grouper"),
        ("trainer.critic_warmup=2", "critic_warmup=2 without a critic"),
        ("+coba.budget=20", r"coba.budget=20 but the legacy trainer needs exactly"),
        ("+coba.token_budget=500", r"coba.token_budget=500 needs the V1 trainer"),
    ],
)
def test_v0_refuses_what_it_cannot_honour_at_construction(
    data_files: dict[str, Path], tmp_path: Path, override: str, match: str
) -> None:
    cfg = verl_config(data_files, tmp_path, "trainer.use_v1=false", override, "+coba.n_up=12")
    with pytest.raises(ValueError, match=match):
        make_v0_trainer(cfg)


# -- the V1 synchronous trainer (verl 0.9's default), rollout and actor stubbed ---------------


class FakeTransferQueue:
    """TransferQueue's key-value calls, in memory (the real one runs as Ray actors)."""

    def __init__(self) -> None:
        self.tags: dict[str, dict[str, dict[str, Any]]] = {}
        self.values: dict[str, dict[str, dict[str, Any]]] = {}

    def kv_batch_put(
        self, keys: list[str], partition_id: str, fields: Any = None, tags: Any = None
    ) -> KVBatchMeta:
        tag_part = self.tags.setdefault(partition_id, {})
        val_part = self.values.setdefault(partition_id, {})
        rows = _split_rows(fields, len(keys)) if fields is not None else [None] * len(keys)
        for i, key in enumerate(keys):
            tag_part.setdefault(key, {})
            if tags is not None and tags[i] is not None:
                tag_part[key].update(tags[i])  # a put merges the new tag into the old one
            if rows[i] is not None:
                val_part.setdefault(key, {}).update(rows[i])
        return KVBatchMeta(
            keys=list(keys), tags=[dict(tag_part[k]) for k in keys], partition_id=partition_id
        )

    async def async_kv_put(
        self, key: str, partition_id: str, fields: Any = None, tag: Any = None
    ) -> Any:
        return self.kv_batch_put([key], partition_id, None, [tag])

    async def async_kv_batch_put(
        self, keys: list[str], partition_id: str, fields: Any = None, tags: Any = None
    ) -> Any:
        return self.kv_batch_put(keys, partition_id, fields, tags)

    def kv_list(self, partition_id: str | None = None) -> dict[str, dict[str, dict[str, Any]]]:
        parts = (
            self.tags if partition_id is None else {partition_id: self.tags.get(partition_id, {})}
        )
        return {p: {k: dict(t) for k, t in part.items()} for p, part in parts.items()}

    def kv_batch_get(self, keys: Any, partition_id: str, select_fields: Any = None) -> Any:
        keys = [keys] if isinstance(keys, str) else list(keys)
        rows = [self.values.get(partition_id, {})[k] for k in keys]
        if select_fields is None:
            names = list(rows[0])
        else:
            names = [select_fields] if isinstance(select_fields, str) else list(select_fields)
        data: dict[str, Any] = {}
        for name in (n for n in names if all(n in r for r in rows)):
            vals = [r[name] for r in rows]
            if all(isinstance(v, torch.Tensor) for v in vals):
                data[name] = (
                    torch.stack(vals)
                    if all(v.dim() == 0 for v in vals)
                    else torch.nested.as_nested_tensor(vals, layout=torch.jagged)
                )
            else:
                data[name] = NonTensorStack(*[NonTensorData(v) for v in vals])
        return TensorDict(data, batch_size=[len(keys)])

    def kv_clear(self, keys: Any, partition_id: str) -> None:
        for k in [keys] if isinstance(keys, str) else keys:
            self.tags.get(partition_id, {}).pop(k, None)
            self.values.get(partition_id, {}).pop(k, None)

    def init(self, *args: Any, **kwargs: Any) -> None:
        pass

    def close(self) -> None:
        pass


def _split_rows(fields: Any, n: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [{} for _ in range(n)]
    for name, col in fields.items():
        if isinstance(col, NonTensorStack):
            vals = col.tolist()
        elif isinstance(col, NonTensorData):
            vals = [col.data] * n
        elif isinstance(col, torch.Tensor):
            vals = list(col.unbind(0))
        else:
            vals = list(col)
        for i in range(n):
            out[i][name] = vals[i]
    return out


@pytest.fixture
def fake_tq(monkeypatch: pytest.MonkeyPatch) -> FakeTransferQueue:
    fake = FakeTransferQueue()
    for module in (trainer_base, replay_buffer, agent_loop_tq, padding_utils):
        monkeypatch.setattr(module, "tq", fake)
    monkeypatch.setattr(
        replay_buffer.ReplayBuffer, "__init__", _fast_poll(replay_buffer.ReplayBuffer.__init__)
    )
    return fake


def _fast_poll(init: Any) -> Any:
    def wrapped(self: Any, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        self.poll_interval = 0.01

    return wrapped


_WorkerBase: Any = agent_loop_tq.AgentLoopWorkerTQ.__ray_metadata__.modified_class


class StubAgentLoopWorker(_WorkerBase):  # type: ignore[misc]
    """verl's AgentLoopWorkerTQ; only the LLM call (_run_agent_loop's agent) is a stub."""

    def __init__(self, config: Any) -> None:  # no LLM servers, tools or reward workers
        self.config = config
        self.background_tasks: set[Any] = set()
        self.processor = None
        self.tokenizer = StubTokenizer()
        self.reward_loop_worker_handles = None
        self.distillation_enabled = False
        self.sessions: list[dict[str, Any]] = []

    async def _run_agent_loop(
        self,
        sampling_params: Any,
        trajectory: Any,
        *,
        agent_name: str,
        trace: bool = True,
        **kwargs: Any,
    ) -> Any:
        text = prompt_text(kwargs["raw_prompt"])
        step, session = trajectory["step"], kwargs["session_id"]
        score = toy_reward(text, step, session)
        length = toy_length(text, step, session)  # ragged responses
        self.sessions.append(
            {
                "uid": kwargs["uid"],
                "text": text,
                "step": step,
                "validate": trajectory["validate"],
                "reward": score,
                "length": length,
            }
        )
        output = AgentLoopOutput(
            prompt_ids=[5] * (len(text) % 4 + 3),
            response_ids=[7] * length,
            response_mask=[1] * length,
            response_logprobs=[-0.5] * length,
            reward_score=score,
            num_turns=2,
            metrics=AgentLoopMetrics(),
            extra_fields={"min_global_steps": step, "max_global_steps": step},
        )
        return await self._agent_loop_postprocess(output, trajectory["validate"], **kwargs)


class StubAgentLoopManager:
    """Runs verl's worker code in-process and waits for every session (a synchronous rollout)."""

    def __init__(self, config: Any) -> None:
        self.worker = StubAgentLoopWorker(config)
        self.submitted: list[dict[str, int]] = []  # uid -> __rollout_n__ of each training batch

    def generate_sequences(self, batch: Any) -> None:
        ns = tu.get(batch, "__rollout_n__")
        if ns is not None:
            uids = [str(u) for u in tu.get(batch, "uid")]
            self.submitted.append(dict(zip(uids, [int(n) for n in ns], strict=True)))

        async def run() -> None:
            await self.worker.generate_sequences(batch)
            while self.worker.background_tasks:
                await asyncio.gather(*list(self.worker.background_tasks))

        asyncio.run(run())


def make_v1_trainer(cfg: Any, allocator: coba_rl.CoBAAllocator | None = None) -> Any:
    """verl's PPOTrainerSync with CoBA-RL; init()'s Ray worker groups and servers stubbed."""
    trainer = coba_v1_trainer_class()(config=cfg, coba_allocator=allocator)
    stub_v1_setup(trainer)
    return trainer


def stub_v1_setup(trainer: Any) -> None:
    """What PPOTrainer._setup does, minus Ray: tokenizer, real dataloaders, stub workers."""
    trainer.tokenizer = StubTokenizer()
    trainer.processor = None
    trainer._init_dataloader()
    trainer._init_dump_executor()
    trainer.actor_rollout_wg = StubActorGroup()
    trainer.checkpoint_manager = StubWeightSync()
    trainer.reward_loop_manager = SimpleNamespace(reward_loop_worker_handles=[object()])
    trainer.resource_pool_manager = SimpleNamespace(get_n_gpus=lambda: 2)
    trainer._load_checkpoint()
    trainer.on_init_end()


V1 = ("algorithm.rollout_correction.bypass_mode=true",)  # old log-probs from the rollout


def run_v1(trainer: Any, cfg: Any) -> tuple[StubAgentLoopManager, list[tuple[int, dict[str, Any]]]]:
    manager = StubAgentLoopManager(cfg)
    with recorded_logs() as logged:
        trainer.fit(manager)
    return manager, logged


def v1_train_counts(manager: StubAgentLoopManager) -> dict[int, dict[str, int]]:
    out: dict[int, Counter[str]] = defaultdict(Counter)
    for s in manager.worker.sessions:
        if not s["validate"]:
            out[s["step"]][s["text"]] += 1
    return {k: dict(v) for k, v in out.items()}


def session_lengths(manager: StubAgentLoopManager) -> dict[str, list[list[int]]]:
    """Each prompt's response lengths, one list per training step it appeared in."""
    by_step: dict[tuple[int, str], list[int]] = defaultdict(list)
    for s in manager.worker.sessions:
        if not s["validate"]:
            by_step[(s["step"], s["text"])].append(s["length"])
    out: dict[str, list[list[int]]] = defaultdict(list)
    for (_, text), ns in sorted(by_step.items()):
        out[text].append(ns)
    return out


def test_v1_sync_fit_honours_rollout_n_per_prompt_and_feeds_back(
    data_files: dict[str, Path],
    tmp_path: Path,
    fake_tq: FakeTransferQueue,
    cobacfg: coba_rl.CoBAConfig,
) -> None:
    cfg = verl_config(data_files, tmp_path / "ckpt", *V1, "trainer.total_training_steps=5")
    trainer = make_v1_trainer(cfg, coba_rl.CoBAAllocator(cobacfg))
    manager, logged = run_v1(trainer, cfg)

    # verl's agent loop started exactly __rollout_n__ sessions for every prompt
    sessions = Counter(s["uid"] for s in manager.worker.sessions if not s["validate"])
    assert len(manager.submitted) == 5
    for submitted in manager.submitted:
        assert sum(submitted.values()) == BATCH * N
        assert {u: sessions[u] for u in submitted} == submitted
    assert any(len(set(sub.values())) > 1 for sub in manager.submitted[2:])
    assert set(manager.submitted[0].values()) == {N}  # unseen prompts: the even split

    # every session reached the actor update, grouped by uid as allocated
    for update, submitted in zip(trainer.actor_rollout_wg.updates, manager.submitted, strict=True):
        keys, tags = update.keys, update.tags
        real = [k for k, t in zip(keys, tags, strict=True) if not t.get("is_padding")]
        assert Counter(k.split("_")[0] for k in real) == Counter(submitted)

    # feedback: windowed pass rates equal successes over rollouts of the last two appearances
    per_step: dict[str, list[list[float]]] = defaultdict(list)
    by_step: dict[tuple[int, str], list[float]] = defaultdict(list)
    for s in manager.worker.sessions:
        if not s["validate"]:
            by_step[(s["step"], s["text"])].append(s["reward"])
    for (_, text), rs in sorted(by_step.items()):
        per_step[text].append(rs)
    texts = sorted(per_step)
    assert len(texts) == 8
    ids = text_ids(texts)
    expected = [np.mean(np.concatenate(per_step[t][-2:])) for t in texts]
    np.testing.assert_allclose(trainer.coba_allocator.pass_rates(ids), expected)
    assert trainer.coba_allocator.step == 5
    # the response length of each session (its final output's response_mask) reached the
    # allocator with its reward: windowed mean lengths equal the stub's own lengths
    mean_lengths = windowed_mean_lengths(session_lengths(manager), texts)
    assert len(set(mean_lengths)) > 1
    np.testing.assert_allclose(trainer.coba_allocator.mean_lengths(ids), mean_lengths)

    # metrics reach verl's logger every training step
    train_logs = [m for _, m in logged if "coba/budget" in m]
    assert len(train_logs) == 5
    for m in train_logs:
        assert m["coba/feedback/rows"] == BATCH * N and m["coba/feedback/missing_rows"] == 0
        assert "actor/pg_loss" in m and "critic/score/mean" in m

    # validation: val_kwargs.n = 2 sessions per prompt, no allocation
    val = Counter(s["uid"] for s in manager.worker.sessions if s["validate"])
    assert val and set(val.values()) == {2}

    # checkpoints: every step folder holds the allocator; resuming continues the same way
    for step in range(1, 6):
        assert (tmp_path / "ckpt" / f"global_step_{step}" / STATE_FILENAME).is_file()


TOKEN_BUDGET = 70.0  # expected response tokens per batch: binds at some steps, not all


def test_v1_token_budget_bounds_each_steps_expected_tokens(
    data_files: dict[str, Path], tmp_path: Path, fake_tq: FakeTransferQueue
) -> None:
    """``coba.token_budget`` through verl's own fit: every step's expected tokens, with
    each prompt costing its windowed mean response length computed here from the stub's
    lengths, stay within the budget, and the agent loop runs exactly the counts."""
    cfg = verl_config(
        data_files,
        tmp_path / "ckpt",
        *V1,
        "trainer.total_training_steps=5",
        "trainer.val_before_train=false",
        "trainer.test_freq=0",
        "+coba.bounds=[2,12]",
        "+coba.window=2",
        f"+coba.token_budget={TOKEN_BUDGET}",
    )
    trainer = make_v1_trainer(cfg)  # the allocator comes from the coba group
    # no length known yet: a rollout costs data.max_response_length
    assert trainer.coba_allocator.config.default_tokens_per_rollout == 8.0
    manager, logged = run_v1(trainer, cfg)

    train = [s for s in manager.worker.sessions if not s["validate"]]
    sessions = Counter(s["uid"] for s in train)
    text_of = {s["uid"]: s["text"] for s in train}
    lengths: dict[tuple[int, str], list[int]] = defaultdict(list)
    for s in train:
        lengths[(s["step"], s["text"])].append(s["length"])
    logs = [m for _, m in logged if "coba/token_budget" in m]
    assert len(manager.submitted) == len(logs) == 5
    history: dict[str, list[list[int]]] = defaultdict(list)
    totals = []
    for step, (submitted, m) in enumerate(zip(manager.submitted, logs, strict=True), start=1):
        assert {u: sessions[u] for u in submitted} == submitted  # the loop ran the counts
        assert all(2 <= n <= 12 for n in submitted.values())
        texts = [text_of[u] for u in submitted]
        known = {t: float(np.mean(np.concatenate(history[t][-2:]))) for t in texts if history[t]}
        fill = float(np.mean(list(known.values()))) if known else 8.0
        tokens = sum(known.get(t, fill) * n for t, n in zip(texts, submitted.values(), strict=True))
        assert tokens <= TOKEN_BUDGET + 1e-9, step
        assert m["coba/tokens"] == pytest.approx(tokens), step
        assert m["coba/token_budget"] == TOKEN_BUDGET
        assert m["coba/feedback/rows"] == sum(submitted.values())
        assert m["coba/feedback/missing_rows"] == 0
        totals.append(sum(submitted.values()))
        for t in texts:
            history[t].append(lengths[(step, t)])
    assert all(total <= BATCH * N for total in totals)  # the rollout budget holds too
    assert totals[0] == 8  # unknown lengths cost 8: 70 tokens buy 2 rollouts per prompt
    assert any(m["coba/bound/tokens"] == 1.0 for m in logs)
    assert len(set(totals)) > 1  # the budget binds differently as lengths are learnt
    assert trainer.coba_allocator.step == 5


def test_v1_resume_auto_continues_the_same_allocations(
    data_files: dict[str, Path],
    tmp_path: Path,
    fake_tq: FakeTransferQueue,
    cobacfg: coba_rl.CoBAConfig,
) -> None:
    quiet = ("trainer.val_before_train=false", "trainer.test_freq=0")
    full_cfg = verl_config(
        data_files, tmp_path / "full", *V1, *quiet, "trainer.total_training_steps=4"
    )
    full, _ = run_v1(make_v1_trainer(full_cfg, coba_rl.CoBAAllocator(cobacfg)), full_cfg)

    cfg = verl_config(data_files, tmp_path / "part", *V1, *quiet, "trainer.total_training_steps=2")
    run_v1(make_v1_trainer(cfg, coba_rl.CoBAAllocator(cobacfg)), cfg)
    cfg = verl_config(data_files, tmp_path / "part", *V1, *quiet, "trainer.total_training_steps=4")
    resumed_trainer = make_v1_trainer(cfg, coba_rl.CoBAAllocator(cobacfg))
    assert resumed_trainer.global_steps == 2
    resumed, _ = run_v1(resumed_trainer, cfg)
    got, want = v1_train_counts(resumed), v1_train_counts(full)
    assert sorted(got) == [3, 4]
    assert {s: got[s] for s in (3, 4)} == {s: want[s] for s in (3, 4)}


class IgnoringAgentLoopManager(StubAgentLoopManager):
    """An agent loop that drops __rollout_n__ and so starts rollout.n sessions per prompt."""

    def generate_sequences(self, batch: Any) -> None:
        if "__rollout_n__" in batch.keys():  # noqa: SIM118
            del batch["__rollout_n__"]
        super().generate_sequences(batch)


def test_v1_an_agent_loop_that_ignores_rollout_n_is_caught(
    data_files: dict[str, Path],
    tmp_path: Path,
    fake_tq: FakeTransferQueue,
    cobacfg: coba_rl.CoBAConfig,
) -> None:
    texts = [f"what is {i} + {i}?" for i in range(4)]
    ids = prompt_ids(range(4), [[{"role": "user", "content": t}] for t in texts])
    allocator = coba_rl.CoBAAllocator(cobacfg)  # with history, so the first batch is uneven
    allocator.update(np.repeat(ids, 4), [1, 1, 1, 1, 0, 0, 0, 0, 1, 0, 1, 0, 1, 1, 1, 0])
    assert len(set(allocator.allocate(ids, BATCH * N).counts.tolist())) > 1
    cfg = verl_config(
        data_files,
        tmp_path / "ckpt",
        *V1,
        "trainer.val_before_train=false",
        "trainer.total_training_steps=1",
    )
    trainer = make_v1_trainer(cfg, allocator)
    with pytest.raises(
        ValueError, match=r"got 4 sessions but was allocated \d+: the agent loop must"
    ):
        trainer.fit(IgnoringAgentLoopManager(cfg))


def test_v1_split_steps_padding_and_critic_warmup_feed_back_once_per_step(
    data_files: dict[str, Path],
    tmp_path: Path,
    fake_tq: FakeTransferQueue,
    cobacfg: coba_rl.CoBAConfig,
) -> None:
    """parameter_sync_step=2 trains each step in two halves, each padded by verl to a
    multiple of the mini-batch; critic_warmup=2 skips the first actor update. The
    allocator still gets one update per global step, with every real session and no
    padding row."""
    cfg = verl_config(
        data_files,
        tmp_path / "ckpt",
        *V1,
        "+trainer.v1.sync.parameter_sync_step=2",
        "trainer.critic_warmup=2",
        "trainer.total_training_steps=4",
        "trainer.val_before_train=false",
        "trainer.test_freq=0",
    )
    trainer = make_v1_trainer(cfg, coba_rl.CoBAAllocator(cobacfg))
    manager, logged = run_v1(trainer, cfg)
    assert trainer.coba_allocator.step == 4
    updates = trainer.actor_rollout_wg.updates
    assert len(updates) == 2 * 3  # two halves per step, none at step 1 (warmup)
    assert any(t.get("is_padding") for u in updates for t in u.tags)  # verl padded
    rows = [m["coba/feedback/rows"] for _, m in logged if "coba/feedback/rows" in m]
    assert rows == [BATCH * N] * 4
    assert [sum(sub.values()) for sub in manager.submitted] == [BATCH * N] * 4


@pytest.mark.parametrize(
    ("override", "match"),
    [
        (
            "trainer.v1.trainer_mode=colocate_async",
            "trainer_mode='colocate_async' is not supported",
        ),
        (
            "trainer.v1.trainer_mode=separate_async",
            "trainer_mode='separate_async' is not supported",
        ),
        ("algorithm.filter_groups.enable=true", r"filter_groups \(DAPO"),
        # 4 prompts * n_low 2 * max_response_length 8 = 64 tokens before any length is known
        ("+coba.token_budget=60", r"coba.token_budget=60 is below the first batch's floor .* 64"),
    ],
)
def test_v1_refuses_async_trainers_and_group_filtering_at_construction(
    data_files: dict[str, Path], tmp_path: Path, override: str, match: str
) -> None:
    cfg = verl_config(data_files, tmp_path, *V1, override)
    with pytest.raises(ValueError, match=match):
        coba_v1_trainer_class()(config=cfg)


# -- the launcher -----------------------------------------------------------------------------


def test_launcher_runs_the_documented_command_through_verls_task_runner(
    data_files: dict[str, Path],
    tmp_path: Path,
    fake_tq: FakeTransferQueue,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``python -m coba_rl.integrations.verl <verl overrides> coba.*`` on a tiny config.

    Everything from the command line to verl's ``TaskRunnerV1.run`` and the trainer's
    ``fit`` is real; ``run_ppo``'s Ray start is replaced by calling the task runner's
    ``run`` in-process, and ``trainer.init()``'s GPU worker groups by the stubs above.
    """
    argv = [
        *base_overrides(data_files, tmp_path / "ckpt"),
        *V1,
        "trainer.total_training_steps=3",
        "actor_rollout_ref.model.path=unused-no-download",
        "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2",
        "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=2",
        "coba.kappa=6",
        "coba.bounds=[2,12]",
        "coba.window=2",
    ]
    monkeypatch.setattr(trainer_base.PPOTrainer, "init", stub_v1_setup)
    managers: list[StubAgentLoopManager] = []
    seen: dict[str, Any] = {}

    def init_agent_loop_manager(self: Any) -> None:
        managers.append(StubAgentLoopManager(self.config))
        self.agent_loop_manager = managers[-1]

    def run(config: Any, runner_cls: Any) -> None:  # what run_ppo does, minus Ray
        seen["config"] = config
        runner = runner_cls.__ray_metadata__.modified_class()
        runner.init_agent_loop_manager = init_agent_loop_manager.__get__(runner)
        with recorded_logs() as logged:
            runner.run(config)
        seen["trainer"], seen["logged"] = runner.trainer, logged

    import transfer_queue

    monkeypatch.setattr(transfer_queue, "init", fake_tq.init)
    monkeypatch.setattr(transfer_queue, "close", fake_tq.close)
    monkeypatch.chdir(tmp_path)
    launcher.main(argv, run=run)

    trainer = seen["trainer"]
    assert type(trainer).__name__ == "CoBAPPOTrainerSync"
    assert seen["config"].coba == {"kappa": 6, "bounds": [2, 12], "window": 2, "budget": BATCH * N}
    cfg = trainer.coba_allocator.config
    assert (cfg.kappa, cfg.n_low, cfg.n_up, cfg.window) == (6.0, 2, 12, 2)
    assert trainer.coba_allocator.step == 3
    assert [m["coba/budget"] for _, m in seen["logged"] if "coba/budget" in m] == [BATCH * N] * 3
    assert all(sum(s.values()) == BATCH * N for s in managers[0].submitted)
    assert (tmp_path / "ckpt" / "global_step_3" / STATE_FILENAME).is_file()
    # the stock trainer is registered again once the run is over
    assert trainer_base.TRAINER_REGISTRY["sync"].__name__ == "PPOTrainerSync"


def test_launcher_rejects_an_unknown_coba_key_before_starting_anything() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "coba_rl.integrations.verl",
            "data.train_batch_size=8",
            "coba.kapa=5",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith(
        "python -m coba_rl.integrations.verl: error: unknown key coba.kapa"
    )
    assert "kappa" in proc.stderr  # the valid keys are listed
    assert len(proc.stderr.strip().splitlines()) == 1


def test_launcher_checks_the_token_budget_against_verls_config(
    data_files: dict[str, Path], tmp_path: Path
) -> None:
    cfg = verl_config(data_files, tmp_path, *V1)
    settings = launcher.prepare_config(cfg, {"token_budget": 70, "bounds": [2, 12]})
    assert settings.token_budget == 70.0
    assert cfg.coba.token_budget == 70  # stored with the run's config
    # 4 prompts * n_low 2 * data.max_response_length 8 = 64 tokens before any length
    with pytest.raises(ValueError, match=r"coba.token_budget=60 is below .* = 64 "):
        launcher.prepare_config(verl_config(data_files, tmp_path, *V1), {"token_budget": 60})
    legacy = verl_config(data_files, tmp_path, "trainer.use_v1=false")
    with pytest.raises(ValueError, match=r"coba\.token_budget=500 needs the V1 trainer"):
        launcher.prepare_config(legacy, {"token_budget": 500})


def test_split_overrides_parses_values_with_hydras_grammar() -> None:
    coba, rest = launcher.split_overrides(
        ["data.train_batch_size=8", "coba.kappa=5", "+coba.bounds=[2,16]", "coba.budget=null"]
    )
    assert coba == {"kappa": 5, "bounds": [2, 16], "budget": None}
    assert rest == ["data.train_batch_size=8"]
    with pytest.raises(ValueError, match=r"coba\.kappa is given twice"):
        launcher.split_overrides(["coba.kappa=5", "coba.kappa=6"])
    with pytest.raises(ValueError, match=r"coba\.KEY=VALUE"):
        launcher.split_overrides(["coba.kappa"])
