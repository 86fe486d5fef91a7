"""The ``coba.*`` settings of a verl run: allocator config, budget and prompt-id mode."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

from pydantic import ValidationError

from coba_rl.allocator import CoBAAllocator
from coba_rl.config import CoBAConfig
from coba_rl.integrations.verl._rows import PROMPT_ID_MODES, PromptIdMode

__all__ = ["COBA_KEYS", "CoBASettings", "coba_settings", "settings_from_config"]

#: Keys of the ``coba`` group besides the ``CoBAConfig`` fields.
_EXTRA_KEYS = ("budget", "bounds", "prompt_id")


def _config_keys() -> tuple[str, ...]:
    return tuple(CoBAConfig.model_fields)


#: Every key the ``coba`` group accepts: each ``CoBAConfig`` field, plus ``budget``,
#: ``bounds`` (``[n_low, n_up]``) and ``prompt_id``.
COBA_KEYS: tuple[str, ...] = (*_config_keys(), *_EXTRA_KEYS)


@dataclass(frozen=True)
class CoBASettings:
    """What the ``coba`` group of a verl config sets.

    Attributes:
      config: the allocator config.
      budget: rollouts per training batch, or ``None`` for ``train_batch_size * rollout.n``.
      prompt_id: how prompt ids are made (see ``prompt_ids``).
    """

    config: CoBAConfig
    budget: int | None = None
    prompt_id: PromptIdMode = "index_prompt"

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
    if prompt_id not in PROMPT_ID_MODES:
        raise ValueError(
            f"coba.prompt_id must be one of {list(PROMPT_ID_MODES)}, got {prompt_id!r}"
        )
    return CoBASettings(config=config, budget=budget, prompt_id=cast(PromptIdMode, prompt_id))


def settings_from_config(config: Any) -> CoBASettings:
    """The :class:`CoBASettings` of a verl config's ``coba`` group (defaults if it has none)."""
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
