"""The impact algorithm (index/impact_order.py): the impact order itself, exactness without a budget, what a
budget reads, and its errors."""
import numpy as np
import pytest
import scipy.sparse as sp

from lsr.index import IndexReader, IndexWriter, LsrError, Searcher, SparseBatch
from lsr.index.impact_order import impact_order, impact_query
from lsr.index.search import brute_force_search


def _index(tmp_path, n=2000, vocab=300, density=0.05, seed=0, format_version=2):
    m = sp.random(n, vocab, density=density, random_state=seed, format="csr", dtype=np.float32)
    m.data = (m.data * 3).astype(np.float32)
    path = tmp_path / f"idx{format_version}"
    with IndexWriter(path, vocab_size=vocab, format_version=format_version) as writer:
        writer.add(SparseBatch.from_scipy(m), [f"d{i}" for i in range(n)])
    return IndexReader(path)


def test_impact_order_sorts_each_term_by_impact_then_doc():
    offsets = np.array([0, 5, 5, 8])
    doc_idx = np.array([0, 2, 3, 7, 9, 1, 4, 6])
    impacts = np.array([3, 5, 3, 9, 5, 1, 1, 2], np.uint8)
    order = impact_order(offsets, doc_idx, impacts, 10)
    assert order.seg_offsets.tolist() == [0, 3, 3, 5]  # term 0: impacts 9, 5, 3; term 1 none; term 2: 2, 1
    assert order.seg_impact.tolist() == [9, 5, 3, 2, 1]
    assert order.seg_start.tolist() == [0, 1, 3, 5, 6, 8]
    assert order.docs.tolist() == [7, 2, 9, 0, 3, 6, 1, 4]


@pytest.mark.parametrize("format_version", [2, 3])
def test_without_a_budget_it_is_exact(tmp_path, format_version):
    reader = _index(tmp_path, format_version=format_version)
    searcher = Searcher(reader, algorithm="impact")
    assert searcher.exact
    rng = np.random.default_rng(1)
    queries = []
    for _ in range(30):
        terms = np.sort(rng.choice(reader.vocab_size, 25, replace=False))
        weights = rng.random(25) + 0.01
        queries.append((terms, weights))
        idx, scores = searcher.search_vector(terms, weights, k=10)
        ref_idx, ref_scores = brute_force_search(reader, terms, weights, k=10)
        assert idx.tolist() == ref_idx.tolist()
        np.testing.assert_allclose(scores, ref_scores, rtol=1e-9)
    batch = SparseBatch.from_scipy(sp.csr_matrix(
        (np.concatenate([w for _, w in queries]), np.concatenate([t for t, _ in queries]),
         np.cumsum([0] + [len(t) for t, _ in queries])), shape=(len(queries), reader.vocab_size)))
    for (terms, weights), (idx, _) in zip(queries, searcher.search_batch_vectors(batch, k=10, threads=2)):
        assert idx.tolist() == brute_force_search(reader, terms, weights, k=10)[0].tolist()


def test_a_budget_reads_the_largest_contributions_first(tmp_path):
    reader = _index(tmp_path)
    order = impact_order(reader.offsets, reader.doc_idx, reader.impacts, reader.num_docs)
    terms, weights = np.array([3, 50, 120]), np.array([1.0, 2.0, 0.5])
    # the heaviest segment: the largest weight * impact over the query's terms' first segments
    first = order.seg_offsets[terms]
    best = int(np.argmax(weights * order.seg_impact[first]))
    s = first[best]
    size = int(order.seg_start[s + 1] - order.seg_start[s])
    acc, touched = np.zeros(reader.num_docs), np.empty(reader.num_docs, np.int32)
    scores, docs = np.empty(10), np.empty(10, np.int64)
    n, read = impact_query(*order, terms, weights, 10, size, acc, touched, scores, docs)
    assert read == size and not acc.any()  # the accumulator is left zeroed
    want = order.docs[order.seg_start[s]:order.seg_start[s + 1]][:10]  # equal scores: the smallest doc_idx first
    assert sorted(docs[:n].tolist()) == sorted(want.tolist())
    np.testing.assert_allclose(scores[:n], weights[best] * order.seg_impact[s])
    # any budget: every returned score is a partial sum, at most the document's exact score
    searcher = Searcher(reader, algorithm="impact", budget=150)
    exact = reader.doc_matrix().astype(np.float64) @ np.bincount(terms, weights, reader.vocab_size)
    idx, got = searcher.search_vector(terms, weights, k=10)
    assert len(idx) == 10 and np.all(got <= exact[idx] / reader.quantization.scale + 1e-9)
    # single and batch search agree
    batch = SparseBatch.from_scipy(sp.csr_matrix((np.tile(weights, 2), np.tile(terms, 2), [0, 3, 6]),
                                                 shape=(2, reader.vocab_size)))
    for b_idx, _ in searcher.search_batch_vectors(batch, k=10, threads=2):
        assert b_idx.tolist() == idx.tolist()


def test_negative_weights_fall_back_to_exact(tmp_path):
    reader = _index(tmp_path)
    terms, weights = np.array([3, 50, 120]), np.array([1.0, -2.0, 0.5])
    idx, _ = Searcher(reader, algorithm="impact", budget=10).search_vector(terms, weights, k=10)
    assert idx.tolist() == brute_force_search(reader, terms, weights, k=10)[0].tolist()


def test_budget_errors(tmp_path):
    reader = _index(tmp_path, n=50)
    for bad in (0, -5, 2.5, True, "100"):
        with pytest.raises(LsrError, match="budget"):
            Searcher(reader, algorithm="impact", budget=bad)
    with pytest.raises(LsrError, match="impact algorithm"):
        Searcher(reader, budget=100)
    assert not Searcher(reader, algorithm="impact", budget=100).exact
