"""CoBA-RL in verl's V1 trainer (the default in verl 0.9): ``__rollout_n__`` per prompt.

In verl's V1 trainers (``verl.trainer.ppo.v1``) the trainer hands whole prompts to the
agent loop, whose workers start ``prompt.pop("__rollout_n__", rollout.n)`` sessions per
prompt ("user can dynamically adjust n for each sample"). The trainer then samples
finished prompt groups from a replay buffer (TransferQueue), computes rewards, pads the
batch to a multiple of the data-parallel and mini-batch sizes and computes GRPO
advantages grouped by ``uid``, so ragged groups need nothing else.

:class:`CoBAV1TrainerMixin` plugs into the synchronous V1 trainer (``PPOTrainerSync``,
``trainer.v1.trainer_mode=sync``) at three methods:

- ``_submit_batch_to_rollout``: allocates the batch's budget over its prompt ids and
  writes each prompt's count into the ``__rollout_n__`` column;
- ``_compute_advantage``: reads each finished session's reward (``rm_scores`` summed
  over tokens, the final output of multi-output sessions) and its response length
  (``response_mask`` summed over tokens, of that same output) and keeps them, by ``uid``;
- ``step``: once per global step, feeds every kept (prompt id, reward, length) to the
  allocator,
  checks that no prompt got more sessions than allocated, and logs ``coba/*`` metrics.

With ``coba.token_budget`` each batch also spends at most that many expected response
tokens (each prompt's rollout costing its tracked mean response length), so a batch can
hold fewer sessions than ``train_batch_size * rollout.n``; verl pads the sampled batch
as it does for any ragged one.

Checkpoints: ``global_step_N/coba_allocator.json`` is written before verl's own
``_save_checkpoint`` (which ends with ``latest_checkpointed_iteration.txt``) and read
back after ``_load_checkpoint``. Validation does not go through
``_submit_batch_to_rollout``, so it keeps ``val_kwargs.n``.

The asynchronous V1 trainers are refused at construction; see :func:`check_v1_config`.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import TYPE_CHECKING, Any

import numpy as np

from coba_rl.allocator import CoBAAllocator
from coba_rl.integrations.verl._config import CoBASettings, settings_from_config
from coba_rl.integrations.verl._rows import (
    checkpoint_dir,
    prompt_ids,
    resume_dir,
    save_allocator,
)
from coba_rl.integrations.verl.v0 import _get, _restore
from coba_rl.types import Allocation

__all__ = [
    "ROLLOUT_N_KEY",
    "SUPPORTED_V1_MODES",
    "CoBAV1TrainerMixin",
    "check_v1_config",
    "coba_v1_trainer_class",
]

#: The per-prompt column verl's V1 agent loop pops as that prompt's number of sessions.
ROLLOUT_N_KEY = "__rollout_n__"
#: The V1 trainer modes CoBA-RL supports.
SUPPORTED_V1_MODES: tuple[str, ...] = ("sync",)

if TYPE_CHECKING:

    class _TrainerBase:
        """What the mixin uses of verl's V1 ``PPOTrainer``."""

        config: Any
        global_steps: int

        def __init__(self, config: Any, *args: Any, **kwargs: Any) -> None: ...
        def _submit_batch_to_rollout(self, batch: Any) -> int: ...
        def _compute_advantage(self, batch: Any, metrics: dict[str, Any]) -> Any: ...
        def step(self, metrics: dict[str, Any], timing_raw: dict[str, Any]) -> Any: ...
        def _save_checkpoint(self) -> Any: ...
        def _load_checkpoint(self) -> Any: ...

else:
    _TrainerBase = object


