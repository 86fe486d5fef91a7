"""A two-rank ``torchrun`` (CPU, gloo) run of CoBAGRPOTrainer through TRL's real loop.

Each rank (``trl_torchrun_worker.py``) generates and scores only its own slice of the
generation batch; the allocation is made on rank 0 and broadcast, the rewards are
gathered, and every rank updates its own copy of the allocator. The test checks that
both ranks agree on every allocation and end in the identical allocator state, that the
two slices add up to the whole budget in allocation order, and that an independent
allocator fed the two slices' rewards reproduces every allocation and the final state.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.trl, pytest.mark.e2e]

torch = pytest.importorskip("torch")
pytest.importorskip("trl")
pytest.importorskip("transformers")
pytest.importorskip("datasets")
pytest.importorskip("tokenizers")

from trl_torchrun_worker import ANSWERS, ROWS_PER_RANK, STEPS, warmed_history  # noqa: E402
from trl_toy import group_advantages_reference, runs  # noqa: E402

import coba_rl  # noqa: E402
from coba_rl.integrations import STATE_FILENAME  # noqa: E402

HERE = Path(__file__).resolve().parent
SRC = Path(coba_rl.__file__).resolve().parents[1]  # the coba_rl under test, for the workers


def run_two_ranks(out: Path) -> list[dict[str, Any]]:
    path = [str(SRC), str(HERE), os.environ.get("PYTHONPATH", "")]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in path if p),
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(HERE / "trl_torchrun_worker.py"),
        str(out),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, f"torchrun failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]


def test_two_rank_torchrun_agrees_and_splits_the_budget(tmp_path: Path) -> None:
    rank0, rank1 = run_two_ranks(tmp_path)
    budget = 2 * ROWS_PER_RANK
    for r, result in enumerate((rank0, rank1)):
        assert result["rank"] == r and result["world_size"] == 2
        assert result["backend"] == "gloo"
        assert result["generation_batch_size"] == budget
        assert len(result["steps"]) == len(result["local_rows"]) == STEPS

    # identical allocator state on both ranks, and in the checkpoint rank 0 wrote
    assert rank0["state"] == rank1["state"]
    saved = json.loads((tmp_path / "run" / f"checkpoint-{STEPS}" / STATE_FILENAME).read_text())
    assert saved == rank0["state"]

    reference = coba_rl.CoBAAllocator(coba_rl.CoBAConfig(n_low=2, n_up=8))
    reference.update(*warmed_history())
    uneven = False
    for step0, step1, rows0, rows1 in zip(
        rank0["steps"], rank1["steps"], rank0["local_rows"], rank1["local_rows"], strict=True
    ):
        assert step0["counts"] == step1["counts"] and step0["row_ids"] == step1["row_ids"]
        counts = step0["counts"]
        assert sum(counts) == budget
        # each rank scored its own half; the halves are the allocation's rows, in order
        assert len(rows0["ids"]) == len(rows1["ids"]) == ROWS_PER_RANK
        ids = rows0["ids"] + rows1["ids"]
        rewards = rows0["rewards"] + rows1["rewards"]
        lens = rows0["lengths"] + rows1["lengths"]  # each rank's completion lengths
        assert ids == step0["row_ids"]
        keys, lengths = runs(ids)
        assert sorted(keys) == list(range(len(ANSWERS))) and lengths == counts
        assert reference.allocate(keys, budget).counts.tolist() == counts
        uneven |= len(set(counts)) > 1
        # each rank kept the advantages of its own rows, normalised in the whole group
        advantages = step0["local_advantages"] + step1["local_advantages"]
        assert advantages == pytest.approx(group_advantages_reference(rewards, ids), abs=1e-5)
        reference.update(ids, rewards, lengths=lens)
    assert uneven, "the warmed allocator must allocate unevenly"
    assert rank0["state"] == reference.state_dict()
