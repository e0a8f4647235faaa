"""Benchmarks of the SPLADE head backends: the head alone (`bench_head`) and end-to-end encoding
(`bench_encode`), with rows appended as JSON data (device, torch version, shape, backend, median ms, peak MB).

The spec is imported from the package (`lsr.kernels.splade_head` with backend="reference"), never copied.

Peak memory:
- CUDA: torch.cuda.max_memory_allocated() during the call minus what was allocated before it.
- CPU: every (backend, mode) runs in a fresh subprocess (`python -m lsr.eval.bench --worker CONFIG`); the
  peak RSS (ru_maxrss, a high-water mark) after its first full-size call minus the RSS with the inputs in
  place and the libraries warmed up by a tiny call.
  tracemalloc does not see torch's allocations, and a shared process would keep the worst backend's peak.

GPU mode (one command on a CUDA machine): `lsr bench head --json FILE` picks bf16, B=32, T=256 and
V=30522 and 250002, forward and forward+backward, triton vs reference (and torch).
"""
from __future__ import annotations

import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import torch

MODES = ("forward", "train")  # train = forward + backward through the head


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return f"{platform.processor() or platform.machine()} x{torch.get_num_threads()} threads"


def environment(device: str) -> dict[str, Any]:
    return {"device": device, "device_name": device_name(device), "torch": torch.__version__,
            "time": time.strftime("%Y-%m-%dT%H:%M:%S")}


def append_rows(path: str | Path | None, rows: list[dict[str, Any]]) -> None:
    """Append rows to a JSON list file (created if missing)."""
    if path is None:
        return
    path = Path(path)
    old = json.loads(path.read_text()) if path.is_file() and path.stat().st_size else []
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([*old, *rows], indent=2))


# --- the head alone ----------------------------------------------------------------------------------------

def head_inputs(batch: int, seq: int, dim: int, vocab: int, dtype: torch.dtype, device: str, *,
                padding: float = 0.1, train: bool = False, seed: int = 0):
    """BERT-like inputs: weight scaled like an embedding matrix, rows right-padded to a random length that
    leaves on average `padding` of the tokens as padding."""
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


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _current_rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2 ** 20


def measure_head(config: dict[str, Any]) -> dict[str, Any]:
    """Peak memory of the first call and median time of `repeats` more, for one backend and mode."""
    device, backend, mode = config["device"], config["backend"], config["mode"]
    dtype = getattr(torch, config["dtype"])
    inputs = head_inputs(config["batch"], config["seq"], config["dim"], config["vocab"], dtype, device,
                         padding=config["padding"], train=mode == "train")
    _sync(device)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        _run_head(backend, mode, inputs)
        _sync(device)
        peak_mb = (torch.cuda.max_memory_allocated() - before) / 2 ** 20
    else:  # a tiny call first, so one-time library set-up (~70 MB of RSS) is not counted as the head's
        _run_head(backend, mode, head_inputs(2, 4, config["dim"], 64, dtype, device, train=mode == "train"))
        before = _current_rss_mb()
        _run_head(backend, mode, inputs)
        peak_mb = _max_rss_mb() - before
    times = []
    for _ in range(config["repeats"]):
        _sync(device)
        start = time.perf_counter()
        _run_head(backend, mode, inputs)
        _sync(device)
        times.append((time.perf_counter() - start) * 1000)
    return {**config, "median_ms": statistics.median(times), "min_ms": min(times), "times_ms": times,
            "peak_mb": peak_mb}


def _measure_in_subprocess(config: dict[str, Any]) -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-m", "lsr.eval.bench", "--worker", json.dumps(config)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        return {**config, "error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def available_backends(device: str) -> list[str]:
    """Backends worth timing here: triton only compiled on CUDA (the CPU interpreter is for tests)."""
    names = ["reference", "torch"]
    if device.startswith("cuda"):
        try:
            import triton  # noqa: F401

            names.append("triton")
        except ImportError:
            pass
    return names


def bench_head(*, batch: int = 32, seq: int = 256, dim: int | None = None, vocabs: Sequence[int] | None = None,
               dtype: str | None = None, device: str | None = None, backends: Sequence[str] | None = None,
               modes: Sequence[str] = MODES, repeats: int = 5, padding: float = 0.1,
               json_path: str | Path | None = None) -> list[dict[str, Any]]:
    """Median time and peak memory of each backend, forward and forward+backward, per vocabulary size.

    Defaults: on CUDA bf16 with V = 30522 and 250002 (hidden 768); on CPU fp32 with V = 30522 and the
    bundled SPLADE-tiny's hidden size 128.
    """
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
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
                row = measure_head(config) if cuda else _measure_in_subprocess(config)
                rows.append({**env, **row})
    _add_ratios(rows, "median_ms", "peak_mb")
    append_rows(json_path, rows)
    return rows


