"""The offline jobs: encode a BEIR corpus, build an index over it, and evaluate a model end to end with
efficiency figures next to quality."""
from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lsr.encoders.registry import DEFAULT_MAX_LENGTH
from lsr.index import IndexReader, IndexWriter, LsrError, Run, SparseBatch

from .beir import BeirDataset
from .metrics import evaluate_run

RETRIEVAL_DEPTH = 1000


@dataclass
class EncoderOptions:
    max_length: int | None = None  # None: the model's recorded setting, else 256
    batch_size: int = 32
    head: str = "auto"
    show_progress: bool = True


def load_sparse_encoder(model: str, options: EncoderOptions):
    """The sparse encoder for a registered name, folder or hub id; a clear error for other kinds."""
    from lsr.encoders import load_sparse_encoder as load, resolve_model

    return load(resolve_model(model), max_length=options.max_length, batch_size=options.batch_size,
                head=options.head, show_progress=options.show_progress)


def model_reference(model: str) -> str:
    """How an index records its model: a registered name or hub id as given, a folder as an absolute path."""
    path = Path(model).expanduser()
    return str(path.resolve()) if path.is_dir() else model


def build_sparse_index(dataset: BeirDataset, model: str, encoder, out: str | Path, *, bits: int = 8,
                       overwrite: bool = False, backend: str = "lsr") -> dict[str, float]:
    """Encode the corpus with `encoder` (loaded from `model`) and write the index (with a Lucene impact index in
    it for the `lucene` backend); returns timing figures."""
    from .lucene import BACKENDS, write_lucene_index

    if backend not in BACKENDS:
        raise LsrError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    start = time.perf_counter()
    docs = encoder.encode_documents([d.contents for d in dataset.corpus.values()])
    encode_s = time.perf_counter() - start
    figures = {"encode_s": encode_s, "docs_per_s": len(dataset.corpus) / encode_s}
    info = {"model": model_reference(model), "max_length": encoder.max_length, "dataset": dataset.name,
            "build": figures, "backend": backend}
    start = time.perf_counter()
    with IndexWriter(out, vocab_size=encoder.vocab_size, bits=bits, info=info, overwrite=overwrite,
                     companion=write_lucene_index if backend == "lucene" else None) as writer:
        writer.add(docs, dataset.doc_ids)
    return {**figures, "index_build_s": time.perf_counter() - start}


def percentiles(values_ms: list[float]) -> dict[str, float]:
    a = np.asarray(values_ms, dtype=np.float64)
    return {"p50": float(np.percentile(a, 50)), "p99": float(np.percentile(a, 99)), "mean": float(a.mean())}


def expected_flops(queries: SparseBatch, docs_df: np.ndarray, num_docs: int) -> float:
    """FLOPS of the SPLADE paper: sum over terms of P(term in a query) * P(term in a document)."""
    q_df = np.bincount(queries.term_ids, minlength=queries.vocab_size).astype(np.float64)
    return float((q_df / max(len(queries), 1)) @ (docs_df / num_docs))


@dataclass
class EvalReport:
    dataset: str
    split: str
    model: str
    metrics: dict[str, float]
    num_queries: int
    num_docs: int
    efficiency: dict[str, Any] = field(default_factory=dict)
    run: Run = field(default_factory=dict, repr=False)

    def to_json(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "split": self.split, "model": self.model, "metrics": self.metrics,
                "num_queries": self.num_queries, "num_docs": self.num_docs, **self.efficiency}


def open_or_build_index(dataset: BeirDataset, model: str, encoder, path: Path, bits: int = 8, backend: str = "lsr"
                        ) -> tuple[IndexReader, dict[str, Any]]:
    """The sparse index at `path` if it holds this model's index of this corpus for this backend, else one built
    there; with the encoding figures (measured now, or recorded when it was built)."""
    from .lucene import index_backend

    if (path / "meta.json").exists():
        reader = IndexReader(path)
        built_with = reader.info.get("model")
        if built_with != model_reference(model):
            raise LsrError(f"{path} was built with model {built_with!r}, not {model!r}")
        if reader.num_docs != len(dataset.corpus) or reader.doc_ids != dataset.doc_ids:
            raise LsrError(f"{path} indexes other documents than {dataset.name} (rebuild it or drop --index)")
        if index_backend(reader) != backend:
            raise LsrError(f"{path} was built for the {index_backend(reader)} backend, not {backend}")
        return reader, dict(reader.info.get("build", {}))
    figures = build_sparse_index(dataset, model, encoder, path, bits=bits, backend=backend)
    return IndexReader(path), figures


