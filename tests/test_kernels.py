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

from lsr.kernels import BACKENDS, HeadError, resolve_backend, splade_head, splade_head_reference
from lsr.kernels.torch_head import tiled_max

# bf16: (atol, rtol). bf16 results are compared with the spec evaluated in float64 on the same bf16 values and
# rounded to bf16 (both backends accumulate in fp32 and return bf16): one or two bf16 roundings (2^-8) apart.
BF16_TOLERANCE = (2e-2, 1e-2)

# fp32: a bound per element, derived from fp32 accumulation (fp32_error_bounds), against a float64 reference
# computed from the same inputs, so the test does not depend on the order in which a CPU sums.
# Every compared value is a sum of n products x_i: the output h + 1 terms (hidden[b,t,k] W[v,k] and the bias);
# d_hidden[b,t,k] = sum_v g'[b,v] W[v,k] over the vocabulary rows whose argmax is token t (up to V: 50,000 in
# the 250,002 case); d_weight[v,k] = sum_b g'[b,v] hidden[b,argmax,k] and d_bias[v] = sum_b g'[b,v], up to B.
# Whatever the order a CPU, a BLAS or a GPU sums in, the n - 1 additions form a tree and addition j rounds its
# partial sum s_j by a relative delta_j, |delta_j| <= u = 2^-24 (the fp32 unit roundoff):
#     computed - exact = sum_j delta_j s_j      (to first order in u)
#   - The worst case |...| <= (n - 1) u sum_i |x_i| (Higham, Accuracy and Stability of Numerical Algorithms,
#     section 4.2) holds for any order but, for 50,000 terms of random sign, is ~sqrt(n) times the size of the
#     sum itself: too loose to catch a gradient that is 1.001 off.
#   - With the delta_j independent and of mean zero (the probabilistic model of Higham & Mary, SISC 2019),
#     |sum_j delta_j s_j| <= lambda u sqrt(sum_j s_j^2) with probability >= 1 - 2 exp(-lambda^2 / 2). Each
#     partial sum adds a subset of the terms: for terms of random sign (the incoming gradient is random) it
#     stays within a few ||x||_2 (a random walk), for terms of one sign it grows to |sum_i x_i|; so for any
#     order sqrt(sum_j s_j^2) <~ sqrt(n) (||x||_2 + |sum_i x_i|), recursive summation being the worst.
#   - The gradients' terms are themselves rounded: g' = g exp(-w) comes from the fp32 output w, so term i
#     carries a relative error eps_i <= (its output's bound) + 3u (exp, product, cast), independent across
#     terms: they add lambda sqrt(sum_i (eps_i x_i)^2).
# So, per element,  |fp32 - exact| <= LAMBDA (u sqrt(n) (||x||_2 + |exact|) + sqrt(sum_i (eps_i x_i)^2)),
# with n, eps_i and ||x||_2 = sqrt(sum_i x_i^2) computed in float64 from the same inputs. The output's last
# steps (+ bias, log1p(relu)) are 1-Lipschitz and round once more: inside its n = h + 1. LAMBDA = 6: the
# rounding model fails with probability ~1e-8 per element. Measured on the shapes below: the torch backend
# uses at most 13% of its bounds, the spec in fp32 18%, d_hidden summed term by term in fp32 in shuffled
# order 14%; a d_hidden 1.0003 times too large fails every fp32 shape (the 250,002 case: bounds 2e-3 .. 1e-2
# on values up to 60, where the two x86 CPUs' fp32 sums were seen 1.3e-4 apart).
U_FP32 = 2.0 ** -24
LAMBDA = 6.0


def assert_close(actual: torch.Tensor, expected: torch.Tensor, *, atol: float | torch.Tensor, rtol: float = 0.0,
                 name: str) -> None:
    """|actual - expected| <= atol + rtol |expected| elementwise (equal infinities pass; atol may be a tensor of
    per-element bounds); otherwise an AssertionError saying where and by how much the tensors differ."""
    assert actual.shape == expected.shape, f"{name}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    a, e = actual.detach().double().cpu(), expected.detach().double().cpu()
    tol = (torch.as_tensor(atol, dtype=torch.float64).cpu() + rtol * e.abs()).expand_as(e)
    diff = (a - e).abs()
    bad = ~((a == e) | (diff <= tol))
    if not bad.any():
        return
    excess = torch.where(bad, diff.nan_to_num(float("inf")) / tol.clamp_min(1e-300), -1.0)
    worst = tuple(int(i) for i in torch.unravel_index(excess.argmax(), excess.shape))
    where = [tuple(int(i) for i in idx) for idx in bad.nonzero()[:5]]
    raise AssertionError(
        f"{name}: {int(bad.sum())} of {bad.numel()} elements differ (atol={_describe(atol)}, rtol={rtol}); worst "
        f"at {worst}: actual {a[worst].item():.9g} vs expected {e[worst].item():.9g} (|diff| "
        f"{diff[worst].item():.3g} against a tolerance of {tol[worst].item():.3g}); first mismatches at {where}")


