"""The one autograd boundary shared by the fast SPLADE-head backends (tensors in, tensors out).

A backend supplies two host functions:
  forward(hidden, weight, bias, attention_mask, *, with_argmax) -> (w (B, V) fp32, argmax (B, V) int32 or None)
  backward(grad_out, w, argmax, hidden, weight, *, need_hidden, need_weight, need_bias) -> (d_hidden, d_weight,
      d_bias)
The backward needs only the saved w and argmax: the logits are neither stored nor recomputed.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import torch


class HeadKernels(NamedTuple):
    """A fast backend's two host functions (see the module docstring)."""
    forward: Callable
    backward: Callable


class ArgmaxSpladeHead(torch.autograd.Function):
    """Saves hidden and weight (inputs anyway), w and the int32 argmax."""

    @staticmethod
    def forward(ctx, backend_forward: Callable, backend_backward: Callable, hidden, weight, bias, attention_mask):
        w, argmax = backend_forward(hidden, weight, bias, attention_mask, with_argmax=True)
        ctx.backend_backward = backend_backward
        ctx.has_bias = bias is not None
        ctx.save_for_backward(hidden, weight, w, argmax)
        return w.to(hidden.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        hidden, weight, w, argmax = ctx.saved_tensors
        d_hidden, d_weight, d_bias = ctx.backend_backward(
            grad_out, w, argmax, hidden, weight, need_hidden=ctx.needs_input_grad[2],
            need_weight=ctx.needs_input_grad[3], need_bias=ctx.has_bias and ctx.needs_input_grad[4])
        return None, None, d_hidden, d_weight, d_bias, None


def run_head(backend_forward: Callable, backend_backward: Callable, hidden: torch.Tensor, weight: torch.Tensor,
             bias: torch.Tensor | None, attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, V) SPLADE vectors; the argmax is computed and saved only when a gradient will be asked for."""
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (hidden, weight, bias)):
        return ArgmaxSpladeHead.apply(backend_forward, backend_backward, hidden, weight, bias, attention_mask)
    w, _ = backend_forward(hidden, weight, bias, attention_mask, with_argmax=False)
    return w.to(hidden.dtype)
