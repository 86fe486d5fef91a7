"""CoBA-RL for verl: per-prompt rollout counts in ``RayPPOTrainer``.

verl's ``RayPPOTrainer.fit`` repeats every prompt ``rollout.n`` times at two points, the
generation batch before rollout (``gen_batch.repeat``) and the prompt batch after it
(``batch.repeat``), so that ``union`` lines up. CoBA-RL replaces both with
``DataProto.sample_level_repeat(counts)``, with the same counts, so prompt ``i`` gets
``counts[i]`` contiguous rows and ``sum(counts) == train_batch_size * rollout.n`` exactly.
verl's GRPO advantage groups rows by ``uid``, which the repeat keeps, so ragged groups
need no change there.

Two ways to use it:

- :class:`CoBARayTrainerMixin` (or :func:`coba_trainer_class`): a ``RayPPOTrainer``
  subclass that allocates, repeats, feeds the scores back, logs ``coba/*`` metrics and
  saves the allocator beside each checkpoint, without copying ``fit``.
- The functions below, for a trainer whose ``fit`` you maintain yourself (the minimal patch)::

      ids = dataset_indices(batch)                       # before _get_gen_batch
      alloc = allocator.allocate(ids, len(ids) * n)
      uid_to_id = map_uids(batch, ids)
      gen_batch = self._get_gen_batch(batch)
      gen_batch_output = repeat_rows(gen_batch, alloc.counts)   # was .repeat(n)
      ...
      batch = repeat_rows(batch, alloc.counts)                  # was .repeat(n)
      ...                                                       # rewards scored
      feed_back(allocator, batch, uid_to_id=uid_to_id)          # before the next step

verl itself is never imported here: its functions only call methods of the ``DataProto``
they are given, so this module imports (and type-checks) without verl installed.

Reference: CoBA-RL (arXiv 2602.03048), whose released verl recipe allocates per dataset
index and feeds back ``token_level_scores.sum(-1)``; verl (``verl/trainer/ppo``).
"""

from __future__ import annotations

import importlib
import os
import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from coba_rl._validation import as_id_array, check_unique_ids
from coba_rl.allocator import CoBAAllocator, read_state_file
from coba_rl.grpo import expand
from coba_rl.integrations import STATE_FILENAME
from coba_rl.types import Allocation

__all__ = [
    "CoBARayTrainerMixin",
    "allocator_path",
    "check_counts",
    "coba_trainer_class",
    "dataset_indices",
    "feed_back",
    "load_allocator",
    "map_uids",
    "repeat_rows",
    "row_prompt_ids",
    "save_allocator",
    "sequence_scores",
]

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
    as a success when its score equals ``allocator.config.success_reward``.

    Raises:
      ValueError: see :func:`row_prompt_ids` and :func:`sequence_scores`.
    """
    ids = row_prompt_ids(batch, uid_to_id=uid_to_id, key=key)
    allocator.update(ids, sequence_scores(batch, score_key))


# -- checkpoints ---------------------------------------------------------------------------


def allocator_path(step_dir: str | os.PathLike[str]) -> str:
    """Where the allocator state lives inside a ``global_step_N`` folder."""
    return os.path.join(os.fspath(step_dir), STATE_FILENAME)


def save_allocator(allocator: CoBAAllocator, step_dir: str | os.PathLike[str]) -> str:
    """Save the allocator state (atomically) beside a verl checkpoint; return the path."""
    path = allocator_path(step_dir)
    os.makedirs(step_dir, exist_ok=True)  # verl's own step folder (save creates no folders)
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


# -- the trainer mixin ---------------------------------------------------------------------

if TYPE_CHECKING:

    class _TrainerBase:
        """What the mixin uses of verl's ``RayPPOTrainer``."""

        config: Any
        global_steps: int

        def __init__(self, *args: Any, **kwargs: Any) -> None: ...
        def _get_gen_batch(self, batch: Any) -> Any: ...
        def _update_actor(self, batch: Any) -> Any: ...
        def _save_checkpoint(self) -> Any: ...
        def _load_checkpoint(self) -> Any: ...
        def _validate(self, *args: Any, **kwargs: Any) -> Any: ...

