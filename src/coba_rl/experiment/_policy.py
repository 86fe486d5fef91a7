"""A tiny decoder-only transformer policy, its batched sampler and its GRPO/SFT losses (torch).

Built from a :class:`PolicyConfig` with no download: token, position and segment
embeddings,
``n_layers`` pre-norm blocks (causal multi-head attention and a GELU MLP), a final norm
and an output head. Prompts are left-padded so that every row's prompt ends in the same
column; padding is never attended. Positions are *coupled* to the digits, as in "Position
Coupling" (Cho et al., 2024) and Abacus embeddings (McLeish et al., 2024): a token's
position is its index inside its own number (operands and answer alike, least
significant digit first), and its segment is how many separators (``BOS``, ``+``, ``=``)
precede it. Digit ``i`` of the answer then sits at the same position as digit ``i`` of
every operand, which lets a model this small learn addition in a few hundred steps.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from torch.nn import functional as F

from coba_rl.experiment.task import (
    BOS,
    EOS,
    EQUALS,
    PAD,
    PLUS,
    VOCAB_SIZE,
    ArithmeticTask,
    Problem,
)

__all__ = [
    "Batch",
    "PolicyConfig",
    "TinyTransformer",
    "encode_prompts",
    "generate",
    "grpo_loss",
    "sft_loss",
]


_SEGMENTS = 8


class PolicyConfig(BaseModel):
    """Shape of the tiny transformer (frozen; unknown keys are rejected)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    d_model: int = Field(default=64, ge=8)
    n_heads: int = Field(default=4, ge=1)
    n_layers: int = Field(default=2, ge=1)
    d_mlp: int = Field(default=256, ge=8)
    max_len: int = Field(default=8, ge=4)
    vocab_size: int = Field(default=VOCAB_SIZE, ge=VOCAB_SIZE)


