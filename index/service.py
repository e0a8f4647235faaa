"""The search layer: one index folder, its encoders, sparse + dense + PRF ranking. The REST API, the CLI and
evaluation all rank through `SearchService.rank`, so what is evaluated is what users get.

An index folder holds the sparse impact index (storage.py), optionally a dense store in the same doc_idx space
(dense.py) and `docs.jsonl` (documents.py), and, for the Lucene backend, a Lucene index (lucene.py). The
encoders are injected through the protocols this package declares (protocols.py): explicitly, or by an
`EncoderProvider` that loads the models the folder records (`lsr.encoders.ModelProvider`), so this module
needs no torch.

Ranking (`Ranking` says how; see ranking.py):
- sparse: SPLADE query vector -> exact top-k over the impact index (or Lucene's).
- dense: dense query vector -> exact inner-product top-k over the dense store.
- hybrid: both lists to `max(k, depth)`, fused by min-max interpolation or RRF.
- prf: Rocchio on the sparse query vector (mode sparse), Vector-PRF on the dense one (modes dense and hybrid).
  In hybrid mode the placement follows "To Interpolate or not to Interpolate" (SIGIR 2022), where Vector-PRF
  runs on the dense side:
    before: feedback from the fused first-round list; the PRF'd dense list is the answer;
    after:  feedback from the dense list itself; the PRF'd dense list is fused with the sparse list;
    both:   feedback from the fused list, and the PRF'd dense list fused with the sparse list (best there).
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .dense import DenseStore, has_dense_store
from .documents import DocumentNotFound, StoredDocument, read_documents
from .errors import LsrError
from .fusion import interpolate_hits, rrf_hits
from .hits import Hit
from .lucene import index_backend, open_dense_store, open_searcher
from .prf import feedback_matrix, rocchio_sparse, vector_prf
from .protocols import DenseQueryEncoder, EncoderProvider, QueryEncoder
from .ranking import Fusion, Mode, PrfPlacement, Ranking
from .sparse import SparseBatch
from .storage import IndexReader


@dataclass
class Ranked:
    """One ranked query: the hits, the time spent encoding and searching, and the sparse query vector."""
    hits: list[Hit]
    encode_ms: float = 0.0
    search_ms: float = 0.0
    sparse_query: SparseBatch | None = field(default=None, repr=False)


class SearchService:
    """Owns one index folder and its encoders; every method is keyword-only and thread-safe."""

    def __init__(self, index_dir: str | Path, *, encoders: EncoderProvider | None = None,
                 sparse_encoder: QueryEncoder | None = None, dense_encoder: DenseQueryEncoder | None = None,
                 verify_checksums: bool = True, dense_backend: str = "auto") -> None:
        self.path = Path(index_dir)
        self.reader = IndexReader(self.path, verify_checksums=verify_checksums)
        self.searcher = open_searcher(self.reader, self.path)  # ours, Lucene or Milvus, per the folder's backend
        self.sparse_model = self.reader.info.get("model")
        if sparse_encoder is None:
            if encoders is None or not self.sparse_model:
                raise LsrError(f"{self.path}: no sparse query encoder (the index records no model)")
            sparse_encoder = encoders.sparse_query_encoder(self.reader.info)
        self.sparse_encoder = sparse_encoder
        self.dense: DenseStore | None = None
        self.dense_encoder = None
        self.dense_model: str | None = None
        if has_dense_store(self.path):
            self.dense = open_dense_store(self.reader, self.path, backend=dense_backend,  # Milvus's for milvus
                                          # hashed with the rest of the folder when its meta covers it
                                          verify_checksums=verify_checksums and not self.reader.covers_folder)
            self.dense_model = self.dense.info.get("model")
            if dense_encoder is None:
                if encoders is None or not self.dense_model:
                    raise LsrError(f"{self.path}: no dense query encoder (the dense store records no model)")
                dense_encoder = encoders.dense_query_encoder(self.dense.info)
            self.dense_encoder = dense_encoder
        self.documents: dict[str, StoredDocument] = read_documents(self.path, self.reader.doc_ids)
        self._doc_index = {d: i for i, d in enumerate(self.reader.doc_ids)}
        self._feedback = None
        self._feedback_lock = threading.Lock()
        self._encode_lock = threading.Lock()

    def close(self) -> None:
        """Give back what the searchers hold outside this process (Milvus connections, a Milvus Lite server)."""
        for part in (self.searcher, self.dense):
            if hasattr(part, "close"):
                part.close()

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
        return tuple(m.value for m in Mode) if self.dense is not None else (Mode.sparse.value,)

    def warm_up(self) -> None:
        """One query through every available mode, so first-call costs (lazy imports, JIT, thread pools)
        are paid at startup rather than by the first user."""
        for mode in self.modes:
            self.rank(query="warm up", k=10, ranking=Ranking(mode=mode, prf=True))

    # -- search -------------------------------------------------------------------------------------
    def search(self, *, query: str, k: int = 10, ranking: Ranking | None = None, **changes: Any) -> list[Hit]:
        """The top k hits; `ranking` (or field changes to the default one, e.g. `mode="hybrid"`) says how."""
        if changes:
            ranking = (ranking or Ranking()).with_(**changes)
        return self.rank(query=query, k=k, ranking=ranking).hits

    def rank(self, *, query: str, k: int = 10, ranking: Ranking | None = None) -> Ranked:
        r = ranking or Ranking()
        if not isinstance(query, str) or not query.strip():
            raise LsrError("empty query")
        if not isinstance(k, int) or isinstance(k, bool) or k <= 0:
            raise LsrError(f"k must be a positive integer, got {k!r}")
        if r.mode != Mode.sparse and self.dense is None:
            raise LsrError(f"mode {r.mode.value!r} needs a dense store; this index has none (build it with "
                           "--dense MODEL)")
        out = Ranked([])
        if r.mode == Mode.sparse:
            q = out.sparse_query = self._encode_sparse(query, out)
            hits = self._sparse(q, max(k, r.prf_depth) if r.prf else k, out)
            if r.prf:
                hits = self._sparse(self._rocchio(q, hits[:r.prf_depth], r), k, out)
            out.hits = hits[:k]
            return out
        qd = self._encode_dense(query, out)
        if r.mode == Mode.dense:
            hits = self._dense(qd, max(k, r.prf_depth) if r.prf else k, out)
            if r.prf:
                hits = self._dense(self._vector_prf(qd, hits[:r.prf_depth], r), k, out)
            out.hits = hits[:k]
            return out

        depth = max(k, r.depth)
        out.sparse_query = self._encode_sparse(query, out)
        sparse_hits = self._sparse(out.sparse_query, depth, out)
        dense_hits = self._dense(qd, depth, out)
        fused = self._fuse(sparse_hits, dense_hits, r, depth)
        if not r.prf:
            out.hits = fused[:k]
            return out
        feedback = dense_hits if r.prf_placement == PrfPlacement.after else fused
        dense_prf = self._dense(self._vector_prf(qd, feedback[:r.prf_depth], r), depth, out)
        out.hits = dense_prf[:k] if r.prf_placement == PrfPlacement.before else self._fuse(sparse_hits, dense_prf,
                                                                                            r, k)
        return out

    # Encoders run one query at a time: Hugging Face fast tokenizers are not safe to call from several threads
    # ("Already borrowed"), and torch already spreads one forward pass over the cores. Search runs unlocked.
    def _encode_sparse(self, query: str, out: Ranked) -> SparseBatch:
        t0 = time.perf_counter()
        with self._encode_lock:
            vector = self.sparse_encoder.encode_queries([query])
        out.encode_ms += (time.perf_counter() - t0) * 1e3
        return vector

    def _encode_dense(self, query: str, out: Ranked) -> np.ndarray:
        assert self.dense_encoder is not None
        t0 = time.perf_counter()
        with self._encode_lock:
            vector = self.dense_encoder.encode_queries([query])[0]
        out.encode_ms += (time.perf_counter() - t0) * 1e3
        return vector

    @staticmethod
    def _fuse(sparse_hits: list[Hit], dense_hits: list[Hit], r: Ranking, depth: int) -> list[Hit]:
        if r.fusion == Fusion.rrf:
            return rrf_hits([sparse_hits, dense_hits], depth=depth)
        return interpolate_hits(sparse_hits, dense_hits, alpha=r.alpha, depth=depth)

    def _sparse(self, query: SparseBatch, k: int, out: Ranked) -> list[Hit]:
        t0 = time.perf_counter()
        hits = self.searcher.search(query, k=k)
        out.search_ms += (time.perf_counter() - t0) * 1e3
        return hits

    def _dense(self, vector: np.ndarray, k: int, out: Ranked) -> list[Hit]:
        assert self.dense is not None
        t0 = time.perf_counter()
        hits = self.dense.search(vector, k=k)
        out.search_ms += (time.perf_counter() - t0) * 1e3
        return hits

    def _rows(self, hits: list[Hit]) -> np.ndarray:
        return np.array([self._doc_index[h.doc_id] for h in hits], dtype=np.int64)

    def _rocchio(self, query: SparseBatch, feedback_hits: list[Hit], r: Ranking) -> SparseBatch:
        with self._feedback_lock:
            if self._feedback is None:  # documents x terms weights, built on first use
                self._feedback = feedback_matrix(self.reader)
        return rocchio_sparse(query, self._feedback[self._rows(feedback_hits)], query_weight=r.prf_query_weight,
                              feedback_weight=r.prf_feedback_weight)

    def _vector_prf(self, vector: np.ndarray, feedback_hits: list[Hit], r: Ranking) -> np.ndarray:
        assert self.dense is not None
        return vector_prf(vector, self.dense.vectors[self._rows(feedback_hits)], query_weight=r.prf_query_weight,
                          feedback_weight=r.prf_feedback_weight)