def build_index(dataset: BeirDataset, model: str, out: str | Path, options: EncoderOptions, *,
                dense: str | None = None, bits: int = 8, overwrite: bool = False, backend: str = "lsr"
                ) -> dict[str, float]:
    """`lsr index build`: the sparse index, the documents' text, and a dense store if `dense` names a model."""
    from lsr.api.service import build_dense_index, write_documents

    encoder = load_sparse_encoder(model, options)
    figures = build_sparse_index(dataset, model, encoder, out, bits=bits, overwrite=overwrite, backend=backend)
    if dense:
        dense_figures = build_dense_index(out, dataset, dense, max_length=options.max_length or DEFAULT_MAX_LENGTH,
                                          batch_size=options.batch_size)
        figures["dense_docs_per_s"] = dense_figures["docs_per_s"]
    else:
        write_documents(out, dataset)
    return figures


def evaluate_sparse(dataset: BeirDataset, model: str, options: EncoderOptions, index_dir: str | Path | None = None,
                    bits: int = 8, backend: str = "lsr") -> EvalReport:
    from .lucene import open_searcher

    encoder = load_sparse_encoder(model, options)
    with tempfile.TemporaryDirectory(prefix="lsr-eval-") as tmp:
        path = Path(index_dir or Path(tmp) / "index")
        reader, efficiency = open_or_build_index(dataset, model, encoder, path, bits, backend)
        searcher = open_searcher(reader, path)
        efficiency["index_bytes"] = searcher.size_bytes()
        efficiency["backend"] = backend
        run, vectors, encode_ms, search_ms = _timed_queries(dataset, encoder, searcher)

        doc_nnz = np.diff(np.asarray(reader.offsets))  # postings per term = document frequency
        efficiency.update({
            "avg_doc_nnz": float(reader.meta["num_postings"]) / reader.num_docs,
            "avg_query_nnz": float(vectors.nnz) / len(vectors),
            "flops": expected_flops(vectors, doc_nnz.astype(np.float64), reader.num_docs),
            "query_encode_ms": percentiles(encode_ms),
            "search_ms": percentiles(search_ms),
            "query_latency_ms": percentiles([a + b for a, b in zip(encode_ms, search_ms)]),
            "quantization": reader.meta["quantization"],
        })
    return EvalReport(dataset.name, dataset.split, model, evaluate_run(run, dataset.qrels), len(dataset.queries),
                      len(dataset.corpus), efficiency, run)


HYBRID_DEPTH = 100  # dense, hybrid and PRF runs are ranked to depth 100 (each list's top 100 is fused)


def evaluate_service(dataset: BeirDataset, model: str, options: EncoderOptions, *, dense: str | None, mode: str,
                     prf: bool, index_dir: str | Path | None = None, bits: int = 8,
                     ranking: dict[str, Any] | None = None, backend: str = "lsr") -> EvalReport:
    """Dense, hybrid and PRF modes through the query service, one query at a time (as the REST API runs)."""
    from lsr.api.service import SearchService, build_dense_index
    from lsr.index.dense import DenseStore, has_dense_store

    encoder = load_sparse_encoder(model, options)
    with tempfile.TemporaryDirectory(prefix="lsr-eval-") as tmp:
        path = Path(index_dir or Path(tmp) / "index")
        reader, efficiency = open_or_build_index(dataset, model, encoder, path, bits, backend)
        if mode != "sparse" or dense:
            dense = dense or "minilm"
            if not has_dense_store(path):
                figures = build_dense_index(path, dataset, dense, max_length=options.max_length or DEFAULT_MAX_LENGTH,
                                            batch_size=options.batch_size)
                efficiency["dense_docs_per_s"] = figures["docs_per_s"]
            else:
                built_with = DenseStore(path).info.get("model")
                if built_with != model_reference(dense):
                    raise LsrError(f"{path} holds a dense store of model {built_with!r}, not {dense!r}")
        service = SearchService(path, sparse_encoder=encoder)
        ranking = dict(ranking or {})
        service.search(query="warm up", k=HYBRID_DEPTH, mode=mode, prf=prf, **ranking)
        run: Run = {}
        latency = []
        for qid, text in dataset.queries.items():
            t0 = time.perf_counter()
            run[qid] = service.search(query=text, k=HYBRID_DEPTH, mode=mode, prf=prf, **ranking)
            latency.append((time.perf_counter() - t0) * 1e3)
        efficiency.update({"mode": mode, "prf": prf, "dense_model": dense, "depth": HYBRID_DEPTH, **ranking,
                           "query_latency_ms": percentiles(latency), "index_bytes": service.searcher.size_bytes()})
    name = model if mode == "sparse" else f"{model}+{dense}" if mode == "hybrid" else dense
    return EvalReport(dataset.name, dataset.split, f"{name} ({mode}{', prf' if prf else ''})",
                      evaluate_run(run, dataset.qrels), len(dataset.queries), len(dataset.corpus), efficiency, run)


