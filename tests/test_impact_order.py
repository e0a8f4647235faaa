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
    acc, touched = np.zeros(512), np.empty(512, np.int64)  # 4 chunks of 512 documents
    scores, docs = np.empty(10), np.empty(10, np.int64)
    n, read = impact_query(*order, reader.num_docs, terms, weights, 10, size, acc, touched, scores, docs)
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


@pytest.mark.parametrize("format_version", [2, 3])
def test_rescored_candidates_are_scored_exactly(tmp_path, format_version):
    """With rescore, every returned score is the document's exact score; with no budget the result is exact, and
    a budget with enough candidates finds most of the exact top 10."""
    m = sp.random(3000, 300, density=0.05, random_state=4, format="csr", dtype=np.float32)
    path = tmp_path / "fwd"
    with IndexWriter(path, vocab_size=300, format_version=format_version, forward_index=True) as writer:
        writer.add(SparseBatch.from_scipy(m), [f"d{i}" for i in range(3000)])
    reader = IndexReader(path)
    rng = np.random.default_rng(5)
    exact = Searcher(reader, algorithm="impact", rescore=20)
    approx = Searcher(reader, algorithm="impact", budget=1500, rescore=200)
    assert exact.exact and not approx.exact
    found, rows = [], []
    for _ in range(20):
        terms = np.sort(rng.choice(300, 25, replace=False))
        weights = rng.random(25) + 0.01
        rows.append((terms, weights))
        ref_idx, ref_scores = brute_force_search(reader, terms, weights, k=10)
        idx, scores = exact.search_vector(terms, weights, k=10)
        assert idx.tolist() == ref_idx.tolist()
        idx, scores = approx.search_vector(terms, weights, k=10)
        full = reader.doc_matrix().astype(np.float64) @ np.bincount(terms, weights, 300) / reader.quantization.scale
        np.testing.assert_allclose(scores, full[idx], rtol=1e-9)
        found.append(len(set(idx.tolist()) & set(ref_idx.tolist())) / 10)
    assert np.mean(found) > 0.5
    batch = SparseBatch.from_scipy(sp.csr_matrix(
        (np.concatenate([w for _, w in rows]), np.concatenate([t for t, _ in rows]),
         np.cumsum([0] + [len(t) for t, _ in rows])), shape=(len(rows), 300)))
    single = [approx.search_vector(t, w, k=10)[0].tolist() for t, w in rows]
    assert [i.tolist() for i, _ in approx.search_batch_vectors(batch, k=10, threads=2)] == single


def test_rescore_needs_the_forward_index(tmp_path):
    reader = _index(tmp_path, n=50, format_version=3)  # format 3 without the forward index (its default)
    with pytest.raises(LsrError, match="forward index"):
        Searcher(reader, algorithm="impact", rescore=100)
    with pytest.raises(LsrError, match="rescore"):
        Searcher(_index(tmp_path, n=50), rescore=100)