class _Block(nn.Module):
    def __init__(self, cfg: PolicyConfig) -> None:
        super().__init__()
        self.n_heads = cfg.n_heads
        self.ln1 = nn.LayerNorm(cfg.d_model)
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.ln2 = nn.LayerNorm(cfg.d_model)
        self.mlp = nn.Sequential(
            nn.Linear(cfg.d_model, cfg.d_mlp), nn.GELU(), nn.Linear(cfg.d_mlp, cfg.d_model)
        )

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor, cache: list[torch.Tensor] | None = None
    ) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=2)
        shape = (b, t, self.n_heads, d // self.n_heads)
        q, k, v = (a.view(shape).transpose(1, 2) for a in (q, k, v))
        if cache is not None:  # generation: keys and values of earlier tokens are kept
            if cache:
                k, v = torch.cat([cache[0], k], dim=2), torch.cat([cache[1], v], dim=2)
            cache[:] = [k, v]
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        x = x + self.proj(y.transpose(1, 2).reshape(b, t, d))
        return x + self.mlp(self.ln2(x))


class TinyTransformer(nn.Module):
    """The policy: ``forward(tokens) -> logits`` for left-padded token rows.

    Example:
      >>> net = TinyTransformer(PolicyConfig(d_model=16, n_heads=2, d_mlp=32), seed=0)
      >>> net(torch.tensor([[0, 1, 5, 3, 6, 4]])).shape
      torch.Size([1, 6, 15])
    """

    def __init__(self, config: PolicyConfig | None = None, seed: int = 0) -> None:
        super().__init__()
        cfg = config if config is not None else PolicyConfig()
        if cfg.d_model % cfg.n_heads:
            raise ValueError(f"d_model ({cfg.d_model}) must be divisible by n_heads")
        self.config = cfg
        gen = torch.Generator().manual_seed(int(seed))
        self.tok = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos = nn.Embedding(cfg.max_len, cfg.d_model)
        self.seg = nn.Embedding(_SEGMENTS, cfg.d_model)
        self.blocks = nn.ModuleList(_Block(cfg) for _ in range(cfg.n_layers))
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size)
        with torch.no_grad():  # seeded init, independent of torch's global generator
            for p in self.parameters():
                if p.dim() > 1:
                    p.copy_(torch.randn(p.shape, generator=gen) * 0.02)
                else:
                    p.zero_()
            for m in self.modules():
                if isinstance(m, nn.LayerNorm):
                    m.weight.fill_(1.0)

    def _coupled(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw positions and segments of every token (before clamping to the tables)."""
        b, t = tokens.shape
        # position coupling: a token's position is its index inside its number (digits
        # are least significant first), and its segment counts the separators before it
        sep = (tokens == BOS) | (tokens == PLUS) | (tokens == EQUALS)
        idx = torch.arange(t).expand(b, t)
        last_sep = torch.cummax(torch.where(sep, idx, torch.full_like(idx, -1)), dim=1).values
        return (idx - last_sep).clamp(min=0), sep.long().cumsum(dim=1)

    def _embed(self, tokens: torch.Tensor, pos: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        pos = pos.clamp(max=self.config.max_len - 1)
        out: torch.Tensor = (
            self.tok(tokens) + self.pos(pos) + self.seg(seg.clamp(max=_SEGMENTS - 1))
        )
        return out

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        logits, _ = self._forward(tokens, caches=None)
        return logits

    def _forward(
        self, tokens: torch.Tensor, caches: list[list[torch.Tensor]] | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        real = tokens != PAD
        t = tokens.shape[1]
        pos, seg = self._coupled(tokens)
        causal = torch.ones(t, t, dtype=torch.bool).tril()
        eye = torch.eye(t, dtype=torch.bool)
        mask = (causal & real[:, None, :]) | eye  # a pad row attends to itself only
        x = self._embed(tokens, pos, seg)
        m = mask[:, None, :, :]
        for i, blk in enumerate(self.blocks):
            x = blk(x, m, None if caches is None else caches[i])
        out: torch.Tensor = self.head(self.ln_f(x))
        return out, real

    def start(self, prompts: torch.Tensor) -> tuple[torch.Tensor, dict[str, Any]]:
        """Run the prompts once, keeping each layer's keys and values; the last logits.

        With :meth:`extend` this gives the same logits as :meth:`forward` on the whole
        sequence, at a fraction of the cost during generation.
        """
        caches: list[list[torch.Tensor]] = [[] for _ in self.blocks]
        logits, real = self._forward(prompts, caches)
        pos, seg = self._coupled(prompts)
        state = {"caches": caches, "real": real, "pos": pos[:, -1], "seg": seg[:, -1]}
        return logits[:, -1, :], state

    def extend(self, token: torch.Tensor, state: dict[str, Any]) -> torch.Tensor:
        """Append one token per row (shape ``(B,)``) to a :meth:`start` state; its logits."""
        sep = (token == BOS) | (token == PLUS) | (token == EQUALS)
        pos = torch.where(sep, torch.zeros_like(token), state["pos"] + 1)
        seg = state["seg"] + sep.long()
        real = torch.cat([state["real"], (token != PAD)[:, None]], dim=1)
        mask = real.clone()
        mask[:, -1] = True  # every token attends to itself
        x = self._embed(token[:, None], pos[:, None], seg[:, None])
        m = mask[:, None, None, :]
        for blk, cache in zip(self.blocks, state["caches"], strict=True):
            x = blk(x, m, cache)
        state.update(real=real, pos=pos, seg=seg)
        out: torch.Tensor = self.head(self.ln_f(x))[:, -1, :]
        return out


def encode_prompts(task: ArithmeticTask, problems: Sequence[Problem]) -> torch.Tensor:
    """Left-padded prompt tokens, shape ``(len(problems), longest prompt)``."""
    toks = [task.prompt_tokens(p) for p in problems]
    width = max(len(t) for t in toks)
    out = torch.full((len(toks), width), PAD, dtype=torch.long)
    for i, t in enumerate(toks):
        out[i, width - len(t) :] = torch.tensor(t)
    return out


@dataclass
class Batch:
    """Sampled rollouts: full token rows, and which columns are the response.

    Attributes:
      tokens: shape ``(R, P + T)``, left-padded prompt then response (``PAD`` after ``EOS``).
      prompt_width: ``P``, the prompt columns.
      response_mask: shape ``(R, T)``, 1 on response tokens up to and including ``EOS``.
      lengths: response length in tokens of each row (``EOS`` included), numpy ``(R,)``.
    """

    tokens: torch.Tensor
    prompt_width: int
    response_mask: torch.Tensor
    lengths: np.ndarray[Any, np.dtype[np.int64]]

    def responses(self) -> list[list[int]]:
        """The response tokens of each row, up to and including ``EOS``."""
        resp = self.tokens[:, self.prompt_width :].tolist()
        return [r[:n] for r, n in zip(resp, self.lengths.tolist(), strict=True)]


@torch.no_grad()
def generate(
    net: TinyTransformer,
    prompts: torch.Tensor,
    max_new: int,
    *,
    greedy: bool = False,
    generator: torch.Generator | None = None,
    temperature: float = 1.0,
) -> Batch:
    """Sample responses for every row of ``prompts`` at once, token by token.

    Rows stop at ``EOS``; later columns are ``PAD``. ``greedy`` takes the most likely token.
    """
    net.eval()
    rows = prompts.shape[0]
    tokens = prompts
    done = torch.zeros(rows, dtype=torch.bool)
    logits, state = net.start(prompts)
    for j in range(max_new):
        if j:
            logits = net.extend(tokens[:, -1], state)
        if greedy:
            nxt = logits.argmax(dim=-1)
        else:
            probs = torch.softmax(logits / temperature, dim=-1)
            nxt = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        nxt = torch.where(done, torch.full_like(nxt, PAD), nxt)
        tokens = torch.cat([tokens, nxt[:, None]], dim=1)
        done |= nxt == EOS
        if bool(done.all()):
            break
    resp = tokens[:, prompts.shape[1] :]
    is_eos = resp == EOS
    has_eos = is_eos.any(dim=1)
    first = torch.where(has_eos, is_eos.float().argmax(dim=1) + 1, resp.shape[1])
    cols = torch.arange(resp.shape[1])[None, :]
    mask = (cols < first[:, None]).float()
    net.train()
    return Batch(tokens, prompts.shape[1], mask, first.numpy().astype(np.int64))


def _response_logprobs(net: TinyTransformer, batch: Batch) -> torch.Tensor:
    logits = net(batch.tokens[:, :-1]).float()
    logp = torch.log_softmax(logits[:, batch.prompt_width - 1 :, :], dim=-1)
    target = batch.tokens[:, batch.prompt_width :]
    return logp.gather(2, target[:, :, None]).squeeze(2)


def grpo_loss(net: TinyTransformer, batch: Batch, advantages: torch.Tensor) -> torch.Tensor:
    """GRPO's policy-gradient loss with token-mean aggregation (verl's default).

    ``-sum_rows_tokens(A_row * log pi(token)) / number of response tokens in the batch``.
    On-policy with one update per batch the PPO ratio is 1 and clipping is inactive, so
    this is the clipped objective's gradient at its first mini-batch.
    """
    logp = _response_logprobs(net, batch)
    mask = batch.response_mask
    return -(advantages[:, None] * logp * mask).sum() / mask.sum().clamp(min=1.0)


def sft_loss(
    net: TinyTransformer, task: ArithmeticTask, problems: Sequence[Problem]
) -> torch.Tensor:
    """Cross-entropy of the reference answers (prompt tokens are not trained on)."""
    prompts = encode_prompts(task, problems)
    answers = [task.answer_tokens(p) for p in problems]
    width = max(len(a) for a in answers)
    resp = torch.full((len(answers), width), PAD, dtype=torch.long)
    mask = torch.zeros(len(answers), width)
    for i, a in enumerate(answers):
        resp[i, : len(a)] = torch.tensor(a)
        mask[i, : len(a)] = 1.0
    lengths = np.array([len(a) for a in answers], dtype=np.int64)
    batch = Batch(torch.cat([prompts, resp], dim=1), prompts.shape[1], mask, lengths)
    logp = _response_logprobs(net, batch)
    return -(logp * mask).sum() / mask.sum()
