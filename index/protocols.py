"""What the index needs from an encoder. The consumer owns the protocol: encoders/ satisfies it."""
from __future__ import annotations

from typing import Protocol, Sequence

from .sparse import SparseBatch


class QueryEncoder(Protocol):
    def encode_queries(self, texts: Sequence[str]) -> SparseBatch: ...


class DocumentEncoder(Protocol):
    def encode_documents(self, texts: Sequence[str]) -> SparseBatch: ...
