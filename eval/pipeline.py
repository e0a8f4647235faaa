"""The offline jobs: encode a BEIR corpus, build an index folder over it, and evaluate a model end to end with
efficiency figures next to quality.

Every evaluation ranks through `lsr.index.SearchService` (what `lsr search` and the REST API use), to an
explicit depth, whatever the mode: sparse, dense or hybrid, with or without PRF.
"""
from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from lsr.encoders import SPARSE_KINDS, load_sparse_encoder as load_encoder, resolve_model
from lsr.encoders.provider import check_same_weights, load_dense_encoder, model_identity, model_reference
from lsr.index import (IndexReader, IndexWriter, LsrError, Mode, Quantization, Ranking, Run, SearchOptions,
                       SearchService, SparseBatch, StoredDocument, add_dense_store)
from lsr.index.dense import dense_info, dense_part, has_dense_store
from lsr.index.documents import documents_part
from lsr.index.files import check_writable_target, failpoint
from lsr.index.lucene import BACKENDS, write_lucene_index
from lsr.index.shards import ShardedWriter, open_shards
from lsr.index.storage import is_lsr_index
from lsr.index.folder import amend_index
from lsr.index.termstats import collection_stats_part, read_collection_stats

from .beir import BeirDataset
from .metrics import evaluate_run

Log = Callable[[str], None]


@dataclass
class EncoderOptions:
    max_length: int | None = None  # None: the model's recorded setting, else DEFAULT_MAX_LENGTH
    batch_size: int = 32
    head: str = "auto"
    show_progress: bool = True
    device: str | None = None  # lsr.encoders.device names; None: auto
    collection_idf_weight: float | None = None  # inference-free models: None = the model's recorded weight


def load_sparse_encoder(model: str, options: EncoderOptions):
    """The sparse encoder for a registered name, folder or hub id; a clear error for other kinds."""
    spec = resolve_model(model)
    extra = {}
    if options.collection_idf_weight is not None:
        if spec.kind != "splade":
            raise LsrError(f"--collection-idf-weight goes with an inference-free SPLADE model, not {model!r}")
        extra["collection_idf_weight"] = options.collection_idf_weight
    encoder = load_encoder(spec, max_length=options.max_length, batch_size=options.batch_size, head=options.head,
                           show_progress=options.show_progress, device=options.device, **extra)
    if extra and not encoder.inference_free:
        raise LsrError(f"--collection-idf-weight goes with an inference-free model; {model!r} encodes its queries")
    return encoder


def collection_parts(encoder, dataset: BeirDataset) -> list:
    """The index part an inference-free encoder's query side needs: the collection's document frequencies."""
    stats = getattr(encoder, "collection_stats", lambda texts: None)([d.contents for d in dataset.corpus.values()])
    return [] if stats is None else [collection_stats_part(stats)]


def check_milvus_options(backend: str, milvus_uri: str | None = None, collection: str | None = None,
                         milvus_index: str = "SPARSE_INVERTED_INDEX") -> None:
    """The Milvus options go with the Milvus backend, and a collection name is one Milvus takes."""
    if backend != "milvus" and (milvus_uri or collection or milvus_index != "SPARSE_INVERTED_INDEX"):
        raise LsrError("--milvus-uri, --collection and --milvus-index go with --backend milvus")
    if backend == "milvus":
        from lsr.index.milvus import build_collection_name

        build_collection_name(collection, True)


def check_build(model: str, *, dense: str | None = None, bits: int = 8, backend: str = "lsr") -> None:
    """Everything about a build that can be checked before any model loads: names, kinds, bits, backend."""
    if backend not in BACKENDS:
        raise LsrError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    Quantization.fit(1.0, bits)
    kind = resolve_model(model).kind
    if kind not in SPARSE_KINDS:
        raise LsrError(f"model {model!r} is a {kind} model; pass a SPLADE model as --model"
                       + (" and a dense one as --dense" if kind == "dense" else ""))
    if dense is not None and resolve_model(dense).kind != "dense":
        raise LsrError(f"--dense {dense!r} is a {resolve_model(dense).kind} model, not a dense encoder "
                       "(e.g. minilm or a sentence-transformers folder)")


