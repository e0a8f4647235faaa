"""PISA through pyterrier-pisa (the `pisa` engine of `lsr bench query`)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from lsr.index import LsrError
from lsr.index.lucene import quantize_query, term_token
from lsr.index.sparse import SparseBatch

from .common import dir_size, fresh_dir, int_impacts, rank, term_dicts


class PisaEngine:
    """PISA through pyterrier-pisa: documents indexed as pre-computed impacts (`toks` dicts, stemmer none, no
    stopwords, `scale=1` so impacts go in unchanged), retrieved with the `quantized` scorer (dot product) and
    query-weighted integer queries."""

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
        return self._retrievers[key]

    def search(self, queries: SparseBatch, k: int, threads: int = 1) -> list[np.ndarray]:
        import pandas as pd

        if self._index is None:
            raise LsrError("pisa engine: build() first")
        rows = []
        for i in range(len(queries)):
            terms, weights = queries.row(i)
            qw = quantize_query(weights, self.query_scale)
            rows.append({"qid": str(i), "query_toks": {term_token(t): float(w) for t, w in zip(terms, qw) if w > 0}})
        res = self._retriever(k, threads)(pd.DataFrame(rows, columns=["qid", "query_toks"]))
        out: list[np.ndarray] = [np.zeros(0, dtype=np.int64) for _ in range(len(queries))]
        for qid, group in res.groupby("qid", sort=False):
            out[int(qid)] = rank(group["docno"].astype(np.int64).to_numpy(), group["score"].to_numpy(), k)
        return out

    def size_bytes(self) -> int:
        # the compressed index, block-max (wand) data and binary lexicons; not the build inputs (the uncompressed
        # `inv.*` postings and the text lexicons `fwd.documents` / `fwd.terms`)
        build_inputs = ("inv.docs", "inv.freqs", "inv.sizes", "fwd.documents", "fwd.terms")
        return dir_size(self._path, exclude=build_inputs) if self._path else 0
