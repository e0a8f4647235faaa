"""`lsr bench encode`: end-to-end encoding, docs/s of SpladeEncoder under each head backend against
sentence-transformers' SparseEncoder on the same weights, and each one's max |difference| from the reference
head's vectors, with rows appended as JSON data."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

from .measure import available_backends, default_device, environment
from .results import append_rows

LIMIT, DATASET, MODEL, MAX_LENGTH, BATCH_SIZE = 1024, "scifact", "splade-tiny", 256, 32


def _sentence_transformers_encoder(source: str, max_length: int, device: str):
    """sentence-transformers' SparseEncoder on the same weights: MLM logits (B, T, V) -> SpladePooling."""
    from sentence_transformers.sparse_encoder import SparseEncoder
    from sentence_transformers.sparse_encoder.modules import MLMTransformer, SpladePooling

    return SparseEncoder(modules=[MLMTransformer(source, max_seq_length=max_length),
                                  SpladePooling(pooling_strategy="max", activation_function="relu")], device=device)


def bench_encode(*, limit: int = LIMIT, dataset: str = DATASET, data_dir: str | Path | None = None,
                 model: str = MODEL, max_length: int = MAX_LENGTH, batch_size: int = BATCH_SIZE,
                 heads: Sequence[str] | None = None, sentence_transformers: bool = True,
                 json_path: str | Path | None = None) -> list[dict[str, Any]]:
    """docs/s encoding the first `limit` documents with SpladeEncoder under each head backend and with
    sentence-transformers' SparseEncoder, and each one's max |difference| from the reference head's vectors."""
    import torch

    from lsr.encoders import SpladeEncoder, resolve_model
    from lsr.eval.beir import load_corpus

    corpus = load_corpus(dataset, data_dir, limit)
    texts = [d.contents for d in corpus.corpus.values()]
    source = resolve_model(model).source
    device = default_device()
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


def format_row(r: dict[str, Any]) -> str:
    return (f"{r['backend']:>21}: {r['docs_per_s']:7.1f} docs/s ({r['seconds']:.1f} s for {r['num_docs']}), "
            f"{r['speedup_vs_reference']:.2f}x reference"
            + (f", {r['speedup_vs_sentence_transformers']:.2f}x sentence-transformers"
               if "speedup_vs_sentence_transformers" in r else "")
            + f", max |diff| vs reference {r['max_abs_diff_vs_reference']:.2e}")
