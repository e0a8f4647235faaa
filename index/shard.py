"""One shard's search by local doc_idx, in this process (`LocalShard`); `ShardHandle` is what the sharded search
(`shards.ShardSet`) needs of a shard, here or on a Ray actor (`ray_shards.RayShard`)."""
from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import scipy.sparse as sp

from .dense import DenseStore, has_dense_store
from .errors import LsrError
from .lucene import open_dense_store, open_searcher
from .search import SearchOptions
from .storage import IndexReader


class ShardHandle(Protocol):
    """One shard's search, by local doc_idx; `submit` runs a method and returns a future (thread or Ray)."""

    def submit(self, method: str, *args: Any) -> Any: ...  # an object with .result()


class LocalShard:
    """One index folder opened in this process: sparse and dense top k, feedback rows, dense rows."""

    def __init__(self, path: str | Path, *, verify_checksums: bool = True, dense_backend: str = "auto",
                 reader: IndexReader | None = None, search_options: SearchOptions = SearchOptions()) -> None:
        self.path = Path(path)
        self.reader = reader or IndexReader(self.path, verify_checksums=verify_checksums)
        # ours, Lucene or Milvus, per the folder's backend
        self.searcher = open_searcher(self.reader, self.path, search_options)
        self.dense: DenseStore | None = None
        if has_dense_store(self.path):
            self.dense = open_dense_store(self.reader, self.path, backend=dense_backend,  # Milvus's for milvus
                                          # hashed with the rest of the folder when its meta covers it
                                          verify_checksums=verify_checksums and not self.reader.covers_folder)
        self._feedback: sp.csr_matrix | None = None
        self._pool: ThreadPoolExecutor | None = None

    # the methods a handle runs (here, or on a Ray actor holding a LocalShard)
    def sparse(self, terms: np.ndarray, weights: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self.searcher.search_vector(terms, weights, k=k)

    def dense_search(self, vector: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        assert self.dense is not None
        return self.dense.search_vector(vector, k=k)

    def hybrid(self, terms: np.ndarray, weights: np.ndarray, vector: np.ndarray, fusion: str, alpha: float,
               k: int) -> tuple[np.ndarray, np.ndarray]:
        """The fused top k, fused by the backend itself (Milvus's hybrid search)."""
        if not hasattr(self.searcher, "hybrid"):
            raise LsrError(f"{self.path}: fusion in the backend needs the Milvus backend; this index ranks "
                           f"through {self.reader.info.get('backend', 'lsr')} (fuse in lsr)")
        return self.searcher.hybrid(terms, weights, vector, k, fusion, alpha)

    def feedback_rows(self, rows: np.ndarray) -> sp.csr_matrix:
        """Documents x terms float32 weights (impacts / scale) of local rows, built on first use."""
        if self._feedback is None:
            from .prf import feedback_matrix

            self._feedback = feedback_matrix(self.reader)
        return self._feedback[np.asarray(rows, dtype=np.int64)]

    def dense_rows(self, rows: np.ndarray) -> np.ndarray:
        assert self.dense is not None
        return np.asarray(self.dense.vectors[np.asarray(rows, dtype=np.int64)])

    def size_bytes(self) -> int:
        return self.searcher.size_bytes() + (self.dense.size_bytes() if self.dense else 0)

    def close(self) -> None:
        """Give back what the searchers hold outside this process (Milvus connections, a Milvus Lite server)."""
        for part in (self.searcher, self.dense):
            if hasattr(part, "close"):
                part.close()

    def submit(self, method: str, *args: Any) -> Future:
        if self._pool is None:
            return _done(getattr(self, method)(*args))
        return self._pool.submit(getattr(self, method), *args)


def _done(value: Any) -> Future:
    future: Future = Future()
    future.set_result(value)
    return future


