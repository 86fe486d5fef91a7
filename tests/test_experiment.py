"""``coba-rl experiment``: the task, the tiny policy, the GRPO loop and the command, end to end.

The task and settings tests need no torch; the rest skip cleanly without the
``[experiment]`` extra (CI runs them in the venv that has torch).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from coba_rl.experiment import ArithmeticTask, ExperimentSettings, make_splits, preset
from coba_rl.experiment.task import EOS, LEVELS

TASK = ArithmeticTask()


# -- the task (no torch) ---------------------------------------------------------------


def test_answers_are_reversed_sums_and_the_verifier_is_exact() -> None:
    assert TASK.prompt_text((47, 305)) == "740+503="  # zero-padded to 3, least significant first
    assert TASK.prompt_text((3, 0, 9)) == "3+0+9="
    digits = [t - 5 for t in TASK.answer_tokens((999, 1))]  # 1000, written 0001
    assert digits[:-1] == [0, 0, 0, 1] and TASK.answer_tokens((999, 1))[-1] == EOS
    good = TASK.answer_tokens((12, 30))  # 42 -> "24"
    assert TASK.verify((12, 30), good) == 1.0
    assert TASK.verify((12, 30), [*good, 7, 7]) == 1.0  # tokens after the end are ignored
    assert TASK.verify((12, 30), good[:-1]) == 0.0  # no end token
    assert TASK.verify((12, 30), [good[0], EOS]) == 0.0  # a prefix is wrong
    assert TASK.verify((12, 30), [good[1], good[0], EOS]) == 0.0  # most significant first is wrong


def test_every_level_is_drawn_and_lengths_fit() -> None:
    problems = TASK.sample(np.random.default_rng(0), 400)
    levels = {TASK.level(p) for p in problems}
    assert levels == set(range(len(LEVELS)))
    assert max(len(TASK.prompt_tokens(p)) for p in problems) <= TASK.max_prompt_len
    assert max(len(TASK.answer_tokens(p)) for p in problems) <= TASK.max_answer_len


def test_splits_are_disjoint_and_deterministic() -> None:
    a = make_splits(TASK, 3, (200, 50, 100))
    b = make_splits(TASK, 3, (200, 50, 100))
    assert a == b
    assert [len(s) for s in a] == [200, 50, 100]
    assert len(set(a[0]) | set(a[1]) | set(a[2])) == 350
    assert make_splits(TASK, 4, (200,))[0] != a[0]


def test_settings_reject_bad_values_and_presets_are_valid() -> None:
    with pytest.raises(ValidationError, match="unknown allocator 'grpo'"):
        ExperimentSettings(allocators=("grpo",))
    with pytest.raises(ValidationError, match=r"budget 16 is outside"):
        ExperimentSettings(
            batch_size=16,
            group_size=1 + 1,
            n_low=2,
            n_up=4,
            half_budget=("coba-paper",),
            allocators=("coba-paper",),
        )
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        ExperimentSettings(budget=3)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="unknown preset"):
        preset("huge")
    for name in ("full", "quick", "smoke"):
        s = ExperimentSettings(**preset(name))  # type: ignore[arg-type]
        assert s.configs()[0] == ("uniform", s.budget())
        assert ("coba-paper", s.budget() // 2) in s.configs()


# -- the command line (no torch needed: it checks its input first) --------------------


def test_cli_bad_values_give_one_line_errors_before_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from coba_rl.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["experiment", "--steps", "0", "--out", str(tmp_path / "x"), "--quiet"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("coba-rl experiment: error: --steps: input should be greater than")
    assert err.count("\n") == 1
    assert not (tmp_path / "x").exists()  # nothing was created before the check failed


def test_cli_help_shows_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    from coba_rl.cli import main

    with pytest.raises(SystemExit):
        main(["experiment", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: results/experiment)" in text and "--smoke" in text and "(default: 1)" in text


def test_allocator_selection_includes_the_token_budget_config() -> None:
    from coba_rl.experiment._command import build_parser

    args = build_parser().parse_args(
        ["--allocators", "uniform", "coba-paper-tokens", "--half-budget", "coba-paper-tokens"]
    )
    s = ExperimentSettings(allocators=tuple(args.allocators), half_budget=tuple(args.half_budget))
    assert s.configs() == [("uniform", 128), ("coba-paper-tokens", 128), ("coba-paper-tokens", 64)]
    assert build_parser().parse_args(["--half-budget"]).half_budget == []
    assert "coba-paper-tokens" not in ExperimentSettings().allocators  # opt-in, not default
    assert ExperimentSettings(half_budget=()).configs()[-1] == ("coba-release", 128)
