"""The verl integration's settings, prompt ids and checkpoint folders: no verl needed."""

from __future__ import annotations

import os
from types import SimpleNamespace

import numpy as np
import pytest

from coba_rl.config import CoBAConfig
from coba_rl.integrations.verl import (
    COBA_KEYS,
    check_v1_config,
    checkpoint_dir,
    coba_settings,
    prompt_ids,
    resume_dir,
)
from coba_rl.integrations.verl._config import settings_from_config


def msgs(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def test_prompt_ids_tell_apart_equal_indices_from_different_files() -> None:
    ids = prompt_ids([0, 1, 0], [msgs("a"), msgs("b"), msgs("c")])
    assert len(set(ids.tolist())) == 3
    assert [i.split(":")[0] for i in ids.tolist()] == ["0", "1", "0"]
    # stable: the same prompt at the same index gets the same id in any batch or process
    assert prompt_ids([1], [msgs("b")]).tolist() == [ids[1]]
    # copies of one prompt at different indices stay distinct prompts
    assert len(set(prompt_ids([3, 4], [msgs("x"), msgs("x")]).tolist())) == 2


def test_prompt_ids_refuse_collisions_and_missing_prompts() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        prompt_ids([0, 0], [msgs("a"), msgs("a")])
    with pytest.raises(ValueError, match="duplicate"):
        prompt_ids([0, 0], mode="index")
    with pytest.raises(ValueError, match="needs the prompts"):
        prompt_ids([0, 1])
    with pytest.raises(ValueError, match="2 dataset indices but 1 prompts"):
        prompt_ids([0, 1], [msgs("a")])
    with pytest.raises(ValueError, match="prompt id mode must be one of"):
        prompt_ids([0], [msgs("a")], mode="text")  # type: ignore[arg-type]
    assert prompt_ids(np.array([5, 2], dtype=object), mode="index").tolist() == [5, 2]


def test_coba_settings_map_every_config_field_generically() -> None:
    for field in CoBAConfig.model_fields:
        assert field in COBA_KEYS
    s = coba_settings({"variant": "release", "window": 4, "unseen_pass_rate": 0.3})
    assert (s.config.variant, s.config.window, s.config.unseen_pass_rate) == ("release", 4, 0.3)
    assert s.budget is None and s.prompt_id == "index_prompt"
    assert coba_settings({"success_threshold": 0.5}).config.success_threshold == 0.5


@pytest.mark.parametrize(
    ("values", "match"),
    [
        ({"kapa": 5}, r"unknown key coba.kapa; valid keys: variant, "),
        ({"kappa": 1.5}, r"invalid coba settings: coba.kappa: "),
        ({"bounds": [2, 8], "n_up": 9}, "coba.bounds or coba.n_low / coba.n_up, not both"),
        ({"bounds": [2]}, r"coba.bounds must be \[n_low, n_up\]"),
        ({"bounds": [9, 2]}, r"n_low \(9\) must not exceed n_up \(2\)"),
        ({"budget": 0}, "coba.budget must be a positive integer"),
        ({"budget": True}, "coba.budget must be a positive integer"),
        ({"prompt_id": "text"}, "coba.prompt_id must be one of"),
        ({"token_budget": 0}, r"coba.token_budget must be a positive number .*got 0$"),
        ({"token_budget": -512}, "coba.token_budget must be a positive number"),
        ({"token_budget": True}, "coba.token_budget must be a positive number"),
        ({"token_budget": "4k"}, r"coba.token_budget must be a positive number .*got '4k'"),
        ({"token_budget": float("nan")}, "coba.token_budget must be a positive number"),
        ({"token_budget": float("inf")}, "coba.token_budget must be a positive number"),
        ({"max_prompt_tokens": 0}, r"invalid coba settings: coba.max_prompt_tokens: "),
        ({"default_tokens_per_rollout": -1}, "coba.default_tokens_per_rollout: "),
    ],
)
def test_coba_settings_name_the_bad_key(values: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match) as err:
        coba_settings(values)
    assert "\n" not in str(err.value)  # one line, as the launcher prints it


def test_token_budget_settings_and_the_default_cost_of_unknown_lengths() -> None:
    assert coba_settings(None).token_budget is None  # rollouts only, as without the key
    s = coba_settings({"token_budget": 4096, "max_prompt_tokens": 1024})
    assert (s.token_budget, s.config.max_prompt_tokens) == (4096.0, 1024.0)
    assert "token_budget" in COBA_KEYS and "max_prompt_tokens" in COBA_KEYS
    # a full batch gets the budget, a refill of fewer prompts its share
    assert s.resolve_token_budget(8, 8) == 4096.0
    assert s.resolve_token_budget(2, 8) == 1024.0
    assert coba_settings(None).resolve_token_budget(2, 8) is None
    # from a verl config: unknown lengths cost data.max_response_length, unless set
    cfg = {"coba": {"token_budget": 4096}, "data": {"max_response_length": 512}}
    assert settings_from_config(cfg).config.default_tokens_per_rollout == 512.0
    cfg["coba"]["default_tokens_per_rollout"] = 300
    assert settings_from_config(cfg).config.default_tokens_per_rollout == 300.0
    no_budget = {"coba": {"kappa": 5}, "data": {"max_response_length": 512}}
    assert settings_from_config(no_budget).config.default_tokens_per_rollout is None
    # a first batch of unknown lengths needs train_batch_size * n_low * default tokens
    cfg = {"coba": {"token_budget": 4096, "n_low": 2}, "data": {"max_response_length": 512}}
    settings_from_config(cfg).check_token_budget(4)  # 4 * 2 * 512 = 4096: just enough
    with pytest.raises(ValueError, match=r"below the first batch's floor .* = 5120 ") as err:
        settings_from_config(cfg).check_token_budget(5)
    assert "\n" not in str(err.value)
    coba_settings({"token_budget": 1}).check_token_budget(5)  # no default: nothing to check


def test_budget_defaults_to_batch_times_n_and_must_fit_the_bounds() -> None:
    s = coba_settings({"bounds": [2, 8]})
    assert s.resolve_budget(16, 4, 16) == 64
    assert coba_settings({"bounds": [2, 8], "budget": 100}).resolve_budget(16, 4, 16) == 100
    # a refill of fewer prompts than a batch gets rollout.n each
    assert coba_settings({"bounds": [2, 8], "budget": 100}).resolve_budget(3, 4, 16) == 12
    with pytest.raises(ValueError, match=r"outside \[16 \* n_low, 16 \* n_up\] = \[32, 128\]"):
        coba_settings({"bounds": [2, 8], "budget": 200}).resolve_budget(16, 4, 16)


def test_checkpoint_folders_follow_verl() -> None:
    cfg = SimpleNamespace(
        trainer=SimpleNamespace(
            default_local_dir="ckpt/run2",
            resume_mode="resume_path",
            resume_from_path="run1/global_step_2",
        )
    )
    # saving always goes to the new run's step folder, never to the folder resumed from
    assert checkpoint_dir(cfg, 3) == os.path.join("ckpt/run2", "global_step_3")
    assert resume_dir(cfg, 2) == os.path.abspath("run1/global_step_2")
    cfg.trainer.resume_mode = "auto"
    assert resume_dir(cfg, 2) == os.path.abspath(os.path.join("ckpt/run2", "global_step_2"))
    assert resume_dir(cfg, 0) is None
    cfg.trainer.resume_mode = "disable"
    assert resume_dir(cfg, 5) is None


def test_check_v1_config_refuses_async_modes_and_group_filtering() -> None:
    check_v1_config({"trainer": {"v1": {"trainer_mode": "sync"}}})
    for mode in ("colocate_async", "separate_async"):
        with pytest.raises(ValueError, match=f"trainer_mode='{mode}' is not supported"):
            check_v1_config({"trainer": {"v1": {"trainer_mode": mode}}})
    with pytest.raises(ValueError, match="filter_groups"):
        check_v1_config({"algorithm": {"filter_groups": {"enable": True}}})
