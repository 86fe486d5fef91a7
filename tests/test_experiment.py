"""``coba-rl experiment``: the task, the tiny policy, the GRPO loop and the command, end to end.

The task and settings tests need no torch; the rest skip cleanly without the
``[experiment]`` extra (CI runs them in the venv that has torch).
"""

from __future__ import annotations

import json
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


# -- the policy and the loop (torch) ---------------------------------------------------

torch = pytest.importorskip("torch")

from coba_rl.experiment._policy import (  # noqa: E402
    PolicyConfig,
    TinyTransformer,
    encode_prompts,
    generate,
    grpo_loss,
)

SMALL = PolicyConfig(d_model=16, n_heads=2, n_layers=1, d_mlp=32)


def test_left_padding_does_not_change_the_logits() -> None:
    net = TinyTransformer(SMALL, seed=0).eval()
    short, long = (1, 2), (123, 456)
    batch = encode_prompts(TASK, [short, long])  # the short prompt is left-padded
    alone = encode_prompts(TASK, [short])
    with torch.no_grad():
        padded = net(batch)[0, -alone.shape[1] :]
        plain = net(alone)[0]
    torch.testing.assert_close(padded, plain, rtol=1e-5, atol=1e-5)


def test_generation_stops_at_the_end_token_and_reports_lengths() -> None:
    net = TinyTransformer(SMALL, seed=1)
    prompts = encode_prompts(TASK, [(1, 2)] * 64)
    out = generate(net, prompts, TASK.max_answer_len, generator=torch.Generator().manual_seed(0))
    resp = out.tokens[:, out.prompt_width :]
    rows = zip(resp.tolist(), out.lengths.tolist(), out.response_mask.tolist(), strict=True)
    for row, n, mask in rows:
        assert 1 <= n <= TASK.max_answer_len
        assert sum(mask) == n
        if EOS in row:
            assert row.index(EOS) == n - 1 and all(t == 0 for t in row[n:])
        else:
            assert n == len(row)


def test_grpo_loss_is_token_mean_and_zero_for_zero_advantages() -> None:
    net = TinyTransformer(SMALL, seed=2)
    out = generate(net, encode_prompts(TASK, [(5, 6)] * 4), TASK.max_answer_len,
                   generator=torch.Generator().manual_seed(1))  # fmt: skip
    assert grpo_loss(net, out, torch.zeros(4)).item() == 0.0
    adv = torch.tensor([1.0, -1.0, 0.5, 0.0])
    from coba_rl.experiment._policy import _response_logprobs

    logp = _response_logprobs(net, out)
    want = -(adv[:, None] * logp * out.response_mask).sum() / out.response_mask.sum()
    torch.testing.assert_close(grpo_loss(net, out, adv), want)


def test_grpo_on_a_single_prompt_raises_its_pass_rate() -> None:
    """The loop's own gradient: reward-weighted updates make the rewarded answer likelier."""
    import coba_rl
    from coba_rl.experiment._loop import run_grpo

    net = TinyTransformer(SMALL, seed=3)
    weights = {k: v.clone() for k, v in net.state_dict().items()}
    train = [(1, 2)]
    run = run_grpo(coba_rl.UniformAllocator(), TASK, train, train, weights=weights, policy=SMALL,
                   seed=0, steps=1, batch_size=1, budget=4, lr=1e-3, eval_every=1)  # fmt: skip
    step = run.steps[0]
    assert step.counts == [4] and len(step.response_lengths) == 4
    assert step.tokens == sum(step.response_lengths) == run.tokens[-1]
    assert run.rollouts == [0, 4]


def test_cli_smoke_runs_the_loop_end_to_end(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``coba-rl experiment --smoke``: every allocator, both budgets, the lr search, outputs."""
    from coba_rl.cli import main

    out = tmp_path / "exp"
    assert main(["experiment", "--smoke", "--out", str(out), "--quiet", "--no-plots"]) == 0
    record = json.loads((out / "results.json").read_text())
    s = ExperimentSettings(**preset("smoke"))  # type: ignore[arg-type]
    assert {(r["allocator"], r["budget"]) for r in record["runs"]} == set(s.configs())
    assert record["optimizer"]["name"] == "adam" and record["loss_aggregation"] == "token-mean"
    assert {(c["allocator"], c["budget"]) for c in record["chosen_lr"]} == set(s.configs())
    for run in record["runs"]:
        acc = run["heldout_accuracy"]
        assert len(acc) == len(run["eval_steps"]) and all(0.0 <= a <= 1.0 for a in acc)
        assert run["lr"] in s.lr_grid
        for step in run["steps"]:
            assert sum(step["counts"]) == run["budget"]
            assert len(step["response_lengths"]) == run["budget"]
            assert all(0 <= k <= n for k, n in zip(step["successes"], step["counts"], strict=True))
        assert run["tokens_per_step"] == [sum(st["response_lengths"]) for st in run["steps"]]
        assert run["tokens"][-1] == sum(run["tokens_per_step"])
        assert run["rollouts"][-1] == run["budget"] * s.steps
    md = (out / "results.md").read_text()
    assert "| budget | allocator | lr |" in md and "torch" in md
    printed = capsys.readouterr().out
    assert "Table:" in printed


def test_cli_rejects_an_unwritable_output_folder_before_work(tmp_path: Path) -> None:
    from coba_rl.cli import main

    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(SystemExit) as exc:
        main(["experiment", "--smoke", "--out", str(blocker / "sub"), "--quiet"])
    assert exc.value.code == 2


def test_cached_generation_gives_the_logits_of_a_full_forward() -> None:
    net = TinyTransformer(SMALL, seed=4).eval()
    prompts = encode_prompts(TASK, [(1, 2), (123, 456), (7, 8, 9)])
    seq = torch.cat([prompts, torch.tensor([[6, 3, 2], [7, 7, 0], [4, 9, 2]])], dim=1)  # incl. "+"
    with torch.no_grad():
        full = net(seq)
        last, state = net.start(prompts)
        steps = [last] + [
            net.extend(seq[:, j], state) for j in range(prompts.shape[1], seq.shape[1] - 1)
        ]
    torch.testing.assert_close(
        torch.stack(steps, dim=1), full[:, prompts.shape[1] - 1 : -1], rtol=1e-5, atol=1e-5
    )