def check_v1_config(config: Any) -> None:
    """Refuse V1 settings that CoBA-RL cannot honour, with the reason.

    - **Asynchronous trainers** (``trainer.v1.trainer_mode`` ``colocate_async`` or
      ``separate_async``): verl dispatches their prompts as slots free up
      (``data.gen_batch_size`` is forced to 1), so an allocation would see one prompt at
      a time, where the only way to spend a budget of ``rollout.n`` is ``rollout.n``;
      and rewards arrive steps later, from allocations made with an older allocator.
      CoBA-RL's allocation is a knapsack over a batch, so they are refused rather than
      run as a uniform ``n`` under a CoBA-RL label.
    - **DAPO group filtering** (``algorithm.filter_groups.enable``): the V1 replay buffer
      evicts no-signal groups, and their rewards, before any trainer method sees them,
      and refills one prompt at a time; the allocator would never learn that those
      prompts were solved (or failed) by every rollout.

    Raises:
      ValueError: one of the above, named.
    """
    trainer = _get(config, "trainer")
    mode = _get(_get(trainer, "v1"), "trainer_mode", "sync")
    if mode not in SUPPORTED_V1_MODES:
        raise ValueError(
            f"trainer.v1.trainer_mode={mode!r} is not supported by CoBA-RL (supported: "
            f"{list(SUPPORTED_V1_MODES)}): the asynchronous V1 trainers dispatch prompts one "
            "at a time (data.gen_batch_size=1) and deliver rewards steps later, so a per-batch "
            "allocation cannot be made; use trainer.v1.trainer_mode=sync"
        )
    if bool(_get(_get(_get(config, "algorithm"), "filter_groups"), "enable", False)):
        raise ValueError(
            "algorithm.filter_groups (DAPO dynamic sampling) is not supported by CoBA-RL on "
            "the V1 trainer: the replay buffer evicts the filtered groups, with their rewards, "
            "before the trainer sees them, so the allocator would never learn from them"
        )


