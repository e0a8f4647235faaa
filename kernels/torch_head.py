"""The SPLADE head in plain PyTorch, tiled so the (batch, tokens, vocab) logits never exist.

Layers (as in Liger-Kernel): host functions `torch_forward` (`tiled_max` + `activate`) and `head_backward` ->
the narrow `autograd.Function` shared with the Triton backend (lsr.kernels.autograd) -> `splade_head_torch`, which `lsr.kernels.splade_head(backend="torch")` calls.

Forward:
  1. pack the real tokens of each row to the front (`pack_tokens`): (B, L, h) with L = the longest row's
     real-token count; the few slots left over repeat a real token of the row, so padding is never masked
     and only the length differences within the batch are multiplied (length-sorted batches: ~1%).
  2. for each vocabulary tile of C >= 1024 rows of `weight` (and, when B*L*C exceeds the budget, blocks of
     rows or of slots): logits = W[v0:v0+C] @ tokens.T -> (C, B*L), at most TILE_ELEMENTS fp32 in one reused
     buffer; a running max (and, when a gradient is needed, the argmax slot) per (v, b).
  3. w = log1p(relu(max + bias)): the bias is constant over tokens, so it is added after the max
     (rounding is monotone, so this is exactly max(logit + bias)).
The tile is (vocab, tokens) rather than (tokens, vocab) so the max reduces over the contiguous last axis.

Backward uses only the saved argmax (int32, B x V): d logit = g * exp(-w) where w > 0 (d/dx log1p(x) = 1/(1+x)
= exp(-w)) flows to exactly one token, so with g' = g * exp(-w):
  d_hidden[b, argmax[b, v]] += g'[b, v] * W[v]      d_W[v] += sum_b g'[b, v] * hidden[b, argmax[b, v]]
  d_bias[v] = sum_b g'[b, v]
computed over the nonzero g' only, as two sparse x dense products with S (B*T, V) holding g'[b, v] at row
(b, argmax[b, v]): d_hidden = S @ W, d_W = S^T @ hidden. The logits are neither stored nor recomputed.

Compute is fp32 whatever the input dtype (bf16 logits would tie and make the argmax arbitrary); results are
cast back to the input dtype.
"""
from __future__ import annotations

import torch

from .autograd import HeadKernels, run_head

# Picked by measurement on the 2-core Xeon dev machine (B=32, T=256, h=128, V=30522, fp32):
# - one big (vocab tile) x (many rows' tokens) matmul into a reused buffer beat per-row (tile x row)
#   matmuls by 5-15x when another job competes for the cores (hundreds of small multithreaded ops stall
#   whenever a thread is descheduled), and fresh per-tile allocations by ~25% (page faults);
# - quiet machine, budget 2^20 .. 2^25 elements: 235-240 ms at 2^21-2^22 with >= 1024 columns, 255 ms at
#   2^23, 296 ms at 2^24, 342 ms at 2^25 (59 GFLOP of real-token matmul: ~250 GFLOPS at best).
# So: 16 MB of fp32 logits per tile at most, against B*T*V*4 = 1 GB for the spec.
TILE_ELEMENTS = 1 << 22
MIN_VOCAB_TILE = 1024
ACC = torch.float32


