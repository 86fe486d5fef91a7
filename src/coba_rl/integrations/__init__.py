"""Drop-in integrations of CoBA-RL with real GRPO trainers.

Each framework has its own module, which never imports the framework at import time:

- :mod:`coba_rl.integrations.verl`: a launcher (``python -m coba_rl.integrations.verl``),
  mixins for verl's V1 synchronous trainer and its legacy ``RayPPOTrainer``, and the
  functions under them (install with ``pip install 'coba-rl[verl]'``);
- :mod:`coba_rl.integrations.trl`: a ``GRPOTrainer`` subclass with per-prompt rollout
  counts (install with ``pip install 'coba-rl[trl]'``).

Both keep the trainer's row total (verl: ``train_batch_size * rollout.n``; TRL:
``generation_batch_size``) and save the allocator state beside every checkpoint, so a
resumed run makes the same next allocation as an uninterrupted one.
"""

from __future__ import annotations

__all__ = ["STATE_FILENAME"]

#: The allocator state file written into each checkpoint folder, by both integrations.
STATE_FILENAME = "coba_allocator.json"