class CoBAV1TrainerMixin(_TrainerBase):
    """Per-prompt rollout counts for verl's synchronous V1 trainer (``PPOTrainerSync``).

    Put it first in the bases, or use :func:`coba_v1_trainer_class`::

        trainer = coba_v1_trainer_class()(config=config, coba_allocator=allocator)
        trainer.init()
        trainer.fit(agent_loop_manager)

    Args:
      config: verl's config (positional or keyword, as ``PPOTrainer`` takes it).
      coba_allocator: the allocator (keyword). Without it, one is built from the config's
        ``coba`` group (what the launcher writes), else ``CoBAAllocator()``. With
        ``coba.token_budget``, an allocator you pass keeps its own config: set its
        ``default_tokens_per_rollout`` (e.g. to ``data.max_response_length``) for the
        first batch, whose lengths are unknown.

    Raises:
      ValueError: at construction, see :func:`check_v1_config`, or a ``coba.token_budget``
        below the first batch's floor (:meth:`CoBASettings.check_token_budget`); during
        training, a token budget below a batch's floor (``n_low`` times its prompts' mean
        lengths),
        duplicate prompt ids, an impossible budget, or a prompt that got more sessions
        than allocated (an agent loop that ignores ``__rollout_n__``).
      RuntimeError: a trained trajectory whose prompt was never allocated.
    """

    coba_index_key: str = "index"
    coba_prompt_key: str = "raw_prompt"
    coba_metric_prefix: str = "coba/"

    def __init__(
        self, *args: Any, coba_allocator: CoBAAllocator | None = None, **kwargs: Any
    ) -> None:
        config = kwargs["config"] if "config" in kwargs else args[0]
        check_v1_config(config)
        settings = settings_from_config(config)
        allocator = coba_allocator if coba_allocator is not None else settings.make_allocator()
        if isinstance(allocator, CoBAAllocator):  # else _coba_attach names the type
            # the allocator's own config decides what an unknown length costs
            checked = dataclasses.replace(settings, config=allocator.config)
            checked.check_token_budget(int(config.data.train_batch_size))
        self._coba_attach(allocator, settings)
        super().__init__(*args, **kwargs)

    def _coba_attach(self, allocator: CoBAAllocator, settings: CoBASettings) -> None:
        if not isinstance(allocator, CoBAAllocator):
            raise TypeError(
                f"coba_allocator must be a CoBAAllocator, got {type(allocator).__name__}"
            )
        self.coba_allocator = allocator
        self.coba_settings = settings
        self.last_allocation: Allocation | None = None
        #: uid -> (prompt id, allocated count), for prompts submitted and not yet fed back
        self._coba_pending: dict[str, tuple[Any, int]] = {}
        #: (uid, reward, response length) of every finished session of this step
        self._coba_rows: list[tuple[str, float, int]] = []
        self._coba_step_allocations: list[Allocation] = []

    # -- allocate: one count per prompt, in __rollout_n__ ---------------------------------

    def coba_prompt_ids(self, batch: Any) -> np.ndarray[Any, Any]:
        """The stable prompt id of each row of a V1 prompt batch (a ``TensorDict``)."""
        tu = importlib.import_module("verl.utils.tensordict_utils")
        index = tu.get(batch, self.coba_index_key)
        if index is None:
            raise ValueError(
                f"the prompt batch has no column {self.coba_index_key!r}; put a dataset index "
                "in extra_info['index'] of every row (verl's RLHFDataset copies it)"
            )
        mode = self.coba_settings.prompt_id
        prompts = tu.get(batch, self.coba_prompt_key) if mode == "index_prompt" else None
        return prompt_ids(_as_list(index), prompts, mode)

    def _submit_batch_to_rollout(self, batch: Any) -> int:
        tu = importlib.import_module("verl.utils.tensordict_utils")
        ids = self.coba_prompt_ids(batch)
        n = int(self.config.actor_rollout_ref.rollout.n)
        budget = self.coba_settings.resolve_budget(
            ids.size, n, int(self.config.data.train_batch_size)
        )
        token_budget = self.coba_settings.resolve_token_budget(
            ids.size, int(self.config.data.train_batch_size)
        )
        alloc = self.coba_allocator.allocate(ids, budget, token_budget=token_budget)
        counts = [int(c) for c in alloc.counts]
        tu.assign_non_tensor_stack(batch, ROLLOUT_N_KEY, counts)
        uids = [str(u) for u in _as_list(tu.get(batch, "uid"))]
        for uid, pid, count in zip(uids, ids.tolist(), counts, strict=True):
            self._coba_pending[uid] = (pid, count)
        self._coba_step_allocations.append(alloc)
        self.last_allocation = alloc
        return super()._submit_batch_to_rollout(batch)

    # -- feed back: keep every session's reward, commit once per step ----------------------

    def _compute_advantage(self, batch: Any, metrics: dict[str, Any]) -> Any:
        self.coba_collect(batch)
        return super()._compute_advantage(batch, metrics)

    def coba_collect(self, batch: Any) -> int:
        """Keep the reward and response length of every session of a batch; return how many.

        ``batch`` is verl's ``KVBatchMeta`` (keys ``{uid}_{session}_{output}``); padding
        rows are skipped, and of a multi-output session only its final output counts, as
        in verl's GRPO advantage: its ``rm_scores`` summed is the reward, its
        ``response_mask`` summed the response length.
        """
        final: dict[tuple[str, str], tuple[int, str]] = {}
        for key, tag in zip(batch.keys, batch.tags, strict=True):
            if tag.get("is_padding", False):
                continue
            uid, session, output = str(key).rsplit("_", 2)
            prev = final.get((uid, session))
            if prev is None or prev[0] < int(output):
                final[(uid, session)] = (int(output), str(key))
        if not final:
            return 0
        keys = [k for _, k in final.values()]
        # the TransferQueue client verl's trainer itself uses
        tq = importlib.import_module("verl.trainer.ppo.v1.trainer_base").tq
        data = tq.kv_batch_get(
            keys=keys, partition_id=batch.partition_id, select_fields=["rm_scores", "response_mask"]
        )
        padded = data.to_padded_tensor()  # pads with 0: the mask's padding adds nothing
        scores = padded["rm_scores"].float().sum(-1).tolist()
        lengths = padded["response_mask"].long().sum(-1).tolist()
        for (uid, _session), score, length in zip(final, scores, lengths, strict=True):
            if uid not in self._coba_pending:
                raise RuntimeError(
                    f"a trajectory of prompt uid {uid!r} was trained but never allocated: "
                    "every training prompt must be submitted through _submit_batch_to_rollout"
                )
            self._coba_rows.append((uid, float(score), int(length)))
        return len(final)

    def step(self, metrics: dict[str, Any], timing_raw: dict[str, Any]) -> Any:
        batch = super().step(metrics, timing_raw)
        metrics.update(self.coba_commit())
        return batch

    def coba_commit(self) -> dict[str, float]:
        """Feed this step's kept rewards and lengths to the allocator (one update).

        Returns the step's ``coba/*`` metrics.

        Raises:
          ValueError: a prompt got more sessions than its ``__rollout_n__``.
        """
        rows, self._coba_rows = self._coba_rows, []
        pending, self._coba_pending = self._coba_pending, {}
        allocations, self._coba_step_allocations = self._coba_step_allocations, []
        seen: dict[str, int] = {}
        for uid, _, _ in rows:
            seen[uid] = seen.get(uid, 0) + 1
        over = {u: c for u, c in seen.items() if c > pending[u][1]}
        if over:
            uid, got = next(iter(over.items()))
            raise ValueError(
                f"prompt {pending[uid][0]!r} got {got} sessions but was allocated "
                f"{pending[uid][1]}: the agent loop must honour {ROLLOUT_N_KEY}"
            )
        if rows:
            ids = [pending[uid][0] for uid, _, _ in rows]
            self.coba_allocator.update(
                ids, [score for _, score, _ in rows], lengths=[n for _, _, n in rows]
            )
        p = self.coba_metric_prefix
        out: dict[str, float] = {}
        if allocations:
            out.update(allocations[0].metrics(prefix=p))
        allocated = sum(count for _, count in pending.values())
        out[f"{p}feedback/rows"] = float(len(rows))
        out[f"{p}feedback/missing_rows"] = float(allocated - len(rows))
        out[f"{p}feedback/missing_prompts"] = float(sum(1 for u in pending if u not in seen))
        out[f"{p}feedback/refills"] = float(max(0, len(allocations) - 1))
        return out

    # -- checkpoints ------------------------------------------------------------------------

    def _save_checkpoint(self) -> Any:
        # before verl's own save, which ends by writing latest_checkpointed_iteration.txt
        save_allocator(self.coba_allocator, checkpoint_dir(self.config, self.global_steps))
        return super()._save_checkpoint()

    def _load_checkpoint(self) -> Any:
        result = super()._load_checkpoint()
        _restore(self.coba_allocator, resume_dir(self.config, getattr(self, "global_steps", 0)))
        return result


def coba_v1_trainer_class(mode: str = "sync") -> type[Any]:
    """verl's V1 trainer class for ``mode`` with :class:`CoBAV1TrainerMixin` mixed in.

    Raises:
      ValueError: a mode other than ``"sync"`` (see :func:`check_v1_config`).
      ImportError: verl (with TransferQueue) is not installed.
    """
    if mode not in SUPPORTED_V1_MODES:
        check_v1_config({"trainer": {"v1": {"trainer_mode": mode}}})
    try:
        v1 = importlib.import_module("verl.trainer.ppo.v1")
    except ImportError as exc:
        raise ImportError(
            f"this needs verl with TransferQueue: pip install 'coba-rl[verl]' ({exc})"
        ) from exc
    base = v1.get_trainer_cls(mode)
    return type(f"CoBA{base.__name__}", (CoBAV1TrainerMixin, base), {})


def _as_list(values: Any) -> list[Any]:
    return list(values.tolist()) if hasattr(values, "tolist") else list(values)
