"""The Triton head on CUDA, compiled: output and every gradient against the spec (fp32 and bf16, V 30,522 and
250,002, odd shapes, padding), the self-check `auto` runs and its fallback to the torch head. Marked `gpu`:
deselected by default, run by `lsr bench gpu` (its first part) or `pytest -m gpu`.

`lsr bench gpu --dry-run` runs this file on the CPU with LSR_BENCH_DRY_RUN=1 and TRITON_INTERPRET=1: the
same tests on shapes the interpreter gets through in seconds (vocabularies cut to a few hundred rows).
"""
from __future__ import annotations

import logging
import os

import pytest
import torch

from test_kernels import assert_matches_reference, make_inputs

DRY_RUN = os.environ.get("LSR_BENCH_DRY_RUN") == "1" and os.environ.get("TRITON_INTERPRET") == "1"
DEVICE = "cpu" if DRY_RUN else "cuda"
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not DRY_RUN and not torch.cuda.is_available(),
                                                  reason="needs a CUDA device")]

CASES = {  # name -> (batch, seq, dim, vocab, bias) on the GPU; the dry run divides vocab and seq
    "30522": (4, 64, 768, 30522, True),
    "250002": (2, 33, 768, 250_002, True),
    "odd-30001-no-bias": (3, 77, 100, 30001, False),
    "one-token-rows": (5, 1, 64, 30522, True),
    "long-rows-513": (2, 513, 128, 4099, True),
}


def _shape(name: str) -> tuple:
    batch, seq, dim, vocab, bias = CASES[name]
    if DRY_RUN:
        seq, dim, vocab = min(seq, 19), min(dim, 24), max(vocab // 1000, 17)
    return batch, seq, dim, vocab, bias


def _on_device(inputs):
    return tuple(t.to(DEVICE) if t is not None else None for t in inputs)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("case", list(CASES))
def test_triton_matches_the_reference(case, dtype):
    batch, seq, dim, vocab, bias = _shape(case)
    assert_matches_reference("triton", *_on_device(make_inputs(batch, seq, dim, vocab, dtype=dtype, bias=bias)))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_auto_picks_triton_once_it_passed_its_self_check(dtype):
    from lsr.kernels import resolve_backend
    from lsr.kernels.selfcheck import VERDICTS, verdict_for, verify_triton

    VERDICTS.clear()
    assert verify_triton(DEVICE, dtype, gradients=True), VERDICTS
    verdict = verdict_for(DEVICE, dtype)
    assert verdict.forward and verdict.gradients
    if DEVICE == "cuda":
        assert resolve_backend("auto", torch.zeros(1, 1, 1, device="cuda", dtype=dtype), gradients=True) == "triton"


def test_a_wrong_kernel_falls_back_to_torch_with_one_warning(caplog, monkeypatch):
    """The Triton kernel run without its bias is wrong: the check catches it, `auto` uses the torch head."""
    from lsr.kernels import splade_head, triton_head
    from lsr.kernels.autograd import HeadKernels
    from lsr.kernels.selfcheck import VERDICTS, verify_triton

    def forward_without_bias(hidden, weight, bias, attention_mask, *, with_argmax):
        return triton_head.triton_forward(hidden, weight, None, attention_mask)

    VERDICTS.clear()
    monkeypatch.setattr(triton_head, "KERNELS", HeadKernels(forward_without_bias, triton_head.triton_backward))
    with caplog.at_level(logging.WARNING, logger="lsr.kernels"):
        assert not verify_triton(DEVICE, torch.float32, gradients=False)
        assert not verify_triton(DEVICE, torch.float32, gradients=True)  # cached: no second check or warning
    warnings = [r.getMessage() for r in caplog.records if r.name == "lsr.kernels"]
    assert len(warnings) == 1 and "\n" not in warnings[0] and "differ from the torch head (output" in warnings[0]
    if DEVICE == "cuda":
        hidden, weight, bias, mask, _ = _on_device(make_inputs(2, 9, 32, 500))
        got = splade_head(hidden, weight, bias, attention_mask=mask, backend="auto")
        want = splade_head(hidden, weight, bias, attention_mask=mask, backend="torch")
        assert torch.equal(got, want)
    VERDICTS.clear()


def test_wrong_gradients_are_caught_when_training_only(caplog, monkeypatch):
    """A backward that scatters to the next token: the forward check passes (encoding may use Triton), the
    gradient check does not (training uses the torch head), with one warning naming the gradient."""
    from lsr.kernels import triton_head
    from lsr.kernels.autograd import HeadKernels
    from lsr.kernels.selfcheck import VERDICTS, verdict_for, verify_triton

    def backward_to_the_next_token(grad_out, w, argmax, hidden, weight, **need):
        shifted = ((argmax + 1) % hidden.shape[1]).to(argmax.dtype)
        return triton_head.triton_backward(grad_out, w, shifted, hidden, weight, **need)

    VERDICTS.clear()
    monkeypatch.setattr(triton_head, "KERNELS", HeadKernels(triton_head.KERNELS.forward, backward_to_the_next_token))
    with caplog.at_level(logging.WARNING, logger="lsr.kernels"):
        assert verify_triton(DEVICE, torch.float32, gradients=False)
        assert not verify_triton(DEVICE, torch.float32, gradients=True)
    warnings = [r.getMessage() for r in caplog.records if r.name == "lsr.kernels"]
    assert len(warnings) == 1 and "(d_hidden" in warnings[0], warnings
    assert verdict_for(DEVICE, torch.float32).gradients is False
    VERDICTS.clear()


@pytest.mark.skipif(DRY_RUN, reason="pinned memory and autocast are CUDA's")
def test_batches_go_through_pinned_memory_and_autocast_runs_the_head_in_bf16():
    from lsr.encoders.device import resolve_device, to_device
    from lsr.kernels import splade_head

    device = resolve_device("cuda")
    assert to_device(torch.ones(3), device).is_cuda
    hidden, weight, bias, mask, _ = _on_device(make_inputs(2, 9, 32, 500))
    weight.requires_grad_()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = splade_head(hidden, weight, bias, attention_mask=mask)
    assert out.dtype == torch.bfloat16
    out.float().sum().backward()
    assert weight.grad.dtype == torch.float32  # the master weights stay fp32
