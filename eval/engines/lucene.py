"""Lucene impact search through pyserini's Anserini classes (the `lucene` engine of `lsr bench query`)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from lsr.index import LsrError
from lsr.index.lucene import lucene_query
from lsr.index.sparse import SparseBatch

from .common import Staged, dir_size, fresh_dir, int_impacts, rank


class LuceneEngine(Staged):
    """Lucene impact search: the index the Lucene backend writes (`lsr.index.lucene.write_lucene_index`), searched
    by SimpleImpactSearcher (the Java searcher under pyserini's LuceneImpactSearcher) with integer query weights
    `round(w * query_scale)` (Lucene's exact top-k over that integer query)."""

    name = "lucene"
    mode = "exact"

    def __init__(self, query_scale: float = 100.0) -> None:
        self.query_scale = float(query_scale)
        self._searcher = None
        self._path: Path | None = None

    def build(self, docs: SparseBatch, workdir: Path, threads: int = 1) -> None:
        from lsr.index.lucene import write_lucene_index

        int_impacts(docs)
        write_lucene_index(fresh_dir(Path(workdir)), docs.to_scipy(), [str(i) for i in range(len(docs))],
                           threads=threads, name="index")
        self.open(workdir)

    def build_options(self) -> dict:
        return {}

    def open(self, workdir: Path) -> None:
        from lsr.index.lucene import prepare_jvm

        prepare_jvm()
        from pyserini.pyclass import autoclass

        self.close()
        self._path = Path(workdir) / "index"
        self._searcher = autoclass("io.anserini.search.SimpleImpactSearcher")(str(self._path))

    def prepare(self, queries: SparseBatch, k: int) -> tuple:
        """The Java query maps (the query map built outside the engine's call)."""
        from pyserini.pyclass import JArrayList

        jqueries, jqids, asked = JArrayList(), JArrayList(), 0
        for i in range(len(queries)):
            jq = lucene_query(*queries.row(i), scale=self.query_scale)
            if jq.size():
                jqueries.add(jq)
                jqids.add(str(i))
                asked += 1
        return len(queries), jqueries, jqids, asked

    def run(self, prepared: tuple, k: int, threads: int = 1):
        if self._searcher is None:
            raise LsrError("lucene engine: build() first")
        _, jqueries, jqids, asked = prepared
        return self._searcher.batch_search(jqueries, jqids, int(k), int(max(1, threads))) if asked else None

    def collect(self, results, prepared: tuple, k: int) -> list[np.ndarray]:
        out: list[np.ndarray] = [np.zeros(0, dtype=np.int64) for _ in range(prepared[0])]
        if results is None:
            return out
        for entry in results.entrySet().toArray():
            hits = entry.getValue()
            out[int(entry.getKey())] = rank(np.array([int(h.docid) for h in hits], dtype=np.int64),
                                             np.array([h.score for h in hits], dtype=np.float64), k)
        return out

    def size_bytes(self) -> int:
        return dir_size(self._path) if self._path else 0

    def close(self) -> None:
        if self._searcher is not None:
            self._searcher.close()
            self._searcher = None