def _documents(dataset: BeirDataset) -> list[StoredDocument]:
    return [StoredDocument(doc_id, d.title, d.text) for doc_id, d in dataset.corpus.items()]


def _encode_dense(dataset: BeirDataset, model: str, max_length: int | None, batch_size: int, encoder=None):
    encoder = encoder or load_dense_encoder(model, max_length=max_length, batch_size=batch_size)
    start = time.perf_counter()
    vectors = encoder.encode_documents([d.contents for d in dataset.corpus.values()])
    encode_s = time.perf_counter() - start
    figures = {"encode_s": encode_s, "docs_per_s": len(dataset.corpus) / max(encode_s, 1e-9)}
    info = {**model_identity(model), "max_length": encoder.max_length, "dataset": dataset.name,
            "build": figures}
    return vectors, info, figures


def write_shards(out: Path, docs: SparseBatch, doc_ids: list[str], *, shards: int, vocab_size: int, bits: int,
                 info: dict[str, Any], vectors: np.ndarray | None = None, dense_meta: dict | None = None,
                 documents: list[StoredDocument] | None = None, overwrite: bool = False, log: Log | None = None,
                 show_progress: bool = False, quantization: Quantization | None = None, parts: list = ()) -> None:
    """A sharded index folder of encoded documents: one quantisation scale over all of them (fitted as a plain
    build fits it, or `quantization`), each shard with its slice of the dense vectors and documents and the
    whole-collection `parts` (the collection statistics), published whole."""
    from tqdm.auto import tqdm

    quant = quantization or Quantization.fit(float(docs.weights.max()) if docs.nnz else 1.0, bits)
    writer = ShardedWriter(out, num_docs=len(doc_ids), shards=shards, overwrite=overwrite, log=log)
    with writer, tqdm(total=shards, desc="writing shards", unit="shard", disable=not show_progress) as bar:
        for i, (a, b) in enumerate(writer.ranges):
            shard_parts = list(parts)
            if vectors is not None:
                shard_parts.append(dense_part(vectors[a:b], dense_meta))
            if documents is not None:
                shard_parts.append(documents_part(documents[a:b]))
            writer.write_shard(i, docs.select(np.arange(a, b)), doc_ids[a:b], vocab_size=vocab_size,
                               quantization=quant, info=info, parts=shard_parts)
            bar.update(1)
        writer.commit(info)


def quantization_of(index_dir: str | Path, bits: int) -> Quantization:
    """The quantisation an existing index (plain or sharded) was built with, for a build to be merged with it."""
    from lsr.index.shards import index_shards

    quant = IndexReader(index_shards(Path(index_dir))[0], verify_checksums=False, scan=False).quantization
    if quant.bits != bits:
        raise LsrError(f"{index_dir} has {quant.bits}-bit impacts; pass --bits {quant.bits}")
    return quant


