"""A synthetic RLVR model: GRPO's own gradient on a logistic (item-response) policy.

This is a *synthetic* model of where GRPO's learning signal comes from, built so that an
allocator can be watched over a whole training run in seconds on a laptop. It is not a
language model and it cannot predict benchmark gains on real LLMs.

The model:

* Prompt ``i`` has a unit feature vector ``z_i`` (``dim`` components) and a difficulty
  ``b_i``. Every feature vector loads on one shared "general skill" direction, plus a
  random prompt-specific part. Learning on one prompt moves every prompt along the
  shared direction, and along the specific parts by the cosine of the two prompts'
  specific directions, which is often negative: prompts interfere, and a step that
  helps one prompt can hurt another.
* The policy has a skill vector ``theta`` and a per-prompt memorisation offset ``m_i``.
  The pass rate is ``p_i = sigmoid(<theta, z_i> + m_i - b_i)``.
* Difficulties are drawn so that the initial pass-rate histogram looks like math RLVR at
  the start of training: about a third of the prompts near 0, a tenth near 1, the rest
  spread out in between. A held-out set is drawn from the same distribution.
* One training step samples one Bernoulli reward per rollout row, computes GRPO
  advantages on the ragged groups with :func:`coba_rl.grpo.group_advantages`, and takes a
  policy-gradient step with this policy's score function
  (``d log P(success) = (1 - p) z``, ``d log P(failure) = -p z``), plus, per rollout,
  an isotropic noise vector of norm about ``grad_noise`` that has nothing to do with
  success (the rest of a real rollout's log-probability gradient: the other tokens).
  A group whose rollouts all agree has advantage 0 and teaches nothing, exactly as in
  GRPO; the noise averages out only over many rollouts with non-zero advantage.
* ``theta`` takes one optimiser step on the batch gradient (averaged over rows, as a
  token-mean loss): Adam by default (``betas = (0.9, 0.999)``, ``eps = 1e-8``, as RLVR
  trainers use), or plain SGD. Then ``theta`` is pulled back toward its start (a
  stand-in for a KL penalty), which makes accuracy saturate: under Adam by decoupled
  decay as in AdamW, ``theta -= lr * adam_decay * (theta - theta_0)``; under SGD by
  the fraction ``decay`` of its distance, ``theta -= decay * (theta - theta_0)``, not
  scaled by the learning rate. ``m_i`` moves by plain SGD on the prompt's own scalar gradient
  under either optimiser: memorisation helps the prompt itself, never the held-out set.
* Every rollout has a response length in tokens that grows with the prompt's difficulty
  and stops at a length limit: prompt ``i`` at pass rate ``p`` has the mean length
  ``c_i(p) = length_base + length_span (1 - p) e_i`` (``e_i`` a fixed per-prompt
  log-normal factor, as :func:`coba_rl.bench.token_batch` draws its lengths); a failed
  rollout is ``failure_length_ratio`` times as long as a successful one of the same
  prompt, each rollout has its own log-normal spread, and the length is cut at
  ``length_limit``. Lengths come from their own random stream: they never change the
  rewards, the noise or the learning curve, only what a step costs in tokens.
* Held-out accuracy is the mean held-out pass rate (no memorisation, no sampling noise).
  A validation set, drawn like the held-out set and disjoint from it, serves to choose
  learning rates.

Everything is vectorised over prompts and rows, and deterministic under a seed.

Reference: [the model on the Simulation page][the-model]; CoBA-RL (arXiv 2602.03048) and
Knapsack-RL (arXiv 2509.25849) motivate the quantities it reports.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np
from numpy.typing import ArrayLike, NDArray
from pydantic import BaseModel, ConfigDict, Field, model_validator

from coba_rl._validation import as_id_array, check_rewards
from coba_rl.grpo import expand, group_advantages
from coba_rl.types import Allocation

if TYPE_CHECKING:
    from coba_rl.allocator import CoBAAllocator

__all__ = [
    "PASS_RATE_BINS",
    "AllocatorLike",
    "RLVRSimulator",
    "SimConfig",
    "SimHistory",
    "StepOutcome",
    "TokenBudgetCoBA",
    "run_simulation",
]

IntArray = NDArray[np.int64]
FloatArray = NDArray[np.float64]

#: Edges of the true-pass-rate bins used to summarise allocations (``~0`` and ``~1`` apart).
PASS_RATE_BINS: tuple[float, ...] = (0.0, 0.01, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.99)


class AllocatorLike(Protocol):
    """The two methods of :class:`coba_rl.protocol.Allocator` that the simulator calls."""

    def allocate(self, prompt_ids: Any, budget: int) -> Allocation:
        """Rollout counts for ``prompt_ids`` (in their order) summing to ``budget``."""

    def update(self, prompt_ids: Any, rewards: Any) -> None:
        """Record one step: one (prompt id, reward) per rollout."""


class SimConfig(BaseModel):
    """The constants of the synthetic RLVR model (frozen; unknown keys are rejected).

    Attributes:
      num_train, num_heldout: training-set and held-out-set sizes.
      dim: length of the feature vectors ``z`` and of the skill vector ``theta``.
      shared_loading: weight of the shared "general skill" direction in every ``z``
        (the rest is prompt-specific); it sets how much learning transfers.
      hard_share, easy_share: shares of prompts drawn near pass rate 0 and near 1.
      hard_logit, easy_logit: mean initial logit of the hard and easy prompts; their
        spread is ``tail_spread``. The remaining prompts get a logit uniform in
        ``[-mid_spread, mid_spread]``.
      num_val: size of the validation set (for choosing learning rates).
      grad_noise: norm scale of the per-rollout gradient noise (see the module docstring).
      optimizer: ``"adam"`` (default) or ``"sgd"`` for ``theta``.
      lr: learning rate of ``theta`` (the transferable skill).
      adam_beta1, adam_beta2, adam_eps: Adam's constants.
      lr_mem: SGD step size of the per-prompt memorisation offsets ``m`` (either optimiser).
      decay: SGD only: after each step, ``theta`` moves this fraction of the way back to
        its start (a KL-penalty stand-in; not scaled by ``lr``).
      adam_decay: Adam only: decoupled decay toward the start, as AdamW applies weight
        decay: ``theta -= lr * adam_decay * (theta - theta_0)``. Its fixed point does not
        depend on ``lr``, so the learning rate sets speed and noise, not the ceiling.
      ddof, eps, scale: GRPO advantage options, as in :func:`coba_rl.grpo.group_advantages`.
      per_prompt_weights: weight each row by ``G / n_i`` so each prompt counts equally.
      reward: ``"binary"`` rewards in {0, 1}, or ``"signed"`` rewards in {-1, +1}.
      length_limit: the generation length limit (tokens): no response is longer.
      length_base, length_span: a prompt's mean response length (before the limit) is
        ``length_base + length_span * (1 - p) * e_i`` at pass rate ``p``.
      length_prompt_spread: ``e_i ~ LogNormal(0, length_prompt_spread)``, fixed per prompt.
      length_rollout_spread: each rollout's length is multiplied by a log-normal factor of
        mean 1 and this log-scale spread.
      failure_length_ratio: a failed rollout is this many times as long as a successful
        one of the same prompt (the prompt's mean length is unchanged).

    Example:
      >>> cfg = SimConfig(num_train=512)
      >>> cfg.num_train, cfg.dim, cfg.reward, cfg.optimizer
      (512, 12, 'binary', 'adam')
      >>> SimConfig(hard_share=0.8, easy_share=0.3)
      Traceback (most recent call last):
      ...
      pydantic_core._pydantic_core.ValidationError: 1 validation error for SimConfig
        Value error, hard_share + easy_share must not exceed 1, got 0.8 + 0.3 ...
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    num_train: int = Field(default=4096, ge=1)
    num_heldout: int = Field(default=2048, ge=1)
    num_val: int = Field(default=1024, ge=1)
    dim: int = Field(default=12, ge=2)
    shared_loading: float = Field(default=0.4, ge=0.0, le=1.0)
    hard_share: float = Field(default=1.0 / 3.0, ge=0.0, le=1.0)
    easy_share: float = Field(default=0.1, ge=0.0, le=1.0)
    hard_logit: float = Field(default=-6.0, allow_inf_nan=False)
    easy_logit: float = Field(default=5.5, allow_inf_nan=False)
    tail_spread: float = Field(default=1.5, ge=0.0, allow_inf_nan=False)
    mid_spread: float = Field(default=4.0, ge=0.0, allow_inf_nan=False)
    grad_noise: float = Field(default=1.0, ge=0.0, allow_inf_nan=False)
    optimizer: Literal["adam", "sgd"] = "adam"
    lr: float = Field(default=0.3, ge=0.0, allow_inf_nan=False)
    adam_beta1: float = Field(default=0.9, ge=0.0, lt=1.0)
    adam_beta2: float = Field(default=0.999, ge=0.0, lt=1.0)
    adam_eps: float = Field(default=1e-8, gt=0.0, allow_inf_nan=False)
    adam_decay: float = Field(default=0.3, ge=0.0, allow_inf_nan=False)
    lr_mem: float = Field(default=0.01, ge=0.0, allow_inf_nan=False)
    decay: float = Field(default=0.01, ge=0.0, lt=1.0)
    ddof: int = Field(default=1, ge=0, le=1)
    eps: float = Field(default=1e-6, ge=0.0, allow_inf_nan=False)
    scale: bool = True
    per_prompt_weights: bool = False
    reward: Literal["binary", "signed"] = "binary"
    length_limit: int = Field(default=4096, ge=1)
    length_base: float = Field(default=250.0, gt=0.0, allow_inf_nan=False)
    length_span: float = Field(default=2500.0, ge=0.0, allow_inf_nan=False)
    length_prompt_spread: float = Field(default=0.35, ge=0.0, allow_inf_nan=False)
    length_rollout_spread: float = Field(default=0.3, ge=0.0, allow_inf_nan=False)
    failure_length_ratio: float = Field(default=1.5, gt=0.0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _shares(self) -> SimConfig:
        if self.hard_share + self.easy_share > 1.0:
            raise ValueError(
                "hard_share + easy_share must not exceed 1, got "
                f"{self.hard_share} + {self.easy_share}"
            )
        return self


@dataclass(frozen=True)
class StepOutcome:
    """What one simulated training step produced.

    Attributes:
      row_prompt_ids: the prompt id of each rollout row (contiguous groups, in batch order).
      rewards: one reward per row ({0, 1} or {-1, +1}).
      successes: successes per prompt of the batch, shape ``(M,)``.
      pass_rates: the true pass rate of each prompt before the update, shape ``(M,)``.
      lengths: the response length of each row in tokens, in ``[1, length_limit]``.
    """

    row_prompt_ids: IntArray
    rewards: FloatArray
    successes: IntArray
    pass_rates: FloatArray
    lengths: IntArray = field(default_factory=lambda: np.empty(0, dtype=np.int64))


def _sigmoid(x: FloatArray) -> FloatArray:
    """The logistic function without overflow, with full relative precision near 0 and 1."""
    e = np.exp(-np.abs(x))
    out: FloatArray = np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
    return out


class RLVRSimulator:
    """A logistic policy trained by GRPO on synthetic prompts (see the module docstring).

    Prompt ids are training-set indices ``0 .. num_train - 1``.

    Args:
      config: the model constants; defaults to :class:`SimConfig` ``()``.
      seed: seeds the prompts, the batch order, the reward draws, the gradient noise and
        the response lengths (independent streams: the lengths never move the others).

    Example:
      >>> sim = RLVRSimulator(SimConfig(num_train=64, num_heldout=32), seed=0)
      >>> ids = sim.next_batch(8)
      >>> counts = np.full(8, 4)
      >>> out = sim.step(ids, counts)
      >>> out.rewards.shape, sorted(set(out.rewards.tolist())) <= [0.0, 1.0]
      ((32,), True)
      >>> 0.0 < sim.heldout_accuracy() < 1.0
      True
      >>> out.lengths.shape, bool(out.lengths.max() <= sim.config.length_limit)
      ((32,), True)

    Complexity: a step costs O(R log R + M d) for R rows and M prompts (plus O(N d) for
    the memorisation-free held-out accuracy, when asked).
    """

    def __init__(self, config: SimConfig | None = None, seed: int = 0) -> None:
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise TypeError(f"seed must be a non-negative int, got {seed!r}")
        self.config = config if config is not None else SimConfig()
        # Children 0-4 are what they were before the length stream (child 5) was added.
        world_ss, order_ss, outcome_ss, noise_ss, val_ss, length_ss = np.random.SeedSequence(
            int(seed)
        ).spawn(6)
        world = np.random.default_rng(world_ss)
        self._order_rng = np.random.default_rng(order_ss)
        self._outcome_rng = np.random.default_rng(outcome_ss)
        self._noise_rng = np.random.default_rng(noise_ss)
        self._length_rng = np.random.default_rng(length_ss)
        cfg = self.config
        #: Per-prompt log-normal length factor ``e_i`` of the training prompts.
        self.length_factor: FloatArray = self._length_rng.lognormal(
            0.0, cfg.length_prompt_spread, cfg.num_train
        )
        self.z_train, self.b_train = self._draw_prompts(world, cfg.num_train)
        self.z_heldout, self.b_heldout = self._draw_prompts(world, cfg.num_heldout)
        self.z_val, self.b_val = self._draw_prompts(np.random.default_rng(val_ss), cfg.num_val)
        self.theta0: FloatArray = np.zeros(cfg.dim)
        self.theta: FloatArray = self.theta0.copy()
        self._adam_m: FloatArray = np.zeros(cfg.dim)
        self._adam_v: FloatArray = np.zeros(cfg.dim)
        self._adam_t = 0
        self.memo: FloatArray = np.zeros(cfg.num_train)
        self._epoch_order: IntArray = np.empty(0, dtype=np.int64)
        self._cursor = 0
        self.epoch = 0

    # -- the world ------------------------------------------------------------------------

    def _draw_prompts(self, rng: np.random.Generator, n: int) -> tuple[FloatArray, FloatArray]:
        """Feature vectors (shared direction + specific part) and difficulties."""
        cfg = self.config
        specific = rng.standard_normal((n, cfg.dim))
        specific[:, 0] = 0.0  # direction 0 is the shared skill
        specific /= np.maximum(np.linalg.norm(specific, axis=1, keepdims=True), 1e-12)
        a = cfg.shared_loading
        z = math.sqrt(1.0 - a * a) * specific
        z[:, 0] = a
        kind = rng.random(n)
        logit = np.where(
            kind < cfg.hard_share,
            rng.normal(cfg.hard_logit, cfg.tail_spread, n),
            np.where(
                kind < cfg.hard_share + cfg.easy_share,
                rng.normal(cfg.easy_logit, cfg.tail_spread, n),
                rng.uniform(-cfg.mid_spread, cfg.mid_spread, n),
            ),
        )
        # theta starts at 0, so the initial logit is -b
        return z, -logit

    # -- reading the policy ---------------------------------------------------------------

    def pass_rates(self, prompt_ids: ArrayLike | None = None) -> FloatArray:
        """True pass rates ``sigmoid(<theta, z_i> + m_i - b_i)`` of training prompts.

        Args:
          prompt_ids: training-set indices; ``None`` means the whole training set.
        """
        if prompt_ids is None:
            return _sigmoid(self.z_train @ self.theta + self.memo - self.b_train)
        idx = self._check_ids(prompt_ids)
        return _sigmoid(self.z_train[idx] @ self.theta + self.memo[idx] - self.b_train[idx])

    def heldout_pass_rates(self) -> FloatArray:
        """True pass rates of the held-out prompts (skill only: no memorisation)."""
        return _sigmoid(self.z_heldout @ self.theta - self.b_heldout)

    def heldout_accuracy(self) -> float:
        """Mean held-out pass rate: the simulator's "benchmark"."""
        return float(self.heldout_pass_rates().mean())

    def validation_accuracy(self) -> float:
        """Mean validation pass rate (skill only), for choosing learning rates."""
        return float(_sigmoid(self.z_val @ self.theta - self.b_val).mean())

    def train_accuracy(self) -> float:
        """Mean training-set pass rate (memorisation included)."""
        return float(self.pass_rates().mean())

    def mean_lengths(self, prompt_ids: ArrayLike | None = None) -> FloatArray:
        """Mean response length of training prompts, before the limit, at their pass rates now.

        ``length_base + length_span * (1 - p_i) * e_i``: harder prompts write longer
        responses. The same form as :func:`coba_rl.bench.token_batch`'s lengths.

        Args:
          prompt_ids: training-set indices; ``None`` means the whole training set.
        """
        cfg = self.config
        factor = (
            self.length_factor
            if prompt_ids is None
            else self.length_factor[self._check_ids(prompt_ids)]
        )
        return cfg.length_base + cfg.length_span * (1.0 - self.pass_rates(prompt_ids)) * factor

    # -- a training step ------------------------------------------------------------------

    def next_batch(self, batch_size: int) -> IntArray:
        """The next ``batch_size`` prompt ids: epochs of a seeded shuffle, no repeats.

        A batch never straddles two epochs: the remainder of an epoch is dropped, as a
        data loader with ``drop_last=True`` does.

        Raises:
          ValueError: ``batch_size`` outside ``[1, num_train]``.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)):
            raise TypeError(f"batch_size must be an int, got {batch_size!r}")
        if not 1 <= batch_size <= self.config.num_train:
            raise ValueError(
                f"batch_size must be in [1, num_train={self.config.num_train}], got {batch_size}"
            )
        if self._cursor + batch_size > self._epoch_order.size:
            self._epoch_order = self._order_rng.permutation(self.config.num_train)
            self._cursor = 0
            self.epoch += 1
        ids = self._epoch_order[self._cursor : self._cursor + batch_size]
        self._cursor += batch_size
        return ids.astype(np.int64)

    def sample_rewards(self, row_prompt_ids: ArrayLike) -> FloatArray:
        """One verifier reward per rollout row, drawn with the row's prompt's pass rate.

        Returns:
          float64 rewards in {0, 1}, or {-1, +1} with ``reward="signed"``.
        """
        idx = self._check_ids(row_prompt_ids)
        success = self._outcome_rng.random(idx.size) < self.pass_rates(idx)
        fail = -1.0 if self.config.reward == "signed" else 0.0
        return np.where(success, 1.0, fail)

    def sample_lengths(self, row_prompt_ids: ArrayLike, rewards: ArrayLike) -> IntArray:
        r"""One response length (tokens) per rollout row, given whether the row succeeded.

        .. math::

            L_r = \min\bigl(\ell_{max},\ \max(1,\ \mathrm{round}(c_i(p_i)\, w_r\, \eta_r))\bigr),
            \quad w_r = \frac{\rho^{[r \text{ failed}]}}{p_i + \rho (1 - p_i)}, \quad
            \eta_r \sim \mathrm{LogNormal}(-s^2 / 2, s)

        with ``c_i`` from :meth:`mean_lengths`, ``rho = failure_length_ratio``,
        ``s = length_rollout_spread`` and ``l_max = length_limit``. ``w`` and ``eta``
        have mean 1, so before the limit a prompt's rollouts average ``c_i(p_i)`` tokens
        and a failure is ``rho`` times as long as a success. Draws come from the
        simulator's length stream only.

        Args:
          row_prompt_ids: shape ``(R,)``, the prompt id of each row.
          rewards: shape ``(R,)``; a row succeeded if its reward is 1.

        Returns:
          int64 lengths of shape ``(R,)`` in ``[1, length_limit]``.

        Complexity: O(R).
        """
        idx = self._check_ids(row_prompt_ids)
        success = check_rewards(rewards, idx.size) == 1.0
        cfg = self.config
        p = self.pass_rates(idx)
        rho = cfg.failure_length_ratio
        w = np.where(success, 1.0, rho) / (p + rho * (1.0 - p))
        s = cfg.length_rollout_spread
        eta = np.exp(s * self._length_rng.standard_normal(idx.size) - 0.5 * s * s)
        mean = cfg.length_base + cfg.length_span * (1.0 - p) * self.length_factor[idx]
        lengths = np.clip(np.rint(mean * w * eta), 1, cfg.length_limit)
        return lengths.astype(np.int64)

    def policy_gradient_step(
        self,
        row_prompt_ids: ArrayLike,
        rewards: ArrayLike,
        advantages: ArrayLike,
        weights: ArrayLike | None = None,
    ) -> FloatArray:
        r"""Apply one GRPO policy-gradient step from per-row advantages.

        .. math::

            s_i = \sum_{r \in i} w_r A_r \, \partial_{\ell} \log P(y_r), \quad
            g = \frac{\sum_i s_i z_i + \sum_r w_r A_r \epsilon_r}{R}, \quad
            \theta \leftarrow \mathrm{opt}(\theta, g), \quad
            \theta \leftarrow \theta - \lambda (\theta - \theta_0), \quad
            m_i \leftarrow m_i + \eta_m s_i

        where ``d/dl log P(success) = 1 - p`` and ``d/dl log P(failure) = -p`` for the
        logit ``l``, ``epsilon_r`` is the row's gradient noise (``N(0, grad_noise**2 / dim)``
        per component), ``R`` is the number of rows (a token-mean-style average), ``opt``
        is one Adam (or SGD) ascent step with learning rate ``lr``, and ``lambda`` is
        ``lr * adam_decay`` under Adam (decoupled, as AdamW) or ``decay`` under SGD (not
        scaled by ``lr``).

        Args:
          row_prompt_ids: shape ``(R,)``, the prompt id of each row.
          rewards: shape ``(R,)``; a row succeeded if its reward is 1.
          advantages: shape ``(R,)``, e.g. from :func:`coba_rl.grpo.group_advantages`.
          weights: optional per-row loss weights, shape ``(R,)`` (default 1).

        Returns:
          ``s``, the scalar gradient of each distinct prompt of the rows, in id order.

        Raises:
          ValueError: lengths differ, non-finite values, or ids out of range.
        """
        idx = self._check_ids(row_prompt_ids)
        r = check_rewards(rewards, idx.size)
        adv = _check_rows(advantages, idx.size, "advantages")
        w = np.ones(idx.size) if weights is None else _check_rows(weights, idx.size, "weights")
        if idx.size == 0:
            return np.empty(0)
        p = self.pass_rates(idx)
        score = np.where(r == 1.0, 1.0 - p, -p)
        uniq, inv = np.unique(idx, return_inverse=True)
        per_row = w * adv * score
        summed = np.bincount(inv.reshape(-1), weights=per_row, minlength=uniq.size)
        s: FloatArray = summed.astype(np.float64, copy=False)  # per prompt of the rows
        cfg = self.config
        grad = self.z_train[uniq].T @ s
        if cfg.grad_noise > 0:
            eps = self._noise_rng.standard_normal((idx.size, cfg.dim))
            grad = grad + (cfg.grad_noise / math.sqrt(cfg.dim)) * ((w * adv) @ eps)
        grad /= idx.size
        if cfg.optimizer == "adam":
            self._adam_t += 1
            b1, b2 = cfg.adam_beta1, cfg.adam_beta2
            self._adam_m = b1 * self._adam_m + (1 - b1) * grad
            self._adam_v = b2 * self._adam_v + (1 - b2) * grad * grad
            m_hat = self._adam_m / (1 - b1**self._adam_t)
            v_hat = self._adam_v / (1 - b2**self._adam_t)
            pull = cfg.lr * cfg.adam_decay * (self.theta - self.theta0)  # as AdamW: decay first
            self.theta += cfg.lr * m_hat / (np.sqrt(v_hat) + cfg.adam_eps) - pull
        else:
            self.theta += cfg.lr * grad - cfg.decay * (self.theta - self.theta0)
        self.memo[uniq] += cfg.lr_mem * s
        return s

    def step(self, prompt_ids: ArrayLike, counts: ArrayLike) -> StepOutcome:
        """Generate ``counts[i]`` rollouts for each prompt, score them and train on them.

        Rows are laid out with :func:`coba_rl.grpo.expand`; advantages come from
        :func:`coba_rl.grpo.group_advantages` with the configured ``ddof``, ``eps`` and
        ``scale`` (and ``G / n_i`` row weights if ``per_prompt_weights``). Every row also
        gets a response length (:meth:`sample_lengths`), drawn before the update.

        Raises:
          ValueError: duplicate or out-of-range ids, or counts of the wrong length.
        """
        ids = self._check_ids(prompt_ids)
        if np.unique(ids).size != ids.size:
            raise ValueError("prompt_ids must be distinct within a batch")
        c = np.asarray(counts)
        if c.shape != ids.shape:
            raise ValueError(
                f"counts must have one entry per prompt: {ids.size} prompts, shape {c.shape}"
            )
        rows = expand(c)
        row_ids = ids[rows]
        p = self.pass_rates(ids)
        rewards = self.sample_rewards(row_ids)
        lengths = self.sample_lengths(row_ids, rewards)  # before the update: same policy
        cfg = self.config
        adv, w = group_advantages(
            rewards, rows, ddof=cfg.ddof, eps=cfg.eps, scale=cfg.scale, return_weights=True
        )
        self.policy_gradient_step(row_ids, rewards, adv, w if cfg.per_prompt_weights else None)
        successes = np.bincount(rows, weights=rewards == 1.0, minlength=ids.size)
        return StepOutcome(
            row_prompt_ids=row_ids,
            rewards=rewards,
            successes=successes.astype(np.int64),
            pass_rates=p,
            lengths=lengths,
        )

    def _check_ids(self, prompt_ids: ArrayLike) -> IntArray:
        ids = as_id_array(prompt_ids)
        if ids.dtype.kind != "i":
            raise TypeError("simulator prompt ids are training-set indices (ints)")
        if ids.size and (ids.min() < 0 or ids.max() >= self.config.num_train):
            raise ValueError(
                f"prompt ids must lie in [0, num_train={self.config.num_train}), got "
                f"[{int(ids.min())}, {int(ids.max())}]"
            )
        return ids


def _check_rows(values: ArrayLike, n: int, name: str) -> FloatArray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},) (one per row), got {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} must be finite (found NaN or inf)")
    return arr


@dataclass
class SimHistory:
    """Per-step records of one simulated run (index 0 of the accuracies is before step 1).

    Attributes:
      heldout_accuracy, validation_accuracy, train_accuracy: shape ``(steps + 1,)``.
      effective_ratio: per step, the share of rollouts in mixed-outcome groups.
      zero_variance_rollouts: per step, rollouts in groups whose rewards all agree.
      failure_rate: per step, ``1 - mean_i(k_i / n_i)`` as the trainer sees it.
      alpha, beta, tau: the allocator's shape per step (``nan`` if it has none).
      counts_by_bin: shape ``(steps, len(PASS_RATE_BINS))``, mean rollouts per prompt in
        each true-pass-rate bin (``nan`` for an empty bin).
      prompts_by_bin: same shape, how many prompts of the batch fell in each bin.
      rollouts: per step, the rollouts generated (the budget, unless the allocator
        spends a token budget).
      generated_tokens: per step, the response tokens generated (the rows' lengths summed).
      truncated_rollouts: per step, rollouts that ran to the length limit.
      token_budget: per step, the allocation's token budget ``T`` (``nan`` if none).
      expected_tokens: per step, the tokens the allocation expected to spend under its
        own length estimates (``nan`` for a rollout-only allocation).
    """

    heldout_accuracy: list[float] = field(default_factory=list)
    validation_accuracy: list[float] = field(default_factory=list)
    train_accuracy: list[float] = field(default_factory=list)
    effective_ratio: list[float] = field(default_factory=list)
    zero_variance_rollouts: list[int] = field(default_factory=list)
    failure_rate: list[float] = field(default_factory=list)
    alpha: list[float] = field(default_factory=list)
    beta: list[float] = field(default_factory=list)
    tau: list[float] = field(default_factory=list)
    counts_by_bin: list[list[float]] = field(default_factory=list)
    prompts_by_bin: list[list[int]] = field(default_factory=list)
    rollouts: list[int] = field(default_factory=list)
    generated_tokens: list[int] = field(default_factory=list)
    truncated_rollouts: list[int] = field(default_factory=list)
    token_budget: list[float] = field(default_factory=list)
    expected_tokens: list[float] = field(default_factory=list)

    def cumulative_tokens(self) -> list[int]:
        """Tokens generated before each accuracy entry: ``0``, then running sums per step.

        Example:
          >>> SimHistory(generated_tokens=[10, 5]).cumulative_tokens()
          [0, 10, 15]
        """
        return [0, *np.cumsum(self.generated_tokens, dtype=np.int64).tolist()]

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready lists (``nan`` stays a float)."""
        return {k: list(v) for k, v in self.__dict__.items()}


def _record_step(hist: SimHistory, sim: RLVRSimulator, alloc: Allocation, out: StepOutcome) -> None:
    counts = alloc.counts
    mixed = (out.successes > 0) & (out.successes < counts)
    total = int(counts.sum())
    effective = int(counts[mixed].sum())
    hist.effective_ratio.append(effective / total if total else math.nan)
    hist.zero_variance_rollouts.append(total - effective)
    frac = np.divide(out.successes, counts, out=np.zeros(counts.size), where=counts > 0)
    hist.failure_rate.append(float(1.0 - frac.mean()) if counts.size else math.nan)
    # Per-step series for plots: NaN where the allocation has no value (None).
    for series, v in ((hist.alpha, alloc.alpha), (hist.beta, alloc.beta), (hist.tau, alloc.tau)):
        series.append(math.nan if v is None else v)
    bins = np.digitize(out.pass_rates, PASS_RATE_BINS[1:])
    n_bins = len(PASS_RATE_BINS)
    n_in = np.bincount(bins, minlength=n_bins)
    sums = np.bincount(bins, weights=counts, minlength=n_bins)
    mean = np.divide(sums, n_in, out=np.full(n_bins, np.nan), where=n_in > 0)
    hist.counts_by_bin.append(mean.tolist())
    hist.prompts_by_bin.append(n_in.tolist())
    hist.rollouts.append(total)
    hist.generated_tokens.append(int(out.lengths.sum()))
    hist.truncated_rollouts.append(int((out.lengths >= sim.config.length_limit).sum()))
    for series, x in (
        (hist.token_budget, alloc.token_budget),
        (hist.expected_tokens, alloc.tokens),
    ):
        series.append(math.nan if x is None else float(x))
    hist.heldout_accuracy.append(sim.heldout_accuracy())
    hist.validation_accuracy.append(sim.validation_accuracy())
    hist.train_accuracy.append(sim.train_accuracy())


class TokenBudgetCoBA:
    """CoBA-RL spending a token budget worth ``budget`` uniform rollouts.

    ``allocate(ids, B)`` spends ``T = (B / M) * sum_i c_i`` expected tokens and no rollout
    cap, where ``c_i`` is prompt ``i``'s windowed mean response length (unknown lengths:
    the mean of the batch's known ones, or ``default_length`` when none is known). ``T``
    is what uniform GRPO with ``B / M`` rollouts per prompt would spend on this batch
    under the same length estimates, so at the full rollout budget the two spend equal
    expected tokens and at half the budget half of them. ``update`` passes every
    rollout's length on; :func:`run_simulation` (and the experiment's loop) give it the
    lengths and accept counts that do not sum to ``B``.

    Example:
      >>> import coba_rl
      >>> cfg = coba_rl.CoBAConfig(n_up=16, default_tokens_per_rollout=10.0)
      >>> a = TokenBudgetCoBA(coba_rl.CoBAAllocator(cfg), 10.0)
      >>> a.update([1, 1, 2, 2], [1, 0, 0, 0], lengths=[2, 4, 10, 10])
      >>> a.token_budget([1, 2, 3], 12)  # 4 rollouts each; prompt 3 costs (3 + 10) / 2
      78.0
      >>> a.allocate([1, 2, 3], 12).tokens <= 78.0
      True

    Complexity: O(M log N) for the estimates plus the token-budget allocation's cost.
    """

    def __init__(self, inner: CoBAAllocator, default_length: float) -> None:
        self.inner = inner
        self.default_length = float(default_length)

    def token_budget(self, prompt_ids: Any, budget: int) -> float:
        """``T`` for this batch (see the class docstring)."""
        ids = np.asarray(prompt_ids)
        c = self.inner.mean_lengths(ids)
        known = c[np.isfinite(c)]
        fill = float(known.mean()) if known.size else self.default_length
        return budget / ids.size * float(np.where(np.isfinite(c), c, fill).sum())

    def allocate(self, prompt_ids: Any, budget: int) -> Allocation:
        """Counts that spend at most :meth:`token_budget` expected tokens."""
        return self.inner.allocate(
            prompt_ids, None, token_budget=self.token_budget(prompt_ids, budget)
        )

    def update(self, prompt_ids: Any, rewards: Any, lengths: Any = None) -> None:
        """Record one step with the rollouts' lengths."""
        self.inner.update(prompt_ids, rewards, lengths=lengths)


def run_simulation(
    allocator: AllocatorLike,
    *,
    steps: int,
    batch_size: int,
    budget: int,
    seed: int = 0,
    config: SimConfig | None = None,
    progress: Any = None,
) -> SimHistory:
    """Train the synthetic policy for ``steps`` steps, asking ``allocator`` for the counts.

    Each step: draw a batch, ``allocator.allocate(ids, budget)``, generate and train
    (:meth:`RLVRSimulator.step`), then ``allocator.update(row ids, rewards)`` (with
    ``lengths=`` every row's response length for a :class:`TokenBudgetCoBA`). Under one
    seed every allocator sees the same prompts and the same batch order. The counts
    must sum to ``budget``, unless the allocation reports a token budget
    (``Allocation.token_budget``): then it spends tokens, and the rollouts may differ.

    Args:
      allocator: any object with ``allocate(prompt_ids, budget)`` and ``update(ids, rewards)``.
      steps: training steps (>= 0).
      batch_size: prompts per step ``M``.
      budget: rollouts per step ``B``.
      seed: the simulator's seed.
      config: the model constants.
      progress: optional callable ``progress(step_done)`` called after every step.

    Returns:
      The run's :class:`SimHistory`.

    Raises:
      ValueError: negative ``steps``, a bad batch size, or an allocation that has the
        wrong length or (without a token budget) does not sum to ``budget``.

    Example:
      >>> import coba_rl
      >>> alloc = coba_rl.CoBAAllocator(coba_rl.CoBAConfig(n_low=2, n_up=32))
      >>> cfg = SimConfig(num_train=128, num_heldout=64)
      >>> h = run_simulation(alloc, steps=5, batch_size=32, budget=32 * 8, config=cfg)
      >>> len(h.heldout_accuracy), len(h.effective_ratio), alloc.step
      (6, 5, 5)

    Complexity: O(steps * (B log B + M d + N d)) plus the allocator's own cost (for a
    token budget, ``B`` is the rollouts it buys).
    """
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 0:
        raise ValueError(f"steps must be a non-negative int, got {steps!r}")
    sim = RLVRSimulator(config, seed=seed)
    hist = SimHistory()
    hist.heldout_accuracy.append(sim.heldout_accuracy())
    hist.validation_accuracy.append(sim.validation_accuracy())
    hist.train_accuracy.append(sim.train_accuracy())
    for t in range(int(steps)):
        ids = sim.next_batch(batch_size)
        alloc = allocator.allocate(ids, budget)
        counts = np.asarray(alloc.counts)
        by_tokens = getattr(alloc, "token_budget", None) is not None
        if counts.shape != ids.shape or not (by_tokens or int(counts.sum()) == budget):
            raise ValueError(
                f"allocator returned {counts.size} counts summing to {int(counts.sum())}; "
                f"expected {ids.size} counts summing to the budget {budget}"
            )
        out = sim.step(ids, counts)
        if isinstance(allocator, TokenBudgetCoBA):
            allocator.update(out.row_prompt_ids, out.rewards, lengths=out.lengths)
        else:
            allocator.update(out.row_prompt_ids, out.rewards)
        _record_step(hist, sim, alloc, out)
        if progress is not None:
            progress(t + 1)
    return hist
