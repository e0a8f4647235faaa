"""The query service behind the REST endpoint: one index folder, its encoders, sparse + dense + PRF ranking.

An index folder holds the sparse impact index (index/storage.py), optionally a dense store beside it in the
same doc_idx space (index/dense.py, added by `build_dense_index`) and `docs.jsonl` (doc_id, title, text) so
hits can carry titles and snippets. The sparse model is the one recorded in the index meta (`info["model"]`),
the dense model the one recorded in the dense meta.

Ranking (`SearchService.search`):
- sparse: SPLADE query vector -> exact top-k over the impact index.
- dense: dense query vector -> exact inner-product top-k over the dense store.
- hybrid: both lists to depth `max(k, FUSION_DEPTH)`, fused by min-max interpolation
  (`alpha * sparse + (1 - alpha) * dense`) or RRF.
- prf: Rocchio on the sparse query vector (mode sparse), Vector-PRF on the dense one (modes dense and hybrid),
  feedback from the top `prf_depth` documents. In hybrid mode the placement follows "To Interpolate or not
  to Interpolate" (SIGIR 2022), where Vector-PRF runs on the dense side:
    before: feedback from the fused first-round list; the PRF'd dense list is the answer;
    after:  feedback from the dense list itself; the PRF'd dense list is fused with the sparse list;
    both:   feedback from the fused list, and the PRF'd dense list fused with the sparse list (best there).
"""
from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lsr.eval.lucene import index_backend, open_searcher
from lsr.index import (DenseStore, Hit, IndexReader, LsrError, feedback_matrix, has_dense_store,
                       interpolate_hits, rocchio_sparse, rrf_hits, vector_prf, write_dense_store)
from lsr.index.prf import PRF_ALPHA, PRF_BETA, PRF_DEPTH, PRF_TOP_TERMS

DOCS_FILE = "docs.jsonl"
MODES = ("sparse", "dense", "hybrid")
FUSIONS = ("linear", "rrf")
PRF_PLACEMENTS = ("before", "after", "both")
FUSION_DEPTH = 100  # each list's depth before hybrid fusion (DESIGN.md §4: min-max hybrid over the top 100)
DEFAULT_ALPHA = 0.5


class DocumentNotFound(LsrError):
    """A doc_id that the index does not hold (the API answers 404)."""


@dataclass(frozen=True)
class StoredDocument:
    doc_id: str
    title: str | None
    text: str | None


def write_documents(path: str | Path, dataset) -> Path:
    """Write `docs.jsonl` (doc_id, title, text per line, in corpus order) into the index folder `path`,
    atomically; when the folder holds an index, its doc_ids must be the dataset's."""
    path = Path(path)
    ids_file = path / "doc_ids.json"
    if ids_file.is_file() and json.loads(ids_file.read_text(encoding="utf-8")) != dataset.doc_ids:
        raise LsrError(f"{path} indexes other documents than {dataset.name}")
    path.mkdir(parents=True, exist_ok=True)
    tmp = path / f".{DOCS_FILE}.tmp-{os.getpid()}"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            for doc_id, doc in dataset.corpus.items():
                f.write(json.dumps({"doc_id": doc_id, "title": doc.title, "text": doc.text}, ensure_ascii=False))
                f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path / DOCS_FILE)
    finally:
        tmp.unlink(missing_ok=True)
    return path / DOCS_FILE


def load_dense_encoder(model: str, *, max_length: int = 256, batch_size: int = 32):
    from lsr.encoders import DenseEncoder, resolve_model

    spec = resolve_model(model)
    if spec.kind != "dense":
        raise LsrError(f"model {model!r} is a {spec.kind} model, not a dense encoder")
    return DenseEncoder(spec.source, max_length=max_length, batch_size=batch_size)


def build_dense_index(index_dir: str | Path, dataset, model: str = "minilm", *, max_length: int = 256,
                      batch_size: int = 32, overwrite: bool = False, encoder=None) -> dict[str, float]:
    """Add a dense store (and docs.jsonl) to an existing sparse index folder built over `dataset`."""
    from lsr.eval.pipeline import model_reference

    reader = IndexReader(index_dir)
    if reader.doc_ids != dataset.doc_ids:
        raise LsrError(f"{index_dir} indexes other documents than {dataset.name} (build both from the same corpus)")
    encoder = encoder or load_dense_encoder(model, max_length=max_length, batch_size=batch_size)
    start = time.perf_counter()
    vectors = encoder.encode_documents([d.contents for d in dataset.corpus.values()])
    encode_s = time.perf_counter() - start
    figures = {"encode_s": encode_s, "docs_per_s": len(dataset.corpus) / max(encode_s, 1e-9)}
    info = {"model": model_reference(model), "max_length": encoder.max_length, "dataset": dataset.name,
            "build": figures}
    write_dense_store(index_dir, vectors, info=info, overwrite=overwrite)
    write_documents(index_dir, dataset)
    return figures


