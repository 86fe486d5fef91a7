"""Every TRL loss type, on ragged groups, against a per-group reference written in the test.

TRL's loss does not use ``num_generations``; it reads the advantages CoBAGRPOTrainer
writes, so with uneven rollout counts each loss must come out as if the advantages had
been normalised within each prompt's own group. Each test trains one optimizer step
(two gradient-accumulation micro-batches of a shuffled 16-row generation batch) with a
warmed allocator, so the groups are ragged from the first step. Inside TRL's
``compute_loss`` the reference recomputes, from scratch:

- each row's advantage from the rewards the reward function returned, normalised in its
  prompt's group (Bessel-corrected std, ``+ 1e-4``), written out in plain Python;
- the per-token log-probabilities with a plain forward pass of the model;
- the loss type's surrogate and normaliser, from its paper's definition as TRL documents
  it (GRPO, Dr. GRPO, DAPO, BNPO, CISPO, SAPO, LUSPO, VESPO).

It compares the loss value and its gradient with respect to every model parameter.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # before transformers / huggingface_hub are imported

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytestmark = [pytest.mark.trl, pytest.mark.e2e]

torch = pytest.importorskip("torch")
trl = pytest.importorskip("trl")
pytest.importorskip("transformers")
pytest.importorskip("datasets")
pytest.importorskip("tokenizers")

from trl_toy import (  # noqa: E402
    Verifier,
    group_advantages_reference,
    grpo_args,
    runs,
    tiny_model,
    tiny_tokenizer,
    toy_dataset,
)

import coba_rl  # noqa: E402
from coba_rl.integrations import trl as ctrl  # noqa: E402

ANSWERS = ["a b c d e f", "a b", "*", "a b c d"]
G = 4
ROWS = len(ANSWERS) * G  # generation_batch_size
MICRO = 2  # gradient-accumulation micro-batches per generation batch
# TRL 1.x's loss types; LUSPO is defined on sequence-level ratios
LOSS_TYPES = {
    "grpo": {},
    "dr_grpo": {},
    "dapo": {},
    "bnpo": {},
    "cispo": {},
    "sapo": {},
    "luspo": {"importance_sampling_level": "sequence"},
    "vespo": {},
}


def warmed_allocator() -> coba_rl.CoBAAllocator:
    alloc = coba_rl.CoBAAllocator(coba_rl.CoBAConfig(n_low=2, n_up=8))
    ids = [k for k in range(len(ANSWERS)) for _ in range(4)]
    alloc.update(ids, [1.0, 0, 0, 0] + [1.0, 1.0, 0, 0] + [1.0] * 4 + [1.0, 1.0, 1.0, 0])
    return alloc


def uniform_group_advantages(rewards: list[float]) -> list[float]:
    """Stock TRL's normalisation, groups of num_generations consecutive rows (wrong here)."""
    r = np.array(rewards).reshape(-1, G)
    adv = (r - r.mean(1, keepdims=True)) / (r.std(1, ddof=1, keepdims=True) + 1e-4)
    return [float(a) for a in adv.ravel()]


def reference_loss(trainer: Any, model: Any, inputs: dict[str, Any], uniform: bool = False) -> Any:
    """The loss of one micro-batch, from the definitions, with per-prompt-group advantages."""
    args = trainer.args
    ids, rewards = trainer.verifier.calls[-1]  # the generation batch, in row order
    rows = inputs["test_row"].tolist()  # which generation-batch row each micro-batch row is
    if uniform:
        per_row = uniform_group_advantages(rewards)
    else:
        per_row = group_advantages_reference(rewards, ids)
    adv = torch.tensor([per_row[r] for r in rows])[:, None]

    prompt, completion = inputs["prompt_ids"], inputs["completion_ids"]
    m = inputs["completion_mask"].float()
    out = model(
        input_ids=torch.cat([prompt, completion], 1),
        attention_mask=torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], 1),
    )
    c = completion.shape[1]
    logits = out.logits[:, -c - 1 : -1, :].float() / args.temperature
    logp = torch.log_softmax(logits, -1).gather(-1, completion[..., None])[..., 0]
    old = logp.detach()  # one iteration per generation: the sampling policy is the current one
    if args.importance_sampling_level == "sequence":
        log_r = ((logp - old) * m).sum(-1, keepdim=True) / m.sum(-1, keepdim=True).clamp(min=1)
    else:
        log_r = logp - old
    r = torch.exp(log_r)
    eps_low = args.epsilon
    eps_high = args.epsilon_high if args.epsilon_high is not None else args.epsilon
    kind = args.loss_type
    if kind in ("grpo", "dr_grpo", "dapo", "bnpo", "luspo"):  # PPO-clip surrogate
        per_token = -torch.minimum(r * adv, r.clamp(1 - eps_low, 1 + eps_high) * adv)
    elif kind == "cispo":  # clipped, stop-gradient IS weight times A times log-prob
        per_token = -r.clamp(max=eps_high).detach() * adv * logp
    elif kind == "sapo":  # soft gate sigmoid(tau (r - 1)) * 4 / tau
        tau = torch.where(adv > 0, args.sapo_temperature_pos, args.sapo_temperature_neg)
        per_token = -torch.sigmoid(tau * (r - 1)) * 4 / tau * adv
    elif kind == "vespo":  # Gamma weight phi(w) = exp(lambda + k log w - lambda w), no gradient
        log_w = ((logp - old) * m).sum(-1, keepdim=True).detach()
        k = torch.where(adv >= 0, args.vespo_k_pos, args.vespo_k_neg)
        lam = torch.where(adv >= 0, args.vespo_lambda_pos, args.vespo_lambda_neg)
        per_token = -torch.exp(lam + k * log_w - lam * torch.exp(log_w)) * adv * logp
    else:
        raise AssertionError(kind)

    ga = args.gradient_accumulation_steps
    lengths = m.sum(-1)
    masked = per_token * m
    if kind in ("grpo", "sapo"):  # mean over sequences of the per-sequence token mean
        return (masked.sum(-1) / lengths.clamp(min=1)).mean() / ga
    if kind == "bnpo":  # token mean over the micro-batch
        return masked.sum() / m.sum().clamp(min=1) / ga
    if kind == "dr_grpo":  # a constant: rows times max_completion_length
        return masked.sum() / (m.shape[0] * args.max_completion_length) / ga
    if kind in ("dapo", "cispo", "vespo"):  # token mean over the whole generation batch
        return masked.sum() / trainer.generation_tokens * args.steps_per_generation / ga
    return masked.sum(-1).mean() / ga  # luspo: per-sequence token sums, averaged


