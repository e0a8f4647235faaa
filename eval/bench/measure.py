"""Benchmarks of the SPLADE head backends: the head alone (`bench_head`) and end-to-end encoding
(`bench_encode`), with rows appended as JSON data (device, torch version, shape, backend, median ms, peak MB).

The spec is imported from the package (`lsr.kernels.splade_head` with backend="reference"), never copied.

Peak memory:
- CUDA: torch.cuda.max_memory_allocated() during the call minus what was allocated before it.
- CPU: every (backend, mode) runs in a fresh subprocess (`python -m lsr.eval.bench.measure --worker CONFIG`); the
  peak RSS (VmHWM, the process's own high-water mark, reset to the current RSS through /proc/self/clear_refs
  just before the call) after its first full-size call minus the RSS with the inputs in place and the
  libraries warmed up by a tiny call. Not ru_maxrss: a spawned child's starts at its parent's peak RSS.
  tracemalloc does not see torch's allocations, and a shared process would keep the worst backend's peak.

GPU mode (one command on a CUDA machine): `lsr bench head --json FILE` picks bf16, B=32, T=256 and
V=30522 and 250002, forward and forward+backward, triton vs reference (and torch).

Decoder encoding (`bench_decoder`, `lsr bench decoder`): EchoSpladeEncoder on a random-weight MistralForCausalLM
(untied lm_head, as Mistral) with V=32000 and 250000, end to end on the first scifact documents; on CPU a small
shape (hidden 256, 2 layers) in fp32, on CUDA the Mistral-7B shape in bf16.
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


def _peak_rss_mb() -> float:
    """This process's RSS high-water mark (VmHWM). ru_maxrss would not do: exec keeps the maximum with the
    parent's peak, so a worker's starts at its parent's (the benchmark driver's) RSS."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    raise RuntimeError("no VmHWM in /proc/self/status")


def _reset_peak_rss() -> None:
    """Lower the RSS high-water mark to the current RSS (Linux >= 4.0), so set-up peaks are not counted."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:  # not allowed here: the mark then also covers the set-up before the call
        pass


def _current_rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2 ** 20


def measure_head(config: dict[str, Any]) -> dict[str, Any]:
    """Peak memory of the first call and median time of `repeats` more, for one backend and mode."""
    device, backend, mode = config["device"], config["backend"], config["mode"]
    dtype = getattr(torch, config["dtype"])
    inputs = head_inputs(config["batch"], config["seq"], config["dim"], config["vocab"], dtype, device,
                         padding=config["padding"], train=mode == "train")
    # on CPU a tiny call first, so one-time library set-up is not counted as the head's
    warmup = None if device.startswith("cuda") else (
        lambda: _run_head(backend, mode, head_inputs(2, 4, config["dim"], 64, dtype, device, train=mode == "train")))
    peak_mb, seconds = _peak_and_times(device, lambda: _run_head(backend, mode, inputs), config["repeats"], warmup)
    times = [t * 1000 for t in seconds]
    return {**config, "median_ms": statistics.median(times), "min_ms": min(times), "times_ms": times,
            "peak_mb": peak_mb}


def _peak_and_times(device: str, call, repeats: int, warmup=None) -> tuple[float, list[float]]:
    """Peak memory (MB) of `call`'s first run over what was in use just before it (CUDA: allocated tensors;
    CPU: RSS high-water mark, so the process must be fresh, see _measure_in_subprocess), then the seconds of
    `repeats` more runs. `warmup` (a tiny call setting libraries up) runs before the memory baseline."""
    if warmup is not None:
        warmup()
    _sync(device)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        call()
        _sync(device)
        peak_mb = (torch.cuda.max_memory_allocated() - before) / 2 ** 20
    else:
        _reset_peak_rss()
        before = _current_rss_mb()
        call()
        peak_mb = _peak_rss_mb() - before
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        call()
        _sync(device)
        times.append(time.perf_counter() - start)
    return peak_mb, times


def _measure_in_subprocess(config: dict[str, Any]) -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-m", "lsr.eval.bench.measure", "--worker", json.dumps(config)],
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


# --- decoder encoding (Echo SPLADE on a random Mistral) --------------------------------------------------------

DECODER_SHAPES = {  # hidden, layers, heads, kv_heads, intermediate
    "cpu": {"hidden": 256, "layers": 2, "heads": 4, "kv_heads": 2, "intermediate": 512},
    "cuda": {"hidden": 4096, "layers": 32, "heads": 32, "kv_heads": 8, "intermediate": 14336},  # Mistral-7B
}
DECODER_VOCABS = (32000, 250000)  # Mistral-7B's and a multilingual-sized one (XLM-R, mT5: ~250k)


def _decoder_texts(config: dict[str, Any]) -> list[str]:
    from lsr.eval.beir import load_corpus

    corpus = load_corpus(config["dataset"], config.get("data_dir"), config["docs"])
    return [d.contents for d in corpus.corpus.values()]


class _FoldedTokenizer:
    """Test shapes: a tokenizer whose input ids are taken modulo a vocabulary smaller than its own (the same
    in every process, unlike a retrained one); everything else is the wrapped tokenizer's."""

    def __init__(self, tokenizer, vocab: int) -> None:
        self._tokenizer, self._vocab = tokenizer, vocab

    def __getattr__(self, name: str):
        value = getattr(self._tokenizer, name)
        return value % self._vocab if name.endswith("_token_id") and isinstance(value, int) else value

    def __len__(self) -> int:
        return self._vocab

    def __call__(self, *args, **kwargs):
        out = self._tokenizer(*args, **kwargs)
        ids = out["input_ids"]
        out["input_ids"] = ([i % self._vocab for i in ids] if not ids or isinstance(ids[0], int)
                            else [[i % self._vocab for i in row] for row in ids])
        return out


