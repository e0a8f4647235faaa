"""A synthetic corpus of sparse document vectors that keeps the statistics of real encoded documents.

For scale tests (1M documents) without encoding 1M texts: each synthetic document draws
- its number of nonzeros from the real documents' length distribution,
- its distinct terms with probability proportional to each term's real document frequency,
- each term's weight from that term's real weights (the per-term weight distribution is kept exactly).
Terms are drawn independently, so the synthetic corpus has no topical clustering: a harder case for
block-max pruning than real collections.
"""
from __future__ import annotations

import numba
import numpy as np
import scipy.sparse as sp

from lsr.index import LsrError, SparseBatch


@numba.njit(cache=True)
def _draw(lengths, cdf, weight_offsets, weight_values, seed, indptr, terms, weights):  # pragma: no cover
    np.random.seed(seed)
    vocab_size = cdf.shape[0]
    seen = np.full(vocab_size, -1, dtype=np.int64)
    for d in range(lengths.shape[0]):
        start = indptr[d]
        n = 0
        while n < lengths[d]:
            t = np.searchsorted(cdf, np.random.random() * cdf[-1], side="right")
            if t >= vocab_size or seen[t] == d:
                continue
            seen[t] = d
            terms[start + n] = t
            count = weight_offsets[t + 1] - weight_offsets[t]
            weights[start + n] = weight_values[weight_offsets[t] + np.random.randint(0, count)]
            n += 1
    return indptr  # rows come out unsorted; SparseBatch.from_scipy sorts each row's (term, weight) pairs


def synthesize(real: SparseBatch, num_docs: int, seed: int = 0) -> SparseBatch:
    """`num_docs` synthetic document vectors with the statistics of `real` (see the module docstring)."""
    if len(real) == 0 or real.nnz == 0:
        raise LsrError("synthesize needs real document vectors to copy statistics from")
    columns = real.to_scipy().tocsc()
    columns.sort_indices()
    weight_offsets, weight_values = columns.indptr.astype(np.int64), columns.data.astype(np.float32)
    target_df = np.diff(columns.indptr) / len(real)
    rng = np.random.default_rng(seed)
    real_lengths = np.minimum(real.row_nnz(), int((target_df > 0).sum()))

    def draw(n: int, propensity: np.ndarray, draw_seed: int) -> SparseBatch:
        lengths = rng.choice(real_lengths, size=n, replace=True).astype(np.int64)
        indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        terms = np.empty(indptr[-1], dtype=np.int32)
        weights = np.empty(indptr[-1], dtype=np.float32)
        _draw(lengths, np.cumsum(propensity), weight_offsets, weight_values, draw_seed, indptr, terms, weights)
        return SparseBatch.from_scipy(sp.csr_matrix((weights, terms, indptr), shape=(n, real.vocab_size)))

    # Drawing distinct terms in proportion to df under-draws the most frequent terms (a document cannot take
    # a term twice), so the propensities are corrected on a sample until the drawn df matches the real one.
    propensity = target_df.astype(np.float64)
    sample = min(num_docs, 20_000)
    for step in range(4):
        drawn_df = np.bincount(draw(sample, propensity, seed + 1 + step).term_ids, minlength=real.vocab_size) / sample
        ratio = np.where(drawn_df > 0, target_df / np.maximum(drawn_df, 1e-12), 1.0)
        propensity = propensity * np.clip(ratio, 0.5, 4.0)
    return draw(num_docs, propensity, seed)
