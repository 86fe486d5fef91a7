"""CoBA-RL in verl's legacy (V0) ``RayPPOTrainer``: a mixin, without copying ``fit``.

verl 0.9 still ships ``RayPPOTrainer`` (``trainer.use_v1=false``), deprecated in favour of
the V1 trainers (:mod:`coba_rl.integrations.verl.v1`). Its ``fit`` repeats every prompt
``rollout.n`` times at two points, the generation batch before rollout
(``gen_batch.repeat``) and the prompt batch after it (``batch.repeat``), so that
``union`` lines up. The mixin makes both calls ``DataProto.sample_level_repeat(counts)``
with the same counts, so prompt ``i`` gets ``counts[i]`` contiguous rows and
``sum(counts) == train_batch_size * rollout.n`` exactly.
"""

from __future__ import annotations

import importlib
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np

from coba_rl.allocator import CoBAAllocator
from coba_rl.integrations import STATE_FILENAME
from coba_rl.integrations.verl._config import CoBASettings, settings_from_config
from coba_rl.integrations.verl._rows import (
    checkpoint_dir,
    load_allocator,
    map_uids,
    prompt_ids,
    repeat_rows,
    response_lengths,
    resume_dir,
    row_prompt_ids,
    save_allocator,
    sequence_scores,
)
from coba_rl.types import Allocation

__all__ = ["CoBARayTrainerMixin", "coba_trainer_class"]

IntArray = np.ndarray[Any, np.dtype[np.int64]]

if TYPE_CHECKING:

    class _TrainerBase:
        """What the mixin uses of verl's ``RayPPOTrainer``."""

        config: Any
        global_steps: int
        use_critic: bool

        def __init__(self, *args: Any, **kwargs: Any) -> None: ...
        def _get_gen_batch(self, batch: Any) -> Any: ...
        def _update_actor(self, batch: Any) -> Any: ...
        def _update_critic(self, batch: Any) -> Any: ...
        def _save_checkpoint(self) -> Any: ...
        def _load_checkpoint(self) -> Any: ...
        def _validate(self, *args: Any, **kwargs: Any) -> Any: ...

else:
    _TrainerBase = object


