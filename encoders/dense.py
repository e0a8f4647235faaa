"""Dense bi-encoder over a sentence-transformers folder (the bundled all-MiniLM-L6-v2 by default).

Texts become L2-normalised float32 vectors, so the inner product is the cosine similarity. Queries and
documents go through the same model (MiniLM uses no instruction prefixes).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm.auto import tqdm

from lsr.index import LsrError

from .base import check_sizes, checked_texts, length_batches


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

    def document_batches(self, texts: Sequence[str]) -> list[np.ndarray]:
        return dense_batches(texts, self.batch_size)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Our batches (`document_batches`), each one sentence-transformers call, so a batch encoded alone gives
        the same rows as with the rest of the corpus."""
        texts = checked_texts(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        with tqdm(total=len(texts), desc="encoding dense", unit="text",
                  disable=not self.show_progress or len(texts) <= self.batch_size) as bar:
            for batch in self.document_batches(texts):
                out[batch] = self.model.encode([texts[i] for i in batch], batch_size=len(batch),
                                               convert_to_numpy=True, normalize_embeddings=True,
                                               show_progress_bar=False)
                bar.update(len(batch))
        return out


def dense_batches(texts: Sequence[str], batch_size: int) -> list[np.ndarray]:
    """The batches `DenseEncoder.encode_documents(texts)` runs, as positions into `texts` (see `length_batches`);
    the length is sentence-transformers' own measure (characters), so no model is needed to plan them."""
    return length_batches([len(t) for t in checked_texts(texts)], batch_size)


def _is_local(source: str) -> bool:
    return Path(source).expanduser().is_dir()
