"""The ``coba-rl`` command line: version, help with defaults, one-line errors, early checks."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from pydantic import BaseModel, Field, ValidationError

import coba_rl
from coba_rl import _cli, simulate
from coba_rl.bench import _command as bench_command
from coba_rl.cli import main


def _fail_if_called(*args: object, **kwargs: object) -> None:
    raise AssertionError("the work started although the arguments were bad")


@pytest.fixture
def no_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any simulation or benchmark stage fails the test if it starts."""
    monkeypatch.setattr(simulate, "run_comparison", _fail_if_called)
    monkeypatch.setattr(bench_command, "run_all", _fail_if_called)


def _usage_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run ``coba-rl argv``; require exit status 2 and one line on stderr; return it."""
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert "http" not in lines[0] and "validation error" not in lines[0]
    return lines[0]


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out == f"coba-rl {coba_rl.__version__}\n"


# -- the output folder is checked before any work ------------------------------------------


@pytest.mark.parametrize("command", ["simulate", "bench"])
def test_output_under_proc_fails_before_work(
    command: str, no_work: None, capsys: pytest.CaptureFixture[str]
) -> None:
    if not Path("/proc").is_dir():
        pytest.skip("no /proc on this system")
    line = _usage_error([command, "--out", "/proc/coba-rl-x", "--quiet"], capsys)
    assert line.startswith(f"coba-rl {command}: error: cannot create the output folder")
    assert "/proc/coba-rl-x" in line


@pytest.mark.parametrize("command", ["simulate", "bench"])
def test_output_under_a_file_fails_before_work(
    command: str, tmp_path: Path, no_work: None, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    line = _usage_error([command, "--out", str(blocker / "out"), "--quiet"], capsys)
    assert "cannot create the output folder" in line and str(blocker / "out") in line
    assert blocker.read_text() == "x"


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root may write in any folder"
)
def test_read_only_output_fails_before_work(
    tmp_path: Path, no_work: None, capsys: pytest.CaptureFixture[str]
) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        line = _usage_error(["simulate", "--out", str(locked), "--quiet"], capsys)
    finally:
        locked.chmod(0o700)
    assert "cannot write in the output folder" in line


def test_bench_missing_docs_file_fails_before_work(
    tmp_path: Path, no_work: None, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope.md"
    line = _usage_error(["bench", "--out", str(tmp_path), "--update-docs", str(missing)], capsys)
    assert line == f"coba-rl bench: error: --update-docs: no such file '{missing}'"


def test_check_output_dir_creates_the_folder_and_leaves_it_empty(tmp_path: Path) -> None:
    out = tmp_path / "a" / "b"
    assert _cli.check_output_dir(out) == out
    assert out.is_dir() and list(out.iterdir()) == []


# -- bad values: one line, exit 2 ----------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["--n-low", "0"],
            "coba-rl simulate: error: --n-low: input should be greater than or equal to 1 (got 0)",
        ),
        (["--n-low", "5", "--n-up", "2"], "coba-rl simulate: error: n_low (5) must not exceed"),
        (["--kappa", "nan"], "coba-rl simulate: error: --kappa: input should be a finite number"),
        (["--num-train", "10"], "coba-rl simulate: error: batch_size (256) exceeds the training"),
        (["--seeds", "1", "1"], "coba-rl simulate: error: --seeds: seeds must be non-empty"),
        (["--steps", "x"], "coba-rl simulate: error: argument --steps: invalid int value: 'x'"),
        (["--allocators", "coba"], "coba-rl simulate: error: argument --allocators: invalid"),
    ],
)
def test_simulate_bad_values_give_one_line(
    args: list[str], expected: str, no_work: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _usage_error(["simulate", *args, "--quiet"], capsys).startswith(expected)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["bench", "--reps", "0"], "coba-rl bench: error: argument --reps: must be at least 1"),
        (["bench", "--bogus"], "coba-rl: error: unrecognized arguments: --bogus"),
        ([], "coba-rl: error: the following arguments are required: command"),
    ],
)
def test_other_bad_arguments_give_one_line(
    argv: list[str], expected: str, no_work: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _usage_error(argv, capsys).startswith(expected)


def test_validation_message_is_one_line_per_model() -> None:
    class Settings(BaseModel):
        n_low: int = Field(2, ge=1)
        batch_size: int = 8

    with pytest.raises(ValidationError) as info:
        Settings.model_validate({"n_low": 0, "batch_size": "many"})
    assert _cli.validation_message(info.value) == (
        "n_low: input should be greater than or equal to 1 (got 0); "
        "batch_size: input should be a valid integer, unable to parse string as an integer "
        "(got 'many')"
    )
    assert _cli.validation_message(info.value, as_options=True).startswith("--n-low: ")


# -- help shows every default ---------------------------------------------------------------


def _help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as stop:
        main([*argv, "--help"])
    assert stop.value.code == 0
    return capsys.readouterr().out


def _option_blocks(help_text: str, flags: bool = False) -> dict[str, str]:
    """``{option: its help text}`` for every option that takes a value (and, with
    ``flags``, every on/off flag), leaving out ``--help`` and ``--version``."""
    body = help_text.split("options:", 1)[1]
    blocks: dict[str, str] = {}
    for block in re.split(r"\n(?=  -)", body):
        words = " ".join(block.split())
        invocation = re.split(r"\s{2,}", block.strip(), maxsplit=1)[0].split("\n")[0]
        last = invocation.split(", ")[-1]
        if " " in last:  # "--n-low N_LOW": takes a value
            blocks[last.split()[0]] = words
        elif flags and last.startswith("--") and last not in ("--help", "--version"):
            blocks[last] = words
    return blocks


@pytest.mark.parametrize("command", ["simulate", "bench"])
def test_every_option_shows_its_default(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    blocks = _option_blocks(_help([command], capsys), flags=True)
    assert "--out" in blocks and "--quick" in blocks and len(blocks) >= 8
    for option, text in blocks.items():
        assert "default:" in text, f"{option} shows no default: {text!r}"


@pytest.mark.parametrize("command", ["simulate", "bench"])
def test_on_off_flags_show_default_off(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    blocks = _option_blocks(_help([command], capsys), flags=True)
    for flag in ("--quick", "--quiet"):
        assert blocks[flag].endswith("(default: off)"), blocks[flag]
    if command == "simulate":
        assert blocks["--no-plots"] == "--no-plots skip the PNG plots (default: off)"


def test_help_and_version_state_no_default(capsys: pytest.CaptureFixture[str]) -> None:
    text = " ".join(_help([], capsys).split())
    assert "show this help message and exit --version" in text
    assert "show program's version number and exit" in text and "default" not in text


def test_store_false_flag_shows_default_on() -> None:
    p = _cli.CommandParser(prog="demo")
    p.add_argument("--no-color", dest="color", action="store_false", help="plain output")
    assert "plain output (default: on)" in " ".join(p.format_help().split())


def test_simulate_help_states_bounds_and_allocators(capsys: pytest.CaptureFixture[str]) -> None:
    blocks = _option_blocks(_help(["simulate"], capsys))
    assert "fewest rollouts a prompt gets" in blocks["--n-low"]
    assert blocks["--n-low"].endswith("(default: 2)")
    assert "most rollouts a prompt gets" in blocks["--n-up"]
    assert blocks["--n-up"].endswith("(default: 128)")
    assert blocks["--allocators"].endswith("(default: uniform knapsack-rl coba-paper coba-release)")
    assert blocks["--out"].endswith("(default: results/sim)")
    assert blocks["--seeds"].endswith("(default: 0 1 2 3 4)")


def test_bench_help_states_quick_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    blocks = _option_blocks(_help(["bench"], capsys))
    assert blocks["--reps"].endswith("(default: 10; 3 with --quick)")
    assert blocks["--cap"].endswith("(default: 20; 1 with --quick)")
    assert blocks["--out"].endswith("(default: results/bench)")


def test_top_level_help_lists_version(capsys: pytest.CaptureFixture[str]) -> None:
    text = _help([], capsys)
    assert "--version" in text and "simulate" in text and "bench" in text


def test_ctrl_c_is_one_line_and_status_130(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(simulate, "run_comparison", interrupted)
    assert main(["simulate", "--out", str(tmp_path), "--quiet"]) == 130
    assert capsys.readouterr().err == "coba-rl simulate: interrupted\n"