def _timed_queries(dataset: BeirDataset, encoder, searcher):
    """One query at a time, as a user's request would come: encode, then search, each timed (after one
    untimed warm-up query, so compilation and first-call costs stay out of the percentiles)."""
    searcher.search(encoder.encode_queries(["warm up"]), k=RETRIEVAL_DEPTH)
    run: Run = {}
    vectors, encode_ms, search_ms = [], [], []
    for qid, text in dataset.queries.items():
        t0 = time.perf_counter()
        vector = encoder.encode_queries([text])
        t1 = time.perf_counter()
        run[qid] = searcher.search(vector, k=RETRIEVAL_DEPTH)
        t2 = time.perf_counter()
        vectors.append(vector)
        encode_ms.append((t1 - t0) * 1e3)
        search_ms.append((t2 - t1) * 1e3)
    return run, SparseBatch.concat(vectors), encode_ms, search_ms


def evaluate_bm25(dataset: BeirDataset, index_dir: str | Path | None = None) -> EvalReport:
    from .bm25 import BM25Searcher, build_bm25_index

    efficiency: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="lsr-bm25-") as tmp:
        path = Path(index_dir) if index_dir else Path(tmp) / "lucene"
        if not (path.exists() and any(path.iterdir())):
            start = time.perf_counter()
            build_bm25_index(dataset.doc_ids, [d.contents for d in dataset.corpus.values()], path)
            seconds = time.perf_counter() - start
            efficiency.update({"index_build_s": seconds, "docs_per_s": len(dataset.corpus) / seconds})
        searcher = BM25Searcher(path)
        searcher.search("warm up", k=RETRIEVAL_DEPTH)
        run: Run = {}
        latency = []
        for qid, text in dataset.queries.items():
            t0 = time.perf_counter()
            run[qid] = searcher.search(text, k=RETRIEVAL_DEPTH)
            latency.append((time.perf_counter() - t0) * 1e3)
        efficiency["query_latency_ms"] = percentiles(latency)
    return EvalReport(dataset.name, dataset.split, "bm25", evaluate_run(run, dataset.qrels), len(dataset.queries),
                      len(dataset.corpus), efficiency, run)


def evaluate(dataset: BeirDataset, model: str, options: EncoderOptions, index_dir: str | Path | None = None,
             bits: int = 8, *, dense: str | None = None, mode: str = "sparse", prf: bool = False,
             ranking: dict[str, Any] | None = None, backend: str = "lsr") -> EvalReport:
    """`ranking` holds the service's fusion, alpha and prf_placement (dense, hybrid and PRF modes); `backend` is
    the sparse search backend (lsr or lucene)."""
    from lsr.encoders import SPARSE_KINDS, resolve_model

    kind = resolve_model(model).kind
    if kind == "bm25":
        if dense or mode != "sparse" or prf or backend != "lsr":
            raise LsrError("bm25 runs alone: --dense, --mode, --prf and --backend need a SPLADE --model")
        return evaluate_bm25(dataset, index_dir)
    if kind not in SPARSE_KINDS:
        raise LsrError(f"model {model!r} is a {kind} model; pass a SPLADE model as --model and it as --dense")
    if mode not in ("sparse", "dense", "hybrid"):
        raise LsrError(f"--mode must be sparse, dense or hybrid, got {mode!r}")
    if mode == "sparse" and not prf:
        return evaluate_sparse(dataset, model, options, index_dir, bits, backend)
    return evaluate_service(dataset, model, options, dense=dense, mode=mode, prf=prf, index_dir=index_dir, bits=bits,
                            ranking=ranking, backend=backend)
