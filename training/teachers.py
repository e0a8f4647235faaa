"""Heterogeneous ensemble teachers (Geng et al., 2024): teachers of different kinds score each training query's
candidates; each teacher's scores are min-max normalised per query, averaged over teachers and scaled (x30 in
the reference setup); the student learns the KL divergence to the softmax of that.

Teachers here: `dense` (the bundled MiniLM bi-encoder, cosine), `sparse` (the bundled SPLADE-tiny, dot
product of its query and document vectors) and, optionally, `bm25` (k1 0.9, b 0.4 over the student's
WordPiece tokens, so it needs no Lucene index) and `labels` (the split's judgments: 1 for a judged-relevant
document, 0 otherwise), which keeps the in-domain judgments in the target where the model teachers disagree with
them. Scores are computed once per corpus and cached on disk by lsr.training.data.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import scipy.sparse as sp

from lsr.index import LsrError

TEACHERS = ("dense", "sparse", "bm25", "labels")


def min_max(scores: np.ndarray) -> np.ndarray:
    """Each row mapped to [0, 1] by its own minimum and maximum (a constant row becomes zeros)."""
    scores = np.asarray(scores, dtype=np.float64)
    lo = scores.min(axis=-1, keepdims=True)
    span = scores.max(axis=-1, keepdims=True) - lo
    return np.divide(scores - lo, span, out=np.zeros_like(scores), where=span > 0)


def ensemble(teacher_scores: Sequence[np.ndarray], scale: float = 30.0) -> np.ndarray:
    """scale * mean over teachers of the per-query min-max normalised scores; each array is (queries, docs)."""
    if not teacher_scores:
        raise LsrError("ensemble: no teacher scores")
    shapes = {np.shape(s) for s in teacher_scores}
    if len(shapes) != 1:
        raise LsrError(f"ensemble: teachers scored different shapes {sorted(shapes)}")
    return (scale * np.mean([min_max(s) for s in teacher_scores], axis=0)).astype(np.float32)


def pair_scores(queries, docs, query_rows: np.ndarray, doc_rows: np.ndarray) -> np.ndarray:
    """Inner products of (query_rows[i], doc_rows[i]) pairs for dense arrays or scipy CSR matrices."""
    if sp.issparse(queries):
        return np.asarray(queries[query_rows].multiply(docs[doc_rows]).sum(axis=1)).ravel().astype(np.float32)
    return np.einsum("ij,ij->i", queries[query_rows], docs[doc_rows]).astype(np.float32)


class Bm25Scorer:
    """BM25 (k1, b) over token ids: `score(query_ids, doc_rows)` for candidate documents only."""

    def __init__(self, doc_token_ids: Sequence[Sequence[int]], vocab_size: int, *, k1: float = 0.9, b: float = 0.4):
        from lsr.encoders.idf import bm25_idf

        rows, cols = [], []
        for i, ids in enumerate(doc_token_ids):
            rows.append(np.full(len(ids), i, dtype=np.int64))
            cols.append(np.asarray(ids, dtype=np.int64))
        n = len(doc_token_ids)
        tf = sp.csr_matrix((np.ones(sum(len(c) for c in cols), np.float32),
                            (np.concatenate(rows) if rows else [], np.concatenate(cols) if cols else [])),
                           shape=(n, vocab_size))
        tf.sum_duplicates()
        length = np.asarray(tf.sum(axis=1)).ravel()
        norm = k1 * (1 - b + b * length / max(length.mean(), 1e-9))
        tf = tf.tocoo()
        saturated = tf.data * (k1 + 1) / (tf.data + norm[tf.row])
        self.weights = sp.csr_matrix((saturated, (tf.row, tf.col)), shape=tf.shape)
        df = np.bincount(tf.col, minlength=vocab_size)
        self.idf = bm25_idf(df, n)

    def score(self, query_ids: Sequence[int], doc_rows: np.ndarray) -> np.ndarray:
        terms = np.unique(np.asarray(query_ids, dtype=np.int64))
        if len(terms) == 0:
            return np.zeros(len(doc_rows), dtype=np.float32)
        block = self.weights[np.asarray(doc_rows)][:, terms]
        return np.asarray(block @ self.idf[terms]).ravel().astype(np.float32)
