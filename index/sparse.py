"""`SparseBatch`: a batch of sparse vectors in canonical CSR form (rows sorted by term_id, no duplicates,
no explicit zeros), the type every encoder returns and every index consumes."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from .errors import LsrError


@dataclass(frozen=True)
class SparseBatch:
    indptr: np.ndarray  # int64 (n + 1)
    term_ids: np.ndarray  # int32 (nnz), sorted within each row
    weights: np.ndarray  # float32 (nnz)
    vocab_size: int

    def __post_init__(self) -> None:
        if self.indptr.ndim != 1 or len(self.indptr) < 1 or self.indptr[0] != 0:
            raise LsrError("SparseBatch: indptr must be 1-D and start at 0")
        if self.indptr[-1] != len(self.term_ids) or len(self.term_ids) != len(self.weights):
            raise LsrError("SparseBatch: indptr, term_ids and weights disagree in length")
        if len(self.term_ids) and (self.term_ids.min() < 0 or self.term_ids.max() >= self.vocab_size):
            raise LsrError(f"SparseBatch: term_id outside [0, {self.vocab_size})")
        if not np.all(np.isfinite(self.weights)):
            raise LsrError("SparseBatch: weights must be finite")

    # -- construction -------------------------------------------------------------------------------
    @classmethod
    def from_scipy(cls, matrix: sp.spmatrix | sp.sparray) -> SparseBatch:
        csr = sp.csr_matrix(matrix, dtype=np.float32)
        csr.sum_duplicates()
        csr.eliminate_zeros()
        csr.sort_indices()
        return cls(csr.indptr.astype(np.int64), csr.indices.astype(np.int32), csr.data.astype(np.float32),
                   int(csr.shape[1]))

    @classmethod
    def empty(cls, vocab_size: int) -> SparseBatch:
        """No rows."""
        return cls(np.zeros(1, np.int64), np.zeros(0, np.int32), np.zeros(0, np.float32), vocab_size)

    @classmethod
    def from_dense(cls, dense: np.ndarray) -> SparseBatch:
        return cls.from_scipy(sp.csr_matrix(np.asarray(dense, dtype=np.float32)))

    @classmethod
    def concat(cls, batches: list[SparseBatch]) -> SparseBatch:
        if not batches:
            raise LsrError("SparseBatch.concat: no batches")
        vocab = {b.vocab_size for b in batches}
        if len(vocab) != 1:
            raise LsrError(f"SparseBatch.concat: vocabularies differ {sorted(vocab)}")
        return cls.from_scipy(sp.vstack([b.to_scipy() for b in batches], format="csr"))

    @classmethod
    def load_npz(cls, path: str | Path) -> SparseBatch:
        try:
            return cls.from_scipy(sp.load_npz(path))
        except (OSError, ValueError) as e:
            raise LsrError(f"{path}: not a readable sparse matrix ({e})") from e

    # -- views --------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.indptr) - 1

    @property
    def nnz(self) -> int:
        return len(self.term_ids)

    def row(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = self.indptr[i], self.indptr[i + 1]
        return self.term_ids[lo:hi], self.weights[lo:hi]

    def select(self, rows: np.ndarray | list[int]) -> SparseBatch:
        return SparseBatch.from_scipy(self.to_scipy()[np.asarray(rows, dtype=np.int64)])

    def row_nnz(self) -> np.ndarray:
        return np.diff(self.indptr)

    def to_scipy(self) -> sp.csr_matrix:
        return sp.csr_matrix((self.weights, self.term_ids, self.indptr), shape=(len(self), self.vocab_size))

    def save_npz(self, path: str | Path) -> None:
        sp.save_npz(path, self.to_scipy())
