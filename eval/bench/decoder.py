"""`lsr bench decoder`: Echo SPLADE encoding (EchoSpladeEncoder) on a random-weight MistralForCausalLM (untied
lm_head, as Mistral) with V=32000 and 250000, end to end on the first scifact documents, per head backend; on
CPU a small shape (hidden 256, 2 layers) in fp32 with each backend in a fresh process, on CUDA the Mistral-7B
shape in bf16. Rows appended as JSON data.
"""
from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any, Sequence

from .measure import (available_backends, default_device, environment, finish, format_ratios,
                      measure_in_subprocess, peak_and_times)

DOCS, MAX_LENGTH, BATCH_SIZE, REPEATS, DATASET = 64, 256, 16, 3, "scifact"

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
    import torch
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

    peak_mb, times = peak_and_times(config["device"], call, config["repeats"],
                                     warmup=lambda: encoder.encode_documents(["warm up"]))
    vectors = first[0].to_scipy()
    sp.save_npz(config["vectors"], vectors, compressed=False)
    median = statistics.median(times)
    params = sum(p.numel() for p in encoder.model.parameters()) + encoder.head_module.weight.numel()
    return {**config, "num_docs": len(texts), "params_m": params / 1e6,
            "avg_tokens": sum(len(ids) for ids, _ in encoder._sequences(texts)) / len(texts),
            "median_s": median, "min_s": min(times), "times_s": times, "docs_per_s": len(texts) / median,
            "peak_mb": peak_mb, "avg_nonzeros": vectors.nnz / len(texts)}


def bench_decoder(*, vocabs: Sequence[int] | None = None, docs: int = DOCS, max_length: int = MAX_LENGTH,
                  batch_size: int = BATCH_SIZE, hidden: int | None = None, layers: int | None = None,
                  heads: int | None = None, kv_heads: int | None = None, intermediate: int | None = None,
                  dtype: str | None = None, device: str | None = None, backends: Sequence[str] | None = None,
                  repeats: int = REPEATS, dataset: str = DATASET, data_dir: str | Path | None = None, seed: int = 0,
                  json_path: str | Path | None = None, in_process: bool | None = None) -> list[dict[str, Any]]:
    """Echo SPLADE encoding of the first `docs` documents with a random-weight Mistral per vocabulary size
    (default 32000 and 250000) and head backend: docs/s, median seconds, peak memory, the reference's time and
    memory over each backend's, and each one's max |difference| from the reference head's vectors.

    Shape defaults: on CPU hidden 256, 2 layers, 4 heads (2 KV), MLP 512, fp32, each backend in a fresh
    subprocess (peak RSS); on CUDA the Mistral-7B shape in bf16 (`layers` shortens it), in-process with one
    model per vocabulary (peak torch.cuda.max_memory_allocated). `in_process` (default: on CUDA) measures here
    with one model per vocabulary on CPU too (dry runs: the peak memory is then not the row's own).
    """
    import tempfile

    import scipy.sparse as sp
    import torch

    device = device or default_device()
    cuda = device.startswith("cuda")
    in_here = cuda if in_process is None else in_process
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
                if in_here:  # one model per vocabulary; an out-of-memory backend leaves an error row, like a worker
                    try:
                        if encoder is None:
                            encoder = decoder_encoder(config, texts)
                        row = measure_decoder(config, encoder, texts)
                    except Exception as e:  # noqa: BLE001 - reported in the row, as a worker's stderr is
                        row = {**config, "error": f"{type(e).__name__}: {e}".splitlines()[0]}
                        if cuda:
                            torch.cuda.empty_cache()
                else:
                    row = measure_in_subprocess(config)
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
    return finish(rows, "median_s", json_path)


def format_row(r: dict[str, Any]) -> str:
    if "error" in r:
        return f"{r['backend']:>9} V={r['vocab']}: error: {r['error']}"
    return (f"{r['backend']:>9} V={r['vocab']} h={r['hidden']} L={r['layers']} {r['dtype']} "
            f"{r['num_docs']} docs T<={r['max_length']}: {r['docs_per_s']:7.1f} docs/s "
            f"({r['median_s']:.2f} s)  peak {r['peak_mb']:8.1f} MB  {format_ratios(r, 'median_s')}  "
            f"max |diff| vs reference {r.get('max_abs_diff_vs_reference', float('nan')):.2e}")
