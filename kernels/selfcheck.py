"""The Triton head checks itself before `auto` hands it a model: once per (device, dtype) in a process.

`auto` (lsr.kernels.splade_head) picks the Triton backend for CUDA tensors. Before the first use on a device
and dtype it runs `verify_triton` (which also runs on the CPU under TRITON_INTERPRET=1: tests): the Triton
kernels (`lsr.kernels.triton_head.KERNELS`, exactly what the backend runs) and the torch head on one small
batch with odd sizes, padding and an all-padding row, comparing the output and, when a gradient will be
asked for, d_hidden, d_weight and d_bias, within the dtype's tolerance (`TOLERANCES`). A difference, or a
kernel that fails to compile or run, makes `auto` use the torch head there, with one warning line on the
`lsr.kernels` logger. The verdict is cached per (device, dtype): a forward check is extended to the
gradients the first time a gradient is needed.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from .autograd import HeadKernels, run_head

log = logging.getLogger("lsr.kernels")

# (atol, rtol) of the Triton head against the torch head on the check batch. Both accumulate in fp32 over
# the same products; fp32 results differ by the summation order only (h = 48 terms: ~1e-6), bf16 and fp16
# ones by one or two roundings of the result (2^-8, 2^-11).
TOLERANCES = {torch.float32: (1e-4, 1e-4), torch.bfloat16: (2e-2, 2e-2), torch.float16: (4e-3, 4e-3)}
CHECK_SHAPE = (3, 37, 48, 515)  # batch, tokens, hidden, vocabulary: none a multiple of a block size
TIE_GAP = 1e-2  # gradients of (b, v) whose two best tokens (or relu's kink) are this close are not compared


@dataclass
class Verdict:
    forward: bool | None = None  # None: not checked yet
    gradients: bool | None = None
    reason: str = ""


VERDICTS: dict[tuple[str, torch.dtype], Verdict] = {}  # (device, e.g. "cuda:0", dtype) -> what was found


def verdict_for(device: torch.device | str, dtype: torch.dtype) -> Verdict:
    """The cached verdict for a device ("cuda" is the current CUDA device) and dtype; a fresh one if none."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return VERDICTS.setdefault((str(device), dtype), Verdict())


def verify_triton(device: torch.device | str, dtype: torch.dtype, *, gradients: bool) -> bool:
    """True when the Triton head agrees with the torch head on `device` and `dtype` (forward, and the
    gradients when `gradients`); checked once per (device, dtype) and cached in VERDICTS."""
    device = torch.device(device)
    verdict = verdict_for(device, dtype)
    if verdict.forward is False or (gradients and verdict.gradients is False):
        return False
    if verdict.forward and (verdict.gradients or not gradients):
        return True
    from . import triton_head  # only where Triton runs: on CUDA, or on the CPU under the interpreter

    try:
        problem = compare(triton_head.KERNELS, device, dtype, gradients=gradients)
    except Exception as e:  # noqa: BLE001 - a kernel that does not compile or run here is a failed check
        problem = f"failed to run ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
    ok = problem is None
    if ok:
        verdict.forward = True
        verdict.gradients = True if gradients else verdict.gradients
    else:  # a kernel with wrong gradients is not trusted with the forward either
        verdict.forward = verdict.gradients = False
        verdict.reason = problem
        log.warning("SPLADE head: the Triton kernels %s on %s %s; using the torch head there",
                    problem, device, str(dtype).removeprefix("torch."))
    return ok


def compare(candidate: HeadKernels, device: torch.device, dtype: torch.dtype, *, gradients: bool) -> str | None:
    """None when `candidate` matches the torch head on the check batch, else what differs (one line)."""
    from .torch_head import KERNELS as TORCH

    atol, rtol = TOLERANCES.get(dtype, TOLERANCES[torch.float32])
    inputs = _check_batch(device, dtype)
    with torch.inference_mode(False), torch.autocast(device.type, enabled=False), torch.set_grad_enabled(gradients):
        want = _run(TORCH, *inputs, gradients=gradients)
        got = _run(candidate, *inputs, gradients=gradients)
    for name, g, w in zip(("output", "d_hidden", "d_weight", "d_bias"), got, want):
        if w is None:
            continue
        g, w = g.detach().double(), w.detach().double()
        excess = ((g - w).abs() - (atol + rtol * w.abs())).nan_to_num(float("inf"))
        if bool((excess > 0).any()):
            diff = float((g - w).abs().nan_to_num(float("inf")).max())
            return f"differ from the torch head ({name}: max |diff| {diff:.3g}, tolerance {atol:g} + {rtol:g}|x|)"
    return None


def _check_batch(device: torch.device, dtype: torch.dtype):
    batch, seq, dim, vocab = CHECK_SHAPE
    g = torch.Generator().manual_seed(1234)
    hidden = torch.randn(batch, seq, dim, generator=g)
    weight = torch.randn(vocab, dim, generator=g) / dim ** 0.5
    bias = torch.randn(vocab, generator=g) * 0.5
    mask = torch.ones(batch, seq, dtype=torch.long)
    mask[1, seq // 2:] = 0  # right padding
    mask[2] = 0  # all padding
    grad = torch.randn(batch, vocab, generator=g)
    hidden, weight, bias = (t.to(dtype) for t in (hidden, weight, bias))
    # drop the gradients whose argmax or relu is decided by rounding (two implementations may round apart)
    logits = (hidden.float() @ weight.float().T).masked_fill(~mask.bool()[..., None], float("-inf"))
    top2 = logits.topk(2, dim=1).values
    near = ((top2[:, 0] - top2[:, 1]) <= TIE_GAP * (1 + top2[:, 0].abs())) | (
        (top2[:, 0] + bias.float()).abs() <= TIE_GAP * (1 + top2[:, 0].abs()))
    grad = grad.masked_fill(near, 0.0)
    return tuple(t.to(device) for t in (hidden, weight, bias, mask, grad))


def _run(kernels: HeadKernels, hidden, weight, bias, mask, grad, *, gradients: bool):
    if not gradients:
        return [run_head(*kernels, hidden, weight, bias, mask), None, None, None]
    leaves = [t.detach().clone().requires_grad_() for t in (hidden, weight, bias)]
    out = run_head(*kernels, *leaves, mask)
    (out.float() * grad).sum().backward()
    return [out, *(t.grad for t in leaves)]
