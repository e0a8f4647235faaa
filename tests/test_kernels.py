"""The SPLADE head backends against the spec (`splade_head_reference`): forward and every gradient.

The `triton` cases run the kernels under the Triton interpreter in a subprocess (TRITON_INTERPRET=1 has to be
set before triton is imported, and this process must not be affected): `python tests/test_kernels.py CASE`.
On a CUDA machine they also run compiled, in process.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lsr.kernels import BACKENDS, resolve_backend, splade_head, splade_head_reference
from lsr.kernels.torch_head import tiled_max

# per-dtype (atol, rtol). bf16 results are compared with the spec evaluated in fp32 on the same bf16 values
# (both backends accumulate in fp32 and return bf16, so one bf16 rounding step apart).
# fp32 gradients sum up to V terms per element, in different orders: 1e-4 relative.
TOLERANCE = {torch.float32: (1e-4, 1e-4), torch.bfloat16: (2e-2, 1e-2)}


def assert_close(actual: torch.Tensor, expected: torch.Tensor, *, atol: float, rtol: float, name: str) -> None:
    """torch.allclose that says where and by how much the tensors differ."""
    assert actual.shape == expected.shape, f"{name}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    a, e = actual.detach().double().cpu(), expected.detach().double().cpu()
    bad = ~torch.isclose(a, e, atol=atol, rtol=rtol)
    if not bad.any():
        return
    diff = (a - e).abs().masked_fill(~bad, 0)
    worst = tuple(int(i) for i in torch.unravel_index(diff.argmax(), diff.shape))
    where = [tuple(int(i) for i in idx) for idx in bad.nonzero()[:5]]
    raise AssertionError(
        f"{name}: {int(bad.sum())} of {bad.numel()} elements differ (atol={atol}, rtol={rtol}); worst at {worst}: "
        f"actual {a[worst].item():.6g} vs expected {e[worst].item():.6g} (|diff| {diff[worst].item():.3g}); "
        f"first mismatches at {where}")


def make_inputs(batch: int, seq: int, dim: int, vocab: int, *, dtype=torch.float32, bias: bool = True,
                seed: int = 0):
    """Random head inputs with right padding, one left-padded row and, for batch >= 3, an all-padding row."""
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(batch, seq, dim, generator=g).to(dtype)
    weight = (torch.randn(vocab, dim, generator=g) / dim ** 0.5).to(dtype)
    b = (torch.randn(vocab, generator=g) * 0.5).to(dtype) if bias else None
    lengths = torch.randint(1, seq + 1, (batch,), generator=g)
    mask = (torch.arange(seq)[None, :] < lengths[:, None]).long()
    mask[0] = 1
    if batch >= 2 and seq >= 3:
        mask[1] = 0
        mask[1, seq // 3:] = 1  # left padding
    if batch >= 3:
        mask[2] = 0  # all padding: output 0 and no gradient
    grad = torch.randn(batch, vocab, generator=g).to(dtype).float()  # what a bf16 output's backward receives
    return hidden, weight, b, mask, grad


def drop_near_ties(hidden, weight, mask, grad, *, gap: float = 1e-4) -> torch.Tensor:
    """grad with 0 wherever the two best tokens' logits are within `gap` (relative): there the argmax, and so
    the (sub)gradient, depends on rounding, which any two implementations may do differently."""
    logits = (hidden.float() @ weight.float().T).masked_fill(~mask.bool()[..., None], float("-inf"))
    if logits.shape[1] < 2:
        return grad
    top2 = logits.topk(2, dim=1).values  # (B, 2, V)
    near = (top2[:, 0] - top2[:, 1]) <= gap * (1 + top2[:, 0].abs())
    return grad.masked_fill(near.to(grad.device), 0.0)


def head_and_grads(backend: str, hidden, weight, bias, mask, grad, *, compute_dtype=None):
    """Output and (d_hidden, d_weight, d_bias) of sum(grad * head(...)); inputs optionally upcast first."""
    leaves = [t.detach().to(compute_dtype or t.dtype).requires_grad_() if t is not None else None
              for t in (hidden, weight, bias)]
    out = splade_head(leaves[0], leaves[1], leaves[2], attention_mask=mask, backend=backend)
    (out.float() * grad).sum().backward()
    return [out.detach()] + [t.grad if t is not None else None for t in leaves]


def assert_matches_reference(backend: str, hidden, weight, bias, mask, grad) -> None:
    dtype = hidden.dtype
    atol, rtol = TOLERANCE[dtype]
    grad = drop_near_ties(hidden, weight, mask, grad)
    got = head_and_grads(backend, hidden, weight, bias, mask, grad)
    want = head_and_grads("reference", hidden, weight, bias, mask, grad, compute_dtype=torch.float32)
    for name, g, w in zip(("output", "d_hidden", "d_weight", "d_bias"), got, want):
        if w is None:
            continue
        assert g.dtype == dtype, f"{name}: dtype {g.dtype}, expected {dtype}"
        assert_close(g.float(), w.to(dtype).float(), atol=atol, rtol=rtol, name=f"{backend} {dtype} {name}")
    empty = ~mask.bool().any(dim=1)
    assert torch.all(got[0][empty] == 0) and torch.all(got[1][empty] == 0), "all-padding rows must be 0, no grad"
    assert torch.all(got[1][~mask.bool()] == 0), "padding tokens must get no gradient"


SHAPES = [  # (batch, seq, dim, vocab)
    pytest.param((1, 1, 8, 128), id="1x1x8x128"),
    pytest.param((3, 37, 48, 1000), id="3x37x48x1000"),
    pytest.param((5, 17, 33, 4099), id="5x17x33x4099"),
    pytest.param((4, 300, 24, 513), id="4x300x24x513-token-tiles"),
    pytest.param((2, 5, 16, 250_002), id="2x5x16x250002"),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("shape", SHAPES)
def test_torch_backend_matches_reference(shape, dtype):
    assert_matches_reference("torch", *make_inputs(*shape, dtype=dtype))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_torch_backend_without_bias_like_a_decoder_lm_head(dtype):
    assert_matches_reference("torch", *make_inputs(3, 19, 40, 777, dtype=dtype, bias=False))


def test_bf16_output_is_near_the_bf16_reference():
    hidden, weight, bias, mask, _ = make_inputs(3, 23, 32, 900, dtype=torch.bfloat16)
    got = splade_head(hidden, weight, bias, attention_mask=mask, backend="torch")
    assert_close(got.float(), splade_head_reference(hidden, weight, bias, mask).float(), atol=5e-2, rtol=2e-2,
                 name="torch bf16 vs reference in bf16")


@pytest.mark.parametrize("vocab_tile,tile_elements", [(7, 21), (7, 7 * 29 * 2), (None, 1 << 24)],
                         ids=["slot-blocks", "row-blocks", "one-tile"])
def test_tiles_keep_the_first_argmax_across_vocab_row_and_token_tiles(vocab_tile, tile_elements):
    hidden, weight, _, mask, _ = make_inputs(3, 29, 12, 61)
    hidden[0, 20] = hidden[0, 3]  # an exact tie across token tiles: the earliest token wins, like torch.max
    pooled, argmax = tiled_max(hidden, weight, mask, with_argmax=True, vocab_tile=vocab_tile,
                               tile_elements=tile_elements)
    logits = (hidden @ weight.T).masked_fill(~mask.bool()[..., None], float("-inf"))
    want, want_arg = logits.max(dim=1)
    assert_close(pooled, want, atol=1e-5, rtol=1e-5, name="tiled max")
    real = mask.bool().any(dim=1)
    assert torch.equal(argmax[real].long(), want_arg[real])
    no_arg, none = tiled_max(hidden, weight, mask, with_argmax=False, vocab_tile=vocab_tile,
                             tile_elements=tile_elements)
    assert none is None and torch.equal(no_arg, pooled)


def test_inference_path_equals_training_path():
    hidden, weight, bias, mask, _ = make_inputs(4, 31, 16, 300)
    with torch.inference_mode():
        fast = splade_head(hidden, weight, bias, attention_mask=mask, backend="torch")
    trained = splade_head(hidden.requires_grad_(), weight, bias, attention_mask=mask, backend="torch")
    assert trained.requires_grad and torch.equal(fast, trained.detach())


def test_only_requested_gradients_are_computed():
    hidden, weight, bias, mask, grad = make_inputs(3, 11, 16, 200)
    weight.requires_grad_()
    out = splade_head(hidden, weight, bias, attention_mask=mask, backend="torch")
    (out * grad).sum().backward()
    assert hidden.grad is None and bias.grad is None and weight.grad is not None


def test_backend_names():
    cpu = torch.zeros(1, 1, 1)
    assert set(BACKENDS) == {"reference", "torch", "triton"}
    assert resolve_backend("auto", cpu) == "torch" and resolve_backend("reference", cpu) == "reference"
    with pytest.raises(ValueError, match="unknown SPLADE head backend"):
        resolve_backend("cuda-magic", cpu)
    with pytest.raises(ValueError, match="attention_mask must be"):
        splade_head(torch.zeros(2, 3, 4), torch.zeros(5, 4), attention_mask=torch.ones(2, 4), backend="torch")


def test_encoder_vectors_equal_with_every_cpu_head(splade_tiny):
    texts = ["p53 mutations in cancer", "Vitamin D deficiency and multiple sclerosis " * 9, "a"]
    old = splade_tiny.head
    try:
        vectors = {}
        for head in ("reference", "torch"):
            splade_tiny.head = head
            vectors[head] = torch.from_numpy(splade_tiny.encode_documents(texts).to_scipy().toarray())
    finally:
        splade_tiny.head = old
    assert_close(vectors["torch"], vectors["reference"], atol=1e-4, rtol=0, name="encoder torch vs reference")


# --- triton: compiled on CUDA, interpreted on CPU in a subprocess ------------------------------------------

TRITON_CASES = {  # name -> (batch, seq, dim, vocab, dtype, bias, block_v)
    "fp32": (3, 37, 48, 300, "float32", True, None),
    "bf16": (3, 21, 32, 200, "bfloat16", True, None),
    "no-bias-odd": (2, 19, 20, 131, "float32", False, None),
    "vocab-250002": (1, 3, 16, 250_002, "float32", True, 8192),
}


def run_triton_case(name: str) -> None:
    """One triton case against the reference; raises AssertionError with the verbose difference."""
    batch, seq, dim, vocab, dtype, bias, block_v = TRITON_CASES[name]
    inputs = make_inputs(batch, seq, dim, vocab, dtype=getattr(torch, dtype), bias=bias)
    if torch.cuda.is_available():
        inputs = tuple(t.cuda() if t is not None else None for t in inputs)
    if block_v is None:
        assert_matches_reference("triton", *inputs)
        return
    from lsr.kernels import triton_head  # big vocabulary: wide vocab blocks keep the interpreter quick

    hidden, weight, b, mask, grad = inputs
    grad = drop_near_ties(hidden, weight, mask, grad)
    w, argmax = triton_head.triton_forward(hidden, weight, b, mask, block_v=block_v)
    d_hidden, d_weight, d_bias = triton_head.triton_backward(grad, w, argmax, hidden, weight, need_hidden=True,
                                                             need_weight=True, need_bias=True, block_v=block_v)
    want = head_and_grads("reference", hidden, weight, b, mask, grad)
    for label, g, e in zip(("output", "d_hidden", "d_weight", "d_bias"), (w, d_hidden, d_weight, d_bias), want):
        assert_close(g, e, atol=1e-4, rtol=1e-4, name=f"triton {label}")


@pytest.mark.parametrize("case", list(TRITON_CASES))
def test_triton_backend_matches_reference(case):
    pytest.importorskip("triton")
    if torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1":
        run_triton_case(case)
        return
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    done = subprocess.run([sys.executable, str(Path(__file__).resolve()), case], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, f"triton case {case} under the interpreter failed:\n{done.stdout}\n{done.stderr[-3000:]}"
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"case": case, "ok": True}


if __name__ == "__main__":  # one triton case, in a process started with TRITON_INTERPRET=1
    run_triton_case(sys.argv[1])
    print(json.dumps({"case": sys.argv[1], "ok": True}))