def decoder_encoder(config: dict[str, Any], texts: Sequence[str]):
    """EchoSpladeEncoder on a MistralForCausalLM with random weights (seeded, so every process builds the same
    one) of the config's shape, dtype and vocabulary, and the bundled SPLADE-tiny WordPiece tokenizer with [CLS]
    as BOS (its ids < 30522 are valid for V=32000 and 250000; a smaller test vocabulary folds them, see
    _FoldedTokenizer)."""
    from transformers import AutoTokenizer, MistralConfig, MistralForCausalLM

    from lsr.encoders import resolve_model
    from lsr.encoders.echo import EchoSpladeEncoder

    tokenizer = AutoTokenizer.from_pretrained(resolve_model("splade-tiny").source)
    tokenizer.bos_token = "[CLS]"
    if config["vocab"] < len(tokenizer):
        tokenizer = _FoldedTokenizer(tokenizer, config["vocab"])
    model_config = MistralConfig(
        vocab_size=config["vocab"], hidden_size=config["hidden"], num_hidden_layers=config["layers"],
        num_attention_heads=config["heads"], num_key_value_heads=config["kv_heads"],
        intermediate_size=config["intermediate"], max_position_embeddings=max(4096, config["max_length"]),
        tie_word_embeddings=False)
    torch.manual_seed(config["seed"])
    with torch.device(config["device"]):  # built in place: a 7B model never goes through CPU memory
        model = MistralForCausalLM._from_config(model_config, dtype=getattr(torch, config["dtype"])).eval()
    return EchoSpladeEncoder.from_model(model, tokenizer, max_length=config["max_length"],
                                        batch_size=config["batch_size"], head=config["backend"],
                                        device=config["device"], show_progress=False)


def measure_decoder(config: dict[str, Any], encoder=None, texts: Sequence[str] | None = None) -> dict[str, Any]:
    """Peak memory of the first `encode_documents` of the texts and the median seconds of `repeats` more, for
    one head backend; the vectors go to config["vectors"] (scipy .npz) for the comparison with the reference.
    `encoder`/`texts` reuse a built model (CUDA, in-process); else they are built here (CPU worker)."""
    import scipy.sparse as sp

    texts = list(texts if texts is not None else _decoder_texts(config))
    encoder = encoder if encoder is not None else decoder_encoder(config, texts)
    encoder.head = config["backend"]
    first = []  # the first call's vectors only: the timed ones are dropped as they come

    def call() -> None:
        vectors = encoder.encode_documents(texts)
        if not first:
            first.append(vectors)

    peak_mb, times = _peak_and_times(config["device"], call, config["repeats"],
                                     warmup=lambda: encoder.encode_documents(["warm up"]))
    vectors = first[0].to_scipy()
    sp.save_npz(config["vectors"], vectors, compressed=False)
    median = statistics.median(times)
    params = sum(p.numel() for p in encoder.model.parameters()) + encoder.head_module.weight.numel()
    return {**config, "num_docs": len(texts), "params_m": params / 1e6,
            "avg_tokens": sum(len(ids) for ids, _ in encoder._sequences(texts)) / len(texts),
            "median_s": median, "min_s": min(times), "times_s": times, "docs_per_s": len(texts) / median,
            "peak_mb": peak_mb, "avg_nonzeros": vectors.nnz / len(texts)}


