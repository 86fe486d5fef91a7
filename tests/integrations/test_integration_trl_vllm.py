"""CoBAGRPOTrainer with TRL's vLLM backends, on CPU: only the vLLM side is stubbed.

vLLM needs a GPU, so these tests stub it at its outermost boundary and run everything of
TRL's in between for real (``Trainer.train()``, ``GRPOTrainer``, TRL's ``VLLMGeneration``
and, in server mode, ``VLLMClient.generate`` with its request building and response
parsing):

- *server mode*: ``VLLMClient``'s HTTP calls are answered by :class:`FakeServer`, which
  speaks the OpenAI completions format ``vllm serve`` returns; the NCCL weight
  communicator is a no-op. Stock TRL sends each prompt once with ``n=num_generations``;
  CoBAGRPOTrainer must send every row with ``n=1``, so that prompt ``i`` gets
  ``counts[i]`` completions.
- *colocate mode*: ``vllm.LLM`` and ``SamplingParams`` are replaced by :class:`FakeLLM`,
  which records the requests TRL's colocate path builds.

What these tests cannot show is that a real vLLM engine honours the requests; the GPU
smoke script ``examples/gpu_smoke_trl.py`` checks that on a GPU machine.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # before transformers / huggingface_hub are imported

from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import numpy as np
import pytest

pytestmark = [pytest.mark.trl, pytest.mark.e2e]

torch = pytest.importorskip("torch")
trl = pytest.importorskip("trl")
pytest.importorskip("transformers")
pytest.importorskip("datasets")
pytest.importorskip("tokenizers")

from trl_toy import (  # noqa: E402
    VOCAB,
    Verifier,
    group_advantages_reference,
    grpo_args,
    runs,
    tiny_model,
    tiny_tokenizer,
    toy_dataset,
)

import coba_rl  # noqa: E402
from coba_rl.integrations import trl as ctrl  # noqa: E402

vllm_generation = pytest.importorskip("trl.generation.vllm_generation")
vllm_client = pytest.importorskip("trl.generation.vllm_client")

ANSWERS = ["*", "", "a b c d"]  # always, never, about a third of the fake completions
G = 4
ROWS = len(ANSWERS) * G


def warmed_allocator() -> coba_rl.CoBAAllocator:
    """An allocator that has seen the prompts once, so the first allocation is uneven."""
    alloc = coba_rl.CoBAAllocator(coba_rl.CoBAConfig(n_low=2, n_up=8))
    ids = [k for k in range(len(ANSWERS)) for _ in range(4)]
    alloc.update(ids, [1.0] * 4 + [0.0] * 4 + [1.0, 0.0, 0.0, 0.0])
    return alloc


def fake_completion(rng: np.random.Generator, max_tokens: int) -> list[int]:
    """1..max_tokens word tokens (no special tokens), so every completion decodes to words."""
    length = int(rng.integers(1, max_tokens + 1))
    return [int(t) for t in rng.integers(3, len(VOCAB), size=length)]


class FakeServer:
    """Answers ``POST /v1/completions`` as ``vllm serve`` does (token ids in and out)."""

    def __init__(self) -> None:
        self.rng = np.random.default_rng(0)
        self.batches: list[list[tuple[tuple[int, ...], int]]] = []  # per call: (prompt, n)
        self.completions: list[list[int]] = []  # every completion, in response order

    def completions_endpoint(self, payload: dict[str, Any]) -> dict[str, Any]:
        n, choices = int(payload["n"]), []
        self.batches.append([(tuple(p), n) for p in payload["prompt"]])
        for prompt in payload["prompt"]:  # prompt-major, like vLLM
            for _ in range(n):
                ids = fake_completion(self.rng, int(payload["max_tokens"]))
                self.completions.append(ids)
                choices.append(
                    {
                        "prompt_token_ids": list(prompt),
                        "token_ids": ids,
                        "logprobs": {
                            "tokens": [f"token_id:{t}" for t in ids],
                            "token_logprobs": [-1.0] * len(ids),
                            "top_logprobs": [None] * len(ids),
                        },
                    }
                )
        return {"choices": choices}


class FakeClient(vllm_client.VLLMClient):  # type: ignore[misc]
    """TRL's real ``VLLMClient`` with its network replaced: HTTP by :class:`FakeServer`."""

    server: FakeServer
    instances: ClassVar[list[FakeClient]] = []

    def __init__(self, base_url: str | None = None, **kwargs: Any) -> None:  # no health check
        self.base_url = base_url or "http://fake-vllm:8000"
        self.group_port = kwargs.get("group_port", 51216)
        self.communicator = None
        self._updating_weights = False
        self.model = "toy"
        self.events: list[str] = []
        FakeClient.instances.append(self)

    def _post(self, url: str, **kwargs: Any) -> dict[str, Any]:
        assert url == f"{self.base_url}/v1/completions", url
        return self.server.completions_endpoint(kwargs["json"])

    def _get(self, url: str, **kwargs: Any) -> dict[str, Any]:
        raise AssertionError(f"unexpected GET {url}")

    def get_server_info(self) -> dict[str, Any]:
        return {"model_config": {"logprobs_mode": "processed_logprobs"}}

    def init_communicator(self, device: Any = 0) -> None:
        self.events.append("init_communicator")

    def update_named_params(self, metadata: Any, named_params: Any) -> None:
        assert len(list(named_params)) == len(metadata)
        self.events.append("update_named_params")

    def reset_prefix_cache(self) -> None:
        self.events.append("reset_prefix_cache")

    def close_communicator(self) -> None:
        self.events.append("close_communicator")


