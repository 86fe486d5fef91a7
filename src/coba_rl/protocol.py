"""The one interface every stateful allocator implements, so they swap in a training loop.

Each step of a GRPO-style trainer does::

    counts = allocator.allocate(prompt_ids, budget).counts   # before generation
    ...generate counts[i] rollouts for prompt i, score them...
    allocator.update(rollout_prompt_ids, rewards)            # one entry per rollout
    # or, for a token budget: allocate(prompt_ids, budget, token_budget=T) and
    # update(rollout_prompt_ids, rewards, lengths=response_lengths)

and checkpoints with ``allocator.save(path)`` / ``type(allocator).load(path)``.
:class:`coba_rl.CoBAAllocator`, :class:`coba_rl.KnapsackRLAllocator` and
:class:`coba_rl.UniformAllocator` all satisfy :class:`Allocator`; one contract test
suite (``tests/test_contract.py``) runs over each of them.
"""

from __future__ import annotations

import os
from typing import Any, Protocol, TypeVar, runtime_checkable

from coba_rl.types import Allocation

__all__ = ["Allocator"]

_A = TypeVar("_A", bound="Allocator")


@runtime_checkable
class Allocator(Protocol):
    """A stateful per-prompt rollout allocator.

    The contract, shared by every implementation:

    * ``allocate(ids, B).counts`` sums to exactly ``B``, follows the order of ``ids`` and
      respects the allocator's bounds; it depends only on the state and the arguments.
    * ``allocate`` never changes the state; ``update`` is the only way to learn.
    * after ``save``/``load`` (or ``state_dict``/``load_state_dict``), the next
      allocation is identical to the one an uninterrupted allocator would make.
    * bad input raises ``ValueError``/``TypeError`` naming the problem; a failed load
      leaves the allocator untouched, and a state whose parts contradict each other
      (one that would resume to a different future) does not load.
    * the allocator is safe to share between threads: each of these methods holds the
      allocator's lock, so every call sees and leaves a consistent state.

    Example:
      >>> import coba_rl
      >>> allocators = [
      ...     coba_rl.CoBAAllocator(),
      ...     coba_rl.KnapsackRLAllocator(),
      ...     coba_rl.UniformAllocator(),
      ... ]
      >>> all(isinstance(a, Allocator) for a in allocators)
      True
      >>> [a.allocate([3, 1, 2], 24).counts.tolist() for a in allocators]
      [[8, 8, 8], [8, 8, 8], [8, 8, 8]]
    """

    def allocate(
        self, prompt_ids: Any, budget: int | None, token_budget: float | None = None
    ) -> Allocation:
        """Rollout counts for a batch, in the order of ``prompt_ids``, summing to ``budget``.

        ``token_budget`` caps the expected tokens as well; an allocator that counts
        rollouts only raises ``ValueError`` for it (and ``TypeError`` for ``budget=None``).
        """
        ...

    def update(self, prompt_ids: Any, rewards: Any, lengths: Any = None) -> None:
        """Record one training step: one (prompt id, reward) pair per rollout.

        ``lengths`` (optional): each rollout's response length in tokens, for allocators
        that spend a token budget; the others check and ignore them.
        """
        ...

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume exactly, as plain JSON-ready data."""
        ...

    def load_state_dict(self, state: Any) -> None:
        """Restore :meth:`state_dict` output; on error raise and change nothing."""
        ...

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write :meth:`state_dict` to ``path`` atomically."""
        ...

    @classmethod
    def load(cls: type[_A], path: str | os.PathLike[str]) -> _A:
        """A new allocator, config included, from a file written by :meth:`save`."""
        ...