class CoBARayTrainerMixin(_TrainerBase):
    """Per-prompt rollout counts for verl's legacy ``RayPPOTrainer``, without copying ``fit``.

    Put it first in the bases: ``class Trainer(CoBARayTrainerMixin, RayPPOTrainer)``, or
    use :func:`coba_trainer_class`. Each training step it

    1. allocates ``train_batch_size * rollout.n`` rollouts over the batch's prompt ids
       (in ``_get_gen_batch``, which ``fit`` calls once per step before the repeats) and
       makes that step's two ``repeat(rollout.n)`` calls use :func:`repeat_rows` with
       those counts;
    2. feeds ``(prompt id, token_level_scores.sum(-1), response_mask.sum(-1))`` (the
       reward and the response length of each rollout) back to the allocator after the
       advantage, in ``_update_critic`` or ``_update_actor``, whichever ``fit`` calls
       first (so ``critic_warmup`` steps, which skip the actor update, still feed back),
       and adds ``Allocation.metrics(prefix="coba/")`` to that update's metrics, which
       ``fit`` logs through verl's ``Tracking``;
    3. writes ``global_step_N/coba_allocator.json`` under ``trainer.default_local_dir``
       *before* verl's ``_save_checkpoint`` writes ``latest_checkpointed_iteration.txt``
       (also after a ``resume_path`` start), and restores it in ``_load_checkpoint`` from
       the folder verl resumed from.

    Validation (``_validate``) keeps verl's uniform ``val_kwargs.n``.

    Args:
      coba_allocator: the allocator (keyword). Without it, one is built from the config's
        ``coba`` group (what the launcher writes), else ``CoBAAllocator()``.

    Raises:
      ValueError: at construction, settings this mixin cannot honour: DAPO's
        ``algorithm.filter_groups`` (its recipe trainer generates several batches per
        step and slices rows by count), ``use_prefix_grouper`` with ``balance_batch``
        (group-level balancing assumes equal group sizes), ``critic_warmup`` without a
        critic (no update would see the rollouts), a ``coba.budget`` other than
        ``train_batch_size * rollout.n``, or a ``coba.token_budget`` (a binding token
        budget spends fewer rows than that; use the V1 trainer). During training:
        duplicate prompt ids, or rows that do not match the allocation.
    """

    coba_index_key: str = "index"
    coba_prompt_key: str = "raw_prompt"
    coba_metric_prefix: str = "coba/"

    def __init__(
        self, *args: Any, coba_allocator: CoBAAllocator | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        settings = settings_from_config(self.config)
        self.attach_coba(
            coba_allocator if coba_allocator is not None else settings.make_allocator(),
            settings,
        )

    def attach_coba(self, allocator: CoBAAllocator, settings: CoBASettings | None = None) -> None:
        """Check the trainer's config and use ``allocator`` from now on.

        Also for a trainer built without the keyword (or with ``object.__new__``).
        """
        if not isinstance(allocator, CoBAAllocator):
            raise TypeError(
                f"coba_allocator must be a CoBAAllocator, got {type(allocator).__name__}"
            )
        settings = settings if settings is not None else settings_from_config(self.config)
        _check_v0_config(self.config, settings, use_critic=bool(getattr(self, "use_critic", False)))
        self.coba_allocator = allocator
        self.coba_settings = settings
        self.last_allocation: Allocation | None = None
        self._coba_uid_to_id: dict[str, Any] | None = None
        self._coba_validating = False

    # -- step 1: allocate and repeat ------------------------------------------------------

    def _get_gen_batch(self, batch: Any) -> Any:
        if getattr(self, "_coba_validating", False):
            return super()._get_gen_batch(batch)
        if self._coba_uid_to_id is not None:
            raise RuntimeError(
                "a new generation batch before the last one was fed back to the allocator: "
                "a trainer that generates several batches per step (DAPO's filter_groups) "
                "is not supported by CoBARayTrainerMixin"
            )
        n = int(self.config.actor_rollout_ref.rollout.n)
        ids = self.coba_prompt_ids(batch)
        budget = self.coba_settings.resolve_budget(ids.size, n, ids.size)
        alloc = self.coba_allocator.allocate(ids, budget)
        self._coba_uid_to_id = map_uids(batch, ids)
        self.last_allocation = alloc
        gen_batch = super()._get_gen_batch(batch)
        _arm_repeat(gen_batch, alloc.counts, n)
        _arm_repeat(batch, alloc.counts, n)
        return gen_batch

    def coba_prompt_ids(self, batch: Any) -> np.ndarray[Any, Any]:
        """The stable prompt id of each row of a prompt batch (see ``prompt_ids``)."""
        ntb = batch.non_tensor_batch
        if self.coba_index_key not in ntb:
            raise ValueError(
                f"the batch has no non-tensor column {self.coba_index_key!r}; put a dataset "
                "index in extra_info['index'] of every row (verl's RLHFDataset copies it)"
            )
        mode = self.coba_settings.prompt_id
        prompts = ntb.get(self.coba_prompt_key) if mode == "index_prompt" else None
        return prompt_ids(ntb[self.coba_index_key], prompts, mode)

    def _validate(self, *args: Any, **kwargs: Any) -> Any:
        self._coba_validating = True
        try:
            return super()._validate(*args, **kwargs)
        finally:
            self._coba_validating = False

    # -- step 2: feed back and log --------------------------------------------------------

    def coba_feed_back(self, batch: Any) -> bool:
        """Feed this step's scored batch to the allocator, once; ``True`` if it did now.

        Checks that the rows per prompt equal this step's allocation.
        """
        alloc = self.last_allocation
        if self._coba_uid_to_id is None:
            return False
        if alloc is None:  # pragma: no cover - set together with the uid map
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
        self.coba_allocator.update(ids, sequence_scores(batch), lengths=response_lengths(batch))
        self._coba_uid_to_id = None
        return True

    def _coba_add_metrics(self, output: Any) -> Any:
        if self.last_allocation is not None and output is not None:
            metrics = output.meta_info.setdefault("metrics", {})
            metrics.update(self.last_allocation.metrics(prefix=self.coba_metric_prefix))
        return output

    def _update_critic(self, batch: Any) -> Any:
        fed = self.coba_feed_back(batch)
        output = super()._update_critic(batch)
        return self._coba_add_metrics(output) if fed else output

    def _update_actor(self, batch: Any) -> Any:
        fed = self.coba_feed_back(batch)
        output = super()._update_actor(batch)
        return self._coba_add_metrics(output) if fed else output

    # -- step 3: checkpoints --------------------------------------------------------------

    def _save_checkpoint(self) -> Any:
        # before verl's own save, which ends by writing latest_checkpointed_iteration.txt
        save_allocator(self.coba_allocator, checkpoint_dir(self.config, self.global_steps))
        return super()._save_checkpoint()

    def _load_checkpoint(self) -> Any:
        result = super()._load_checkpoint()
        _restore(self.coba_allocator, resume_dir(self.config, getattr(self, "global_steps", 0)))
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


def _check_v0_config(config: Any, settings: CoBASettings, *, use_critic: bool) -> None:
    algorithm = _get(config, "algorithm")
    if _enabled(_get(algorithm, "filter_groups")):
        raise ValueError(
            "algorithm.filter_groups (DAPO dynamic sampling) is not supported with "
            "CoBARayTrainerMixin: DAPO's trainer generates several batches per step and "
            "keeps the first train_batch_size * rollout.n rows, which splits the ragged "
            "groups CoBA-RL makes. Disable it, or use CoBA-RL without group filtering"
        )
    actor_rollout_ref = _get(config, "actor_rollout_ref")
    trainer = _get(config, "trainer")
    if _get(_get(actor_rollout_ref, "actor"), "use_prefix_grouper") and _get(
        trainer, "balance_batch", True
    ):
        raise ValueError(
            "actor_rollout_ref.actor.use_prefix_grouper with trainer.balance_batch assumes "
            "every prompt has rollout.n rows (it gives each data-parallel rank the same number "
            "of groups); CoBA-RL's groups are ragged. Set trainer.balance_batch=false or "
            "use_prefix_grouper=false"
        )
    warmup = _get(trainer, "critic_warmup", 0) or 0
    if warmup > 0 and not use_critic:
        raise ValueError(
            f"trainer.critic_warmup={warmup} without a critic: verl skips the actor update "
            "for those steps and no critic update runs, so no step would feed its rollouts "
            "back to the allocator. Set trainer.critic_warmup=0"
        )
    data = _get(config, "data")
    n = _get(_get(actor_rollout_ref, "rollout"), "n")
    tbs = _get(data, "train_batch_size")
    if (
        settings.budget is not None
        and n is not None
        and tbs is not None
        and settings.budget != int(tbs) * int(n)
    ):
        raise ValueError(
            f"coba.budget={settings.budget} but the legacy trainer needs exactly "
            f"train_batch_size * rollout.n = {int(tbs) * int(n)} rows per step (its "
            "mini-batch arithmetic assumes it); drop coba.budget or use the V1 trainer"
        )
    if settings.token_budget is not None:
        raise ValueError(
            f"coba.token_budget={settings.token_budget:g} needs the V1 trainer: the legacy "
            "trainer needs exactly train_batch_size * rollout.n rows per step, and a binding "
            "token budget spends fewer; drop coba.token_budget or set trainer.use_v1=true"
        )


def _get(node: Any, key: str, default: Any = None) -> Any:
    if node is None:
        return default
    if hasattr(node, "get"):
        return node.get(key, default)
    return getattr(node, key, default)


def _enabled(group: Any) -> bool:
    return bool(_get(group, "enable", False))


def _restore(allocator: CoBAAllocator, step_dir: str | None) -> None:
    if step_dir is None:
        return
    if not load_allocator(allocator, step_dir):
        warnings.warn(
            f"no {STATE_FILENAME} in the checkpoint {step_dir!r}; the allocator starts fresh "
            "(a checkpoint written without coba-rl?)",
            RuntimeWarning,
            stacklevel=3,
        )


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
