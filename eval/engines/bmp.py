"""Block-Max Pruning (the `bmp` engine of `lsr bench query`)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from lsr.index import LsrError
from lsr.index.lucene import term_token
from lsr.index.sparse import SparseBatch

from .common import Staged, dir_size, fresh_dir, int_impacts, rank, term_dicts


class BmpEngine(Staged):
    """Block-Max Pruning (bmp): documents as u8 impacts through `bmp.Indexer`, queried with `Searcher.search`.
    `alpha` < 1 prunes blocks more aggressively, `beta` < 1 drops light query terms (both 1.0 = BMP's
    'exact' setting, still over its internally quantised query)."""

    name = "bmp"
    mode = "approximate"
    threaded = False  # bmp.Searcher.search takes one query and no thread count

    def __init__(self, bsize: int = 32, alpha: float = 1.0, beta: float = 1.0, compress_range: bool = False) -> None:
        self.bsize, self.alpha, self.beta, self.compress_range = int(bsize), float(alpha), float(beta), compress_range
        self._searcher = None
        self._path: Path | None = None

    def build(self, docs: SparseBatch, workdir: Path, threads: int = 1) -> None:
        from bmp import Indexer

        impacts = int_impacts(docs)
        if len(impacts) and impacts.max() > 255:
            raise LsrError("bmp takes u8 impacts (0..255)")
        self._path = fresh_dir(Path(workdir)) / "index.bmp"
        indexer = Indexer(str(self._path), self.bsize, self.compress_range)
        for i, vector in enumerate(term_dicts(docs, impacts)):
            indexer.add_document(str(i), vector)
        indexer.finish()
        self.open(workdir)

    def build_options(self) -> dict:
        return {"bsize": self.bsize, "compress_range": self.compress_range}

    def open(self, workdir: Path) -> None:
        from bmp import Searcher

        self._path = Path(workdir) / "index.bmp"
        self._searcher = Searcher(str(self._path))

    def prepare(self, queries: SparseBatch, k: int) -> list[dict]:
        out = []
        for i in range(len(queries)):
            terms, weights = queries.row(i)
            out.append({term_token(t): float(w) for t, w in zip(terms, weights) if w > 0})
        return out

    def run(self, prepared: list[dict], k: int, threads: int = 1) -> list:
        if self._searcher is None:
            raise LsrError("bmp engine: build() first")
        return [self._searcher.search(q, k, self.alpha, self.beta) if q else None for q in prepared]

    def collect(self, raw: list, prepared: list[dict], k: int) -> list[np.ndarray]:
        return [np.zeros(0, dtype=np.int64) if r is None else
                rank(np.array([int(d) for d in r[0]], dtype=np.int64), np.asarray(r[1]), k) for r in raw]

    def size_bytes(self) -> int:
        return dir_size(self._path) if self._path else 0
