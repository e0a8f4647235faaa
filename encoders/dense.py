"""Dense bi-encoder over a sentence-transformers folder (the bundled all-MiniLM-L6-v2 by default).

Texts become L2-normalised float32 vectors, so the inner product is the cosine similarity. Queries and
documents go through the same model (MiniLM uses no instruction prefixes).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from lsr.index import LsrError

from .base import check_sizes, checked_texts


class DenseEncoder:
    """`encode_queries` / `encode_documents` -> float32 (n, dim) arrays with unit rows."""

    def __init__(self, source: str, *, max_length: int = 256, batch_size: int = 32, device: str | None = None,
                 show_progress: bool = False) -> None:
        from sentence_transformers import SentenceTransformer

        check_sizes(batch_size=batch_size, max_length=max_length)
        try:
            self.model = SentenceTransformer(source, device=device or "cpu", local_files_only=_is_local(source))
        except (OSError, ValueError) as e:
            raise LsrError(f"cannot load dense model {source!r}: {str(e).splitlines()[0]}") from e
        self.model.max_seq_length = max_length
        self.max_length = max_length
        self.batch_size = batch_size
        self.show_progress = show_progress
        self.dim = int(self.model.get_embedding_dimension())

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self.encode(texts)

    def encode_documents(self, texts: Sequence[str]) -> np.ndarray:
        return self.encode(texts)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        texts = checked_texts(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self.model.encode(texts, batch_size=self.batch_size, convert_to_numpy=True,
                                    normalize_embeddings=True, show_progress_bar=self.show_progress)
        return np.ascontiguousarray(vectors, dtype=np.float32)


def _is_local(source: str) -> bool:
    return Path(source).expanduser().is_dir()