def build_index(dataset: BeirDataset, model: str, out: str | Path, options: EncoderOptions, *,
                dense: str | None = None, bits: int = 8, overwrite: bool = False, backend: str = "lsr",
                encoder=None, documents: bool = True, shards: int = 1, log: Log | None = None,
                milvus_uri: str | None = None, collection: str | None = None,
                milvus_index: str = "SPARSE_INVERTED_INDEX", quantization: Quantization | None = None
                ) -> dict[str, float]:
    """`lsr index build`: the sparse index, the documents' text, a dense store if `dense` names a model, and a
    Lucene index for the `lucene` backend or a Milvus collection for `milvus` (at `milvus_uri`, default a
    Milvus Lite file in the folder; the dense vectors go into it too; `milvus_index` its sparse index), all in
    one folder that appears whole or not at all; with `shards` > 1, a sharded folder of that many (lsr
    backend); `quantization` fixes the scale (`quantization_of` an index this one is to be merged with). Names and the target are checked
    before any model loads; `encoder` (an already loaded sparse encoder) skips loading; `documents=False` leaves
    the text out (hits then carry ids and scores only)."""
    out = Path(out)
    check_build(model, dense=dense, bits=bits, backend=backend)
    check_milvus_options(backend, milvus_uri, collection, milvus_index)
    check_writable_target(out, is_lsr_index if overwrite else None)
    encoder = encoder or load_sparse_encoder(model, options)
    start = time.perf_counter()
    docs = encoder.encode_documents([d.contents for d in dataset.corpus.values()])
    encode_s = time.perf_counter() - start
    failpoint("sparse-encoded")
    figures = {"encode_s": encode_s, "docs_per_s": len(dataset.corpus) / max(encode_s, 1e-9)}
    parts = [write_lucene_index] if backend == "lucene" else []
    vectors = dense_meta = None
    if dense:
        vectors, dense_meta, dense_figures = _encode_dense(dataset, dense, options.max_length, options.batch_size)
        figures["dense_docs_per_s"] = dense_figures["docs_per_s"]
        parts.append(dense_part(vectors, dense_meta))
    if backend == "milvus":
        from lsr.index.milvus import milvus_part

        parts.append(milvus_part(milvus_uri, collection, dense=vectors, sparse_index=milvus_index,
                                 progress=options.show_progress))
    stats_parts = collection_parts(encoder, dataset)
    parts.extend(stats_parts)
    if documents:
        parts.append(documents_part(_documents(dataset)))
    info = {**model_identity(model), "max_length": encoder.max_length, "dataset": dataset.name,
            "build": figures, "backend": backend}
    start = time.perf_counter()
    if shards != 1:
        if backend != "lsr":
            raise LsrError("--shards builds the lsr backend only")
        write_shards(out, docs, dataset.doc_ids, shards=shards, vocab_size=encoder.vocab_size, bits=bits, info=info,
                     vectors=vectors, dense_meta=dense_meta, documents=_documents(dataset) if documents else None,
                     overwrite=overwrite, log=log, show_progress=options.show_progress, quantization=quantization,
                     parts=stats_parts)
        return {**figures, "index_build_s": time.perf_counter() - start}
    with IndexWriter(out, vocab_size=encoder.vocab_size, bits=bits, info=info, overwrite=overwrite, parts=parts,
                     quantization=quantization, log=log) as writer:
        writer.add(docs, dataset.doc_ids)
    return {**figures, "index_build_s": time.perf_counter() - start}


def add_dense(index_dir: str | Path, dataset: BeirDataset, model: str = "minilm", *, max_length: int | None = None,
              batch_size: int = 32, overwrite: bool = False, encoder=None) -> dict[str, float]:
    """Add a dense store to an existing index folder built over `dataset` (atomically: the folder is re-staged)."""
    reader = IndexReader(index_dir)
    if reader.doc_ids != dataset.doc_ids:
        raise LsrError(f"{index_dir} indexes other documents than {dataset.name} (build both from the same corpus)")
    vectors, info, figures = _encode_dense(dataset, model, max_length, batch_size, encoder)
    add_dense_store(index_dir, vectors, info=info, overwrite=overwrite)
    return figures


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


