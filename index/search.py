"""Exact top-k query processing over the impact index.

Term-at-a-time: each query term's postings add `query_weight * impact` into a float64 accumulator per
document; the top k by (score descending, doc_idx ascending) are returned. Only documents with a positive
score are hits. `brute_force_search` is the reference: a sparse matrix-vector product over the same
impacts, ranked by a plain sort.
"""
from __future__ import annotations

from typing import Sequence

import numba
import numpy as np

from .errors import LsrError
from .hits import Hit, Run
from .sparse import SparseBatch
from .storage import IndexReader


@numba.njit(cache=True, nogil=True)
def _accumulate(offsets, doc_idx, impacts, q_terms, q_weights, acc):  # pragma: no cover - compiled
    for i in range(q_terms.shape[0]):
        t = q_terms[i]
        w = q_weights[i]
        for p in range(offsets[t], offsets[t + 1]):
            acc[doc_idx[p]] += w * impacts[p]


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and values of the k largest positive scores, ties broken by the smaller index."""
    cand = np.flatnonzero(scores > 0)
    values = scores[cand]
    if len(cand) > k:
        kth = np.partition(values, len(values) - k)[len(values) - k]  # the k-th largest value
        keep = values >= kth
        cand, values = cand[keep], values[keep]
    order = np.lexsort((cand, -values))[:k]
    return cand[order], values[order]


def _check_query(terms: np.ndarray, weights: np.ndarray, vocab_size: int, k: int) -> None:
    if k <= 0:
        raise LsrError(f"k must be positive, got {k}")
    if len(terms) and (terms.min() < 0 or terms.max() >= vocab_size):
        raise LsrError(f"query term_id outside the index vocabulary [0, {vocab_size})")


class Searcher:
    """Exact top-k retrieval over an `IndexReader`."""

    def __init__(self, reader: IndexReader) -> None:
        self.reader = reader
        self._offsets = np.asarray(reader.offsets)
        self._doc_idx = np.asarray(reader.doc_idx)
        self._impacts = np.asarray(reader.impacts)
        self._inv_scale = 1.0 / reader.quantization.scale

    def search_vector(self, terms: np.ndarray, weights: np.ndarray, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """(doc_idx, score) of the top k documents for one sparse query vector."""
        terms = np.ascontiguousarray(terms, dtype=np.int64)
        weights = np.ascontiguousarray(weights, dtype=np.float64)
        _check_query(terms, weights, self.reader.vocab_size, k)
        acc = np.zeros(self.reader.num_docs, dtype=np.float64)
        _accumulate(self._offsets, self._doc_idx, self._impacts, terms, weights, acc)
        idx, scores = top_k(acc, k)
        return idx, scores * self._inv_scale

    def search(self, query: SparseBatch, k: int = 10) -> list[Hit]:
        if len(query) != 1:
            raise LsrError(f"search takes one query vector, got {len(query)}; use batch_search")
        return self._hits(*self.search_vector(*query.row(0), k=k))

    def batch_search(self, queries: SparseBatch, query_ids: Sequence[str], k: int = 10) -> Run:
        if len(queries) != len(query_ids):
            raise LsrError(f"{len(queries)} query vectors but {len(query_ids)} query ids")
        return {qid: self._hits(*self.search_vector(*queries.row(i), k=k)) for i, qid in enumerate(query_ids)}

    def _hits(self, idx: np.ndarray, scores: np.ndarray) -> list[Hit]:
        ids = self.reader.doc_ids
        return [Hit(ids[i], float(s)) for i, s in zip(idx.tolist(), scores.tolist())]


def brute_force_search(reader: IndexReader, terms: np.ndarray, weights: np.ndarray, k: int = 10
                       ) -> tuple[np.ndarray, np.ndarray]:
    """The reference: score every document with a sparse dot product, rank with a full sort."""
    _check_query(np.asarray(terms), np.asarray(weights), reader.vocab_size, k)
    q = np.zeros(reader.vocab_size, dtype=np.float64)
    np.add.at(q, np.asarray(terms, dtype=np.int64), np.asarray(weights, dtype=np.float64))
    scores = reader.doc_matrix().astype(np.float64) @ q
    ranked = sorted((i for i in range(len(scores)) if scores[i] > 0), key=lambda i: (-scores[i], i))[:k]
    idx = np.array(ranked, dtype=np.int64)
    return idx, scores[idx] / reader.quantization.scale
