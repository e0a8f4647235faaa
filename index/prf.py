"""Pseudo-relevance feedback on query vectors: Rocchio,
`q' = query_weight * q + feedback_weight * mean(top-depth doc vectors)`.

- Sparse (`rocchio_sparse`): on SPLADE vectors directly; the expanded query keeps its `top_terms` largest
  weights (ties to the smaller term_id), so query processing cost stays bounded. Document vectors come from
  the index's impacts dequantised with the index's own quantisation (`feedback_matrix`).
- Dense (`vector_prf`, Vector-PRF): the same formula on dense vectors, renormalised to unit length.

Defaults follow pyserini's Rocchio settings (DESIGN.md §1: depth 5, alpha 0.4, beta 0.6; here `prf_depth`,
`prf_query_weight` and `prf_feedback_weight` of `ranking.Ranking`, which owns them). PRF can hurt on sparsely
judged sets: choose them on dev splits.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .errors import LsrError
from .sparse import SparseBatch
from .storage import IndexReader

PRF_TOP_TERMS = 100  # terms an expanded sparse query keeps


def _check(query_weight: float, feedback_weight: float) -> None:
    for name, value in (("query_weight", query_weight), ("feedback_weight", feedback_weight)):
        if not (np.isfinite(value) and value >= 0):
            raise LsrError(f"PRF {name} must be a non-negative number, got {value}")


def feedback_matrix(reader: IndexReader) -> sp.csr_matrix:
    """Documents x terms float32 weights (impacts / scale), row i = doc_idx i. Build once and keep."""
    matrix = reader.doc_matrix().astype(np.float32)
    matrix.data /= np.float32(reader.quantization.scale)
    return matrix


def rocchio_sparse(query: SparseBatch, feedback: sp.csr_matrix | SparseBatch, *, query_weight: float,
                   feedback_weight: float, top_terms: int = PRF_TOP_TERMS) -> SparseBatch:
    """One expanded sparse query from one query vector and the feedback documents' vectors (rows)."""
    _check(query_weight, feedback_weight)
    if len(query) != 1:
        raise LsrError(f"rocchio_sparse takes one query vector, got {len(query)}")
    if top_terms <= 0:
        raise LsrError(f"top_terms must be positive, got {top_terms}")
    docs = feedback.to_scipy() if isinstance(feedback, SparseBatch) else sp.csr_matrix(feedback)
    if docs.shape[1] != query.vocab_size:
        raise LsrError(f"feedback vocabulary {docs.shape[1]} != query vocabulary {query.vocab_size}")
    q = query.to_scipy().astype(np.float64) * query_weight
    if docs.shape[0]:
        q = q + sp.csr_matrix(docs.astype(np.float64).mean(axis=0)) * feedback_weight
    q = sp.csr_matrix(q)
    q.eliminate_zeros()
    terms, weights = q.indices.astype(np.int64), q.data
    if len(terms) > top_terms:
        order = np.lexsort((terms, -weights))[:top_terms]
        terms, weights = terms[order], weights[order]
    kept = sp.csr_matrix((weights, terms, np.array([0, len(terms)])), shape=(1, query.vocab_size))
    return SparseBatch.from_scipy(kept)


def vector_prf(query: np.ndarray, feedback: np.ndarray, *, query_weight: float,
               feedback_weight: float) -> np.ndarray:
    """Vector-PRF on a dense query (dim,) with feedback documents (m, dim); returns a unit float32 vector."""
    _check(query_weight, feedback_weight)
    q = np.asarray(query, dtype=np.float64).reshape(-1)
    docs = np.asarray(feedback, dtype=np.float64).reshape(-1, q.shape[0]) if np.size(feedback) else None
    out = query_weight * q + (feedback_weight * docs.mean(axis=0) if docs is not None else 0.0)
    norm = np.linalg.norm(out)
    if not np.isfinite(norm):
        raise LsrError("Vector-PRF produced a non-finite query")
    return (out / norm if norm > 0 else out).astype(np.float32)