def open_or_build_index(dataset: BeirDataset, model: str, encoder, path: Path, options: EncoderOptions, *,
                        bits: int = 8, backend: str = "lsr", dense: str | None = None,
                        milvus_uri: str | None = None) -> dict[str, Any]:
    """Make `path` hold this model's index of this corpus for this backend (with a dense store of `dense` if
    given): reused when it does (a plain folder of an inference-free model built before indexes kept collection
    statistics gets them from the dataset), built there when nothing is; returns the encoding figures (measured
    now or recorded at build)."""
    if not (path / "meta.json").exists():
        return build_index(dataset, model, path, options, dense=dense, bits=bits, backend=backend, encoder=encoder,
                           milvus_uri=milvus_uri)
    index = open_shards(path)
    index.close()
    built_with = index.info.get("model")
    if built_with != model_reference(model):
        raise LsrError(f"{path} was built with model {built_with!r}, not {model!r}")
    check_same_weights(index.info, path)
    if index.num_docs != len(dataset.corpus) or index.doc_ids != dataset.doc_ids:
        raise LsrError(f"{path} indexes other documents than {dataset.name} (rebuild it or drop --index)")
    built_for = index.info.get("backend", "lsr")
    if built_for != backend:
        raise LsrError(f"{path} was built for the {built_for} backend, not {backend}")
    figures = dict(index.info.get("build", {}))
    if index.num_shards == 1 and read_collection_stats(path) is None:
        parts = collection_parts(encoder, dataset)  # built before indexes kept them: added from the dataset
        if parts:
            amend_index(path, parts[0])
    if dense and index.num_shards > 1:
        if not index.has_dense or (index.dense_info or {}).get("model") != model_reference(dense):
            raise LsrError(f"{path} is sharded without a dense store of {dense!r} (build it with --dense {dense})")
        check_same_weights(index.dense_info, f"{path}'s dense store")
    elif dense:
        if not has_dense_store(path):
            figures["dense_docs_per_s"] = add_dense(path, dataset, dense, max_length=options.max_length,
                                                    batch_size=options.batch_size)["docs_per_s"]
        else:
            stored = dense_info(path)
            if stored.get("model") != model_reference(dense):
                raise LsrError(f"{path} holds a dense store of model {stored.get('model')!r}, not {dense!r}")
            check_same_weights(stored, f"{path}'s dense store")
    return figures


def _recall_vs_exact(run: Run, path: Path, dataset: BeirDataset, ranking: Ranking, encoder, dense_encoder,
                     k: int = 10) -> float:
    """Mean over the queries of |approximate top k ∩ exact top k| / |exact top k| (queries with no exact hit
    left out): the exact ranking is the same service opened with the default (exact) search options."""
    exact = SearchService(path, sparse_encoder=encoder, dense_encoder=dense_encoder)
    try:
        recalls = []
        for qid, text in dataset.queries.items():
            want = {h.doc_id for h in exact.rank(query=text, k=k, ranking=ranking).hits}
            if want:
                recalls.append(len(want & {h.doc_id for h in run[qid][:k]}) / len(want))
    finally:
        exact.close()
    return float(np.mean(recalls)) if recalls else 1.0


def evaluate_bm25(dataset: BeirDataset, index_dir: str | Path | None = None, depth: int = 100) -> EvalReport:
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
        searcher.search("warm up", k=depth)
        run: Run = {}
        latency = []
        for qid, text in dataset.queries.items():
            t0 = time.perf_counter()
            run[qid] = searcher.search(text, k=depth)
            latency.append((time.perf_counter() - t0) * 1e3)
        efficiency.update({"depth": depth, "query_latency_ms": percentiles(latency)})
    return EvalReport(dataset.name, dataset.split, "bm25", evaluate_run(run, dataset.qrels), len(dataset.queries),
                      len(dataset.corpus), efficiency, run)


