"""What the index and the search layer need from others. The consumer owns the protocol: encoders/ satisfies
the encoder protocols, and the search backends (ours, Lucene) satisfy `SparseSearcher`."""
from __future__ import annotations

from typing import Any, Mapping, Protocol, Sequence

import numpy as np

from .hits import Hit, Run
from .sparse import SparseBatch


class QueryEncoder(Protocol):
    """May also have `for_collection(stats: termstats.CollectionStats) -> QueryEncoder`: the encoder adapted to
    the statistics of the collection an index holds (an inference-free side blending the collection's IDF);
    `SearchService` calls it when the folder records statistics."""

    def encode_queries(self, texts: Sequence[str]) -> SparseBatch: ...


class DocumentEncoder(Protocol):
    def encode_documents(self, texts: Sequence[str]) -> SparseBatch: ...


class DenseQueryEncoder(Protocol):
    def encode_queries(self, texts: Sequence[str]) -> np.ndarray: ...


class EncoderProvider(Protocol):
    """Loads the query encoders an index folder records (`info` is the sparse index's or dense store's)."""

    def sparse_query_encoder(self, info: Mapping[str, Any]) -> QueryEncoder: ...

    def dense_query_encoder(self, info: Mapping[str, Any]) -> DenseQueryEncoder: ...


class SparseSearcher(Protocol):
    """Top-k over an index folder's sparse impacts: `index.Searcher`, `index.lucene.LuceneImpactBackend`."""

    def search(self, query: SparseBatch, k: int = 10) -> list[Hit]: ...

    def batch_search(self, queries: SparseBatch, query_ids: Sequence[str], k: int = 10,
                     threads: int | None = None) -> Run: ...

    def size_bytes(self) -> int: ...
