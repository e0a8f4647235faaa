"""The index-side pieces of the query service, on hand-computed values: min-max normalisation, linear
interpolation (missing documents), RRF, Rocchio on sparse vectors, Vector-PRF, and the dense store."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import scipy.sparse as sp

from lsr.index import (DenseStore, Hit, IndexFormatError, IndexReader, IndexWriter, LsrError, SparseBatch,
                       feedback_matrix, interpolate, interpolate_hits, normalize, rocchio_sparse, rrf, rrf_hits,
                       vector_prf, add_dense_store)
from lsr.index.dense import DENSE_META, DENSE_VECTORS

W = {"query_weight": 0.4, "feedback_weight": 0.6}  # pyserini's Rocchio weights (ranking.Ranking's defaults)


def scores(hits):
    return [(h.doc_id, round(h.score, 10)) for h in hits]


# -- normalisation ---------------------------------------------------------------------------------------
def test_normalize_min_max_keeps_order():
    assert scores(normalize([Hit("a", 3.0), Hit("b", 2.0), Hit("c", 1.0)])) == [("a", 1.0), ("b", 0.5), ("c", 0.0)]
    assert scores(normalize([Hit("a", -1.0), Hit("b", -3.0)])) == [("a", 1.0), ("b", 0.0)]


def test_normalize_degenerate_lists():
    assert normalize([]) == []
    assert scores(normalize([Hit("a", 7.0), Hit("b", 7.0)])) == [("a", 1.0), ("b", 1.0)]
    with pytest.raises(LsrError):
        normalize([Hit("a", math.nan)])


# -- interpolation ---------------------------------------------------------------------------------------
SPARSE = [Hit("d1", 10.0), Hit("d2", 6.0), Hit("d3", 2.0)]  # normalised: d1 1, d2 .5, d3 0
DENSE = [Hit("d2", 0.9), Hit("d4", 0.5), Hit("d1", 0.1)]  # normalised: d2 1, d4 .5, d1 0


def test_interpolate_hand_computed_with_missing_documents():
    fused = interpolate_hits(SPARSE, DENSE, alpha=0.4)
    # d1 .4*1 + .6*0 = .4; d2 .4*.5 + .6*1 = .8; d3 .4*0 + .6*min(dense)=0 -> 0; d4 .4*min(sparse)=0 + .6*.5 = .3
    assert scores(fused) == [("d2", 0.8), ("d1", 0.4), ("d4", 0.3), ("d3", 0.0)]
    assert scores(interpolate_hits(SPARSE, DENSE, alpha=1.0))[:2] == [("d1", 1.0), ("d2", 0.5)]
    assert scores(interpolate_hits(SPARSE, DENSE, alpha=0.4, depth=2)) == [("d2", 0.8), ("d1", 0.4)]


def test_missing_document_gets_the_lists_minimum_even_when_not_zero():
    # a one-hit list normalises to 1.0, so its minimum is 1.0 and a document missing from it gets 1.0
    fused = interpolate_hits([Hit("a", 5.0)], [Hit("b", 0.9), Hit("a", 0.3)], alpha=0.5)
    assert scores(fused) == [("b", 1.0), ("a", 0.5)]
    # an empty list contributes 0.0
    assert scores(interpolate_hits([], [Hit("x", 2.0), Hit("y", 1.0)], alpha=0.5)) == [("x", 0.5), ("y", 0.0)]


def test_interpolate_runs_ties_and_errors():
    run = interpolate({"q1": SPARSE, "q2": [Hit("z", 1.0)]}, {"q1": DENSE}, alpha=0.4)
    assert set(run) == {"q1", "q2"}
    assert scores(run["q2"]) == [("z", 0.4)]
    tied = interpolate_hits([Hit("b", 1.0), Hit("a", 1.0)], [], alpha=0.5)
    assert [h.doc_id for h in tied] == ["a", "b"]  # equal scores: doc_id ascending
    with pytest.raises(LsrError, match="alpha"):
        interpolate_hits(SPARSE, DENSE, alpha=1.5)
    with pytest.raises(LsrError, match="depth"):
        interpolate_hits(SPARSE, DENSE, depth=0)


# -- RRF -------------------------------------------------------------------------------------------------
def test_rrf_hand_computed():
    fused = rrf_hits([[Hit("a", 9.0), Hit("b", 5.0), Hit("c", 1.0)], [Hit("c", 0.7), Hit("a", 0.2)]], k=60)
    assert [h.doc_id for h in fused] == ["a", "c", "b"]
    assert fused[0].score == pytest.approx(1 / 61 + 1 / 62)
    assert fused[1].score == pytest.approx(1 / 63 + 1 / 61)
    assert fused[2].score == pytest.approx(1 / 62)


def test_rrf_runs_ignore_scores_and_cover_all_queries():
    run = rrf([{"q1": [Hit("a", 100.0), Hit("b", -5.0)]}, {"q1": [Hit("b", 0.1)], "q2": [Hit("x", 3.0)]}], k=1)
    assert scores(run["q1"]) == [("b", round(1 / 3 + 1 / 2, 10)), ("a", 0.5)]
    assert scores(run["q2"]) == [("x", 0.5)]
    assert rrf_hits([[Hit("a", 1)], [Hit("b", 1)]], depth=1) == [Hit("a", 0.5 / 30.5)]
    with pytest.raises(LsrError):
        rrf_hits([], k=-1)


# -- PRF -------------------------------------------------------------------------------------------------
def _batch(rows: list[dict[int, float]], vocab: int = 6) -> SparseBatch:
    dense = np.zeros((len(rows), vocab), dtype=np.float32)
    for i, row in enumerate(rows):
        for t, w in row.items():
            dense[i, t] = w
    return SparseBatch.from_dense(dense)


def test_rocchio_sparse_hand_computed_and_top_terms():
    query = _batch([{1: 1.0, 3: 2.0}])
    docs = _batch([{1: 2.0, 4: 1.0}, {2: 4.0, 4: 3.0}])  # mean: t1 1, t2 2, t4 2
    out = rocchio_sparse(query, docs, query_weight=0.4, feedback_weight=0.6, top_terms=10)
    # t1 .4*1 + .6*1 = 1.0; t2 .6*2 = 1.2; t3 .4*2 = .8; t4 .6*2 = 1.2
    assert out.term_ids.tolist() == [1, 2, 3, 4]
    np.testing.assert_allclose(out.weights, [1.0, 1.2, 0.8, 1.2], rtol=1e-6)
    kept = rocchio_sparse(query, docs, query_weight=0.4, feedback_weight=0.6, top_terms=3)  # drops t3 (the smallest)
    assert kept.term_ids.tolist() == [1, 2, 4]
    np.testing.assert_allclose(kept.weights, [1.0, 1.2, 1.2], rtol=1e-6)
    ties = rocchio_sparse(query, docs, query_weight=0.4, feedback_weight=0.6, top_terms=1)  # t2 and t4 tie: smaller term_id
    assert ties.term_ids.tolist() == [2]


def test_rocchio_sparse_defaults_and_edge_cases():
    query = _batch([{1: 1.0}])
    no_feedback = rocchio_sparse(query, sp.csr_matrix((0, 6), dtype=np.float32), **W)
    np.testing.assert_allclose(no_feedback.weights, [0.4])  # default alpha 0.4, beta 0.6
    np.testing.assert_allclose(rocchio_sparse(query, _batch([{1: 1.0}]), **W).weights, [1.0])
    with pytest.raises(LsrError):
        rocchio_sparse(_batch([{1: 1.0}, {2: 1.0}]), _batch([{1: 1.0}]), **W)
    with pytest.raises(LsrError):
        rocchio_sparse(query, _batch([{1: 1.0}], vocab=7), **W)
    with pytest.raises(LsrError):
        rocchio_sparse(query, _batch([{1: 1.0}]), query_weight=0.4, feedback_weight=-1.0)


def test_vector_prf_hand_computed_and_unit_length():
    out = vector_prf(np.array([1.0, 0.0]), np.array([[0.0, 1.0], [0.0, 1.0]]), query_weight=0.4, feedback_weight=0.6)
    np.testing.assert_allclose(out, np.array([0.4, 0.6]) / math.sqrt(0.52), rtol=1e-6)
    assert out.dtype == np.float32
    np.testing.assert_allclose(vector_prf(np.array([3.0, 4.0]), np.zeros((0, 2)), **W), [0.6, 0.8], rtol=1e-6)


def test_feedback_matrix_dequantises_the_index(tmp_path):
    docs = _batch([{0: 1.0, 2: 0.5}, {1: 2.0}], vocab=4)
    with IndexWriter(tmp_path / "idx", vocab_size=4) as writer:
        writer.add(docs, ["a", "b"])
    reader = IndexReader(tmp_path / "idx")
    matrix = feedback_matrix(reader)
    assert matrix.dtype == np.float32 and matrix.shape == (2, 4)
    np.testing.assert_allclose(matrix.toarray(), docs.to_scipy().toarray(), atol=1 / reader.quantization.scale)


# -- dense store -----------------------------------------------------------------------------------------
@pytest.fixture
def dense_index(tmp_path):
    path = tmp_path / "idx"
    with IndexWriter(path, vocab_size=4, info={"model": "test"}) as writer:
        writer.add(_batch([{0: 1.0}, {1: 1.0}, {2: 1.0}, {3: 1.0}], vocab=4), ["a", "b", "c", "d"])
    vectors = np.array([[1, 0, 0], [0, 1, 0], [-1, 0, 0], [0.6, 0.8, 0]], dtype=np.float32)
    add_dense_store(path, vectors, info={"model": "minilm"})
    return path


@pytest.mark.parametrize("backend", ["faiss", "numpy"])
def test_dense_store_exact_inner_product(dense_index, backend):
    if backend == "faiss":
        pytest.importorskip("faiss")
    store = DenseStore(dense_index, backend=backend)
    assert store.info == {"model": "minilm"} and store.dim == 3 and store.backend == backend
    hits = store.search(np.array([1.0, 0.0, 0.0]), k=10)
    assert [h.doc_id for h in hits] == ["a", "d", "b", "c"]  # negative scores are hits too; k capped at 4
    assert [round(h.score, 6) for h in hits] == [1.0, 0.6, 0.0, -1.0]
    idx, _ = store.search_vector(np.array([0.0, 0.0, 1.0]), k=2)  # all tie at 0: smaller doc_idx first
    assert idx.tolist() == [0, 1]
    with pytest.raises(LsrError, match="dimension"):
        store.search(np.zeros(4), k=1)
    with pytest.raises(LsrError):
        store.search(np.zeros(3), k=0)


def test_dense_store_validation(dense_index):
    with pytest.raises(LsrError, match="already has a dense store"):
        add_dense_store(dense_index, np.zeros((4, 3)))
    with pytest.raises(LsrError, match="4 documents"):
        add_dense_store(dense_index, np.zeros((3, 3)), overwrite=True)
    vectors = dense_index / DENSE_VECTORS
    data = bytearray(vectors.read_bytes())
    data[-1] ^= 0xFF
    vectors.write_bytes(bytes(data))
    with pytest.raises(IndexFormatError, match="checksum"):
        DenseStore(dense_index)
    meta = json.loads((dense_index / DENSE_META).read_text())
    meta["dim"] = 5
    (dense_index / DENSE_META).write_text(json.dumps(meta))
    with pytest.raises(IndexFormatError, match="checksum mismatch in dense_meta"):
        DenseStore(dense_index)
    (dense_index / DENSE_META).unlink()
    with pytest.raises(IndexFormatError, match="no dense store"):
        DenseStore(dense_index)