class LossCheck:
    """Mixed into CoBAGRPOTrainer: compares each micro-batch's loss with the reference."""

    def _generate_and_score_completions(self, inputs: Any) -> Any:
        out = super()._generate_and_score_completions(inputs)  # type: ignore[misc]
        out["test_row"] = torch.arange(out["completion_ids"].shape[0])  # survives TRL's shuffle
        self.generation_tokens = float(out["completion_mask"].sum())
        self.allocations.append(self.last_allocation)  # type: ignore[attr-defined]
        return out

    def compute_loss(self, model: Any, inputs: Any, *args: Any, **kwargs: Any) -> Any:
        loss = super().compute_loss(model, inputs, *args, **kwargs)  # type: ignore[misc]
        params = [p for p in model.parameters() if p.requires_grad]

        def flat_grad(value: Any, retain: bool) -> Any:
            grads = torch.autograd.grad(value, params, retain_graph=retain, allow_unused=True)
            zero = torch.zeros(())
            return torch.cat([(g if g is not None else zero).flatten() for g in grads])

        expected = reference_loss(self, model, inputs)
        wrong = reference_loss(self, model, inputs, uniform=True)
        self.checks.append(
            (
                float(loss.detach()),
                float(expected.detach()),
                flat_grad(loss, True),
                flat_grad(expected, False),
                flat_grad(wrong, False),
            )
        )
        return loss


@pytest.mark.parametrize("loss_type", list(LOSS_TYPES))
def test_loss_matches_the_per_group_reference_on_ragged_groups(
    tmp_path: Path, loss_type: str
) -> None:
    tok = tiny_tokenizer()
    verifier = Verifier()
    cls = type("LossCheckCoBA", (LossCheck, ctrl.CoBAGRPOTrainer), {})
    trainer = cls(
        model=tiny_model(tok),
        reward_funcs=verifier,
        args=grpo_args(
            tmp_path,
            1,
            ROWS // MICRO,
            G,
            gradient_accumulation_steps=MICRO,
            loss_type=loss_type,
            **LOSS_TYPES[loss_type],
        ),
        train_dataset=toy_dataset(ANSWERS),
        processing_class=tok,
        coba_allocator=warmed_allocator(),
    )
    trainer.verifier, trainer.allocations, trainer.checks = verifier, [], []
    assert trainer.args.steps_per_generation == MICRO and trainer.loss_type == loss_type
    trainer.train()

    (ids, rewards), (alloc,) = verifier.calls[-1], trainer.allocations
    keys, lengths = runs(ids)
    assert sorted(keys) == list(range(len(ANSWERS)))
    assert lengths == alloc.counts.tolist() and len(set(lengths)) > 1, "groups must be ragged"
    expected_adv = np.array(group_advantages_reference(rewards, ids))
    # a uniform-group normalisation (TRL's view(-1, num_generations)) would differ here
    assert not np.allclose(uniform_group_advantages(rewards), expected_adv, atol=1e-3)

    # TRL computes log-probs with its fused, chunked LM head; on CPU they differ from a
    # plain log_softmax by up to ~4e-4, so values and gradients are compared to 1e-3 / 1%.
    # The wrong (uniform-group) advantages must miss by far more than that tolerance.
    assert len(trainer.checks) == MICRO
    misses = []
    for loss, expected, grad, grad_expected, grad_wrong in trainer.checks:
        assert loss == pytest.approx(expected, rel=1e-3, abs=1e-6)
        scale = float(grad_expected.norm())
        assert scale > 1e-3  # a real gradient
        assert float((grad - grad_expected).norm()) <= 1e-2 * scale
        misses.append(float((grad - grad_wrong).norm()) / scale)
    assert max(misses) > 0.1