def _read_documents(path: Path) -> dict[str, StoredDocument]:
    docs: dict[str, StoredDocument] = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                r = json.loads(line)
                docs[str(r["doc_id"])] = StoredDocument(str(r["doc_id"]), r.get("title"), r.get("text"))
            except (ValueError, KeyError, TypeError) as e:
                raise LsrError(f"{path}:{lineno}: not a document record ({e})") from None
    return docs


class SearchService:
    """Owns one index folder and its encoders; every method is keyword-only and thread-safe."""

    def __init__(self, index_dir: str | Path, *, verify_checksums: bool = True, dense_backend: str = "auto",
                 sparse_encoder=None, dense_encoder=None) -> None:
        from lsr.eval.pipeline import EncoderOptions, load_sparse_encoder

        self.path = Path(index_dir)
        self.reader = IndexReader(self.path, verify_checksums=verify_checksums)
        self.searcher = open_searcher(self.reader, self.path)  # ours, or Lucene for `--backend lucene`
        model = self.reader.info.get("model")
        if not model and sparse_encoder is None:
            raise LsrError(f"{self.path}: the index does not record its model")
        self.sparse_model = model
        self.sparse_encoder = sparse_encoder or load_sparse_encoder(model, EncoderOptions(
            max_length=int(self.reader.info.get("max_length", 256)), batch_size=1, show_progress=False))
        self.dense: DenseStore | None = None
        self.dense_encoder = None
        self.dense_model: str | None = None
        if has_dense_store(self.path):
            self.dense = DenseStore(self.path, verify_checksums=verify_checksums, backend=dense_backend)
            self.dense_model = self.dense.info.get("model")
            if dense_encoder is None and not self.dense_model:
                raise LsrError(f"{self.path}: the dense store does not record its model")
            self.dense_encoder = dense_encoder or load_dense_encoder(
                self.dense_model, max_length=int(self.dense.info.get("max_length", 256)), batch_size=1)
        docs_path = self.path / DOCS_FILE
        self.documents: dict[str, StoredDocument] = _read_documents(docs_path) if docs_path.is_file() else {}
        self._doc_index = {d: i for i, d in enumerate(self.reader.doc_ids)}
        self._feedback = None
        self._feedback_lock = threading.Lock()
        self._encode_lock = threading.Lock()

    # -- documents ----------------------------------------------------------------------------------
    def document(self, *, doc_id: str) -> StoredDocument:
        if doc_id not in self._doc_index:
            raise DocumentNotFound(f"no document with doc_id {doc_id!r} in this index")
        return self.documents.get(doc_id) or StoredDocument(doc_id, None, None)

    def stats(self) -> dict[str, Any]:
        meta = self.reader.meta
        return {
            "num_docs": self.reader.num_docs,
            "vocab_size": self.reader.vocab_size,
            "num_postings": int(meta["num_postings"]),
            "avg_doc_nnz": int(meta["num_postings"]) / max(self.reader.num_docs, 1),
            "quantization": meta["quantization"],
            "sparse_model": self.sparse_model,
            "dense_model": self.dense_model,
            "dense_dim": self.dense.dim if self.dense else None,
            "dense_backend": self.dense.backend if self.dense else None,
            "has_documents": bool(self.documents),
            "index_bytes": self.searcher.size_bytes() + (self.dense.size_bytes() if self.dense else 0),
            "backend": index_backend(self.reader),
            "modes": list(self.modes),
            "dataset": self.reader.info.get("dataset"),
        }

    @property
    def modes(self) -> tuple[str, ...]:
        return MODES if self.dense is not None else ("sparse",)

    def warm_up(self) -> None:
        """One query through every available mode, so first-call costs (lazy imports, JIT, thread pools)
        are paid at startup rather than by the first user."""
        for mode in self.modes:
            self.search(query="warm up", k=10, mode=mode, prf=True)

    # -- search -------------------------------------------------------------------------------------
    def search(self, *, query: str, k: int = 10, mode: str = "sparse", fusion: str = "linear",
               alpha: float = DEFAULT_ALPHA, prf: bool = False, prf_placement: str = "both",
               prf_depth: int = PRF_DEPTH) -> list[Hit]:
        if not isinstance(query, str) or not query.strip():
            raise LsrError("empty query")
        if not isinstance(k, int) or k <= 0:
            raise LsrError(f"k must be a positive integer, got {k!r}")
        if mode not in MODES:
            raise LsrError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        if fusion not in FUSIONS:
            raise LsrError(f"fusion must be one of {', '.join(FUSIONS)}, got {fusion!r}")
        if prf_placement not in PRF_PLACEMENTS:
            raise LsrError(f"prf_placement must be one of {', '.join(PRF_PLACEMENTS)}, got {prf_placement!r}")
        if not (0.0 <= alpha <= 1.0):
            raise LsrError(f"alpha must be in [0, 1], got {alpha}")
        if prf_depth <= 0:
            raise LsrError(f"prf_depth must be positive, got {prf_depth}")
        if mode != "sparse" and self.dense is None:
            raise LsrError(f"mode {mode!r} needs a dense store; this index has none (build it with --dense MODEL)")

        if mode == "sparse":
            q = self._encode_sparse(query)
            hits = self._sparse(q, k if not prf else max(k, prf_depth))
            if prf:
                hits = self._sparse(self._rocchio(q, hits[:prf_depth]), k)
            return hits[:k]
        qd = self._encode_dense(query)
        if mode == "dense":
            hits = self._dense(qd, k if not prf else max(k, prf_depth))
            if prf:
                hits = self._dense(self._vector_prf(qd, hits[:prf_depth]), k)
            return hits[:k]

        depth = max(k, FUSION_DEPTH)
        sparse_hits = self._sparse(self._encode_sparse(query), depth)
        dense_hits = self._dense(qd, depth)
        fused = self._fuse(sparse_hits, dense_hits, fusion, alpha, depth)
        if not prf:
            return fused[:k]
        feedback = dense_hits if prf_placement == "after" else fused
        dense_prf = self._dense(self._vector_prf(qd, feedback[:prf_depth]), depth)
        if prf_placement == "before":
            return dense_prf[:k]
        return self._fuse(sparse_hits, dense_prf, fusion, alpha, k)

    # Encoders run one query at a time: Hugging Face fast tokenizers are not safe to call from several threads
    # ("Already borrowed"), and torch already spreads one forward pass over the cores. Search runs unlocked.
    def _encode_sparse(self, query: str):
        with self._encode_lock:
            return self.sparse_encoder.encode_queries([query])

    def _encode_dense(self, query: str) -> np.ndarray:
        with self._encode_lock:
            return self.dense_encoder.encode_queries([query])[0]

    def _fuse(self, sparse_hits: list[Hit], dense_hits: list[Hit], fusion: str, alpha: float, depth: int) -> list[Hit]:
        if fusion == "rrf":
            return rrf_hits([sparse_hits, dense_hits], depth=depth)
        return interpolate_hits(sparse_hits, dense_hits, alpha=alpha, depth=depth)

    def _sparse(self, query, k: int) -> list[Hit]:
        return self.searcher.search(query, k=k)

    def _dense(self, vector: np.ndarray, k: int) -> list[Hit]:
        assert self.dense is not None
        return self.dense.search(vector, k=k)

    def _rows(self, hits: list[Hit]) -> np.ndarray:
        return np.array([self._doc_index[h.doc_id] for h in hits], dtype=np.int64)

    def _rocchio(self, query, feedback_hits: list[Hit]):
        with self._feedback_lock:
            if self._feedback is None:  # documents x terms weights, built on first use
                self._feedback = feedback_matrix(self.reader)
        return rocchio_sparse(query, self._feedback[self._rows(feedback_hits)], alpha=PRF_ALPHA, beta=PRF_BETA,
                              top_terms=PRF_TOP_TERMS)

    def _vector_prf(self, vector: np.ndarray, feedback_hits: list[Hit]) -> np.ndarray:
        assert self.dense is not None
        return vector_prf(vector, self.dense.vectors[self._rows(feedback_hits)], alpha=PRF_ALPHA, beta=PRF_BETA)
