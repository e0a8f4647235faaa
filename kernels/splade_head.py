"""The SPLADE head: LM-head projection -> ReLU -> log1p -> max over tokens, as one function.

    w[b, v] = max_t log(1 + relu(hidden[b, t] . weight[v] + bias[v]))   over non-padding tokens t

log1p(relu(.)) is monotone, so the max is taken on the raw logits (padding = -inf) and the activation is
applied to the (batch, vocab) result: identical output, V-times less activation work. This is the one entry
point the encoders call; the backends behind `backend=`:

- `reference`: the spec in plain PyTorch; materialises the (B, T, V) logits (tests and benchmarks import it).
- `torch`: tiled over vocabulary and tokens with a running max, padding dropped, argmax-only backward
  (lsr.kernels.torch_head). The default on CPU.
- `triton`: the same in Triton forward/backward kernels (lsr.kernels.triton_head, imported only when asked
  for). The default for CUDA tensors. On CPU it runs only under the Triton interpreter (TRITON_INTERPRET=1
  set before the module is imported), which is slow: for tests on small shapes.

The head serves BERT MLM heads (hidden = output of the transform layer, bias = decoder bias) and decoder
`lm_head`s (bias=None) alike.
"""
from __future__ import annotations

import torch

BACKENDS = ("reference", "torch", "triton")


def splade_head_reference(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                          attention_mask: torch.Tensor) -> torch.Tensor:
    """The spec in plain PyTorch. hidden (B, T, h), weight (V, h), bias (V,), attention_mask (B, T)."""
    logits = hidden @ weight.T  # (B, T, V)
    if bias is not None:
        logits = logits + bias
    logits = logits.masked_fill(~attention_mask.bool().unsqueeze(-1), float("-inf"))
    pooled = logits.max(dim=1).values  # (B, V); -inf for a row that is all padding
    return torch.log1p(torch.relu(pooled))


def resolve_backend(backend: str, hidden: torch.Tensor) -> str:
    """`auto` -> `triton` for CUDA tensors, else `torch`; other names are checked and returned."""
    if backend not in ("auto", *BACKENDS):
        raise ValueError(f"unknown SPLADE head backend {backend!r}; choose from auto, {', '.join(BACKENDS)}")
    if backend == "auto":
        return "triton" if hidden.is_cuda else "torch"
    return backend


def _check_shapes(hidden, weight, bias, attention_mask) -> None:
    if hidden.dim() != 3 or weight.dim() != 2 or hidden.shape[-1] != weight.shape[-1]:
        raise ValueError(f"SPLADE head: hidden must be (B, T, h) and weight (V, h); got {tuple(hidden.shape)} "
                         f"and {tuple(weight.shape)}")
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise ValueError(f"SPLADE head: bias must be ({weight.shape[0]},), got {tuple(bias.shape)}")
    if tuple(attention_mask.shape) != tuple(hidden.shape[:2]):
        raise ValueError(f"SPLADE head: attention_mask must be {tuple(hidden.shape[:2])}, "
                         f"got {tuple(attention_mask.shape)}")


def splade_head(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, *,
                attention_mask: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """(batch, vocab) SPLADE vectors from final hidden states; see the module docstring."""
    backend = resolve_backend(backend, hidden)
    _check_shapes(hidden, weight, bias, attention_mask)
    if backend == "reference":
        return splade_head_reference(hidden, weight, bias, attention_mask)
    if backend == "torch":
        from .torch_head import splade_head_torch

        return splade_head_torch(hidden, weight, bias, attention_mask)
    from .triton_head import splade_head_triton  # imports triton; see the module docstring for CPU use

    return splade_head_triton(hidden, weight, bias, attention_mask)