def bench_decoder(*, vocabs: Sequence[int] | None = None, docs: int = 64, max_length: int = 256,
                  batch_size: int = 16, hidden: int | None = None, layers: int | None = None,
                  heads: int | None = None, kv_heads: int | None = None, intermediate: int | None = None,
                  dtype: str | None = None, device: str | None = None, backends: Sequence[str] | None = None,
                  repeats: int = 3, dataset: str = "scifact", data_dir: str | Path | None = None, seed: int = 0,
                  json_path: str | Path | None = None) -> list[dict[str, Any]]:
    """Echo SPLADE encoding of the first `docs` documents with a random-weight Mistral per vocabulary size
    (default 32000 and 250000) and head backend: docs/s, median seconds, peak memory, the reference's time and
    memory over each backend's, and each one's max |difference| from the reference head's vectors.

    Shape defaults: on CPU hidden 256, 2 layers, 4 heads (2 KV), MLP 512, fp32, each backend in a fresh
    subprocess (peak RSS); on CUDA the Mistral-7B shape in bf16 (`layers` shortens it), in-process with one
    model per vocabulary (peak torch.cuda.max_memory_allocated).
    """
    import tempfile

    import scipy.sparse as sp

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    cuda = device.startswith("cuda")
    shape = {**DECODER_SHAPES["cuda" if cuda else "cpu"],
             **{k: v for k, v in {"hidden": hidden, "layers": layers, "heads": heads, "kv_heads": kv_heads,
                                  "intermediate": intermediate}.items() if v is not None}}
    dtype = dtype or ("bfloat16" if cuda else "float32")
    backends = list(backends or available_backends(device))
    if "reference" not in backends:
        backends.insert(0, "reference")
    backends.sort(key=lambda b: b != "reference")  # the reference first
    base = {"bench": "decoder", "device": device, "model": "mistral-random", **shape, "dtype": dtype,
            "dataset": dataset, "docs": docs, "max_length": max_length, "batch_size": batch_size, "echo": True,
            "repeats": repeats, "seed": seed, "data_dir": None if data_dir is None else str(data_dir)}
    texts = _decoder_texts(base)  # here first: a missing dataset fails once, not in every worker
    env = environment(device)
    rows = []
    with tempfile.TemporaryDirectory(prefix="lsr-bench-decoder-") as tmp:
        for vocab in vocabs or DECODER_VOCABS:
            encoder = None
            vocab_rows: list[tuple[dict[str, Any], Path]] = []
            for backend in backends:
                path = Path(tmp) / f"{vocab}-{backend}.npz"
                config = {**base, "backend": backend, "vocab": vocab, "vectors": str(path)}
                if cuda:  # one model per vocabulary; an out-of-memory backend leaves an error row, like a worker
                    try:
                        if encoder is None:
                            encoder = decoder_encoder(config, texts)
                        row = measure_decoder(config, encoder, texts)
                    except Exception as e:  # noqa: BLE001 - reported in the row, as a worker's stderr is
                        row = {**config, "error": f"{type(e).__name__}: {e}".splitlines()[0]}
                        torch.cuda.empty_cache()
                else:
                    row = _measure_in_subprocess(config)
                row = {k: v for k, v in row.items() if k not in ("vectors", "data_dir")}  # worker-only settings
                vocab_rows.append(({**env, **row}, path))
            del encoder
            if cuda:
                torch.cuda.empty_cache()
            reference = next((sp.load_npz(p).toarray() for r, p in vocab_rows
                              if r["backend"] == "reference" and "error" not in r), None)
            for row, path in vocab_rows:
                if reference is not None and "error" not in row:
                    row["max_abs_diff_vs_reference"] = float(abs(sp.load_npz(path).toarray() - reference).max())
                rows.append(row)
    _add_ratios(rows, "median_s", "peak_mb")
    append_rows(json_path, rows)
    return rows


if __name__ == "__main__":  # worker: one measurement in a fresh process (see measure_head, measure_decoder)
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        worker_config = json.loads(sys.argv[2])
        measure = measure_decoder if worker_config.get("bench") == "decoder" else measure_head
        print(json.dumps(measure(worker_config)))
    else:
        raise SystemExit("usage: python -m lsr.eval.bench.measure --worker CONFIG_JSON (use `lsr bench` instead)")
