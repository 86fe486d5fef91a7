"""The ``coba.*`` settings of a verl run: allocator config, budget and prompt-id mode."""

from __future__ import annotations

import dataclasses
import importlib
import math
from collections.abc import Mapping
from typing import Any, cast

from pydantic import ValidationError

from coba_rl.allocator import CoBAAllocator
from coba_rl.config import CoBAConfig
from coba_rl.integrations.verl._rows import PROMPT_ID_MODES, PromptIdMode

__all__ = ["COBA_KEYS", "CoBASettings", "coba_settings", "settings_from_config"]

#: Keys of the ``coba`` group besides the ``CoBAConfig`` fields.
_EXTRA_KEYS = ("budget", "token_budget", "bounds", "prompt_id")


def _config_keys() -> tuple[str, ...]:
    return tuple(CoBAConfig.model_fields)


#: Every key the ``coba`` group accepts: each ``CoBAConfig`` field, plus ``budget``,
#: ``token_budget``, ``bounds`` (``[n_low, n_up]``) and ``prompt_id``.
COBA_KEYS: tuple[str, ...] = (*_config_keys(), *_EXTRA_KEYS)


@dataclasses.dataclass(frozen=True)
class CoBASettings:
    """What the ``coba`` group of a verl config sets.

    Attributes:
      config: the allocator config.
      budget: rollouts per training batch, or ``None`` for ``train_batch_size * rollout.n``.
      prompt_id: how prompt ids are made (see ``prompt_ids``).
      token_budget: expected response tokens per training batch, spent as well as the
        rollout budget; ``None`` (default): the rollout budget alone.
    """

    config: CoBAConfig
    budget: int | None = None
    prompt_id: PromptIdMode = "index_prompt"
    token_budget: float | None = None

    def make_allocator(self) -> CoBAAllocator:
        """A fresh allocator with this config."""
        return CoBAAllocator(self.config)

    def resolve_budget(self, num_prompts: int, rollout_n: int, train_batch_size: int) -> int:
        """The budget for a batch of ``num_prompts`` prompts.

        A full training batch gets ``budget`` (default ``train_batch_size * rollout_n``);
        any other number of prompts (a refill) gets ``num_prompts * rollout_n``.

        Raises:
          ValueError: the budget cannot be spent within ``[n_low, n_up]`` per prompt.
        """
        if num_prompts == train_batch_size and self.budget is not None:
            budget = self.budget
        else:
            budget = num_prompts * rollout_n
        lo, hi = num_prompts * self.config.n_low, num_prompts * self.config.n_up
        if not lo <= budget <= hi:
            raise ValueError(
                f"coba budget {budget} for {num_prompts} prompts is outside "
                f"[{num_prompts} * n_low, {num_prompts} * n_up] = [{lo}, {hi}]; "
                "raise coba.n_up (or lower coba.n_low or coba.budget)"
            )
        return budget

    def resolve_token_budget(self, num_prompts: int, train_batch_size: int) -> float | None:
        """The token budget for a batch of ``num_prompts`` prompts (``None``: rollouts only).

        A full training batch gets ``token_budget``; any other number of prompts (a
        refill) gets its share, ``token_budget * num_prompts / train_batch_size``.

        Example:
          >>> s = coba_settings({"token_budget": 4096})
          >>> s.resolve_token_budget(8, 8), s.resolve_token_budget(2, 8)
          (4096.0, 1024.0)
        """
        if self.token_budget is None or num_prompts == train_batch_size:
            return self.token_budget
        return self.token_budget * num_prompts / train_batch_size

    def check_token_budget(self, train_batch_size: int) -> None:
        """Refuse a token budget that a first batch, whose lengths are all unknown, cannot meet.

        Every prompt gets at least ``n_low`` rollouts, so a batch needs at least
        ``train_batch_size * n_low * default_tokens_per_rollout`` tokens before any length
        is known (later batches need ``n_low`` times their prompts' mean lengths).

        Raises:
          ValueError: the token budget is below that floor (numbers named).
        """
        default = self.config.default_tokens_per_rollout
        if self.token_budget is None or default is None:
            return
        floor = train_batch_size * self.config.n_low * default
        if self.token_budget < floor:
            raise ValueError(
                f"coba.token_budget={self.token_budget:g} is below the first batch's floor "
                f"train_batch_size * n_low * default_tokens_per_rollout = {train_batch_size} * "
                f"{self.config.n_low} * {default:g} = {floor:g} (no response length is known "
                "yet); raise coba.token_budget, or lower coba.n_low or "
                "coba.default_tokens_per_rollout"
            )


