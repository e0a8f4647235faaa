"""PISA through pyterrier-pisa (the `pisa` engine of `lsr bench query`)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from lsr.index import LsrError
from lsr.index.lucene import quantize_query, term_token
from lsr.index.sparse import SparseBatch

from .common import Staged, dir_size, fresh_dir, int_impacts, rank, term_dicts


class PisaEngine(Staged):
    """PISA through pyterrier-pisa: documents indexed as pre-computed impacts (`toks` dicts, stemmer none, no
    stopwords, `scale=1` so impacts go in unchanged), retrieved with the `quantized` scorer (dot product) and
    query-weighted integer queries.

    Queries go to PISA's batch call, `_pisathon.retrieve` (the C++ binding under pyterrier-pisa's
    `PisaRetrieve.transform`, with the retriever's own prepared context), on a list of (index, {term: weight})
    pairs and preallocated result arrays: the pandas frames `transform` builds and returns are left out, so the
    engine's own call is what `run` times."""

    name = "pisa"
    mode = "exact"

    def __init__(self, query_scale: float = 100.0, query_algorithm: str = "block_max_wand",
                 index_encoding: str = "block_simdbp") -> None:
        self.query_scale = float(query_scale)
        self.query_algorithm = query_algorithm
        self.index_encoding = index_encoding
        self._index = None
        self._path: Path | None = None
        self._retrievers: dict[tuple[int, int], object] = {}

    def build(self, docs: SparseBatch, workdir: Path, threads: int = 1) -> None:
        from pyterrier_pisa import PisaIndex  # PISA's C++ progress goes to stderr (its log_level() is broken in 0.4.9)

        impacts = int_impacts(docs)
        self._path = fresh_dir(Path(workdir)) / "pisa"

        def gen():
            for i, toks in enumerate(term_dicts(docs, impacts)):
                yield {"docno": str(i), "toks": {t: float(w) for t, w in toks.items()}}

        index = PisaIndex(str(self._path), stemmer="none", stops="none", index_encoding=self.index_encoding,
                          threads=max(1, threads))
        index.toks_indexer(scale=1.0).index(gen())
        self.open(workdir)

    def build_options(self) -> dict:
        return {"index_encoding": self.index_encoding}

    def open(self, workdir: Path) -> None:
        from pyterrier_pisa import PisaIndex

        self._path = Path(workdir) / "pisa"
        self._index = PisaIndex(str(self._path), stemmer="none", stops="none", index_encoding=self.index_encoding)
        self._retrievers = {}
        self._retriever(10, 1)  # compresses the index and builds the block-max (wand) data if not yet done

    def _retriever(self, k: int, threads: int):
        key = (k, max(1, threads))
        if key not in self._retrievers:
            self._retrievers[key] = self._index.quantized(num_results=k, threads=max(1, threads),
                                                          query_algorithm=self.query_algorithm,
                                                          query_weighted=True, toks_scale=1.0)
            self._retrievers[key].reset_retrieval_context()  # PISA's prepared index, made once per retriever
        return self._retrievers[key]

    def prepare(self, queries: SparseBatch, k: int) -> tuple:
        inp = []
        for i in range(len(queries)):
            terms, weights = queries.row(i)
            qw = quantize_query(weights, self.query_scale)
            # as PisaRetrieve.transform passes query_toks (toks_scale is 1 here)
            inp.append((i, {term_token(t): float(w) for t, w in zip(terms, qw) if w > 0}))
        shape = (len(queries) * k,)
        arrays = dict(result_qidxs=np.empty(shape, dtype=np.int32), result_docnos=np.empty(shape, dtype=object),
                      result_ranks=np.empty(shape, dtype=np.int32), result_scores=np.empty(shape, dtype=np.float32))
        return inp, arrays

    def run(self, prepared: tuple, k: int, threads: int = 1) -> int:
        from pyterrier_pisa import _pisathon

        if self._index is None:
            raise LsrError("pisa engine: build() first")
        inp, arrays = prepared
        retriever = self._retriever(k, threads)
        return _pisathon.retrieve(retriever._ctxt, retriever.query_algorithm.value, inp, k=k,
                                  threads=max(1, threads), query_weighted=1, pretokenised=True, **arrays)

    def collect(self, size: int, prepared: tuple, k: int) -> list[np.ndarray]:
        inp, arrays = prepared
        qidx = arrays["result_qidxs"][:size]
        docnos = arrays["result_docnos"][:size].astype(np.int64)
        scores = arrays["result_scores"][:size].astype(np.float64)
        out: list[np.ndarray] = [np.zeros(0, dtype=np.int64) for _ in inp]
        bounds = np.flatnonzero(np.diff(qidx)) + 1  # PISA writes each query's hits together
        for lo, hi in zip(np.r_[0, bounds], np.r_[bounds, size]):
            if hi > lo:
                out[int(qidx[lo])] = rank(docnos[lo:hi], scores[lo:hi], k)
        return out

    def size_bytes(self) -> int:
        # the compressed index, block-max (wand) data and binary lexicons; not the build inputs (the uncompressed
        # `inv.*` postings and the text lexicons `fwd.documents` / `fwd.terms`)
        build_inputs = ("inv.docs", "inv.freqs", "inv.sizes", "fwd.documents", "fwd.terms")
        return dir_size(self._path, exclude=build_inputs) if self._path else 0
