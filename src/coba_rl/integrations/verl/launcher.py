"""``python -m coba_rl.integrations.verl``: verl's ``main_ppo`` with CoBA-RL switched on.

It takes exactly the Hydra overrides of ``python -m verl.trainer.main_ppo`` (the same
``ppo_trainer`` config, validated the same way) plus a ``coba.*`` group, and runs verl's
own ``run_ppo`` with a task runner whose trainer has the CoBA-RL mixin:

- ``trainer.use_v1=true`` (verl 0.9's default): the synchronous V1 trainer with
  :class:`~coba_rl.integrations.verl.v1.CoBAV1TrainerMixin`;
- ``trainer.use_v1=false``: the legacy ``RayPPOTrainer`` with
  :class:`~coba_rl.integrations.verl.v0.CoBARayTrainerMixin`.

The ``coba.*`` keys are every ``CoBAConfig`` field (``coba.variant``, ``coba.n_low``,
``coba.n_up``, ``coba.kappa``, ``coba.window``, ``coba.success_threshold``, ...), plus
``coba.bounds=[n_low,n_up]``, ``coba.budget`` (rollouts per training batch, default
``data.train_batch_size * actor_rollout_ref.rollout.n``), ``coba.token_budget``
(expected response tokens per training batch, spent as well as the rollout budget;
V1 trainer only; default: none) and ``coba.prompt_id`` (``index_prompt`` or
``index``). ``coba.max_prompt_tokens`` and ``coba.default_tokens_per_rollout`` (default
with a token budget: ``data.max_response_length``) are ``CoBAConfig`` fields. An
unknown key or a bad value stops the launch with one line naming it (exit status 2),
before Hydra, Ray or any GPU is touched; ``--help`` prints this text and the keys. The
validated group is stored in the run's config as ``coba`` (so it is logged with it), and
the trainer reads it there.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence
from typing import Any

from coba_rl._cli import exit_usage
from coba_rl.integrations.verl._config import (
    COBA_KEYS,
    CoBASettings,
    coba_settings,
    settings_from_config,
)
from coba_rl.integrations.verl.v0 import coba_trainer_class
from coba_rl.integrations.verl.v1 import check_v1_config, coba_v1_trainer_class

__all__ = ["coba_task_runner", "main", "prepare_config", "split_overrides"]

_PREFIXES = ("coba.", "+coba.", "++coba.")
#: How errors name the command (``<prog>: error: <what is wrong>``, exit status 2).
PROG = "python -m coba_rl.integrations.verl"


def split_overrides(argv: Sequence[str]) -> tuple[dict[str, Any], list[str]]:
    """Split command-line arguments into the ``coba.*`` group and everything else.

    Values are parsed with Hydra's own override grammar (``coba.kappa=5`` is an int,
    ``coba.bounds=[2,32]`` a list, ``coba.budget=null`` ``None``).

    Returns:
      ``({key: value}, the remaining arguments in order)``.

    Raises:
      ValueError: a ``coba`` argument that is not ``coba.KEY=VALUE``, a nested key, or a
        key given twice.

    Example:
      Hydra comes with verl, so this runs only where verl is installed:

      >>> split_overrides(  # doctest: +SKIP
      ...     ["data.train_batch_size=8", "coba.kappa=5", "+coba.bounds=[2,16]"]
      ... )
      ({'kappa': 5, 'bounds': [2, 16]}, ['data.train_batch_size=8'])
    """
    parser = importlib.import_module("hydra.core.override_parser.overrides_parser").OverridesParser
    coba: dict[str, Any] = {}
    rest: list[str] = []
    for arg in argv:
        prefix = next((p for p in _PREFIXES if arg.startswith(p)), None)
        if prefix is None:
            if arg in ("coba", "+coba") or arg.startswith(("coba=", "+coba=")):
                raise ValueError(f"{arg!r}: give each CoBA-RL setting as coba.KEY=VALUE")
            rest.append(arg)
            continue
        if "=" not in arg:
            raise ValueError(f"{arg!r}: give each CoBA-RL setting as coba.KEY=VALUE")
        key = arg[len(prefix) :].split("=", 1)[0]
        if not key or "." in key:
            raise ValueError(f"{arg!r}: the coba group is flat; use coba.KEY=VALUE")
        if key in coba:
            raise ValueError(f"coba.{key} is given twice")
        override = parser.create().parse_override(arg[len(prefix) - len("coba.") :].lstrip("+"))
        coba[key] = override.value()
    return coba, rest


def prepare_config(config: Any, coba: dict[str, Any]) -> CoBASettings:
    """Validate the ``coba`` group against a composed verl config and store it in the config.

    Resolves ``coba.budget`` (default ``train_batch_size * rollout.n``), checks it can be
    spent within ``[n_low, n_up]`` per prompt, that a ``coba.token_budget`` covers the
    first batch (:meth:`CoBASettings.check_token_budget`) and that the trainer is
    supported, and writes the group to ``config.coba``.

    Raises:
      ValueError: unknown keys or bad values (named), an impossible budget, or an
        unsupported trainer setting.
    """
    omegaconf = importlib.import_module("omegaconf")
    settings = coba_settings(coba)
    n = int(config.actor_rollout_ref.rollout.n)
    tbs = int(config.data.train_batch_size)
    budget = settings.budget if settings.budget is not None else tbs * n
    group = {**coba, "budget": budget}
    settings = coba_settings(group)
    settings.resolve_budget(tbs, n, tbs)  # raises when the budget cannot be spent
    if bool(config.trainer.get("use_v1", True)):
        check_v1_config(config)
    with omegaconf.open_dict(config):
        config.coba = group
    settings_from_config(config).check_token_budget(tbs)
    if not bool(config.trainer.get("use_v1", True)):
        from coba_rl.integrations.verl.v0 import _check_v0_config

        _check_v0_config(config, settings, use_critic=_needs_critic(config))
    return settings


def coba_task_runner(use_v1: bool) -> Any:
    """verl's task runner (a Ray actor class) whose trainer has the CoBA-RL mixin.

    V1: ``TaskRunnerV1`` whose ``run`` registers the CoBA-RL trainer for the run's
    ``trainer.v1.trainer_mode`` in that (Ray actor) process; V0: the legacy ``TaskRunner``
    whose ``run`` builds :func:`coba_trainer_class` instead of ``RayPPOTrainer``.
    """
    ray = importlib.import_module("ray")
    if use_v1:
        main_ppo = importlib.import_module("verl.trainer.main_ppo")
        base = main_ppo.TaskRunnerV1.__ray_metadata__.modified_class

        class CoBATaskRunnerV1(base):  # type: ignore[misc, valid-type]
            def run(self, config: Any) -> Any:
                trainer_base = importlib.import_module("verl.trainer.ppo.v1.trainer_base")
                mode = config.trainer.v1.trainer_mode
                check_v1_config(config)
                registry = trainer_base.TRAINER_REGISTRY
                original = registry[mode]
                registry[mode] = coba_v1_trainer_class(mode)
                try:
                    return super().run(config)
                finally:
                    registry[mode] = original

        return ray.remote(CoBATaskRunnerV1)

    main_v0: Any = importlib.import_module("verl.trainer.main_ppo_v0")
    base0 = main_v0.TaskRunner.__ray_metadata__.modified_class

    class CoBATaskRunner(base0):  # type: ignore[misc, valid-type]
        def run(self, config: Any) -> Any:
            original = main_v0.RayPPOTrainer
            main_v0.RayPPOTrainer = coba_trainer_class()
            try:
                return super().run(config)
            finally:
                main_v0.RayPPOTrainer = original

    return ray.remote(CoBATaskRunner)


def main(
    argv: Sequence[str] | None = None, *, run: Callable[[Any, Any], Any] | None = None
) -> None:
    """The command line: ``python -m coba_rl.integrations.verl [HYDRA OVERRIDES] [coba.KEY=V]``.

    Args:
      argv: the arguments (default ``sys.argv[1:]``).
      run: what runs the composed config and task runner (default verl's ``run_ppo``).
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in args):
        print(__doc__)
        print(f"coba keys: {', '.join('coba.' + k for k in COBA_KEYS)}")
        return
    try:
        coba, rest = split_overrides(args)
        coba_settings(coba)  # unknown keys and bad values fail before Hydra and Ray
    except ValueError as exc:
        exit_usage(PROG, str(exc))
    hydra = importlib.import_module("hydra")

    def task(config: Any) -> None:
        main_ppo = importlib.import_module("verl.trainer.main_ppo")
        main_ppo.auto_set_device(config)
        main_ppo.validate_config(
            config=config,
            use_reference_policy=main_ppo.need_reference_policy(config),
            use_critic=main_ppo.need_critic(config),
        )
        try:
            settings = prepare_config(config, coba)
        except ValueError as exc:
            exit_usage(PROG, str(exc))
        use_v1 = bool(config.trainer.get("use_v1", True))
        trainer = f"V1 {config.trainer.v1.trainer_mode}" if use_v1 else "legacy"
        cfg = settings.config
        print(
            f"coba-rl: CoBA-RL on verl's {trainer} trainer; budget {settings.budget} rollouts "
            f"per batch, n in [{cfg.n_low}, {cfg.n_up}], variant {cfg.variant}",
            flush=True,
        )
        runner = run if run is not None else main_ppo.run_ppo
        runner(config, coba_task_runner(use_v1))

    task.__module__ = __name__
    wrapped = hydra.main(
        config_path="pkg://verl.trainer.config", config_name="ppo_trainer", version_base=None
    )(task)
    saved = sys.argv
    sys.argv = [saved[0] if saved else "coba_rl.integrations.verl", *rest]
    try:
        wrapped()
    finally:
        sys.argv = saved


def _needs_critic(config: Any) -> bool:
    return bool(importlib.import_module("verl.trainer.ppo.utils").need_critic(config))
