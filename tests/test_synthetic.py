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


def _assert_like_real(real: SparseBatch, synth: SparseBatch, *, length_tol: float, df_rtol: float) -> None:
    """A synthetic corpus keeps the real vectors' statistics: lengths, the document-frequency curve, each term's
    weights, and valid rows."""
    # lengths: the same distribution
    assert abs(synth.row_nnz().mean() / real.row_nnz().mean() - 1) < length_tol
    np.testing.assert_allclose(np.percentile(synth.row_nnz(), [10, 50, 90]),
                               np.percentile(real.row_nnz(), [10, 50, 90]), rtol=0.1)
    # document-frequency curve: the same per term, as a fraction of the corpus
    real_df = np.bincount(real.term_ids, minlength=real.vocab_size) / len(real)
    synth_df = np.bincount(synth.term_ids, minlength=real.vocab_size) / len(synth)
    frequent = real_df > 0.05
    assert np.corrcoef(real_df, synth_df)[0, 1] > 0.99
    np.testing.assert_allclose(synth_df[frequent], real_df[frequent], rtol=df_rtol)
    # weights: every synthetic (term, weight) is one of that term's real weights, and the per-term means match
    real_cols, synth_cols = real.to_scipy().tocsc(), synth.to_scipy().tocsc()
    for t in np.flatnonzero(frequent)[:50]:
        real_w = real_cols.data[real_cols.indptr[t]:real_cols.indptr[t + 1]]
        synth_w = synth_cols.data[synth_cols.indptr[t]:synth_cols.indptr[t + 1]]
        assert np.isin(synth_w, real_w).all()
        assert abs(synth_w.mean() / real_w.mean() - 1) < 0.1
    # rows are valid: distinct, sorted terms
    for i in range(0, len(synth), 997):
        assert np.all(np.diff(synth.row(i)[0]) > 0)


def test_synthetic_corpus_keeps_the_real_statistics(real):
    synth = synthesize(real, 20_000, seed=1)
    assert len(synth) == 20_000 and synth.vocab_size == real.vocab_size
    _assert_like_real(real, synth, length_tol=0.02, df_rtol=0.15)


def test_synthetic_corpus_is_seeded_and_needs_real_vectors(real):
    a, b = synthesize(real, 500, seed=3), synthesize(real, 500, seed=3)
    assert np.array_equal(a.term_ids, b.term_ids) and np.array_equal(a.weights, b.weights)
    assert not np.array_equal(synthesize(real, 500, seed=4).term_ids, a.term_ids)
    empty = SparseBatch(np.zeros(1, np.int64), np.zeros(0, np.int32), np.zeros(0, np.float32), 10)
    with pytest.raises(LsrError, match="needs real document vectors"):
        synthesize(empty, 10)


# --- the topical corpus ---------------------------------------------------------------------------------------------

from lsr.eval.bench.synthetic import fit_topics, spherical_kmeans, synthesize_topical, topical_chunks, \
    topical_queries  # noqa: E402

PLANTED = 8


@pytest.fixture(scope="module")
def topical_real():
    """Real-like vectors with PLANTED topics: each document draws most of its terms from its topic's own
    150 terms (80% of the mass), the rest from a shared Zipf background; weights term-specific. Plus train queries."""
    rng = np.random.default_rng(5)
    vocab, n = 2400, 1600
    background = 1.0 / np.arange(1, vocab + 1) ** 0.9
    topic_terms = [rng.choice(vocab, 150, replace=False) for _ in range(PLANTED)]
    rows, topics = [], rng.integers(0, PLANTED, n)
    for topic in topics:
        p = background / background.sum() * 0.2
        p[topic_terms[topic]] += 0.8 / 150
        length = int(np.clip(rng.lognormal(4.2, 0.4), 10, 300))
        terms = np.sort(rng.choice(vocab, length, replace=False, p=p / p.sum()))
        weights = (rng.gamma(1.5, 0.3, length) * (1 + terms % 5)).astype(np.float32)
        rows.append(sp.csr_matrix((weights, terms, [0, length]), shape=(1, vocab)))
    queries = []
    for _ in range(300):
        topic = rng.integers(PLANTED)
        length = int(rng.integers(3, 12))
        terms = np.sort(rng.choice(topic_terms[topic], length, replace=False))
        queries.append(sp.csr_matrix(((1 + terms % 3).astype(np.float32), terms, [0, length]), shape=(1, vocab)))
    return (SparseBatch.from_scipy(sp.vstack(rows).tocsr()), topics, SparseBatch.from_scipy(sp.vstack(queries).tocsr()))


