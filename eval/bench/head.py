"""`lsr bench head`: the SPLADE head alone, median time and peak memory per backend, forward and
forward+backward, with rows appended as JSON data (device, torch version, shape, backend, median ms, peak MB).

The spec is imported from the package (`lsr.kernels.splade_head` with backend="reference"), never copied.
Peak memory as `lsr.eval.bench.measure` takes it (on CPU each backend and mode in a fresh process).

GPU mode (one command on a CUDA machine): `lsr bench head --json FILE` picks bf16, B=32, T=256 and
V=30522 and 250002, forward and forward+backward, triton vs reference (and torch).
"""
from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any, Sequence

from .measure import (DTYPES, HEAD_BACKENDS, available_backends, default_device, environment, finish,
                      format_ratios, measure_in_process, measure_in_subprocess, peak_and_times)

__all__ = ["BATCH", "DTYPES", "HEAD_BACKENDS", "MODES", "PADDING", "REPEATS", "SEQ", "bench_head", "format_row",
           "head_inputs", "measure_head"]

MODES = ("forward", "train")  # train = forward + backward through the head
BATCH, SEQ, REPEATS, PADDING = 32, 256, 5, 0.1


def head_inputs(batch: int, seq: int, dim: int, vocab: int, dtype, device: str, *, padding: float = 0.1,
                train: bool = False, seed: int = 0):
    """BERT-like inputs: weight scaled like an embedding matrix, rows right-padded to a random length that
    leaves on average `padding` of the tokens as padding."""
    import torch

    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(batch, seq, dim, generator=g)
    weight = torch.randn(vocab, dim, generator=g) / dim ** 0.5
    bias = torch.randn(vocab, generator=g) - 2.0  # most logits negative: vectors sparse, like SPLADE's
    keep = 1 - 2 * padding * torch.rand(batch, generator=g)
    lengths = (keep * seq).long().clamp(1, seq)
    mask = (torch.arange(seq)[None, :] < lengths[:, None]).long()
    grad = torch.randn(batch, vocab, generator=g)
    tensors = [t.to(device=device, dtype=dtype) for t in (hidden, weight, bias)]
    if train:
        tensors = [t.requires_grad_() for t in tensors]
    return (*tensors, mask.to(device), grad.to(device=device, dtype=dtype))


def _run_head(backend: str, mode: str, inputs) -> None:
    import torch

    from lsr.kernels import splade_head

    hidden, weight, bias, mask, grad = inputs
    if mode == "forward":
        with torch.inference_mode():
            splade_head(hidden, weight, bias, attention_mask=mask, backend=backend)
        return
    for t in (hidden, weight, bias):
        t.grad = None
    out = splade_head(hidden, weight, bias, attention_mask=mask, backend=backend)
    out.backward(grad)


def measure_head(config: dict[str, Any]) -> dict[str, Any]:
    """Peak memory of the first call and median time of `repeats` more, for one backend and mode."""
    import torch

    device, backend, mode = config["device"], config["backend"], config["mode"]
    dtype = getattr(torch, config["dtype"])
    inputs = head_inputs(config["batch"], config["seq"], config["dim"], config["vocab"], dtype, device,
                         padding=config["padding"], train=mode == "train")
    # on CPU a tiny call first, so one-time library set-up is not counted as the head's
    warmup = None if device.startswith("cuda") else (
        lambda: _run_head(backend, mode, head_inputs(2, 4, config["dim"], 64, dtype, device, train=mode == "train")))
    peak_mb, seconds = peak_and_times(device, lambda: _run_head(backend, mode, inputs), config["repeats"], warmup)
    times = [t * 1000 for t in seconds]
    return {**config, "median_ms": statistics.median(times), "min_ms": min(times), "times_ms": times,
            "peak_mb": peak_mb}


def bench_head(*, batch: int = BATCH, seq: int = SEQ, dim: int | None = None, vocabs: Sequence[int] | None = None,
               dtype: str | None = None, device: str | None = None, backends: Sequence[str] | None = None,
               modes: Sequence[str] = MODES, repeats: int = REPEATS, padding: float = PADDING,
               json_path: str | Path | None = None, in_process: bool | None = None) -> list[dict[str, Any]]:
    """Median time and peak memory of each backend, forward and forward+backward, per vocabulary size.

    Defaults: on CUDA bf16 with V = 30522 and 250002 (hidden 768); on CPU fp32 with V = 30522 and the
    bundled SPLADE-tiny's hidden size 128. `in_process` (default: on CUDA) measures here instead of in a fresh
    process per row (on CPU the peak memory is then not the row's own: dry runs).
    """
    device = device or default_device()
    cuda = device.startswith("cuda")
    dtype = dtype or ("bfloat16" if cuda else "float32")
    vocabs = list(vocabs or ((30522, 250002) if cuda else (30522,)))
    dim = dim or (768 if cuda else 128)
    env = environment(device)
    rows = []
    for vocab in vocabs:
        for mode in modes:
            for backend in backends or available_backends(device):
                config = {"bench": "head", "device": device, "backend": backend, "mode": mode, "batch": batch,
                          "seq": seq, "dim": dim, "vocab": vocab, "dtype": dtype, "padding": padding,
                          "repeats": repeats}
                in_here = cuda if in_process is None else in_process
                row = measure_in_process(measure_head, config) if in_here else measure_in_subprocess(config)
                rows.append({**env, **row})
    return finish(rows, "median_ms", json_path)


def format_row(r: dict[str, Any]) -> str:
    if "error" in r:
        return f"{r['backend']:>9} {r['mode']:>7} V={r['vocab']}: error: {r['error']}"
    return (f"{r['backend']:>9} {r['mode']:>7} B={r['batch']} T={r['seq']} h={r['dim']} V={r['vocab']} "
            f"{r['dtype']}: {r['median_ms']:9.1f} ms  peak {r['peak_mb']:8.1f} MB  " + format_ratios(r, "median_ms"))