def _add_ratios(rows: list[dict[str, Any]], *keys: str) -> None:
    """reference / backend for each key, on rows of the same shape and mode."""
    for row in rows:
        ref = next((r for r in rows if r["backend"] == "reference" and r.get("mode") == row.get("mode")
                    and r.get("vocab") == row.get("vocab") and "error" not in r), None)
        if ref is None or "error" in row:
            continue
        for key in keys:
            if row.get(key) and ref.get(key) is not None:
                row[f"reference_over_this_{key}"] = ref[key] / max(row[key], 1e-9)


# --- end-to-end encoding -----------------------------------------------------------------------------------

def _sentence_transformers_encoder(source: str, max_length: int, device: str):
    """sentence-transformers' SparseEncoder on the same weights: MLM logits (B, T, V) -> SpladePooling."""
    from sentence_transformers.sparse_encoder import SparseEncoder
    from sentence_transformers.sparse_encoder.modules import MLMTransformer, SpladePooling

    return SparseEncoder(modules=[MLMTransformer(source, max_seq_length=max_length),
                                  SpladePooling(pooling_strategy="max", activation_function="relu")], device=device)


def bench_encode(*, limit: int = 1024, dataset: str = "scifact", data_dir: str | Path | None = None,
                 model: str = "splade-tiny", max_length: int = 256, batch_size: int = 32,
                 heads: Sequence[str] | None = None, sentence_transformers: bool = True,
                 json_path: str | Path | None = None) -> list[dict[str, Any]]:
    """docs/s encoding the first `limit` documents with SpladeEncoder under each head backend and with
    sentence-transformers' SparseEncoder, and each one's max |difference| from the reference head's vectors."""
    from lsr.encoders import SpladeEncoder, resolve_model
    from lsr.eval.beir import load_corpus

    corpus = load_corpus(dataset, data_dir, limit)
    texts = [d.contents for d in corpus.corpus.values()]
    source = resolve_model(model).source
    device = "cuda" if torch.cuda.is_available() else "cpu"
    heads = list(heads or ["reference", *[b for b in available_backends(device) if b != "reference"]])
    if "reference" not in heads:
        heads.insert(0, "reference")
    env = environment(device)
    base = {"bench": "encode", "dataset": dataset, "num_docs": len(texts), "model": model,
            "max_length": max_length, "batch_size": batch_size}
    vectors: dict[str, torch.Tensor] = {}
    rows = []
    for head in heads:
        encoder = SpladeEncoder(source, max_length=max_length, batch_size=batch_size, head=head,
                                show_progress=False)
        encoder.encode_documents(texts[:batch_size])  # warm-up
        start = time.perf_counter()
        out = encoder.encode_documents(texts)
        seconds = time.perf_counter() - start
        vectors[head] = torch.from_numpy(out.to_scipy().toarray())
        rows.append({**env, **base, "backend": head, "seconds": seconds, "docs_per_s": len(texts) / seconds,
                     "avg_nonzeros": out.nnz / len(texts)})
        del encoder
    if sentence_transformers:
        st = _sentence_transformers_encoder(source, max_length, device)
        st.encode(texts[:batch_size], batch_size=batch_size, show_progress_bar=False)  # warm-up
        start = time.perf_counter()
        out = st.encode(texts, batch_size=batch_size, convert_to_tensor=True, convert_to_sparse_tensor=False,
                        show_progress_bar=False)
        seconds = time.perf_counter() - start
        vectors["sentence-transformers"] = out.float().cpu()
        rows.append({**env, **base, "backend": "sentence-transformers", "seconds": seconds,
                     "docs_per_s": len(texts) / seconds,
                     "avg_nonzeros": float((out != 0).sum()) / len(texts)})
    reference = vectors["reference"]
    st_row = next((r for r in rows if r["backend"] == "sentence-transformers"), None)
    ref_row = rows[0]
    for row in rows:
        row["max_abs_diff_vs_reference"] = float((vectors[row["backend"]] - reference).abs().max())
        row["speedup_vs_reference"] = row["docs_per_s"] / ref_row["docs_per_s"]
        if st_row is not None:
            row["speedup_vs_sentence_transformers"] = row["docs_per_s"] / st_row["docs_per_s"]
    append_rows(json_path, rows)
    return rows


if __name__ == "__main__":  # worker: one head measurement in a fresh process (see measure_head)
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        print(json.dumps(measure_head(json.loads(sys.argv[2]))))
    else:
        raise SystemExit("usage: python -m lsr.eval.bench --worker CONFIG_JSON (use `lsr bench` instead)")
