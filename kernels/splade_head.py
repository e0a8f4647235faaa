"""The SPLADE head: LM-head projection -> ReLU -> log1p -> max over tokens, as one function.

    w[b, v] = max_t log(1 + relu(hidden[b, t] . weight[v] + bias[v]))   over non-padding tokens t

log1p(relu(.)) is monotone, so the max is taken on the raw logits (padding = -inf) and the activation is
applied to the (batch, vocab) result: identical output, V-times less activation work. This is the one entry
point the encoders call; faster backends plug in behind `backend=`.
"""
from __future__ import annotations

import torch

BACKENDS = ("reference",)


def splade_head_reference(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                          attention_mask: torch.Tensor) -> torch.Tensor:
    """The spec in plain PyTorch. hidden (B, T, h), weight (V, h), bias (V,), attention_mask (B, T)."""
    logits = hidden @ weight.T  # (B, T, V)
    if bias is not None:
        logits = logits + bias
    logits = logits.masked_fill(~attention_mask.bool().unsqueeze(-1), float("-inf"))
    pooled = logits.max(dim=1).values  # (B, V); -inf for a row that is all padding
    return torch.log1p(torch.relu(pooled))


def splade_head(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, *,
                attention_mask: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """(batch, vocab) SPLADE vectors from final hidden states; see the module docstring."""
    if backend not in ("auto", *BACKENDS):
        raise ValueError(f"unknown SPLADE head backend {backend!r}; choose from auto, {', '.join(BACKENDS)}")
    return splade_head_reference(hidden, weight, bias, attention_mask)