def evaluate(dataset: BeirDataset, model: str, options: EncoderOptions, index_dir: str | Path | None = None,
             bits: int = 8, *, dense: str | None = None, ranking: Ranking | None = None, depth: int | None = None,
             backend: str = "lsr", milvus_uri: str | None = None,
             search_options: SearchOptions = SearchOptions()) -> EvalReport:
    """Rank every judged query through the search service, one at a time as a user's request would come, to
    `depth` (default: the ranking's fusion depth, 100), and score the run. The index lives in `index_dir`
    (reused when it holds this model's index of this corpus) or in a temporary folder. `search_options` that
    make the sparse search approximate (a budget, a prune factor, Milvus's drop ratio...) also rank every query
    exactly and report the recall@10 of the approximate top 10 against the exact one."""
    ranking = ranking or Ranking()
    depth = depth or ranking.depth
    if depth <= 0:
        raise LsrError(f"depth must be positive, got {depth}")
    kind = resolve_model(model).kind
    if kind == "bm25":
        if (dense or ranking != Ranking(depth=ranking.depth) or backend != "lsr"
                or search_options != SearchOptions()):
            raise LsrError("bm25 runs alone: --dense, --mode, --prf, --backend and the search options need a SPLADE "
                           "--model")
        return evaluate_bm25(dataset, index_dir, depth)
    if ranking.mode != Mode.sparse:
        dense = dense or "minilm"
    check_build(model, dense=dense, bits=bits, backend=backend)
    encoder = load_sparse_encoder(model, options)
    with tempfile.TemporaryDirectory(prefix="lsr-eval-") as tmp:
        path = Path(index_dir or Path(tmp) / "index")
        efficiency = open_or_build_index(dataset, model, encoder, path, options, bits=bits, backend=backend,
                                         dense=dense, milvus_uri=milvus_uri)
        dense_encoder = None
        if dense:
            dense_encoder = load_dense_encoder(dense, max_length=dense_info(path).get("max_length"),
                                               batch_size=options.batch_size)
        service = SearchService(path, sparse_encoder=encoder, dense_encoder=dense_encoder,
                                search_options=search_options)
        try:  # a Milvus-backed folder holds a connection (and a Milvus Lite server): given back at the end
            service.rank(query="warm up", k=depth, ranking=ranking)  # first-call costs out of timing
            run: Run = {}
            vectors, encode_ms, search_ms, latency = [], [], [], []
            for qid, text in dataset.queries.items():
                t0 = time.perf_counter()
                ranked = service.rank(query=text, k=depth, ranking=ranking)
                latency.append((time.perf_counter() - t0) * 1e3)
                run[qid] = ranked.hits
                encode_ms.append(ranked.encode_ms)
                search_ms.append(ranked.search_ms)
                if ranked.sparse_query is not None:
                    vectors.append(ranked.sparse_query)
        finally:
            service.close()
        if not search_options.exact:
            efficiency["recall@10_vs_exact"] = _recall_vs_exact(run, path, dataset, ranking, encoder, dense_encoder)
        index = service.index
        efficiency.update({
            "backend": backend, **{k: v for k, v in ranking.to_json().items() if k != "depth"},
            "fusion_depth": ranking.depth, "dense_model": dense, "depth": depth,
            "drop_ratio": search_options.drop_ratio, "search_options": search_options.to_json(),
            "index_bytes": index.size_bytes(), "shards": index.num_shards,
            "avg_doc_nnz": float(index.meta["num_postings"]) / index.num_docs,
            "query_encode_ms": percentiles(encode_ms), "search_ms": percentiles(search_ms),
            "query_latency_ms": percentiles(latency), "quantization": index.meta["quantization"],
        })
        if vectors:
            queries = SparseBatch.concat(vectors)
            docs_df = index.postings_per_term.astype(np.float64)
            efficiency.update({"avg_query_nnz": float(queries.nnz) / len(queries),
                               "flops": expected_flops(queries, docs_df, index.num_docs)})
    mode = ranking.mode
    name = model if mode == Mode.sparse else f"{model}+{dense}" if mode == Mode.hybrid else dense
    label = model if mode == Mode.sparse and not ranking.prf else f"{name} ({ranking.label})"
    return EvalReport(dataset.name, dataset.split, label, evaluate_run(run, dataset.qrels), len(dataset.queries),
                      len(dataset.corpus), efficiency, run)