def _describe(atol: float | torch.Tensor) -> str:
    if isinstance(atol, torch.Tensor) and atol.numel() > 1:
        return f"per element, {atol.min().item():.3g} .. {atol.max().item():.3g}"
    return f"{float(atol):.3g}"


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


def drop_near_ties(hidden, weight, bias, mask, grad, *, gap: float = 1e-4) -> torch.Tensor:
    """grad with 0 wherever the two best tokens' logits are within `gap` (relative), or the best logit plus the
    bias is within `gap` of relu's kink at 0: there the argmax or the relu, and so the (sub)gradient, depends on
    rounding, which any two implementations (fp32 and the float64 reference) may do differently."""
    logits = (hidden.float() @ weight.float().T).masked_fill(~mask.bool()[..., None], float("-inf"))
    best = logits.max(dim=1).values
    pre = best if bias is None else best + bias.float()
    near = pre.abs() <= gap * (1 + best.abs())
    if logits.shape[1] >= 2:
        top2 = logits.topk(2, dim=1).values  # (B, 2, V)
        near |= (top2[:, 0] - top2[:, 1]) <= gap * (1 + top2[:, 0].abs())
    return grad.masked_fill(near.to(grad.device), 0.0)


def head_and_grads(backend: str, hidden, weight, bias, mask, grad, *, compute_dtype=None):
    """Output and (d_hidden, d_weight, d_bias) of sum(grad * head(...)); inputs optionally upcast first."""
    leaves = [t.detach().to(compute_dtype or t.dtype).requires_grad_() if t is not None else None
              for t in (hidden, weight, bias)]
    out = splade_head(leaves[0], leaves[1], leaves[2], attention_mask=mask, backend=backend)
    (out.float() * grad).sum().backward()
    return [out.detach()] + [t.grad if t is not None else None for t in leaves]


def fp32_error_bounds(hidden, weight, bias, mask, grad, exact) -> list[torch.Tensor | None]:
    """Per-element bounds on |fp32 result - exact| for (output, d_hidden, d_weight, d_bias), as derived in the
    comment at U_FP32; `exact` holds the float64 reference's four results, grad the incoming gradient."""
    h, wt = hidden.double().cpu(), weight.double().cpu()
    b = torch.zeros(wt.shape[0], dtype=torch.float64) if bias is None else bias.double().cpu()
    pad = ~mask.bool().cpu()[..., None]
    logits = (h @ wt.T).masked_fill(pad, float("-inf"))  # (B, T, V)
    best, argmax = logits.max(dim=1)  # (B, V)
    pre = best + b
    # output: sum_k hidden[b,t,k] W[v,k] + bias[v]; the largest sum of squared terms over the real tokens t
    out_sq = ((h * h) @ (wt * wt).T).masked_fill(pad, 0.0).amax(dim=1) + b * b
    out_bound = LAMBDA * U_FP32 * (h.shape[-1] + 1) ** 0.5 * (out_sq.sqrt() + pre.abs())
    out_bound = torch.where(torch.isfinite(pre), out_bound, 0.0)  # all-padding rows: exactly 0 on both sides
    w = torch.log1p(torch.relu(pre))
    g = torch.where(w > 0, grad.double().cpu() * torch.exp(-w), 0.0)  # (B, V) d loss / d max-logit
    eps_in = out_bound + 3 * U_FP32  # (B, V) relative error of the fp32 g' = g exp(-w): w's, exp's, the product's

    def at_argmax(values: torch.Tensor) -> torch.Tensor:  # (B, V) -> (B, T, V), nonzero at the argmax token only
        return torch.zeros(logits.shape, dtype=torch.float64).scatter_(1, argmax[:, None], values[:, None])

    # g'^2 and (eps_in g')^2 at each term's token; reduce() multiplies in the term's other factor squared
    sq, sq_in = at_argmax(g * g), at_argmax((eps_in * g) ** 2)
    count = at_argmax((g != 0).double())

    def bound(reduce, n: torch.Tensor, value: torch.Tensor | None) -> torch.Tensor | None:
        """reduce(sq) = the element's sum of squared terms sum_i x_i^2; n its number of terms."""
        if value is None:
            return None
        return LAMBDA * (U_FP32 * n.clamp_min(1).sqrt() * (reduce(sq).sqrt() + value.double().cpu().abs())
                         + reduce(sq_in).sqrt())

    per_token, per_row = count.sum(-1, keepdim=True), count.sum((0, 1))
    return [out_bound,
            bound(lambda t: t @ (wt * wt), per_token, exact[1]),  # d_hidden (B, T, h): terms g' W[v]
            bound(lambda t: torch.einsum("btv,btk->vk", t, h * h), per_row[:, None], exact[2]),  # d_weight (V, h)
            bound(lambda t: t.sum((0, 1)), per_row, exact[3])]  # d_bias (V,): terms g'


