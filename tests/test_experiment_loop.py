"""``coba-rl experiment`` with torch: the tiny policy, the GRPO loop and the command end to end.

Skipped without the ``[experiment]`` extra; CI runs it in the venv that has torch.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from coba_rl.experiment import ArithmeticTask, ExperimentSettings, preset
from coba_rl.experiment.task import EOS

TASK = ArithmeticTask()

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


def test_token_budget_allocator_runs_in_the_loop_and_spends_uniforms_expected_tokens() -> None:
    """``coba-paper-tokens``: lengths reach the tracker and every step's expected tokens fit
    ``T = (B / M) * sum of the batch's last-seen mean lengths`` (recomputed from the records)."""
    import numpy as np

    from coba_rl.experiment._loop import TokenBudgetCoBA, run_grpo
    from coba_rl.experiment._run import make_allocator
    from coba_rl.experiment.task import make_splits

    s = ExperimentSettings(**preset("smoke"))  # type: ignore[arg-type]
    alloc = make_allocator("coba-paper-tokens", s)
    assert isinstance(alloc, TokenBudgetCoBA)
    train = make_splits(TASK, 0, (16,))[0]
    policy = PolicyConfig(d_model=16, n_heads=2, n_layers=1, d_mlp=32,
                          max_len=TASK.max_prompt_len + TASK.max_answer_len + 1)  # fmt: skip
    weights = TinyTransformer(policy, seed=1).state_dict()
    budget = 4 * 3  # 3 uniform rollouts per prompt
    run = run_grpo(alloc, TASK, train, train[:4], weights=weights, policy=policy, seed=0,
                   steps=6, batch_size=4, budget=budget, lr=1e-3, eval_every=3)  # fmt: skip
    last_len: dict[int, float] = {}  # window 1: a prompt's cost is its last step's mean
    limit = float(TASK.max_answer_len)
    for step in run.steps:
        known = [last_len[i] for i in step.prompt_ids if i in last_len]
        fill = float(np.mean(known)) if known else limit
        costs = [last_len.get(i, fill) for i in step.prompt_ids]
        t_budget = budget / len(step.prompt_ids) * sum(costs)
        expected = sum(n * c for n, c in zip(step.counts, costs, strict=True))
        assert expected <= t_budget + 1e-6
        assert all(s.n_low <= n <= s.n_up for n in step.counts)
        assert len(step.response_lengths) == sum(step.counts)
        start = 0
        for i, n in zip(step.prompt_ids, step.counts, strict=True):
            last_len[i] = float(np.mean(step.response_lengths[start : start + n]))
            start += n
    ids = sorted(last_len)
    np.testing.assert_allclose(alloc.inner.mean_lengths(ids), [last_len[i] for i in ids])
    assert run.rollouts[-1] == sum(sum(st.counts) for st in run.steps)