else:
    _TrainerBase = object


class CoBARayTrainerMixin(_TrainerBase):
    """Per-prompt rollout counts for verl's ``RayPPOTrainer``, without copying ``fit``.

    Put it first in the bases: ``class Trainer(CoBARayTrainerMixin, RayPPOTrainer)``, or
    use :func:`coba_trainer_class`. Each training step it

    1. allocates ``train_batch_size * rollout.n`` rollouts over the batch's dataset
       indices (in ``_get_gen_batch``, which ``fit`` calls once per step before the
       repeats) and makes the two ``repeat(rollout.n)`` calls of that step use
       :func:`repeat_rows` with those counts;
    2. feeds ``(index, token_level_scores.sum(-1))`` back to the allocator and adds
       ``Allocation.metrics(prefix="coba/")`` to the actor metrics that ``fit`` logs
       through verl's ``Tracking`` (in ``_update_actor``);
    3. saves the allocator as ``global_step_N/coba_allocator.json`` in
       ``_save_checkpoint`` and restores it in ``_load_checkpoint``.

    Validation (``_validate``) keeps verl's uniform ``val_kwargs.n``.

    Args:
      coba_allocator: the allocator (keyword); defaults to ``CoBAAllocator()``. Its
        ``n_up`` must be at least ``rollout.n``.

    Raises:
      ValueError: duplicate or missing dataset indices, an impossible budget, or rows that
        do not match the allocation (a ``fit`` that no longer calls ``repeat`` as expected).
    """

    coba_index_key: str = "index"
    coba_metric_prefix: str = "coba/"

    def __init__(
        self, *args: Any, coba_allocator: CoBAAllocator | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.attach_coba(coba_allocator if coba_allocator is not None else CoBAAllocator())

    def attach_coba(self, allocator: CoBAAllocator) -> None:
        """Use ``allocator`` from now on (also for a trainer built without the keyword)."""
        if not isinstance(allocator, CoBAAllocator):
            raise TypeError(
                f"coba_allocator must be a CoBAAllocator, got {type(allocator).__name__}"
            )
        self.coba_allocator = allocator
        self.last_allocation: Allocation | None = None
        self._coba_uid_to_id: dict[str, Any] | None = None
        self._coba_validating = False

    # -- step 1: allocate and repeat ------------------------------------------------------

    def _get_gen_batch(self, batch: Any) -> Any:
        if getattr(self, "_coba_validating", False):
            return super()._get_gen_batch(batch)
        n = int(self.config.actor_rollout_ref.rollout.n)
        ids = dataset_indices(batch, self.coba_index_key)
        alloc = self.coba_allocator.allocate(ids, ids.size * n)
        self._coba_uid_to_id = map_uids(batch, ids)
        self.last_allocation = alloc
        gen_batch = super()._get_gen_batch(batch)
        _arm_repeat(gen_batch, alloc.counts, n)
        _arm_repeat(batch, alloc.counts, n)
        return gen_batch

    def _validate(self, *args: Any, **kwargs: Any) -> Any:
        self._coba_validating = True
        try:
            return super()._validate(*args, **kwargs)
        finally:
            self._coba_validating = False

    # -- step 2: feed back and log --------------------------------------------------------

    def coba_feed_back(self, batch: Any) -> None:
        """Check the scored batch against this step's allocation and update the allocator."""
        alloc = self.last_allocation
        if alloc is None or self._coba_uid_to_id is None:
            raise RuntimeError("no allocation for this step: _get_gen_batch was not called")
        ids = row_prompt_ids(batch, uid_to_id=self._coba_uid_to_id, key=self.coba_index_key)
        expected = dict(zip(self._coba_uid_to_id.values(), alloc.counts.tolist(), strict=True))
        uniq, seen = np.unique(ids, return_counts=True)
        got = dict(zip(uniq.tolist(), seen.tolist(), strict=True))
        if got != {k: v for k, v in expected.items() if v > 0}:
            raise ValueError(
                "rows per prompt do not match this step's allocation: fit must repeat both "
                "batches with the allocated counts, and filtering must drop whole groups"
            )
        self.coba_allocator.update(ids, sequence_scores(batch))
        self._coba_uid_to_id = None

    def _update_actor(self, batch: Any) -> Any:
        self.coba_feed_back(batch)
        output = super()._update_actor(batch)
        if self.last_allocation is not None:
            metrics = output.meta_info.setdefault("metrics", {})
            metrics.update(self.last_allocation.metrics(prefix=self.coba_metric_prefix))
        return output

    # -- step 3: checkpoints --------------------------------------------------------------

    def _coba_step_dir(self) -> str:
        trainer_cfg = self.config.trainer
        if trainer_cfg.get("resume_mode", "auto") == "resume_path" and trainer_cfg.get(
            "resume_from_path"
        ):
            return os.path.abspath(str(trainer_cfg.resume_from_path))
        root = os.path.abspath(str(trainer_cfg.default_local_dir))
        return os.path.join(root, f"global_step_{self.global_steps}")

    def _save_checkpoint(self) -> Any:
        result = super()._save_checkpoint()
        save_allocator(self.coba_allocator, self._coba_step_dir())
        return result

    def _load_checkpoint(self) -> Any:
        result = super()._load_checkpoint()
        if getattr(self, "global_steps", 0) > 0:
            step_dir = self._coba_step_dir()
            if not load_allocator(self.coba_allocator, step_dir):
                warnings.warn(
                    f"no {STATE_FILENAME} in the checkpoint {step_dir!r}; the allocator starts "
                    "fresh (a checkpoint written without coba-rl?)",
                    RuntimeWarning,
                    stacklevel=2,
                )
        return result


def coba_trainer_class() -> type[Any]:
    """``RayPPOTrainer`` with :class:`CoBARayTrainerMixin` mixed in (imports verl).

    Example:
      >>> Trainer = coba_trainer_class()  # doctest: +SKIP
      >>> trainer = Trainer(config=config, ..., coba_allocator=allocator)  # doctest: +SKIP
    """
    try:
        ray_ppo_trainer = importlib.import_module("verl.trainer.ppo.ray_trainer").RayPPOTrainer
    except ImportError as exc:
        raise ImportError(f"this needs verl: pip install 'coba-rl[verl]' ({exc})") from exc
    return type("CoBARayPPOTrainer", (CoBARayTrainerMixin, ray_ppo_trainer), {})


# -- internals -----------------------------------------------------------------------------


def _plain(values: Any) -> Any:
    """An object-dtype column as a list of Python/numpy scalars (numpy arrays pass through)."""
    if isinstance(values, np.ndarray) and values.dtype.kind == "O":
        return values.tolist()
    return values


def _arm_repeat(data: Any, counts: IntArray, n: int) -> None:
    """Make the next ``data.repeat(n, interleave=True)`` call repeat with ``counts`` instead.

    ``fit`` calls ``repeat`` once on the generation batch and once on the prompt batch; the
    override is one-shot and removes itself, and refuses any other call so that a change
    of ``fit`` fails loudly rather than silently falling back to a uniform ``n``.
    """
    total = int(counts.sum())

    def repeat(repeat_times: int = 2, interleave: bool = True) -> Any:
        data.__dict__.pop("repeat", None)
        if repeat_times != n or not interleave:
            raise ValueError(
                f"expected fit to call repeat(repeat_times={n}, interleave=True), got "
                f"repeat(repeat_times={repeat_times}, interleave={interleave})"
            )
        return repeat_rows(data, counts, total)

    data.__dict__["repeat"] = repeat
