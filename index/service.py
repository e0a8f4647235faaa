"""The search layer: one index folder, its encoders, sparse + dense + PRF ranking. The REST API, the CLI and
evaluation all rank through `SearchService.rank`, so what is evaluated is what users get.

An index folder holds the sparse impact index (storage.py), optionally a dense store in the same doc_idx space
(dense.py) and `docs.jsonl` (documents.py), and, for the Lucene backend, a Lucene index (lucene.py); a sharded
folder holds one such index per document range, searched as one (shards.py: plain is one shard). The
encoders are injected through the protocols this package declares (protocols.py): explicitly, or by an
`EncoderProvider` that loads the models the folder records (`lsr.encoders.ModelProvider`), so this module
needs no torch.

Ranking (`Ranking` says how; see ranking.py):
- sparse: SPLADE query vector -> exact top-k over the impact index (or Lucene's).
- dense: dense query vector -> exact inner-product top-k over the dense store.
- hybrid: both lists to `max(k, depth)`, fused by min-max interpolation or RRF, here or, with `fuse_in`
  backend, by Milvus's hybrid search.
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

from .documents import DocumentNotFound, StoredDocument
from .errors import LsrError
from .fusion import interpolate_hits, rrf_hits
from .search import SEARCH_ALGORITHM, SearchOptions
from .hits import Hit, ranked_hits
from .prf import rocchio_sparse, vector_prf
from .protocols import DenseQueryEncoder, EncoderProvider, QueryEncoder
from .ranking import FuseIn, Fusion, Mode, PrfPlacement, Ranking
from .shards import index_shards, open_shards
from .sparse import SparseBatch
from .termstats import read_collection_stats


@dataclass
class Ranked:
    """One ranked query: the hits, the time spent encoding and searching, and the sparse query vector."""
    hits: list[Hit]
    encode_ms: float = 0.0
    search_ms: float = 0.0
    sparse_query: SparseBatch | None = field(default=None, repr=False)


class SearchService:
    """Owns one index folder (plain or sharded) and its encoders; every method is keyword-only and thread-safe.

    `engine="ray"` places a sharded folder's shards on Ray actors (`ray_address`: a running cluster, else a
    local Ray); "local" searches the shards in parallel threads of this process. `search_options`: how the
    sparse list is searched (`SearchOptions`: the algorithm, and what makes it approximate; exact by default)."""

    def __init__(self, index_dir: str | Path, *, encoders: EncoderProvider | None = None,
                 sparse_encoder: QueryEncoder | None = None, dense_encoder: DenseQueryEncoder | None = None,
                 verify_checksums: bool = True, dense_backend: str = "auto", engine: str = "local",
                 ray_address: str | None = None, search_options: SearchOptions = SearchOptions()) -> None:
        self.path = Path(index_dir)
        self.index = open_shards(self.path, verify_checksums=verify_checksums, dense_backend=dense_backend,
                                 engine=engine, ray_address=ray_address, search_options=search_options)
        self.search_options = search_options
        info = self.index.info
        self.sparse_model = info.get("model")
        if sparse_encoder is None:
            if encoders is None or not self.sparse_model:
                raise LsrError(f"{self.path}: no sparse query encoder (the index records no model)")
            sparse_encoder = encoders.sparse_query_encoder(info)
        self.collection_stats = read_collection_stats(index_shards(self.path)[0])
        if self.collection_stats is not None and hasattr(sparse_encoder, "for_collection"):
            sparse_encoder = sparse_encoder.for_collection(self.collection_stats)  # an inference-free query side
        self.sparse_encoder = sparse_encoder
        self.dense_encoder = None
        self.dense_model: str | None = None
        if self.index.has_dense:
            assert self.index.dense_info is not None
            self.dense_model = self.index.dense_info.get("model")
            if dense_encoder is None and encoders is not None:  # encoders given one by one: sparse alone is
                if not self.dense_model:                          # a choice (the dense modes stay off)
                    raise LsrError(f"{self.path}: no dense query encoder (the dense store records no model)")
                dense_encoder = encoders.dense_query_encoder(self.index.dense_info)
            self.dense_encoder = dense_encoder
        self.documents: dict[str, StoredDocument] = self.index.documents
        self._encode_lock = threading.Lock()

    def close(self) -> None:
        self.index.close()

    # -- documents ----------------------------------------------------------------------------------
    def document(self, *, doc_id: str) -> StoredDocument:
        if doc_id not in self.index:
            raise DocumentNotFound(f"no document with doc_id {doc_id!r} in this index")
        return self.documents.get(doc_id) or StoredDocument(doc_id, None, None)

    def stats(self) -> dict[str, Any]:
        meta = self.index.meta
        return {
            "num_docs": self.index.num_docs,
            "vocab_size": int(meta["vocab_size"]),
            "num_postings": int(meta["num_postings"]),
            "avg_doc_nnz": int(meta["num_postings"]) / max(self.index.num_docs, 1),
            "quantization": meta["quantization"],
            "sparse_model": self.sparse_model,
            "dense_model": self.dense_model,
            "dense_dim": self.index.dense_dim,
            "dense_backend": self.index.dense_backend,
            "has_documents": bool(self.documents),
            "index_bytes": self.index.size_bytes(),
            "backend": self.index.info.get("backend", "lsr"),
            "shards": self.index.num_shards,
            "engine": self.index.engine,
            "drop_ratio": self.search_options.drop_ratio,
            "search_algorithm": self.search_options.algorithm or self.index.info.get(SEARCH_ALGORITHM, "exhaustive"),
            "search_options": self.search_options.to_json(),
            "exact": self.search_options.exact,
            # an inference-free query side: the weight of the collection's own IDF (None: no statistics used)
            "collection_idf_weight": (getattr(self.sparse_encoder, "collection_idf_weight", None)
                                      if self.collection_stats is not None else None),
            "modes": list(self.modes),
            "dataset": self.index.info.get("dataset"),
        }

    @property
    def modes(self) -> tuple[str, ...]:
        return tuple(m.value for m in Mode) if self.dense_encoder is not None else (Mode.sparse.value,)

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
        if r.mode != Mode.sparse and self.dense_encoder is None and self.index.has_dense:
            raise LsrError(f"mode {r.mode.value!r}: this service was opened without a dense query encoder")
        if r.mode != Mode.sparse and not self.index.has_dense:
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
        q = out.sparse_query = self._encode_sparse(query, out)
        in_backend = r.fuse_in == FuseIn.backend
        sparse_hits = [] if in_backend else self._sparse(q, depth, out)

        def fused(vector: np.ndarray, dense_hits: list[Hit] | None = None) -> list[Hit]:
            """The sparse list and the dense one of `vector`, each to depth, fused."""
            if in_backend:
                return self._backend_hybrid(q, vector, r, depth, out)
            return self._fuse(sparse_hits, self._dense(vector, depth, out) if dense_hits is None else dense_hits,
                              r, depth)

        dense_hits = None if in_backend else self._dense(qd, depth, out)
        first = fused(qd, dense_hits)
        if not r.prf:
            out.hits = first[:k]
            return out
        if r.prf_placement == PrfPlacement.after:
            feedback = self._dense(qd, depth, out) if dense_hits is None else dense_hits
        else:
            feedback = first
        qd_prf = self._vector_prf(qd, feedback[:r.prf_depth], r)
        out.hits = (self._dense(qd_prf, depth, out) if r.prf_placement == PrfPlacement.before else fused(qd_prf))[:k]
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
        if len(query) != 1:
            raise LsrError(f"search takes one query vector, got {len(query)}")
        t0 = time.perf_counter()
        hits = self._hits(*self.index.sparse(*query.row(0), k))
        out.search_ms += (time.perf_counter() - t0) * 1e3
        return hits

    def _backend_hybrid(self, query: SparseBatch, vector: np.ndarray, r: Ranking, k: int, out: Ranked) -> list[Hit]:
        t0 = time.perf_counter()
        # ranked as our fusion ranks (ties by doc_id), then cut
        hits = ranked_hits(self._hits(*self.index.hybrid(*query.row(0), vector, k, r.fusion.value, r.alpha)))[:k]
        out.search_ms += (time.perf_counter() - t0) * 1e3
        return hits

    def _dense(self, vector: np.ndarray, k: int, out: Ranked) -> list[Hit]:
        t0 = time.perf_counter()
        hits = self._hits(*self.index.dense(vector, k))
        out.search_ms += (time.perf_counter() - t0) * 1e3
        return hits

    def _hits(self, idx: np.ndarray, scores: np.ndarray) -> list[Hit]:
        ids = self.index.doc_ids
        return [Hit(ids[i], float(s)) for i, s in zip(idx.tolist(), scores.tolist())]

    def _rocchio(self, query: SparseBatch, feedback_hits: list[Hit], r: Ranking) -> SparseBatch:
        rows = self.index.rows([h.doc_id for h in feedback_hits])
        return rocchio_sparse(query, self.index.feedback_rows(rows), query_weight=r.prf_query_weight,
                              feedback_weight=r.prf_feedback_weight)

    def _vector_prf(self, vector: np.ndarray, feedback_hits: list[Hit], r: Ranking) -> np.ndarray:
        rows = self.index.rows([h.doc_id for h in feedback_hits])
        return vector_prf(vector, self.index.dense_rows(rows), query_weight=r.prf_query_weight,
                          feedback_weight=r.prf_feedback_weight)