@pytest.fixture
def fake_server(monkeypatch: pytest.MonkeyPatch) -> FakeServer:
    server = FakeServer()
    monkeypatch.setattr(vllm_generation, "is_vllm_available", lambda: True)
    monkeypatch.setattr(vllm_generation, "VLLMClient", FakeClient)
    monkeypatch.setattr(FakeClient, "server", server, raising=False)
    monkeypatch.setattr(FakeClient, "instances", [])
    return server


class Recording:
    """Mixed into the trainer: keeps each generation batch's allocation and advantages."""

    record: list[tuple[Any, np.ndarray[Any, Any]]]

    def _generate_and_score_completions(self, inputs: Any) -> Any:
        out = super()._generate_and_score_completions(inputs)  # type: ignore[misc]
        self.record.append((self.last_allocation, out["advantages"].double().numpy().copy()))  # type: ignore[attr-defined]
        return out


def make_trainer(cls: type[Any], out: Path, steps: int, verifier: Verifier, **kw: Any) -> Any:
    tok = tiny_tokenizer()
    extra = {"coba_allocator": kw.pop("coba_allocator")} if "coba_allocator" in kw else {}
    trainer = cls(
        model=tiny_model(tok),
        reward_funcs=verifier,
        args=grpo_args(out, steps, ROWS, G, use_vllm=True, **kw),
        train_dataset=toy_dataset(ANSWERS),
        processing_class=tok,
        **extra,
    )
    trainer.record = []
    return trainer


def prompt_token_ids() -> dict[tuple[int, ...], int]:
    """The token ids TRL sends for each prompt, mapped to its prompt id."""
    tok = tiny_tokenizer()
    ds = toy_dataset(ANSWERS)
    return {tuple(tok(row["prompt"])["input_ids"]): row["prompt_id"] for row in ds}


def check_rows_follow_the_allocation(
    trainer: Any, verifier: Verifier, requested_ids: list[list[int]], completions: list[str]
) -> None:
    """What the engine was asked, what the reward saw, and the advantages all follow counts."""
    tok = trainer.processing_class
    reference = warmed_allocator()
    uneven = False
    for step, ((ids, rewards), lens, (alloc, adv)) in enumerate(
        zip(verifier.calls, verifier.lengths, trainer.record, strict=True)
    ):
        keys, lengths = runs(ids)
        assert len(ids) == ROWS and sorted(keys) == list(range(len(ANSWERS)))
        assert lengths == alloc.counts.tolist() == reference.allocate(keys, ROWS).counts.tolist()
        # one engine request (n=1) per row, in row order
        assert requested_ids[step] == ids
        uneven |= len(set(lengths)) > 1
        np.testing.assert_allclose(adv, group_advantages_reference(rewards, ids), atol=1e-5)
        reference.update(ids, rewards, lengths=lens)
    assert uneven, "the warmed allocator must allocate unevenly"
    assert trainer.coba_allocator.state_dict() == reference.state_dict()
    # the reward function scored the engine's completions, row by row
    seen = [text for call in verifier.completions for text in call]
    assert seen == [tok.decode(c, skip_special_tokens=True) for c in completions]