def pack_tokens(hidden: torch.Tensor, attention_mask: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Drop the padding: (B, L) slots per row, L = the longest row's real-token count.

    Slot j < n_b holds the row's j-th real token; the remaining slots repeat the row's first real token,
    which leaves the max (and, first occurrence winning, the argmax) unchanged, so no masking pass is needed.
    Returns tokens (B, L, h) fp32, positions (B, L) (slot -> token index in the row) and the all-padding rows.
    """
    batch, seq, dim = hidden.shape
    mask = attention_mask.bool()
    counts = mask.sum(dim=1)
    empty = counts == 0
    width = max(int(counts.max()), 1) if batch else 1
    slots = torch.arange(width, device=hidden.device)
    if bool(mask[:, :width].all()):  # no padding inside the first `width` tokens: a slice, no gather
        positions = slots.expand(batch, width)
        return hidden[:, :width].to(ACC).contiguous(), positions, empty
    order = torch.argsort((~mask).to(torch.int8), dim=1, stable=True)[:, :width]  # real tokens first, in order
    positions = torch.where(slots[None, :] < counts[:, None], order, order[:, :1])
    tokens = hidden.gather(1, positions[..., None].expand(batch, width, dim)).to(ACC)
    return tokens, positions, empty


def tiled_max(hidden: torch.Tensor, weight: torch.Tensor, attention_mask: torch.Tensor, *, with_argmax: bool,
              vocab_tile: int | None = None, tile_elements: int = TILE_ELEMENTS
              ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """max_t hidden[b, t] . weight[v] over real tokens -> (B, V) fp32 (-inf for an all-padding row), and the
    argmax token position (B, V) int32 when `with_argmax`.

    Loop: vocab tiles of C columns x row blocks x token blocks, each one matmul
    W[v0:v1] (C, h) @ tokens[rows, slots].T -> (C, rows * slots) into one reused buffer of at most
    `tile_elements` fp32, reduced over the slots (the contiguous last axis) into a running (V, B) max.
    """
    batch, vocab = hidden.shape[0], weight.shape[0]
    tokens, positions, empty = pack_tokens(hidden, attention_mask)
    width, dim = tokens.shape[1], tokens.shape[2]
    if vocab_tile is None:
        vocab_tile = max(MIN_VOCAB_TILE, tile_elements // (batch * width))
    vocab_tile = min(vocab_tile, vocab)
    row_block = max(1, min(batch, tile_elements // (vocab_tile * width)))
    slot_block = width if row_block > 1 else max(1, min(width, tile_elements // vocab_tile))
    buffer = torch.empty(vocab_tile * row_block * slot_block, dtype=ACC, device=hidden.device)
    best = torch.full((vocab, batch), float("-inf"), dtype=ACC, device=hidden.device)  # (V, B): tiles are rows
    best_slot = torch.zeros((vocab, batch), dtype=torch.long, device=hidden.device) if with_argmax else None
    tile_max = torch.empty((vocab_tile, row_block), dtype=ACC, device=hidden.device)
    tile_arg = torch.empty((vocab_tile, row_block), dtype=torch.long, device=hidden.device)
    for v0 in range(0, vocab, vocab_tile):
        v1 = min(v0 + vocab_tile, vocab)
        w_tile = weight[v0:v1].to(ACC)  # (C, h); a copy only for non-fp32 weights
        for r0 in range(0, batch, row_block):
            r1 = min(r0 + row_block, batch)
            for s0 in range(0, width, slot_block):
                s1 = min(s0 + slot_block, width)
                x = tokens[r0:r1, s0:s1].reshape(-1, dim)  # a view unless the slots are blocked
                logits = buffer[:(v1 - v0) * x.shape[0]].view(v1 - v0, x.shape[0])
                torch.mm(w_tile, x.T, out=logits)
                logits = logits.view(v1 - v0, r1 - r0, s1 - s0)
                cur = best[v0:v1, r0:r1]
                vals = tile_max[:v1 - v0, :r1 - r0]
                if not with_argmax:
                    torch.amax(logits, dim=-1, out=vals)
                    torch.maximum(cur, vals, out=vals)
                    cur.copy_(vals)
                    continue
                args = tile_arg[:v1 - v0, :r1 - r0]
                torch.max(logits, dim=-1, out=(vals, args))
                if s0 == 0:
                    cur.copy_(vals)
                    best_slot[v0:v1, r0:r1] = args
                else:  # strictly greater: the earliest slot wins ties, like torch.max
                    better = vals > cur
                    cur.copy_(torch.where(better, vals, cur))
                    best_slot[v0:v1, r0:r1] = torch.where(better, args + s0, best_slot[v0:v1, r0:r1])
    pooled = best.T.contiguous()
    pooled[empty] = float("-inf")
    if not with_argmax:
        return pooled, None
    argmax = positions.gather(1, best_slot.T).to(torch.int32)
    argmax[empty] = 0
    return pooled, argmax


def activate(pooled: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """log1p(relu(pooled + bias)), in place on the fp32 (B, V) max."""
    if bias is not None:
        pooled += bias.to(ACC)
    return pooled.relu_().log1p_()


def head_backward(grad_out: torch.Tensor, w: torch.Tensor, argmax: torch.Tensor, hidden: torch.Tensor,
                  weight: torch.Tensor, *, need_hidden: bool, need_weight: bool, need_bias: bool
                  ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """Gradients for hidden (B, T, h), weight (V, h) and bias (V,) from the saved w (B, V) and argmax (B, V)."""
    batch, seq, dim = hidden.shape
    vocab = weight.shape[0]
    g = torch.where(w > 0, grad_out.to(ACC) * torch.exp(-w.to(ACC)), 0.0)  # (B, V) d loss / d max-logit
    d_bias = g.sum(dim=0) if need_bias else None
    d_hidden = d_weight = None
    if need_hidden or need_weight:
        b_idx, v_idx = g.nonzero(as_tuple=True)  # only entries with w > 0 and a nonzero incoming gradient
        token = b_idx * seq + argmax[b_idx, v_idx].long()  # row in hidden.reshape(B*T, h)
        # S (B*T, V): one entry g'[b, v] per (b, v), in its argmax token's row. d_hidden = S @ W and
        # d_W = S^T @ hidden are then two sparse x dense products (measured 10x faster than index_add_).
        scatter = torch.sparse_coo_tensor(torch.stack([token, v_idx]), g[b_idx, v_idx], (batch * seq, vocab),
                                          check_invariants=False)
        if need_hidden:
            d_hidden = torch.sparse.mm(scatter, weight.to(ACC))
        if need_weight:
            d_weight = torch.sparse.mm(scatter.t(), hidden.reshape(batch * seq, dim).to(ACC))
    return (d_hidden.view(batch, seq, dim).to(hidden.dtype) if need_hidden else None,
            d_weight.to(weight.dtype) if need_weight else None,
            d_bias.to(weight.dtype) if need_bias else None)


def torch_forward(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                  attention_mask: torch.Tensor, *, with_argmax: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """w = log1p(relu(max logit + bias)) (B, V) fp32, and the argmax token when `with_argmax`."""
    pooled, argmax = tiled_max(hidden, weight, attention_mask, with_argmax=with_argmax)
    return activate(pooled, bias), argmax


KERNELS = HeadKernels(torch_forward, head_backward)


def splade_head_torch(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                      attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, V) SPLADE vectors; differentiable through the argmax-only backward (lsr.kernels.autograd)."""
    return run_head(*KERNELS, hidden, weight, bias, attention_mask)
