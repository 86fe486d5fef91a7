"""Reading and repeating verl batches, stable prompt ids, and allocator files in checkpoints.

verl itself is never imported here: these functions only call methods of the ``DataProto``
or ``TensorDict`` they are given, so this module imports (and type-checks) without verl.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from coba_rl._validation import as_id_array, check_unique_ids
from coba_rl.allocator import CoBAAllocator, read_state_file
from coba_rl.grpo import expand
from coba_rl.integrations import STATE_FILENAME

__all__ = [
    "PROMPT_ID_MODES",
    "PromptIdMode",
    "allocator_path",
    "check_counts",
    "checkpoint_dir",
    "dataset_indices",
    "feed_back",
    "load_allocator",
    "map_uids",
    "prompt_ids",
    "repeat_rows",
    "response_lengths",
    "resume_dir",
    "row_prompt_ids",
    "save_allocator",
    "sequence_scores",
]

#: How a prompt's stable id is made (see :func:`prompt_ids`).
PromptIdMode = Literal["index_prompt", "index"]
PROMPT_ID_MODES: tuple[str, ...] = ("index_prompt", "index")

IntArray = NDArray[np.int64]
FloatArray = NDArray[np.float64]


# -- repeating rows ------------------------------------------------------------------------


def check_counts(counts: ArrayLike, num_prompts: int, total: int | None = None) -> IntArray:
    """Validate per-prompt rollout counts for a batch and return them as int64.

    The counts must satisfy ``len(counts) == num_prompts`` and, when ``total`` is given,
    ``sum(counts) == total`` exactly: verl's mini-batch arithmetic, ``DataProto.chunk``
    and ``_balance_batch`` all assume ``train_batch_size * rollout.n`` rows.

    Args:
      counts: non-negative integer counts, shape ``(M,)``.
      num_prompts: the batch's number of prompt rows ``M``.
      total: the required row total (``M * rollout.n``), or ``None`` to skip that check.

    Returns:
      The counts as a new int64 array.

    Raises:
      ValueError: wrong length, negative or non-integer counts, or a total that differs.

    Example:
      >>> check_counts([2, 5, 1], 3, total=8).tolist()
      [2, 5, 1]
      >>> check_counts([2, 5], 3)
      Traceback (most recent call last):
      ...
      ValueError: counts has 2 entries but the batch has 3 prompt rows

    Complexity: O(M).
    """
    c = np.asarray(counts)
    rows = expand(c)  # validates 1-D, integer, non-negative
    if c.size != num_prompts:
        raise ValueError(f"counts has {c.size} entries but the batch has {num_prompts} prompt rows")
    if total is not None and rows.size != total:
        raise ValueError(
            f"counts sum to {rows.size}, but verl needs exactly {total} rows "
            "(train_batch_size * rollout.n); allocate with that budget"
        )
    return c.astype(np.int64)


def repeat_rows(data: Any, counts: ArrayLike, total: int | None = None) -> Any:
    """Repeat each row of a verl ``DataProto`` ``counts[i]`` times, rows contiguous and in order.

    Rows ``0..counts[0]-1`` of the result copy prompt row 0, the next ``counts[1]`` copy
    row 1, and so on, as ``DataProto.repeat(n, interleave=True)`` does for a uniform
    ``n``. Every tensor and non-tensor column is repeated, so ``uid`` (the group key of
    verl's GRPO advantage) and ``index`` (the stable dataset id) stay with their rows.

    Args:
      data: a ``verl.DataProto`` with ``M`` rows.
      counts: ``M`` non-negative integer counts.
      total: the required row total, or ``None`` to skip that check.

    Returns:
      A new ``DataProto`` with ``sum(counts)`` rows (``DataProto.sample_level_repeat``).

    Raises:
      ValueError: see :func:`check_counts`.

    Example:
      >>> from verl import DataProto  # doctest: +SKIP
      >>> batch = DataProto.from_dict({"x": torch.arange(3)})  # doctest: +SKIP
      >>> repeat_rows(batch, [2, 1, 3]).batch["x"].tolist()  # doctest: +SKIP
      [0, 0, 1, 2, 2, 2]

    Complexity: O(sum(counts)) rows copied.
    """
    c = check_counts(counts, len(data), total)
    return data.sample_level_repeat(c)


# -- reading the batch ---------------------------------------------------------------------


def dataset_indices(batch: Any, key: str = "index") -> NDArray[Any]:
    """The stable prompt id of each row of a prompt batch: verl's dataset ``index``.

    ``RLHFDataset`` copies ``extra_info["index"]`` into the ``index`` column and silently
    defaults it to 0 when missing, so a dataset without indices gives every prompt id 0.
    It refuses such a batch instead of letting all prompts share one history.
    Never use ``uid``: it is a fresh ``uuid4`` per prompt per step.

    Args:
      batch: a ``DataProto`` holding one row per prompt (before any repeat).
      key: the non-tensor column holding the stable id.

    Returns:
      A 1-D int64 (or unicode) array of ``M`` distinct ids.

    Raises:
      ValueError: the column is missing, or two rows share an id.
      TypeError: ids that are not all ints or all strings.

    Example:
      >>> from types import SimpleNamespace
      >>> b = SimpleNamespace(non_tensor_batch={"index": np.array([4, 9, 2], dtype=object)})
      >>> dataset_indices(b).tolist()
      [4, 9, 2]

    Complexity: O(M log M).
    """
    ntb = getattr(batch, "non_tensor_batch", None)
    if not isinstance(ntb, Mapping) or key not in ntb:
        raise ValueError(
            f"the batch has no non-tensor column {key!r}; put a unique dataset index in "
            "extra_info['index'] of every row (verl's RLHFDataset copies it to 'index')"
        )
    ids = as_id_array(_plain(ntb[key]), name=f"batch column {key!r}")
    check_unique_ids(ids, name=f"batch column {key!r}")
    return ids


def prompt_ids(
    index: ArrayLike, prompts: Sequence[Any] | None = None, mode: PromptIdMode = "index_prompt"
) -> NDArray[Any]:
    """The stable id of each prompt of a batch, from its dataset index and (by default) its text.

    verl's dataset ``index`` (``extra_info["index"]``) restarts at 0 in every training file,
    so with several files two different prompts can share an index, and would share their
    pass-rate history. Two modes:

    - ``"index_prompt"`` (default): ``"<index>:<digest>"``, where the digest is the first 16
      hex digits of the SHA-1 of the prompt (the chat messages as canonical JSON). Prompts
      from different files get different ids unless they are the same text at the same
      index; copies of one prompt at different indices stay distinct. Stable across
      processes, machines and resumes (no Python hash).
    - ``"index"``: the dataset index alone, as the CoBA-RL authors' recipe does; safe only
      when one training file holds every prompt (or the indices are globally unique).

    Args:
      index: the batch's dataset indices (verl's ``index`` column), one per prompt.
      prompts: the prompts (verl's ``raw_prompt`` column), needed by ``"index_prompt"``.
      mode: ``"index_prompt"`` or ``"index"``.

    Returns:
      ``M`` distinct ids: strings for ``"index_prompt"``, int64 for ``"index"``.

    Raises:
      ValueError: an unknown mode, missing or mismatched prompts, or two prompts with one id.

    Example:
      >>> msgs = [[{"role": "user", "content": "1+1?"}], [{"role": "user", "content": "2+2?"}]]
      >>> prompt_ids([0, 0], msgs).tolist()  # index 0 in two files: still distinct
      ['0:ecae32f9533713b1', '0:c4f596be764e5d5c']
      >>> prompt_ids([3, 4], mode="index").tolist()
      [3, 4]

    Complexity: O(M * prompt length).
    """
    if mode not in PROMPT_ID_MODES:
        raise ValueError(f"prompt id mode must be one of {list(PROMPT_ID_MODES)}, got {mode!r}")
    raw = _plain(index)
    idx = as_id_array(raw, name="dataset index")
    if mode == "index":
        check_unique_ids(idx, name="dataset index")
        return idx
    if prompts is None:
        raise ValueError(
            "prompt id mode 'index_prompt' needs the prompts (verl's 'raw_prompt' column); "
            "use mode 'index' when one training file holds every prompt"
        )
    texts = list(_plain(prompts))
    if len(texts) != idx.size:
        raise ValueError(f"{idx.size} dataset indices but {len(texts)} prompts")
    ids = np.array(
        [f"{i}:{_digest(p)}" for i, p in zip(idx.tolist(), texts, strict=True)], dtype=np.str_
    )
    check_unique_ids(ids, name="prompt id (index and prompt text)")
    return ids


def map_uids(batch: Any, prompt_ids: ArrayLike) -> dict[str, Any]:
    """Map each row's per-step ``uid`` to its stable prompt id, before any repeat.

    verl pops ``index`` out of the prompt batch into the generation batch, and may
    reorder rows (``_balance_batch``), but it keeps ``uid`` on every row. This map lets
    :func:`feed_back` find each scored row's stable id from its ``uid``.

    Example:
      >>> from types import SimpleNamespace
      >>> b = SimpleNamespace(non_tensor_batch={"uid": np.array(["a", "b"], dtype=object)})
      >>> map_uids(b, [10, 11])
      {'a': 10, 'b': 11}
    """
    ids = as_id_array(prompt_ids)
    uids = _plain(batch.non_tensor_batch["uid"])
    if len(uids) != ids.size:
        raise ValueError(f"the batch has {len(uids)} uids but {ids.size} prompt ids")
    return {str(u): i.item() for u, i in zip(uids, ids, strict=True)}


def row_prompt_ids(
    batch: Any, *, uid_to_id: Mapping[str, Any] | None = None, key: str = "index"
) -> NDArray[Any]:
    """The stable prompt id of every rollout row of a scored batch.

    Uses ``uid_to_id`` (from :func:`map_uids`) when given, else the ``key`` column.

    Raises:
      ValueError: a row's uid is not in the map, or the column is missing.
    """
    ntb = batch.non_tensor_batch
    if uid_to_id is not None:
        try:
            return as_id_array([uid_to_id[str(u)] for u in _plain(ntb["uid"])])
        except KeyError as exc:
            raise ValueError(
                f"row uid {exc.args[0]!r} was not allocated this step; the batch must come "
                "from the prompts passed to allocate()"
            ) from None
    if key not in ntb:
        raise ValueError(f"the scored batch has no column {key!r} and no uid map was given")
    return as_id_array(_plain(ntb[key]), name=f"batch column {key!r}")


def sequence_scores(batch: Any, key: str = "token_level_scores") -> FloatArray:
    """One scalar score per row: the sum over tokens of ``batch.batch[key]``.

    .. math:: r_j = \\sum_t s_{j,t}

    This is the outcome reward verl's GRPO advantage uses (``token_level_scores`` before
    any KL penalty). Example: a row with scores ``[0, 0, 1]`` has ``r = 1``.

    Raises:
      ValueError: the tensor is missing.
    """
    tensors = batch.batch
    if tensors is None or key not in tensors.keys():  # noqa: SIM118 (older TensorDicts reject `in`)
        raise ValueError(f"the batch has no tensor {key!r}; call after the reward is computed")
    return np.asarray(tensors[key].detach().float().sum(-1).cpu().numpy(), dtype=np.float64)


def response_lengths(batch: Any, key: str = "response_mask") -> IntArray:
    """One response length per row, in tokens: the sum over tokens of ``batch.batch[key]``.

    verl's ``response_mask`` is 1 on the tokens the policy generated and 0 on padding
    (and on tool or user tokens of a multi-turn rollout), so its sum is the response's
    generated tokens: the cost a token budget counts. Example: a mask ``[1, 1, 0]`` is 2.

    Raises:
      ValueError: the tensor is missing.
    """
    tensors = batch.batch
    if tensors is None or key not in tensors.keys():  # noqa: SIM118 (older TensorDicts reject `in`)
        raise ValueError(f"the batch has no tensor {key!r}; it holds each response's tokens")
    return np.asarray(tensors[key].detach().long().sum(-1).cpu().numpy(), dtype=np.int64)


def feed_back(
    allocator: CoBAAllocator,
    batch: Any,
    *,
    uid_to_id: Mapping[str, Any] | None = None,
    key: str = "index",
    score_key: str = "token_level_scores",
) -> None:
    """Update the allocator with one step's scored rollouts: (prompt id, sequence score).

    Call once per step, after the reward and before the next allocation. A rollout counts
    as a success when its score equals ``allocator.config.success_reward``. When the
    batch has a ``response_mask``, each row's response length (:func:`response_lengths`)
    goes to the allocator too, for token budgets.

    Raises:
      ValueError: see :func:`row_prompt_ids` and :func:`sequence_scores`.
    """
    ids = row_prompt_ids(batch, uid_to_id=uid_to_id, key=key)
    tensors = batch.batch
    has_mask = tensors is not None and "response_mask" in tensors.keys()  # noqa: SIM118
    lengths = response_lengths(batch) if has_mask else None
    allocator.update(ids, sequence_scores(batch, score_key), lengths=lengths)


# -- checkpoints ---------------------------------------------------------------------------


def allocator_path(step_dir: str | os.PathLike[str]) -> str:
    """Where the allocator state lives inside a ``global_step_N`` folder."""
    return os.path.join(os.fspath(step_dir), STATE_FILENAME)


def save_allocator(allocator: CoBAAllocator, step_dir: str | os.PathLike[str]) -> str:
    """Save the allocator state (atomically) beside a verl checkpoint; return the path."""
    path = allocator_path(step_dir)
    os.makedirs(step_dir, exist_ok=True)  # written before verl creates the step folder
    allocator.save(path)
    return path


def load_allocator(allocator: CoBAAllocator, step_dir: str | os.PathLike[str]) -> bool:
    """Restore the allocator from a ``global_step_N`` folder; ``False`` if it has no state.

    The saved config must equal the allocator's (see ``CoBAAllocator.load_state_dict``).

    Raises:
      ValueError: the state file is corrupt, of another version, or of another config.
    """
    path = allocator_path(step_dir)
    if not os.path.exists(path):
        return False
    allocator.load_state_dict(read_state_file(path))
    return True


def checkpoint_dir(config: Any, global_steps: int) -> str:
    """The ``global_step_N`` folder verl's ``_save_checkpoint`` writes at ``global_steps``.

    Always under ``trainer.default_local_dir``, also after a ``resume_mode=resume_path``
    start: a resumed run saves into new step folders, never into the one it resumed from.

    Example:
      >>> from types import SimpleNamespace
      >>> cfg = SimpleNamespace(trainer=SimpleNamespace(default_local_dir="ckpt"))
      >>> checkpoint_dir(cfg, 7)
      'ckpt/global_step_7'
    """
    return os.path.join(str(config.trainer.default_local_dir), f"global_step_{int(global_steps)}")


def resume_dir(config: Any, global_steps: int) -> str | None:
    """The ``global_step_N`` folder verl's ``_load_checkpoint`` resumed from, or ``None``.

    ``resume_mode=resume_path``: ``trainer.resume_from_path``; ``auto``: the step folder
    under ``default_local_dir`` that verl found through ``latest_checkpointed_iteration.txt``
    (it set ``global_steps`` from it); ``disable`` or a fresh start (``global_steps == 0``):
    ``None``. Relative paths are taken from the working directory, as verl does.
    """
    trainer = config.trainer
    mode = getattr(trainer, "resume_mode", None) or "auto"
    if mode == "disable" or int(global_steps) <= 0:
        return None
    if mode == "resume_path":
        return os.path.abspath(str(trainer.resume_from_path))
    return os.path.abspath(checkpoint_dir(config, global_steps))


# -- internals -----------------------------------------------------------------------------


def _plain(values: Any) -> Any:
    """An object-dtype column as a list of Python/numpy scalars (numpy arrays pass through)."""
    if isinstance(values, np.ndarray) and values.dtype.kind == "O":
        return values.tolist()
    return values


def _digest(prompt: Any) -> str:
    """The first 16 hex digits of the SHA-1 of a prompt as canonical JSON."""
    text = (
        prompt
        if isinstance(prompt, str)
        else json.dumps(
            prompt, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=_json_default
        )
    )
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]


def _json_default(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return str(value)