@pytest.fixture(scope="module")
def model(topical_real):
    real, _, queries = topical_real
    return fit_topics(real, 16, train_queries=queries, seed=0)


def _jaccard(batch: SparseBatch, pairs) -> float:
    sets = [set(batch.row(i)[0].tolist()) for i in range(len(batch))]
    return float(np.mean([len(sets[a] & sets[b]) / len(sets[a] | sets[b]) for a, b in pairs]))


def test_spherical_kmeans_finds_planted_topics(topical_real):
    real, topics, _ = topical_real
    assign = spherical_kmeans(real, PLANTED, seed=0)
    # purity: each found cluster is mostly one planted topic
    purity = sum(np.bincount(topics[assign == c]).max() for c in np.unique(assign)) / len(real)
    assert purity > 0.85
    np.testing.assert_array_equal(assign, spherical_kmeans(real, PLANTED, seed=0))


def test_topical_corpus_keeps_the_real_statistics(topical_real, model):
    real = topical_real[0]
    synth = synthesize_topical(model, 16_000, seed=1)
    assert len(synth) == 16_000 and synth.vocab_size == real.vocab_size
    _assert_like_real(real, synth, length_tol=0.03, df_rtol=0.2)


def test_topical_corpus_is_clustered(topical_real, model):
    """Documents of one dominant topic share more terms than random pairs, far more than in the unclustered
    corpus drawn from the same vectors."""
    real = topical_real[0]
    docs, topic = model.draw(0, 3000, seed=2, with_topics=True)
    rng = np.random.default_rng(0)
    same = []
    for t in np.unique(topic):
        members = np.flatnonzero(topic == t)
        if len(members) > 1:
            same += [tuple(rng.choice(members, 2, replace=False)) for _ in range(40)]
    random_pairs = [tuple(rng.choice(len(docs), 2, replace=False)) for _ in range(len(same))]
    flat = synthesize(real, 3000, seed=2)
    assert _jaccard(docs, same) > 2 * _jaccard(docs, random_pairs)
    assert _jaccard(docs, same) > 2 * _jaccard(flat, random_pairs)


def test_topical_corpus_is_seeded_and_streams(model):
    a, b = synthesize_topical(model, 700, seed=3), synthesize_topical(model, 700, seed=3)
    assert np.array_equal(a.term_ids, b.term_ids) and np.array_equal(a.weights, b.weights)
    assert not np.array_equal(synthesize_topical(model, 700, seed=4).term_ids[:500], a.term_ids[:500])
    for chunk_docs in (1, 64, 250, 700, 5000):  # the chunks of any size are the corpus drawn at once
        chunks = list(topical_chunks(model, 700, seed=3, chunk_docs=chunk_docs))
        assert len(chunks) == -(-700 // chunk_docs)
        whole = SparseBatch.concat(chunks)
        assert np.array_equal(whole.indptr, a.indptr) and np.array_equal(whole.term_ids, a.term_ids)
        assert np.array_equal(whole.weights, a.weights)
    # a later chunk alone is the same documents as in the whole corpus
    tail = model.draw(500, 200, seed=3)
    assert np.array_equal(tail.term_ids, a.select(list(range(500, 700))).term_ids)


def test_topical_queries(topical_real, model):
    real, _, train = topical_real
    queries, topics = topical_queries(model, 200, seed=0)
    assert len(queries) == 200 and topics.shape == (200,)
    assert np.all((queries.row_nnz() >= 1) & (queries.row_nnz() <= train.row_nnz().max()))
    assert abs(queries.row_nnz().mean() / train.row_nnz().mean() - 1) < 0.2
    used = np.unique(train.term_ids)
    assert np.isin(queries.term_ids, used).all(), "topical queries use the terms real queries use"
    train_cols = train.to_scipy().tocsc()
    q_cols = queries.to_scipy().tocsc()
    for t in np.unique(queries.term_ids)[:40]:
        assert np.isin(q_cols.data[q_cols.indptr[t]:q_cols.indptr[t + 1]],
                       train_cols.data[train_cols.indptr[t]:train_cols.indptr[t + 1]]).all()
    # a topical query's best documents are mostly its topic's
    docs, doc_topic = model.draw(0, 3000, seed=2, with_topics=True)
    scores = (docs.to_scipy() @ queries.to_scipy().T).toarray().T
    on_topic = [np.mean(doc_topic[np.argsort(-s)[:10]] == t) for s, t in zip(scores, topics)]
    share = np.bincount(doc_topic, minlength=model.num_topics)[topics] / len(docs)
    assert np.mean(on_topic) > 3 * np.mean(share)
    with pytest.raises(LsrError, match="no train queries"):
        topical_queries(fit_topics(real, 4), 3)
