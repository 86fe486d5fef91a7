"""A procedurally generated, exactly verifiable arithmetic task with graded difficulty.

A prompt is a sum of two or three non-negative integers; the answer is the sum. Every
number is written **least significant digit first**, and the operands are zero-padded
to the width of their level: ``47 + 305`` is the prompt ``"740+503="`` and the answer
``"253"`` (352), then an end token. Written this way, each answer digit comes after the
digits it depends on (the carry flows forward), as in studies of arithmetic in small
transformers (Lee et al., "Teaching Arithmetic to Small Transformers", 2023). The
verifier is exact: a response earns reward 1 if and only if its tokens up to the first
end token are the answer; a response without an end token is wrong.

Difficulty grows with the number of operands and their length. :data:`LEVELS` lists the
four levels as ``(operands, max_digits)``; an operand of level ``(k, d)`` is uniform on
``[0, base**d - 1]`` (base 10 by default).

Tokens: ``PAD = 0``, ``BOS = 1``, ``EOS = 2``, ``"+" = 3``, ``"=" = 4``, digits
``"0".."9" = 5..14``.

Example:
  >>> task = ArithmeticTask()
  >>> task.prompt_text((47, 305)), task.prompt_text((3, 0, 9))
  ('740+503=', '3+0+9=')
  >>> task.answer_tokens((47, 305))  # "253", then the end token
  [7, 10, 8, 2]
  >>> task.verify((47, 305), [7, 10, 8, 2]), task.verify((47, 305), [7, 10, 8, 5, 2])
  (1.0, 0.0)
  >>> ArithmeticTask(levels=((2, 3),), base=2).prompt_text((6, 1))  # 110 + 001, reversed
  '011+100='
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "BOS",
    "DIGIT0",
    "EOS",
    "EQUALS",
    "LEVELS",
    "PAD",
    "PLUS",
    "VOCAB_SIZE",
    "ArithmeticTask",
    "Problem",
    "make_splits",
]

#: Padding token: left of short prompts and after a response's end; never attended.
PAD = 0
#: First token of every prompt.
BOS = 1
#: End of a response.
EOS = 2
#: The ``"+"`` between operands.
PLUS = 3
#: The ``"="`` that ends a prompt.
EQUALS = 4
#: Token of the digit ``"0"``; digit ``d`` is ``DIGIT0 + d``.
DIGIT0 = 5
#: Number of token ids.
VOCAB_SIZE = 15

#: Difficulty levels, easiest first: (number of operands, maximum digits per operand).
LEVELS: tuple[tuple[int, int], ...] = ((2, 2), (3, 1), (2, 3), (3, 2))

#: A problem is its operands.
Problem = tuple[int, ...]


@dataclass(frozen=True)
class ArithmeticTask:
    """Generator, tokenizer and exact verifier of the addition task (module docstring).

    Attributes:
      levels: the difficulty levels to draw from, uniformly.
      base: the number base (2 to 10).
    """

    levels: tuple[tuple[int, int], ...] = LEVELS
    base: int = 10

    def __post_init__(self) -> None:
        if not 2 <= self.base <= 10:
            raise ValueError(f"base must be in [2, 10], got {self.base}")
        if not self.levels or any(k < 1 or d < 1 for k, d in self.levels):
            raise ValueError(f"levels must be non-empty (operands, digits) >= 1, got {self.levels}")

    @property
    def max_prompt_len(self) -> int:
        """Longest prompt in tokens, ``BOS`` included."""
        return max(1 + k * d + (k - 1) + 1 for k, d in self.levels)

    @property
    def max_answer_len(self) -> int:
        """Longest answer in tokens, the end token included."""
        return max(len(self._digits(k * (self.base**d - 1))) + 1 for k, d in self.levels)

    def _digits(self, x: int) -> str:
        """``x`` in this task's base, most significant digit first."""
        if self.base == 10:
            return str(x)
        out = ""
        while True:
            x, r = divmod(x, self.base)
            out = str(r) + out
            if x == 0:
                return out

    def sample(self, rng: np.random.Generator, n: int) -> list[Problem]:
        """``n`` problems, each from a uniformly drawn level."""
        out: list[Problem] = []
        for lv in rng.integers(0, len(self.levels), n):
            k, d = self.levels[int(lv)]
            out.append(tuple(int(x) for x in rng.integers(0, self.base**d, k)))
        return out

    def level(self, problem: Problem) -> int:
        """Index in :attr:`levels` of the level that generates ``problem`` (the easiest)."""
        k, d = len(problem), max(len(self._digits(x)) for x in problem)
        for i, (lk, ld) in enumerate(self.levels):
            if lk == k and d <= ld:
                return i
        raise ValueError(f"problem {problem} fits no level")

    def width(self, problem: Problem) -> int:
        """Digits per operand in the prompt: the ``max_digits`` of the problem's level."""
        return self.levels[self.level(problem)][1]

    def prompt_text(self, problem: Problem) -> str:
        """The prompt as text, operands zero-padded to the level's width: ``"047+305="``."""
        w = self.width(problem)
        return "+".join(self._digits(x).zfill(w)[::-1] for x in problem) + "="

    def prompt_tokens(self, problem: Problem) -> list[int]:
        """``BOS``, the zero-padded operands' digits and signs, then ``"="``."""
        toks = [BOS]
        for c in self.prompt_text(problem):
            toks.append(PLUS if c == "+" else EQUALS if c == "=" else DIGIT0 + int(c))
        return toks

    def answer_tokens(self, problem: Problem) -> list[int]:
        """The reversed digits of the sum, then ``EOS``."""
        return [DIGIT0 + int(c) for c in reversed(self._digits(sum(problem)))] + [EOS]

    def verify(self, problem: Problem, response: Sequence[int]) -> float:
        """1.0 if the response (tokens, up to the first ``EOS``) is the exact answer, else 0.0.

        A response without an end token is wrong.
        """
        resp = list(response)
        if EOS not in resp:
            return 0.0
        return 1.0 if resp[: resp.index(EOS) + 1] == self.answer_tokens(problem) else 0.0


def make_splits(task: ArithmeticTask, seed: int, sizes: Sequence[int]) -> list[list[Problem]]:
    """Disjoint lists of distinct problems, one per size (e.g. train, validation, held-out).

    Problems are drawn with a generator seeded by ``seed``; a problem never appears twice
    across all splits, so the validation and held-out sets share nothing with training.

    Example:
      >>> tr, va = make_splits(ArithmeticTask(), 0, (50, 20))
      >>> len(tr), len(va), len(set(tr) | set(va))
      (50, 20, 70)
    """
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 7]))
    seen: set[Problem] = set()
    splits: list[list[Problem]] = []
    for size in sizes:
        split: list[Problem] = []
        while len(split) < size:
            for p in task.sample(rng, size - len(split)):
                if p not in seen and len(split) < size:
                    seen.add(p)
                    split.append(p)
        splits.append(split)
    return splits
