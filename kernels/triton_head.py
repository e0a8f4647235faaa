"""The SPLADE head as Triton kernels (the Sparton scheme): the (B, T, V) logits never leave registers.

Layers (as in Liger-Kernel): `@triton.jit` kernels -> host functions `triton_forward` / `triton_backward`
-> a narrow `autograd.Function` -> `splade_head_triton`, called by `lsr.kernels.splade_head(backend="triton")`.

Forward, grid (B, cdiv(V, BLOCK_V)): one program owns the (b, vocab block) entries. It walks the row's
tokens in BLOCK_T tiles; each tile's logits (BLOCK_T, BLOCK_V) are accumulated in fp32 over BLOCK_H slices
of the hidden dimension with tl.dot, padding tokens are set to -inf, and a running max and argmax token are
kept. At the end it writes w = log1p(relu(max + bias)) and the int32 argmax: B*V*(4+4) bytes in all, against
B*T*V*2 bytes of bf16 logits for the plain PyTorch head (32*256*30522*2 = 500 MB).

Backward, grid (cdiv(V, BLOCK_V), cdiv(h, BLOCK_H)): one program owns a (vocab block, hidden slice) tile of
d_W and loops over the batch: g' = g * exp(-w) where w > 0 (d/dx log1p(x) = 1/(1+x) = exp(-w)), then
  d_W[v, hs]    += g'[b, v] * hidden[b, argmax[b, v], hs]   (gather; accumulated in registers, no atomics)
  d_hidden[b, argmax[b, v], hs] += g'[b, v] * W[v, hs]      (scatter: atomic adds into an fp32 buffer)
  d_bias[v]     = sum_b g'[b, v]                            (programs of the first hidden slice)

Block sizes are autotuned per GPU as Sparton does (`triton.autotune` over a short list of configurations,
keyed on the shapes: the token count rounded up to a power of two, h and V, and the dtypes); the choice for
each key is kept in `TUNED` (the benchmarks record it). Under the interpreter the list is the one default
configuration, so nothing is timed. An explicit `block_v` (and `block_t`) bypasses the tuner (tests).

On CPU these kernels run only under the Triton interpreter: TRITON_INTERPRET=1 must be in the environment
before this module is imported (import triton later than that and there are "0 active drivers"). The
interpreter is slow; use it on small shapes (tests do, in a subprocess).
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from .autograd import HeadKernels, run_head

# The interpreter's tl.dot gets bf16/fp16 operands wrong (measured with triton 3.9: garbage sums), so under
# TRITON_INTERPRET=1 the tiles are upcast to fp32 before the dot; compiled kernels use the native bf16 dot.
INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"


@triton.jit
def _forward_kernel(hidden_ptr, weight_ptr, bias_ptr, mask_ptr, w_ptr, argmax_ptr,
                    T, H, V, T_BUCKET,
                    stride_hb, stride_ht, stride_wv, stride_mb,
                    HAS_BIAS: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr,
                    BLOCK_T: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_H: tl.constexpr):
    b = tl.program_id(0)
    offs_v = tl.program_id(1) * BLOCK_V + tl.arange(0, BLOCK_V)
    v_ok = offs_v < V
    best = tl.full((BLOCK_V,), float("-inf"), tl.float32)
    best_t = tl.zeros((BLOCK_V,), tl.int32)
    for t0 in range(0, T, BLOCK_T):
        offs_t = t0 + tl.arange(0, BLOCK_T)
        real = tl.load(mask_ptr + b * stride_mb + offs_t, mask=offs_t < T, other=0) != 0
        logits = tl.zeros((BLOCK_T, BLOCK_V), tl.float32)
        for h0 in range(0, H, BLOCK_H):
            offs_h = h0 + tl.arange(0, BLOCK_H)
            h_ok = offs_h < H
            x = tl.load(hidden_ptr + b * stride_hb + offs_t[:, None] * stride_ht + offs_h[None, :],
                        mask=(offs_t[:, None] < T) & h_ok[None, :], other=0.0)  # (BLOCK_T, BLOCK_H)
            wt = tl.load(weight_ptr + offs_v[None, :] * stride_wv + offs_h[:, None],
                         mask=v_ok[None, :] & h_ok[:, None], other=0.0)  # (BLOCK_H, BLOCK_V)
            if UPCAST:
                x, wt = x.to(tl.float32), wt.to(tl.float32)
            logits = tl.dot(x, wt, logits, input_precision=PRECISION)
        logits = tl.where(real[:, None], logits, float("-inf"))
        tile_max = tl.max(logits, axis=0)
        tile_arg = tl.argmax(logits, axis=0).to(tl.int32) + t0
        better = tile_max > best  # strictly: the earliest token wins ties
        best_t = tl.where(better, tile_arg, best_t)
        best = tl.where(better, tile_max, best)
    if HAS_BIAS:
        best += tl.load(bias_ptr + offs_v, mask=v_ok, other=0.0).to(tl.float32)
    w = tl.log(1.0 + tl.maximum(best, 0.0))  # -inf (all padding) -> 0; log1p is not portable to the interpreter
    tl.store(w_ptr + b * V + offs_v, w, mask=v_ok)
    tl.store(argmax_ptr + b * V + offs_v, best_t, mask=v_ok)


@triton.jit
def _backward_kernel(grad_ptr, w_ptr, argmax_ptr, hidden_ptr, weight_ptr,
                     d_hidden_ptr, d_weight_ptr, d_bias_ptr,
                     B, H, V,
                     stride_gb, stride_hb, stride_ht, stride_wv, stride_dhb, stride_dht,
                     NEED_HIDDEN: tl.constexpr, NEED_WEIGHT: tl.constexpr, NEED_BIAS: tl.constexpr,
                     BLOCK_V: tl.constexpr, BLOCK_H: tl.constexpr):
    offs_v = tl.program_id(0) * BLOCK_V + tl.arange(0, BLOCK_V)
    first_slice = tl.program_id(1) == 0
    offs_h = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    v_ok = offs_v < V
    h_ok = offs_h < H
    tile_ok = v_ok[:, None] & h_ok[None, :]
    d_w = tl.zeros((BLOCK_V, BLOCK_H), tl.float32)
    d_b = tl.zeros((BLOCK_V,), tl.float32)
    wt = tl.load(weight_ptr + offs_v[:, None] * stride_wv + offs_h[None, :], mask=tile_ok, other=0.0).to(tl.float32)
    for b in range(0, B):
        g = tl.load(grad_ptr + b * stride_gb + offs_v, mask=v_ok, other=0.0).to(tl.float32)
        w = tl.load(w_ptr + b * V + offs_v, mask=v_ok, other=0.0)
        g = tl.where(w > 0, g * tl.exp(-w), 0.0)
        t = tl.load(argmax_ptr + b * V + offs_v, mask=v_ok, other=0)
        live = tile_ok & (g != 0.0)[:, None]
        if NEED_WEIGHT:
            x = tl.load(hidden_ptr + b * stride_hb + t[:, None] * stride_ht + offs_h[None, :], mask=live, other=0.0)
            d_w += g[:, None] * x.to(tl.float32)
        if NEED_HIDDEN:
            tl.atomic_add(d_hidden_ptr + b * stride_dhb + t[:, None] * stride_dht + offs_h[None, :],
                          g[:, None] * wt, mask=live)
        d_b += g
    if NEED_WEIGHT:
        tl.store(d_weight_ptr + offs_v[:, None] * H + offs_h[None, :], d_w, mask=tile_ok)
    if NEED_BIAS:
        if first_slice:
            tl.store(d_bias_ptr + offs_v, d_b, mask=v_ok)


def _block_h(h: int) -> int:
    return min(64, max(16, triton.next_power_of_2(h)))


def _config(num_warps: int = 4, num_stages: int = 3, **blocks: int) -> triton.Config:
    return triton.Config(blocks, num_warps=num_warps, num_stages=num_stages)


# (BLOCK_T, BLOCK_V) tiles of the forward and BLOCK_V of the backward: the defaults first (the interpreter's
# only configuration), then the shapes that suit an SM's tensor cores and shared memory at h 768.
FORWARD_CONFIGS = [_config(BLOCK_T=64, BLOCK_V=128)] + ([] if INTERPRETED else [
    _config(8, 3, BLOCK_T=128, BLOCK_V=128), _config(8, 3, BLOCK_T=64, BLOCK_V=256),
    _config(4, 4, BLOCK_T=32, BLOCK_V=128), _config(8, 4, BLOCK_T=128, BLOCK_V=64)])
BACKWARD_CONFIGS = [_config(BLOCK_V=64)] + ([] if INTERPRETED else [
    _config(4, 2, BLOCK_V=32), _config(8, 2, BLOCK_V=128), _config(8, 2, BLOCK_V=256)])

_forward_tuned = triton.autotune(configs=FORWARD_CONFIGS, key=["T_BUCKET", "H", "V"])(_forward_kernel)
# the backward adds into d_hidden atomically: every timed launch must start from zeros
_backward_tuned = triton.autotune(configs=BACKWARD_CONFIGS, key=["B", "H", "V"],
                                  reset_to_zero=["d_hidden_ptr"])(_backward_kernel)

TUNED: dict[tuple, str] = {}  # (kernel, key...) -> the configuration the tuner chose (str(triton.Config))


def _record(kernel: str, key: tuple, tuner) -> None:
    TUNED[(kernel, *key)] = str(tuner.best_config)


def tuned_configs() -> list[dict]:
    """The configurations chosen so far in this process, as rows for a results file."""
    return [{"kernel": k[0], "key": [str(x) for x in k[1:]], "config": c} for k, c in TUNED.items()]


def triton_forward(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                   attention_mask: torch.Tensor, *, block_t: int | None = None, block_v: int | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """w (B, V) fp32 and argmax (B, V) int32 (token position) from hidden (B, T, h), weight (V, h); block
    sizes from the tuner unless `block_v` is given."""
    hidden, weight = hidden.contiguous(), weight.to(hidden.dtype).contiguous()
    mask = attention_mask.to(torch.int32).contiguous()
    batch, seq, dim = hidden.shape
    vocab = weight.shape[0]
    w = torch.empty((batch, vocab), dtype=torch.float32, device=hidden.device)
    argmax = torch.empty((batch, vocab), dtype=torch.int32, device=hidden.device)
    bucket = triton.next_power_of_2(seq)
    args = (hidden, weight, bias if bias is not None else weight, mask, w, argmax,
            seq, dim, vocab, bucket, hidden.stride(0), hidden.stride(1), weight.stride(0), mask.stride(0))
    options = dict(HAS_BIAS=bias is not None, PRECISION="ieee" if hidden.dtype == torch.float32 else None,
                   UPCAST=INTERPRETED and hidden.dtype != torch.float32, BLOCK_H=_block_h(dim))
    if block_v is not None:
        _forward_kernel[(batch, triton.cdiv(vocab, block_v))](*args, **options, BLOCK_T=block_t or 64, BLOCK_V=block_v)
    else:
        _forward_tuned[lambda meta: (batch, triton.cdiv(vocab, meta["BLOCK_V"]))](*args, **options)
        _record("forward", (bucket, dim, vocab, hidden.dtype), _forward_tuned)
    return w, argmax


def triton_backward(grad_out: torch.Tensor, w: torch.Tensor, argmax: torch.Tensor, hidden: torch.Tensor,
                    weight: torch.Tensor, *, need_hidden: bool, need_weight: bool, need_bias: bool,
                    block_v: int | None = None
                    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    hidden, weight, grad_out = hidden.contiguous(), weight.contiguous(), grad_out.contiguous()
    batch, seq, dim = hidden.shape
    vocab = weight.shape[0]
    f32 = dict(dtype=torch.float32, device=hidden.device)
    d_hidden = torch.zeros((batch, seq, dim), **f32) if need_hidden else None  # fp32: atomic adds
    d_weight = torch.empty((vocab, dim), **f32) if need_weight else None
    d_bias = torch.empty((vocab,), **f32) if need_bias else None
    block_h = _block_h(dim)
    unused = torch.zeros(1, **f32)  # for the outputs not asked for (the tuner zeroes the d_hidden argument)
    args = (grad_out, w, argmax, hidden, weight, d_hidden if need_hidden else unused,
            d_weight if need_weight else unused, d_bias if need_bias else unused,
            batch, dim, vocab, grad_out.stride(0), hidden.stride(0), hidden.stride(1), weight.stride(0), seq * dim, dim)
    options = dict(NEED_HIDDEN=need_hidden, NEED_WEIGHT=need_weight, NEED_BIAS=need_bias, BLOCK_H=block_h)
    if block_v is not None:
        _backward_kernel[(triton.cdiv(vocab, block_v), triton.cdiv(dim, block_h))](*args, **options, BLOCK_V=block_v)
    else:
        _backward_tuned[lambda meta: (triton.cdiv(vocab, meta["BLOCK_V"]), triton.cdiv(dim, block_h))](*args, **options)
        _record("backward", (batch, dim, vocab, hidden.dtype), _backward_tuned)
    return (d_hidden.to(hidden.dtype) if need_hidden else None,
            d_weight.to(weight.dtype) if need_weight else None,
            d_bias.to(weight.dtype) if need_bias else None)


def _forward_with_argmax(hidden, weight, bias, attention_mask, *, with_argmax: bool):
    return triton_forward(hidden, weight, bias, attention_mask)  # the kernel always writes the argmax


# What the `triton` backend runs, and what lsr.kernels.selfcheck compares with the torch head: one pair, so the
# check sees exactly the kernels a model would get.
KERNELS = HeadKernels(_forward_with_argmax, triton_backward)


def splade_head_triton(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                       attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, V) SPLADE vectors computed by the Triton kernels (CUDA, or CPU under TRITON_INTERPRET=1)."""
    return run_head(*KERNELS, hidden, weight, bias, attention_mask)