def test_stock_trainer_server_mode_dedups_prompts(tmp_path: Path, fake_server: FakeServer) -> None:
    """The stub reproduces stock TRL: one request per prompt with n=num_generations."""
    verifier = Verifier()
    trainer = make_trainer(trl.GRPOTrainer, tmp_path, 1, verifier, vllm_mode="server")
    trainer.train()
    assert FakeClient.instances[0].events[:1] == ["init_communicator"]
    (batch,) = fake_server.batches
    assert [n for _, n in batch] == [G] * len(ANSWERS)
    ids = prompt_token_ids()
    assert sorted(ids[p] for p, _ in batch) == list(range(len(ANSWERS)))
    assert sorted(Counter(verifier.calls[0][0]).values()) == [G] * len(ANSWERS)


def test_server_mode_sends_one_request_per_row(tmp_path: Path, fake_server: FakeServer) -> None:
    verifier = Verifier()
    cls = type("RecordingCoBA", (Recording, ctrl.CoBAGRPOTrainer), {})
    trainer = make_trainer(
        cls, tmp_path, 2, verifier, vllm_mode="server", coba_allocator=warmed_allocator()
    )
    (client,) = FakeClient.instances
    assert client.events == ["init_communicator"]
    trainer.train()
    assert len(fake_server.batches) == 2  # one server call per generation batch
    ids = prompt_token_ids()
    requested = []
    for batch in fake_server.batches:
        assert [n for _, n in batch] == [1] * ROWS
        requested.append([ids[p] for p, _ in batch])
    check_rows_follow_the_allocation(trainer, verifier, requested, fake_server.completions)
    # weights were pushed to the server before each generation
    assert client.events.count("update_named_params") == 2


class FakeLLM:
    """Stands in for ``vllm.LLM`` in colocate mode: records the requests TRL builds."""

    instances: ClassVar[list[FakeLLM]] = []

    def __init__(self, model: str, **kwargs: Any) -> None:
        self.kwargs = kwargs
        self.rng = np.random.default_rng(0)
        self.batches: list[list[tuple[tuple[int, ...], int]]] = []
        self.completions: list[list[int]] = []
        self.weight_loads = 0
        runner = SimpleNamespace(model=SimpleNamespace(load_weights=self._load_weights))
        self.llm_engine = SimpleNamespace(
            model_executor=SimpleNamespace(driver_worker=SimpleNamespace(model_runner=runner))
        )
        FakeLLM.instances.append(self)

    def _load_weights(self, weights: list[tuple[str, Any]]) -> None:
        self.weight_loads += len(weights)

    def generate(self, prompts: list[dict[str, Any]], sampling_params: Any, **_: Any) -> Any:
        n = sampling_params.n
        self.batches.append([(tuple(p["prompt_token_ids"]), n) for p in prompts])
        outputs = []
        for p in prompts:
            samples = []
            for _ in range(n):
                ids = fake_completion(self.rng, sampling_params.max_tokens)
                self.completions.append(ids)
                logprobs = [{t: SimpleNamespace(logprob=-1.0, rank=1)} for t in ids]
                samples.append(SimpleNamespace(token_ids=ids, logprobs=logprobs))
            outputs.append(SimpleNamespace(prompt_token_ids=p["prompt_token_ids"], outputs=samples))
        return outputs

    def reset_prefix_cache(self) -> None:
        pass


MASTER = ("MASTER_ADDR", "MASTER_PORT")


class FakeSamplingParams:
    def __init__(self, **kwargs: Any) -> None:
        self.__dict__.update(kwargs)


def test_colocate_mode_generates_the_allocated_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(vllm_generation, "is_vllm_available", lambda: True)
    monkeypatch.setattr(vllm_generation, "LLM", FakeLLM, raising=False)
    monkeypatch.setattr(vllm_generation, "SamplingParams", FakeSamplingParams, raising=False)
    monkeypatch.setattr(FakeLLM, "instances", [])
    # TRL's colocate setup writes these for vLLM; put them back so later tests stay local
    saved = {k: os.environ.get(k) for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE", *MASTER)}
    verifier = Verifier()
    cls = type("RecordingCoBA", (Recording, ctrl.CoBAGRPOTrainer), {})
    try:
        trainer = make_trainer(
            cls, tmp_path, 2, verifier, vllm_mode="colocate", coba_allocator=warmed_allocator()
        )
        trainer.train()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    (llm,) = FakeLLM.instances
    assert len(llm.batches) == 2 and llm.weight_loads > 0
    ids = prompt_token_ids()
    requested = []
    for batch in llm.batches:
        assert [n for _, n in batch] == [1] * ROWS
        requested.append([ids[p] for p, _ in batch])
    check_rows_follow_the_allocation(trainer, verifier, requested, llm.completions)