def assert_equal_to_reference(got, hidden, weight, bias, mask, grad, *, label: str) -> None:
    """A backend's (output, d_hidden, d_weight, d_bias) against the spec in float64 on the same inputs: fp32
    within fp32_error_bounds, bf16 within BF16_TOLERANCE of the spec rounded to bf16. grad: ties dropped."""
    dtype = hidden.dtype
    want = head_and_grads("reference", hidden, weight, bias, mask, grad, compute_dtype=torch.float64)
    bounds = fp32_error_bounds(hidden, weight, bias, mask, grad, want) if dtype == torch.float32 else None
    for i, (name, g, w) in enumerate(zip(("output", "d_hidden", "d_weight", "d_bias"), got, want)):
        if w is None:
            continue
        assert g.dtype == dtype, f"{name}: dtype {g.dtype}, expected {dtype}"
        if bounds is not None:
            assert_close(g, w, atol=bounds[i], name=f"{label} {name}")
        else:
            atol, rtol = BF16_TOLERANCE
            assert_close(g.float(), w.to(dtype).float(), atol=atol, rtol=rtol, name=f"{label} {name}")


def assert_matches_reference(backend: str, hidden, weight, bias, mask, grad) -> None:
    grad = drop_near_ties(hidden, weight, bias, mask, grad)
    got = head_and_grads(backend, hidden, weight, bias, mask, grad)
    assert_equal_to_reference(got, hidden, weight, bias, mask, grad, label=f"{backend} {hidden.dtype}")
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


@pytest.mark.parametrize("mistake,change,message", [
    ("unknown backend", {"backend": "bogus"}, "unknown SPLADE head backend 'bogus'; choose from auto, reference, "
                                              "torch, triton"),
    ("backend not a string", {"backend": None}, "unknown SPLADE head backend None"),
    ("integer hidden", {"hidden": torch.zeros(2, 3, 4, dtype=torch.long)}, "hidden must be a floating-point"),
    ("weight not a tensor", {"weight": [[0.0] * 4] * 5}, "weight must be a torch.Tensor, got list"),
    ("2-d hidden", {"hidden": torch.zeros(3, 4)}, "hidden must be (B, T, h)"),
    ("hidden size", {"weight": torch.zeros(5, 6)}, "weight (V, h)"),
    ("bias shape", {"bias": torch.zeros(4)}, "bias must be (5,)"),
    ("mask shape", {"attention_mask": torch.ones(2, 4)}, "attention_mask must be (2, 3)"),
])
def test_user_mistakes_raise_one_line_head_errors(mistake, change, message):
    args = {"hidden": torch.zeros(2, 3, 4), "weight": torch.zeros(5, 4), "bias": torch.zeros(5),
            "attention_mask": torch.ones(2, 3), "backend": "torch", **change}
    with pytest.raises(HeadError) as info:
        splade_head(args.pop("hidden"), args.pop("weight"), args.pop("bias"), **args)
    text = str(info.value)
    assert message in text and "\n" not in text, f"{mistake}: {text!r}"
    assert isinstance(info.value, ValueError)  # callers that caught ValueError still do


def test_auto_on_cpu_is_the_torch_head_and_runs_no_self_check():
    from lsr.kernels.selfcheck import VERDICTS

    before = dict(VERDICTS)
    assert resolve_backend("auto", torch.zeros(1, 1, 1), gradients=True) == "torch"
    assert resolve_backend("auto", torch.zeros(1, 1, 1, dtype=torch.bfloat16)) == "torch"
    assert VERDICTS == before


def test_triton_on_cpu_tensors_without_the_interpreter_is_a_head_error(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(HeadError, match="'triton' needs CUDA tensors"):
        splade_head(torch.zeros(1, 2, 4), torch.zeros(3, 4), attention_mask=torch.ones(1, 2), backend="triton")


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
    grad = drop_near_ties(hidden, weight, b, mask, grad)
    w, argmax = triton_head.triton_forward(hidden, weight, b, mask, block_v=block_v)
    d_hidden, d_weight, d_bias = triton_head.triton_backward(grad, w, argmax, hidden, weight, need_hidden=True,
                                                             need_weight=True, need_bias=True, block_v=block_v)
    assert_equal_to_reference((w, d_hidden, d_weight, d_bias), hidden, weight, b, mask, grad, label="triton")


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