def coba_settings(values: Mapping[str, Any] | None) -> CoBASettings:
    """Validate a ``coba`` group (a mapping of key to value) into :class:`CoBASettings`.

    Every ``CoBAConfig`` field is accepted under its own name, so a field added to the
    config is accepted here too. ``bounds`` is ``[n_low, n_up]`` in one key.

    Raises:
      ValueError: an unknown key (named, with the valid ones), a bad value (named), or
        ``bounds`` given together with ``n_low`` / ``n_up``.

    Example:
      >>> s = coba_settings({"kappa": 5, "bounds": [2, 32], "budget": 512})
      >>> s.config.kappa, s.config.n_low, s.config.n_up, s.budget, s.prompt_id
      (5.0, 2, 32, 512, 'index_prompt')
      >>> coba_settings({"kapa": 5})
      Traceback (most recent call last):
      ...
      ValueError: unknown key coba.kapa; valid keys: ...
    """
    items = dict(values or {})
    unknown = sorted(str(k) for k in items if k not in COBA_KEYS)
    if unknown:
        raise ValueError(
            f"unknown key{'s' if len(unknown) > 1 else ''} "
            f"{', '.join('coba.' + k for k in unknown)}; valid keys: {', '.join(COBA_KEYS)}"
        )
    budget = items.pop("budget", None)
    token_budget = items.pop("token_budget", None)
    prompt_id = items.pop("prompt_id", "index_prompt")
    bounds = items.pop("bounds", None)
    if bounds is not None:
        if "n_low" in items or "n_up" in items:
            raise ValueError("give coba.bounds or coba.n_low / coba.n_up, not both")
        if not isinstance(bounds, (list, tuple)) or len(bounds) != 2:
            raise ValueError(f"coba.bounds must be [n_low, n_up], got {bounds!r}")
        items["n_low"], items["n_up"] = bounds
    try:
        config = CoBAConfig(**items)
    except ValidationError as exc:
        problems = "; ".join(
            f"coba.{'.'.join(str(p) for p in e['loc']) or '?'}: {e['msg']}" for e in exc.errors()
        )
        raise ValueError(f"invalid coba settings: {problems}") from None
    if budget is not None and (
        isinstance(budget, bool) or not isinstance(budget, int) or budget <= 0
    ):
        raise ValueError(
            f"coba.budget must be a positive integer (rollouts per batch), got {budget!r}"
        )
    if token_budget is not None and (
        isinstance(token_budget, bool)
        or not isinstance(token_budget, (int, float))
        or not math.isfinite(token_budget)
        or token_budget <= 0
    ):
        raise ValueError(
            "coba.token_budget must be a positive number (expected response tokens per "
            f"batch), got {token_budget!r}"
        )
    if prompt_id not in PROMPT_ID_MODES:
        raise ValueError(
            f"coba.prompt_id must be one of {list(PROMPT_ID_MODES)}, got {prompt_id!r}"
        )
    return CoBASettings(
        config=config,
        budget=budget,
        prompt_id=cast(PromptIdMode, prompt_id),
        token_budget=None if token_budget is None else float(token_budget),
    )


def settings_from_config(config: Any) -> CoBASettings:
    """The :class:`CoBASettings` of a verl config's ``coba`` group (defaults if it has none).

    With ``coba.token_budget`` and no ``coba.default_tokens_per_rollout``, a batch none of
    whose prompts has a known length costs ``data.max_response_length`` tokens per rollout
    (the most a rollout can spend), so the first steps stay within the token budget.
    """
    settings = _settings_from_group(config)
    if settings.token_budget is None or settings.config.default_tokens_per_rollout is not None:
        return settings
    limit = _get_key(_get_key(config, "data"), "max_response_length")
    if limit is None:
        return settings
    fields = {**settings.config.model_dump(), "default_tokens_per_rollout": float(limit)}
    return dataclasses.replace(settings, config=CoBAConfig.model_validate(fields))


def _get_key(node: Any, key: str) -> Any:
    if node is None:
        return None
    return node.get(key) if hasattr(node, "get") else getattr(node, key, None)


def _settings_from_group(config: Any) -> CoBASettings:
    group = config.get("coba") if hasattr(config, "get") else getattr(config, "coba", None)
    if group is None:
        return coba_settings(None)
    if type(group).__module__.startswith("omegaconf"):
        omegaconf: Any = importlib.import_module("omegaconf")
        group = omegaconf.OmegaConf.to_container(group, resolve=True)
    if not isinstance(group, Mapping):
        raise ValueError(
            f"the coba group of the config must be a mapping, got {type(group).__name__}"
        )
    return coba_settings(group)
