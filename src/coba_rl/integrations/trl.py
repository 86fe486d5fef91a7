"""CoBA-RL for TRL: a ``GRPOTrainer`` with per-prompt rollout counts.

TRL's ``GRPOTrainer`` fixes the group size in its sampler (``RepeatSampler`` repeats each
prompt ``num_generations`` times) and in its advantage block (``view(-1,
num_generations)``). :class:`CoBAGRPOTrainer` keeps the sampler, so each generation batch
still holds ``generation_batch_size = M * num_generations`` rows, and re-expands those
rows before generation:

1. the generation batch is gathered from all processes, its ``M`` unique prompts are
   found by their stable prompt id, and the main process allocates the
   ``generation_batch_size`` rollouts over them; the counts are broadcast
   (``accelerate.utils.broadcast_object_list``) so every process agrees;
2. prompt ``i`` gets ``counts[i]`` contiguous rows, and each process generates its own
   slice of the re-expanded batch, so the total stays ``generation_batch_size``;
3. after TRL scores the completions, the advantages are recomputed by prompt id on the
   gathered rewards (:func:`coba_rl.grpo.group_advantages`, Bessel-corrected std and
   ``eps = 1e-4`` as TRL, honouring ``scale_rewards``) and the process's slice replaces
   TRL's uniform-group advantages;
4. the allocator is updated from the gathered rewards and completion lengths (the
   completion mask's row sums, so each prompt's mean response length is tracked), its
   ``Allocation.metrics()`` are
   logged through TRL's metrics (``coba/*``), and its state is saved as
   ``coba_allocator.json`` in every ``checkpoint-N`` folder and restored on resume.

Generation backends: plain ``transformers`` generation and vLLM *colocate* mode generate
one completion per row (``n=1``), so the re-expanded rows carry the counts to the engine.
vLLM *server* mode normally sends each prompt once with ``n=num_generations`` (it
de-duplicates by striding ``num_generations``); during training the subclass makes it send
every row as its own request with ``n=1`` instead, so each prompt gets ``counts[i]``
completions (with prefix caching on, the repeated prompt's prefill is shared). A custom
``rollout_func`` is refused: its contract is ``num_generations`` completions per prompt.

**Token budget.** With ``coba_token_budget=T``, each generation batch spends at most
``T`` expected completion tokens (costs: the tracked mean completion lengths) as well as
at most ``generation_batch_size`` rollouts. The batch then holds fewer rows when tokens
bind: the count is rounded down to a multiple of ``num_generations`` and of
``num_processes * steps_per_generation`` (TRL reshapes the rewards into rows of
``num_generations`` before the advantages are replaced, and splits a generation batch
evenly between processes and accumulation steps), by taking rollouts off the largest
groups (:func:`trim_counts`).

The dataset needs a stable prompt-id column (``prompt_id`` by default)::

    dataset = dataset.map(lambda row, i: {"prompt_id": i}, with_indices=True)

TRL is imported only when :class:`CoBAGRPOTrainer` is first accessed.

Reference: CoBA-RL (arXiv 2602.03048); TRL ``GRPOTrainer``.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import math
import os
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from coba_rl._validation import as_id_array, check_token_budget
from coba_rl.allocator import CoBAAllocator, read_state_file
from coba_rl.grpo import group_advantages, group_sizes
from coba_rl.integrations import STATE_FILENAME
from coba_rl.types import Allocation

__all__ = [
    "CoBAGRPOMixin",
    "CoBAGRPOTrainer",
    "add_prompt_ids",
    "expand_generation_batch",
    "trim_counts",
    "trl_advantages",
]

FloatArray = NDArray[np.float64]

#: TRL's ``GRPOTrainer`` adds this to the group std before dividing.
TRL_EPS = 1e-4


def add_prompt_ids(dataset: Any, column: str = "prompt_id") -> Any:
    """Add a stable prompt-id column (the row index) to a ``datasets.Dataset``."""
    if column in getattr(dataset, "column_names", ()):
        raise ValueError(f"the dataset already has a column {column!r}")
    return dataset.map(lambda _row, i: {column: i}, with_indices=True)


def expand_generation_batch(
    prompt_ids: Any, counts: Any, rows: int | None = None
) -> tuple[NDArray[np.int64], NDArray[Any], NDArray[Any]]:
    """Re-expand a generation batch: which input row feeds each new row, per-prompt counts.

    The batch holds each prompt several times (TRL's ``RepeatSampler``); its unique
    prompts, in first-appearance order, get ``counts[k]`` contiguous rows each.

    Args:
      prompt_ids: one stable id per input row, shape ``(R,)``.
      counts: one count per unique prompt, shape ``(M,)``, summing to ``rows``.
      rows: the rows of the new batch; ``None``: ``R``, as many as the input.

    Returns:
      ``(source_rows, unique_ids, row_ids)``: for each new row the input row it copies,
      the unique ids in order, and each new row's prompt id.

    Raises:
      ValueError: counts of the wrong length or total.

    Example:
      >>> src, uniq, rows = expand_generation_batch([7, 7, 3, 3, 5, 5], [3, 2, 1])
      >>> src.tolist(), uniq.tolist(), rows.tolist()
      ([0, 0, 0, 2, 2, 4], [7, 3, 5], [7, 7, 7, 3, 3, 5])

    Complexity: O(R log R).
    """
    ids = as_id_array(prompt_ids)
    inv, _ = group_sizes(ids)
    first = np.full(int(inv.max()) + 1 if inv.size else 0, -1, dtype=np.int64)
    for row in range(inv.size - 1, -1, -1):
        first[inv[row]] = row
    c = np.asarray(counts, dtype=np.int64)
    if c.shape != first.shape:
        raise ValueError(f"{c.size} counts for {first.size} unique prompts")
    want = ids.size if rows is None else rows
    if int(c.sum()) != want:
        raise ValueError(f"counts sum to {int(c.sum())}, but the batch has {want} rows")
    source = np.repeat(first, c)
    return source, ids[first], ids[source]


def trim_counts(counts: Any, multiple: int, n_low: int) -> NDArray[np.int64]:
    """Take rollouts off the largest groups until the total is a multiple of ``multiple``.

    One rollout at a time comes off the group with the largest count (the last such
    prompt on ties), never below ``n_low``. Removing rollouts keeps every budget held.

    Raises:
      ValueError: the total cannot be rounded down without a group below ``n_low``.

    Example:
      >>> trim_counts([2, 7, 7, 3], multiple=4, n_low=2).tolist()  # 19 -> 16
      [2, 6, 5, 3]
    """
    c = np.array(counts, dtype=np.int64)
    extra = int(c.sum()) % multiple
    if extra > int(np.maximum(c - n_low, 0).sum()):
        raise ValueError(
            f"{int(c.sum())} rollouts cannot be rounded down to a multiple of {multiple} "
            f"without a group below n_low={n_low}; raise the token budget"
        )
    for _ in range(extra):
        top = np.flatnonzero(c == c.max())
        c[int(top[-1])] -= 1
    return c


def trl_advantages(
    rewards: Any, prompt_ids: Any, scale_rewards: str | bool = "group"
) -> tuple[FloatArray, FloatArray]:
    r"""TRL's GRPO advantages on ragged groups; unscorable (NaN) rows get advantage 0.

    .. math::

        A_j = \frac{r_j - \mu_{g(j)}}{\sigma + 10^{-4}}

    with ``mu`` the mean of row ``j``'s prompt group and ``sigma`` its group std
    (``scale_rewards="group"``), the whole batch's std (``"batch"``) or 1 without the
    epsilon (``"none"``); stds are Bessel-corrected and NaN rewards are left out, as in
    TRL's ``_generate_and_score_completions``.

    Args:
      rewards: shape ``(N,)``, the weighted sum of the reward functions (NaN: unscorable).
      prompt_ids: shape ``(N,)``, the stable prompt id of each row.
      scale_rewards: ``"group"``, ``"batch"`` or ``"none"`` (``True``/``False`` are
        ``"group"``/``"none"``).

    Returns:
      ``(advantages, zero_std)``: the advantages, and 1.0 for rows whose group has
      identical rewards (TRL's ``frac_reward_zero_std``), else 0.0.

    Raises:
      ValueError: an unknown ``scale_rewards`` or mismatched lengths.

    Example:
      >>> adv, zero = trl_advantages([1.0, 0.0, 1.0, 1.0, 1.0], [0, 0, 1, 1, 1])
      >>> [round(float(a), 4) for a in adv], zero.tolist()
      ([0.7070, -0.7070, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0, 1.0])

    Complexity: O(N log N).
    """
    mode = _scale_mode(scale_rewards)
    r = np.asarray(rewards, dtype=np.float64)
    ids = as_id_array(prompt_ids)
    if r.shape != ids.shape:
        raise ValueError(f"{r.size} rewards for {ids.size} prompt ids")
    ok = ~np.isnan(r)
    adv = np.zeros_like(r)
    zero_std = np.zeros_like(r)
    if not ok.any():
        return adv, zero_std
    r_ok, ids_ok = r[ok], ids[ok]
    centred = group_advantages(r_ok, ids_ok, scale=False, singleton="zero")
    inv, sizes = group_sizes(ids_ok)
    ss = np.bincount(inv, weights=centred * centred, minlength=sizes.size)
    group_std = np.sqrt(ss / np.maximum(sizes - 1, 1))
    zero_std[ok] = np.isclose(group_std[inv], 0.0)
    if mode == "group":
        adv[ok] = group_advantages(r_ok, ids_ok, ddof=1, eps=TRL_EPS, singleton="zero")
    elif mode == "batch":
        batch_std = float(np.std(r_ok, ddof=1)) if r_ok.size > 1 else 0.0
        adv[ok] = centred / (batch_std + TRL_EPS)
    else:
        adv[ok] = centred
    return adv, zero_std


def _scale_mode(scale_rewards: str | bool) -> str:
    if scale_rewards is True:
        return "group"
    if scale_rewards is False:
        return "none"
    if scale_rewards not in ("group", "batch", "none"):
        raise ValueError(f"scale_rewards must be 'group', 'batch' or 'none', got {scale_rewards!r}")
    return str(scale_rewards)


if TYPE_CHECKING:
    #: Built on first access by the module ``__getattr__`` below (subclasses TRL's class).
    CoBAGRPOTrainer: type[Any]

    class _GRPOBase:
        """What the mixin uses of TRL's ``GRPOTrainer``."""

        accelerator: Any
        args: Any
        model: Any
        state: Any
        scale_rewards: Any
        reward_weights: Any
        use_vllm: bool
        vllm_mode: str
        multi_objective_aggregation: str
        _metrics: Any
        _logs: Any

        def __init__(self, *args: Any, **kwargs: Any) -> None: ...
        def _generate_and_score_completions(self, inputs: Any) -> Any: ...
        def _calculate_rewards(self, *args: Any, **kwargs: Any) -> Any: ...
        def _generate_single_turn(self, *args: Any, **kwargs: Any) -> Any: ...
        def _save_checkpoint(self, model: Any, trial: Any) -> None: ...
        def _load_optimizer_and_scheduler(self, checkpoint: Any) -> None: ...
        def _get_output_dir(self, trial: Any) -> str: ...

else:
    _GRPOBase = object


class CoBAGRPOMixin(_GRPOBase):
    """The CoBA-RL part of :class:`CoBAGRPOTrainer`; mix it in before ``GRPOTrainer``.

    Args:
      coba_allocator: the allocator (keyword); defaults to ``CoBAAllocator()``. Its
        bounds must satisfy ``n_low <= num_generations <= n_up`` (the budget is
        ``M * num_generations``). Success is judged by its config (exact match with
        ``success_reward`` unless a success threshold is set).
      prompt_id_column: the dataset column holding each prompt's stable id.
      coba_token_budget: expected completion tokens per generation batch (all
        processes); ``None`` (default): rollouts only. See the module docstring.

    Raises:
      ValueError: a ``rollout_func`` (it must return ``num_generations`` completions per
        prompt), ``multi_objective_aggregation="normalize_then_sum"``,
        ``remove_unused_columns=True`` (it drops the prompt-id column), allocator bounds
        that cannot hold ``num_generations`` rollouts per prompt on average, or vLLM
        server mode on a TRL whose ``_generate_single_turn`` takes no
        ``num_generations``, all before TRL builds anything (models, vLLM engine or
        server client); a missing prompt-id
        column or one id shared by different prompts, at the first training step.
      TypeError: ``coba_allocator`` is not a :class:`~coba_rl.CoBAAllocator`.
    """

    coba_metric_prefix: str = "coba/"

    def __init__(
        self,
        *args: Any,
        coba_allocator: CoBAAllocator | None = None,
        prompt_id_column: str = "prompt_id",
        coba_token_budget: float | None = None,
        **kwargs: Any,
    ) -> None:
        if coba_allocator is None:
            coba_allocator = CoBAAllocator()
        if not isinstance(coba_allocator, CoBAAllocator):
            raise TypeError(
                f"coba_allocator must be a CoBAAllocator, got {type(coba_allocator).__name__}"
            )
        if coba_token_budget is not None:
            coba_token_budget = check_token_budget(coba_token_budget)
        # Checked before GRPOTrainer.__init__, which loads models and connects to vLLM.
        bound = _bind_trainer_arguments(super().__init__, args, kwargs)
        server_ok = _takes_num_generations(getattr(super(), "_generate_single_turn", None))
        _check_trainer_arguments(bound, coba_allocator, server_ok)
        super().__init__(*args, **kwargs)
        _scale_mode(self.scale_rewards)
        self.coba_allocator = coba_allocator
        self.prompt_id_column = prompt_id_column
        self.coba_token_budget = coba_token_budget
        self.last_allocation: Allocation | None = None
        self.last_row_prompt_ids: NDArray[Any] | None = None
        self._coba_rewards: Any = None
        self._coba_capture = False

    # -- generation: allocate, broadcast, re-expand ---------------------------------------

    def _generate_and_score_completions(self, inputs: Any) -> Any:
        if not self.model.training:  # evaluation keeps num_generations_eval
            return super()._generate_and_score_completions(inputs)
        inputs = self._coba_expand(list(inputs))
        self._coba_capture, self._coba_rewards = True, None
        try:
            output = super()._generate_and_score_completions(inputs)
        finally:
            self._coba_capture = False
        rewards_per_func, self._coba_rewards = self._coba_rewards, None
        if rewards_per_func is None:
            raise RuntimeError("GRPOTrainer did not call _calculate_rewards")
        self._coba_after_scoring(output, rewards_per_func)
        return output

    def _calculate_rewards(self, *args: Any, **kwargs: Any) -> Any:
        rewards_per_func = super()._calculate_rewards(*args, **kwargs)
        if self._coba_capture:
            self._coba_rewards = rewards_per_func  # gathered over all processes
        return rewards_per_func

    def _generate_single_turn(self, *args: Any, **kwargs: Any) -> Any:
        # vLLM server mode sends prompts[::num_generations] with n=num_generations, which
        # assumes uniform groups. With n=1 it sends every (re-expanded) row as its own
        # request, so prompt i gets counts[i] completions; colocate mode and transformers
        # generation already produce one completion per row and ignore the argument.
        if self.model.training and self.use_vllm and self.vllm_mode == "server":
            bound = inspect.signature(super()._generate_single_turn).bind(*args, **kwargs)
            bound.arguments["num_generations"] = 1
            return super()._generate_single_turn(*bound.args, **bound.kwargs)
        return super()._generate_single_turn(*args, **kwargs)

    def _coba_expand(self, inputs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        acc_utils = importlib.import_module("accelerate.utils")
        col = self.prompt_id_column
        if inputs and col not in inputs[0]:
            raise ValueError(
                f"the training dataset has no {col!r} column; add stable prompt ids, e.g. "
                f"dataset.map(lambda row, i: {{{col!r}: i}}, with_indices=True)"
            )
        acc = self.accelerator
        everything = acc_utils.gather_object(inputs) if acc.num_processes > 1 else inputs
        ids = as_id_array([row[col] for row in everything], name=f"column {col!r}")
        _, uniq, _ = expand_generation_batch(ids, _first_counts(ids))
        _check_one_prompt_per_id(everything, ids, col)
        payload: list[Any] = [None]
        if acc.is_main_process:
            payload = [self._coba_allocate(uniq, ids.size)]
        if acc.num_processes > 1:
            acc_utils.broadcast_object_list(payload, from_process=0)
        alloc: Allocation = payload[0]
        source, _, row_ids = expand_generation_batch(ids, alloc.counts, alloc.budget)
        self.last_allocation = alloc
        self.last_row_prompt_ids = row_ids
        n_local = alloc.budget // acc.num_processes
        start = acc.process_index * n_local
        return [dict(everything[j]) for j in source[start : start + n_local]]

    def _coba_allocate(self, uniq: NDArray[Any], rows: int) -> Allocation:
        if self.coba_token_budget is None:
            return self.coba_allocator.allocate(uniq, rows)
        alloc = self.coba_allocator.allocate(uniq, rows, token_budget=self.coba_token_budget)
        multiple = math.lcm(
            self.accelerator.num_processes * int(self.args.steps_per_generation),
            int(self.args.num_generations),
        )
        counts = trim_counts(alloc.counts, multiple, self.coba_allocator.config.n_low)
        if np.array_equal(counts, alloc.counts):
            return alloc
        tokens = None if alloc.costs.size == 0 else float(alloc.costs @ counts)
        # The certificate was for the untrimmed counts: say nothing rather than too little.
        return dataclasses.replace(
            alloc, counts=counts, budget=int(counts.sum()), tokens=tokens, gap=None
        )

    # -- scoring: ragged advantages, tracker, metrics -------------------------------------

    def _coba_after_scoring(self, output: dict[str, Any], rewards_per_func: Any) -> None:
        torch = importlib.import_module("torch")
        row_ids = self.last_row_prompt_ids
        alloc = self.last_allocation
        if row_ids is None or alloc is None:
            raise RuntimeError("no allocation for this generation batch")
        weights = self.reward_weights.to(rewards_per_func.device).unsqueeze(0)
        rewards = (rewards_per_func * weights).nansum(dim=1)
        rewards[torch.isnan(rewards_per_func).all(dim=1)] = torch.nan
        r = rewards.detach().double().cpu().numpy()
        if r.size != row_ids.size:
            raise RuntimeError(f"{r.size} rewards for {row_ids.size} allocated rows")
        adv, zero_std = trl_advantages(r, row_ids, self.scale_rewards)

        local = output["advantages"]
        n_local = int(local.shape[0])
        start = self.accelerator.process_index * n_local
        output["advantages"] = torch.as_tensor(
            adv[start : start + n_local], dtype=local.dtype, device=local.device
        )

        mask = output.get("completion_mask")
        lengths: NDArray[Any] | None = None
        if mask is not None:
            local_len = mask.sum(dim=1)
            if self.accelerator.num_processes > 1:
                local_len = self.accelerator.gather(local_len)
            lengths = local_len.detach().cpu().numpy().astype(np.int64)
            if lengths.size != r.size:
                raise RuntimeError(f"{lengths.size} completion lengths for {r.size} rewards")
        scored = ~np.isnan(r)
        self.coba_allocator.update(
            row_ids[scored], r[scored], lengths=None if lengths is None else lengths[scored]
        )

        metrics = self._metrics["train"]
        if metrics.get("frac_reward_zero_std"):
            metrics["frac_reward_zero_std"][-1] = float(zero_std.mean())
        for key, value in alloc.metrics(prefix=self.coba_metric_prefix).items():
            if not math.isnan(value):
                metrics[key].append(value)
        logged = self._logs.get("advantages") if isinstance(self._logs, dict) else None
        if logged is not None and len(logged) >= adv.size:
            for _ in range(adv.size):
                logged.pop()
            logged.extend(adv.tolist())

    # -- checkpoints ----------------------------------------------------------------------

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        super()._save_checkpoint(model, trial)
        if self.args.should_save:
            prefix = importlib.import_module("transformers.trainer_utils").PREFIX_CHECKPOINT_DIR
            folder = f"{prefix}-{self.state.global_step}"
            out = os.path.join(self._get_output_dir(trial=trial), folder)
            os.makedirs(out, exist_ok=True)  # TRL's checkpoint folder (save creates none)
            self.coba_allocator.save(os.path.join(out, STATE_FILENAME))

    def _load_optimizer_and_scheduler(self, checkpoint: Any) -> None:
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is None:
            return
        path = os.path.join(os.fspath(checkpoint), STATE_FILENAME)
        if os.path.exists(path):
            self.coba_allocator.load_state_dict(read_state_file(path))
        else:
            warnings.warn(
                f"no {STATE_FILENAME} in {os.fspath(checkpoint)!r}; the allocator starts fresh",
                RuntimeWarning,
                stacklevel=2,
            )


def _bind_trainer_arguments(init: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``GRPOTrainer.__init__``'s arguments by name (``None`` if they do not bind)."""
    try:
        return inspect.signature(init).bind_partial(*args, **kwargs).arguments
    except TypeError:
        return None  # GRPOTrainer.__init__ raises its own error for these


def _takes_num_generations(method: Any) -> bool:
    """Whether TRL's ``_generate_single_turn`` takes ``num_generations`` (TRL 1.16 does)."""
    try:
        return method is not None and "num_generations" in inspect.signature(method).parameters
    except (TypeError, ValueError):
        return False


def _check_trainer_arguments(
    bound: Any, allocator: CoBAAllocator, server_mode_ok: bool = True
) -> None:
    """Refuse setups that cannot carry per-prompt counts, before TRL builds anything."""
    if not bound:
        return
    if bound.get("rollout_func") is not None:
        raise ValueError(
            "CoBAGRPOTrainer does not support rollout_func: TRL's contract is that it returns "
            "num_generations completions per prompt, a uniform group size, while CoBA-RL gives "
            "each prompt its own count; use transformers generation or vLLM (colocate or server)"
        )
    config = bound.get("args")
    if config is None:
        return
    if getattr(config, "multi_objective_aggregation", "sum_then_normalize") != (
        "sum_then_normalize"
    ):
        raise ValueError(
            "CoBAGRPOTrainer supports multi_objective_aggregation='sum_then_normalize' only, "
            f"got {config.multi_objective_aggregation!r}"
        )
    if (
        getattr(config, "use_vllm", False)
        and getattr(config, "vllm_mode", None) == "server"
        and not server_mode_ok
    ):
        raise ValueError(
            "vLLM server mode needs GRPOTrainer._generate_single_turn(..., num_generations) "
            "(TRL 1.16) to send one request per row; this TRL version lacks it. Use "
            "vllm_mode='colocate' or transformers generation"
        )
    if getattr(config, "remove_unused_columns", False):
        raise ValueError(
            "remove_unused_columns=True drops the prompt-id column CoBAGRPOTrainer needs; "
            "keep GRPOConfig's default remove_unused_columns=False"
        )
    g = getattr(config, "num_generations", None)
    cfg = allocator.config
    if isinstance(g, int) and not cfg.n_low <= g <= cfg.n_up:
        raise ValueError(
            f"the allocator's bounds [n_low={cfg.n_low}, n_up={cfg.n_up}] must contain "
            f"num_generations={g}: each generation batch spends M * num_generations rollouts "
            "on its M prompts"
        )


def _first_counts(ids: NDArray[Any]) -> NDArray[np.int64]:
    """How often each unique id occurs, in first-appearance order."""
    return group_sizes(ids)[1]


def _check_one_prompt_per_id(rows: list[dict[str, Any]], ids: NDArray[Any], col: str) -> None:
    seen: dict[Any, Any] = {}
    for row, pid in zip(rows, ids.tolist(), strict=True):
        prompt = row.get("prompt")
        if seen.setdefault(pid, prompt) != prompt:
            raise ValueError(
                f"prompt id {pid!r} (column {col!r}) is shared by different prompts; ids must "
                "be unique per prompt (use the dataset row index)"
            )


_TRAINER: type[Any] | None = None


def __getattr__(name: str) -> Any:
    """Build ``CoBAGRPOTrainer`` on first access, importing TRL only then."""
    global _TRAINER
    if name != "CoBAGRPOTrainer":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if _TRAINER is None:
        try:
            grpo_trainer = importlib.import_module("trl").GRPOTrainer
        except ImportError as exc:
            raise ImportError(
                f"CoBAGRPOTrainer needs TRL: pip install 'coba-rl[trl]' ({exc})"
            ) from exc
        _TRAINER = type(
            "CoBAGRPOTrainer",
            (CoBAGRPOMixin, grpo_trainer),
            {
                "__module__": __name__,
                "__doc__": "TRL's ``GRPOTrainer`` with CoBA-RL per-prompt rollout counts.",
            },
        )
    return _TRAINER
