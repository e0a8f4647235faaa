"""The SPLADE head: LM-head projection -> ReLU -> log1p -> max over tokens, as one function.

    w[b, v] = max_t log(1 + relu(hidden[b, t] . weight[v] + bias[v]))   over non-padding tokens t

log1p(relu(.)) is monotone, so the max is taken on the raw logits (padding = -inf) and the activation is
applied to the (batch, vocab) result: identical output, V-times less activation work. This is the one entry
point the encoders call; the backends behind `backend=`:

- `reference`: the spec in plain PyTorch; materialises the (B, T, V) logits (tests and benchmarks import it).
- `torch`: tiled over vocabulary and tokens with a running max, padding dropped, argmax-only backward
  (lsr.kernels.torch_head). The default on CPU.
- `triton`: the same in Triton forward/backward kernels (lsr.kernels.triton_head, imported only when asked
  for). On CPU it runs only under the Triton interpreter (TRITON_INTERPRET=1 set before the module is
  imported), which is slow: for tests on small shapes.

`auto` is `triton` for CUDA tensors once the kernels have passed their self-check on that device and dtype
(lsr.kernels.selfcheck: against the torch head on a small batch, forward and, when a gradient is needed,
backward; one warning line and the torch head if they differ), else `torch`. CPU tensors always get `torch`
(the interpreter is for tests: it takes minutes for one SPLADE-tiny batch).

Under CUDA autocast (training in bf16 with fp32 master weights) the inputs are cast to the autocast dtype
first, so the kernels run in bf16 and the gradients flow back to the fp32 weights through the cast.

User mistakes (an unknown backend, inputs of the wrong kind, dtype or shape) raise `HeadError`, a ValueError
with a one-line message. This package imports nothing from the rest of lsr: it is the bottom layer.

The head serves BERT MLM heads (hidden = output of the transform layer, bias = decoder bias) and decoder
`lm_head`s (bias=None) alike.
"""
from __future__ import annotations

import os

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


class HeadError(ValueError):
    """A user mistake in calling the SPLADE head: an unknown backend, a backend this machine cannot run, or
    inputs of the wrong kind, dtype or shape. One line naming what is wrong and what is accepted; callers that
    take the backend name from a user (the CLI's --head) catch this type."""


def check_backend(backend: str) -> str:
    """`backend` if it names a backend (or `auto`), else HeadError naming the valid ones."""
    if not isinstance(backend, str) or backend not in ("auto", *BACKENDS):
        raise HeadError(f"unknown SPLADE head backend {backend!r}; choose from auto, {', '.join(BACKENDS)}")
    return backend


def triton_runs_on(hidden: torch.Tensor) -> bool:
    """Whether Triton can run on `hidden`'s device: CUDA, or the CPU under the interpreter."""
    return hidden.is_cuda or (hidden.device.type == "cpu" and os.environ.get("TRITON_INTERPRET") == "1")


def resolve_backend(backend: str, hidden: torch.Tensor, *, gradients: bool = False) -> str:
    """`auto` -> `triton` for CUDA tensors whose device and dtype passed the self-check (forward, and backward
    when `gradients`), else `torch`; other names are checked and returned."""
    if check_backend(backend) == "auto":
        if not hidden.is_cuda:
            return "torch"
        try:
            import triton  # noqa: F401
        except ImportError:
            return "torch"
        from .selfcheck import verify_triton

        return "triton" if verify_triton(hidden.device, hidden.dtype, gradients=gradients) else "torch"
    if backend == "triton" and not triton_runs_on(hidden):
        raise HeadError("SPLADE head backend 'triton' needs CUDA tensors (on CPU it runs only under "
                        "TRITON_INTERPRET=1); use auto, torch or reference")
    return backend


def _check_inputs(hidden, weight, bias, attention_mask) -> None:
    named = {"hidden": hidden, "weight": weight, "bias": bias, "attention_mask": attention_mask}
    for name, t in named.items():
        if t is None and name == "bias":
            continue
        if not isinstance(t, torch.Tensor):
            raise HeadError(f"SPLADE head: {name} must be a torch.Tensor, got {type(t).__name__}")
        if name != "attention_mask" and not t.is_floating_point():
            raise HeadError(f"SPLADE head: {name} must be a floating-point tensor, got {t.dtype}")
        if t.device != hidden.device:
            raise HeadError(f"SPLADE head: {name} is on {t.device}, hidden on {hidden.device}")
    if hidden.dim() != 3 or weight.dim() != 2 or hidden.shape[-1] != weight.shape[-1]:
        raise HeadError(f"SPLADE head: hidden must be (B, T, h) and weight (V, h); got {tuple(hidden.shape)} "
                        f"and {tuple(weight.shape)}")
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise HeadError(f"SPLADE head: bias must be ({weight.shape[0]},), got {tuple(bias.shape)}")
    if tuple(attention_mask.shape) != tuple(hidden.shape[:2]):
        raise HeadError(f"SPLADE head: attention_mask must be {tuple(hidden.shape[:2])}, "
                        f"got {tuple(attention_mask.shape)}")


def splade_head(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, *,
                attention_mask: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """(batch, vocab) SPLADE vectors from final hidden states; see the module docstring. HeadError for an
    unknown or unrunnable backend and for inputs of the wrong kind, dtype or shape."""
    check_backend(backend)  # the name first: it needs no tensors
    _check_inputs(hidden, weight, bias, attention_mask)
    if hidden.device.type == "cuda" and torch.is_autocast_enabled("cuda"):
        dtype = torch.get_autocast_dtype("cuda")
        hidden, weight = hidden.to(dtype), weight.to(dtype)
        bias = None if bias is None else bias.to(dtype)
        with torch.autocast("cuda", enabled=False):  # the backends choose their own precision
            return _run_backend(backend, hidden, weight, bias, attention_mask)
    return _run_backend(backend, hidden, weight, bias, attention_mask)


def _run_backend(backend: str, hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                 attention_mask: torch.Tensor) -> torch.Tensor:
    gradients = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (hidden, weight, bias))
    backend = resolve_backend(backend, hidden, gradients=gradients)
    if backend == "reference":
        return splade_head_reference(hidden, weight, bias, attention_mask)
    if backend == "torch":
        from .torch_head import splade_head_torch

        return splade_head_torch(hidden, weight, bias, attention_mask)
    try:
        from .triton_head import splade_head_triton  # imports triton; see the module docstring for CPU use
    except ImportError as e:
        raise HeadError(f"SPLADE head backend 'triton' needs the triton package ({e}); use auto or torch") from e
    return splade_head_triton(hidden, weight, bias, attention_mask)
