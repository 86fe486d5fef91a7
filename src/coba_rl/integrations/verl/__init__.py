"""CoBA-RL for verl: per-prompt rollout counts in verl 0.9's trainers, and a launcher.

Three ways in, from least to most code:

- **The launcher**: ``python -m coba_rl.integrations.verl`` takes the Hydra overrides of
  ``python -m verl.trainer.main_ppo`` plus ``coba.*`` keys
  (:mod:`~coba_rl.integrations.verl.launcher`).
- **A trainer class**: :func:`coba_v1_trainer_class` (verl's default V1 synchronous
  trainer, :class:`CoBAV1TrainerMixin`) or :func:`coba_trainer_class` (the legacy
  ``RayPPOTrainer``, :class:`CoBARayTrainerMixin`), for a launcher of your own.
- **The functions** (:func:`prompt_ids`, :func:`repeat_rows`, :func:`map_uids`,
  :func:`feed_back`, :func:`save_allocator`, ...), for a ``fit`` you maintain yourself::

      ids = prompt_ids(batch.non_tensor_batch["index"], batch.non_tensor_batch["raw_prompt"])
      alloc = allocator.allocate(ids, len(ids) * n)
      uid_to_id = map_uids(batch, ids)
      gen_batch = self._get_gen_batch(batch)
      gen_batch_output = repeat_rows(gen_batch, alloc.counts)   # was .repeat(n)
      ...
      batch = repeat_rows(batch, alloc.counts)                  # was .repeat(n)
      ...                                                       # rewards scored
      feed_back(allocator, batch, uid_to_id=uid_to_id)          # before the next step

verl is imported only when a trainer class, the launcher or a verl object is used, so this
package imports (and type-checks) without verl installed.

Reference: CoBA-RL (arXiv 2602.03048), whose released verl recipe allocates per dataset
index and feeds back ``token_level_scores.sum(-1)``; verl (``verl/trainer/ppo``).
"""

from __future__ import annotations

from coba_rl.integrations.verl._config import COBA_KEYS, CoBASettings, coba_settings
from coba_rl.integrations.verl._rows import (
    PROMPT_ID_MODES,
    PromptIdMode,
    allocator_path,
    check_counts,
    checkpoint_dir,
    dataset_indices,
    feed_back,
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
from coba_rl.integrations.verl.v0 import CoBARayTrainerMixin, coba_trainer_class
from coba_rl.integrations.verl.v1 import (
    ROLLOUT_N_KEY,
    CoBAV1TrainerMixin,
    check_v1_config,
    coba_v1_trainer_class,
)

__all__ = [
    "COBA_KEYS",
    "PROMPT_ID_MODES",
    "ROLLOUT_N_KEY",
    "CoBARayTrainerMixin",
    "CoBASettings",
    "CoBAV1TrainerMixin",
    "PromptIdMode",
    "allocator_path",
    "check_counts",
    "check_v1_config",
    "checkpoint_dir",
    "coba_settings",
    "coba_trainer_class",
    "coba_v1_trainer_class",
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
