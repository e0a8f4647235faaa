"""The scale-corpus generator keeps the real vectors' statistics: lengths, document frequencies, per-term weights."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from lsr.eval.bench.synthetic import synthesize
from lsr.index import LsrError, SparseBatch


@pytest.fixture(scope="module")
def real():
    """Skewed like SPLADE document vectors: Zipf-like term frequencies, varied lengths, term-specific weights."""
    rng = np.random.default_rng(0)
    vocab, n = 3000, 2000
    popularity = 1.0 / np.arange(1, vocab + 1) ** 0.8
    rows = []
    for _ in range(n):
        length = int(np.clip(rng.lognormal(4.0, 0.5), 5, 600))
        terms = np.sort(rng.choice(vocab, length, replace=False, p=popularity / popularity.sum()))
        weights = (rng.gamma(1.5, 0.3, length) * (1 + terms % 7)).astype(np.float32)  # each term its own scale
        rows.append(sp.csr_matrix((weights, terms, [0, length]), shape=(1, vocab)))
    return SparseBatch.from_scipy(sp.vstack(rows).tocsr())


def test_synthetic_corpus_keeps_the_real_statistics(real):
    synth = synthesize(real, 20_000, seed=1)
    assert len(synth) == 20_000 and synth.vocab_size == real.vocab_size
    # lengths: the same distribution
    assert abs(synth.row_nnz().mean() / real.row_nnz().mean() - 1) < 0.02
    np.testing.assert_allclose(np.percentile(synth.row_nnz(), [10, 50, 90]),
                               np.percentile(real.row_nnz(), [10, 50, 90]), rtol=0.1)
    # document-frequency curve: the same per term, as a fraction of the corpus
    real_df = np.bincount(real.term_ids, minlength=real.vocab_size) / len(real)
    synth_df = np.bincount(synth.term_ids, minlength=real.vocab_size) / len(synth)
    frequent = real_df > 0.05
    assert np.corrcoef(real_df, synth_df)[0, 1] > 0.99
    np.testing.assert_allclose(synth_df[frequent], real_df[frequent], rtol=0.15)
    # weights: every synthetic (term, weight) is one of that term's real weights, and the per-term means match
    real_cols, synth_cols = real.to_scipy().tocsc(), synth.to_scipy().tocsc()
    for t in np.flatnonzero(frequent)[:50]:
        real_w = real_cols.data[real_cols.indptr[t]:real_cols.indptr[t + 1]]
        synth_w = synth_cols.data[synth_cols.indptr[t]:synth_cols.indptr[t + 1]]
        assert np.isin(synth_w, real_w).all()
        assert abs(synth_w.mean() / real_w.mean() - 1) < 0.1
    # rows are valid: distinct, sorted terms
    for i in range(0, len(synth), 997):
        terms, _ = synth.row(i)
        assert np.all(np.diff(terms) > 0)


def test_synthetic_corpus_is_seeded_and_needs_real_vectors(real):
    a, b = synthesize(real, 500, seed=3), synthesize(real, 500, seed=3)
    assert np.array_equal(a.term_ids, b.term_ids) and np.array_equal(a.weights, b.weights)
    assert not np.array_equal(synthesize(real, 500, seed=4).term_ids, a.term_ids)
    empty = SparseBatch(np.zeros(1, np.int64), np.zeros(0, np.int32), np.zeros(0, np.float32), 10)
    with pytest.raises(LsrError, match="needs real document vectors"):
        synthesize(empty, 10)
