"""Index round trip, exact search against brute force, and a damaged index never read as a good one."""
from __future__ import annotations

import json
import os
import stat

import numpy as np
import pytest
import scipy.sparse as sp

from lsr.index.storage import DATA_FILES, READ_VERSIONS, data_files
from lsr.index import (ALGORITHMS, FORMAT_VERSION, IndexFormatError, IndexReader, IndexWriter, LsrError, Quantization, Searcher,
                       SparseBatch, brute_force_search)


def random_batch(rng, n, vocab, density=0.05, integer=False) -> SparseBatch:
    m = sp.random(n, vocab, density=density, format="csr", random_state=rng, dtype=np.float32)
    if integer:
        m.data = rng.integers(1, 4, size=m.nnz).astype(np.float32)
    else:
        m.data = (m.data * 3).astype(np.float32)
    return SparseBatch.from_scipy(m)


def build(tmp_path, batch, bits=8, name="idx", block_size=8, **kw):
    """Format 3 with the forward index (every algorithm runs); tests/test_format3.py covers the default layout."""
    kw.setdefault("format_version", 3)
    kw.setdefault("forward_index", True if kw["format_version"] == 3 else None)
    with IndexWriter(tmp_path / name, vocab_size=batch.vocab_size, bits=bits, block_size=block_size, **kw) as w:
        w.add(batch, [f"d{i}" for i in range(len(batch))])
    return IndexReader(tmp_path / name)


def assert_same_as_brute_force(reader, terms, weights, k):
    ref_idx, ref_scores = brute_force_search(reader, terms, weights, k=k)
    for algorithm in ALGORITHMS:
        idx, scores = Searcher(reader, algorithm=algorithm).search_vector(terms, weights, k=k)
        assert idx.tolist() == ref_idx.tolist(), algorithm
        np.testing.assert_allclose(scores, ref_scores, rtol=1e-12)


def test_quantization_closed_form():
    q = Quantization.fit(max_weight=2.0, bits=8)
    assert q.scale == pytest.approx(127.5)
    np.testing.assert_array_equal(q.quantize(np.array([0.0, 1.0, 2.0, 0.003], np.float32)), [0, 128, 255, 0])
    assert q.quantize(np.array([5.0], np.float32))[0] == 255  # clipped
    with pytest.raises(LsrError):
        q.quantize(np.array([-1.0], np.float32))
    with pytest.raises(LsrError):
        Quantization(bits=12, scale=1.0)


@pytest.mark.parametrize("bits", [8, 16])
def test_round_trip_keeps_quantised_impacts(tmp_path, bits):
    rng = np.random.default_rng(0)
    batch = random_batch(rng, 57, 311)
    reader = build(tmp_path, batch, bits=bits, info={"model": "m"})
    quant = Quantization.fit(float(batch.weights.max()), bits)
    expected = batch.to_scipy().copy()
    expected.data = quant.quantize(expected.data).astype(np.float64)
    expected.eliminate_zeros()
    got = reader.doc_matrix().astype(np.float64)
    assert (got != expected).nnz == 0
    assert reader.doc_ids == [f"d{i}" for i in range(57)]
    assert reader.info == {"model": "m"}
    assert reader.quantization == quant
    err = np.abs(quant.dequantize(quant.quantize(batch.weights)) - batch.weights).max()
    assert err <= 0.5 / quant.scale + 1e-6


@pytest.mark.parametrize("seed", range(5))
def test_search_equals_brute_force_random(tmp_path, seed):
    rng = np.random.default_rng(seed)
    batch = random_batch(rng, 300, 200, density=0.08)
    reader = build(tmp_path, batch, bits=8 if seed % 2 else 16)
    for _ in range(20):
        q = random_batch(rng, 1, 200, density=0.05)
        for k in (1, 10, 299, 1000):
            assert_same_as_brute_force(reader, *q.row(0), k=k)


@pytest.mark.parametrize("block_size", [1, 3, 64, 1000])
def test_blockmax_equals_brute_force_for_any_block_size(tmp_path, block_size):
    rng = np.random.default_rng(block_size)
    # skewed weights: a few heavy terms, many light ones, as in learned sparse vectors
    batch = random_batch(rng, 257, 120, density=0.1)
    batch = SparseBatch(batch.indptr, batch.term_ids, (batch.weights ** 3).astype(np.float32), batch.vocab_size)
    reader = build(tmp_path, batch, block_size=block_size)
    for _ in range(15):
        terms, weights = random_batch(rng, 1, 120, density=0.1).row(0)
        for k in (1, 7, 300):
            assert_same_as_brute_force(reader, terms, weights, k)


@pytest.mark.parametrize("seed", range(4))
def test_maxscore_prunes_and_equals_brute_force(tmp_path, seed):
    """Skewed impacts and query weights (as in learned sparse vectors), so MaxScore reaches its candidate phase:
    it must read fewer postings than there are and still return exactly the brute-force top k."""
    from lsr.index.search import _maxscore_query, term_max_impacts

    rng = np.random.default_rng(100 + seed)
    batch = random_batch(rng, 2000, 60, density=0.2)
    batch = SparseBatch(batch.indptr, batch.term_ids, (batch.weights ** 4).astype(np.float32), batch.vocab_size)
    reader = build(tmp_path, batch, bits=8 if seed % 2 else 16)
    term_max = term_max_impacts(reader)
    offsets, doc_idx, impacts = np.asarray(reader.offsets), reader.postings_doc_idx(), np.asarray(reader.impacts)
    pruned = 0
    for _ in range(25):
        terms, weights = random_batch(rng, 1, 60, density=0.3).row(0)
        weights = (weights.astype(np.float64) ** 3)
        for k in (1, 10, 2500):
            assert_same_as_brute_force(reader, terms, weights, k)
        acc, scores, docs = np.zeros(reader.num_docs), np.empty(10), np.empty(10, np.int64)
        _, read = _maxscore_query(offsets, doc_idx, impacts, term_max, terms.astype(np.int64), weights, 10, 1.0,
                                  acc, scores, docs)
        assert not acc.any(), "the accumulator is left zeroed for the next query"
        pruned += read < sum(offsets[t + 1] - offsets[t] for t in terms)
    assert pruned >= 5, f"MaxScore pruned only {pruned} of 25 queries"


def test_maxscore_takes_negative_weights_exactly(tmp_path):
    rng = np.random.default_rng(5)
    reader = build(tmp_path, random_batch(rng, 200, 40, density=0.2))
    terms, weights = random_batch(rng, 1, 40, density=0.3).row(0)
    weights = weights.astype(np.float64)
    weights[::3] *= -1  # no bound holds for negative weights: those queries are scored exhaustively
    assert_same_as_brute_force(reader, terms, weights, 10)
    batch = SparseBatch(np.array([0, len(terms)]), terms, weights.astype(np.float32), 40)
    assert Searcher(reader, algorithm="maxscore").search_batch_vectors(SparseBatch.concat([batch, batch]), 5,
                                                                      threads=2)[1][0].tolist() == \
        brute_force_search(reader, terms, weights.astype(np.float32), 5)[0].tolist()


@pytest.mark.parametrize("chunk_docs", [1, 3, 64, 299, 300, 10_000])
def test_exhaustive_chunks_equal_brute_force(tmp_path, chunk_docs):
    rng = np.random.default_rng(chunk_docs)
    reader = build(tmp_path, random_batch(rng, 300, 80, density=0.1))
    searcher = Searcher(reader, chunk_docs=chunk_docs)
    queries = random_batch(rng, 12, 80, density=0.1)
    for i in range(len(queries)):
        terms, weights = queries.row(i)
        for k in (1, 10, 400):
            ref_idx, ref_scores = brute_force_search(reader, terms, weights, k=k)
            idx, scores = searcher.search_vector(terms, weights, k=k)
            assert idx.tolist() == ref_idx.tolist()
            np.testing.assert_allclose(scores, ref_scores, rtol=1e-12)
    batch = searcher.search_batch_vectors(queries, k=10, threads=2)
    assert [b[0].tolist() for b in batch] == [searcher.search_vector(*queries.row(i), k=10)[0].tolist()
                                              for i in range(len(queries))]


def test_batch_search_equals_single_search(tmp_path):
    rng = np.random.default_rng(11)
    reader = build(tmp_path, random_batch(rng, 400, 150, density=0.06))
    queries = random_batch(rng, 23, 150, density=0.05)
    ids = [f"q{i}" for i in range(23)]
    for searcher in (Searcher(reader), Searcher(reader, algorithm="blockmax"),
                     Searcher(reader, algorithm="blockmax", prune_factor=0.5), Searcher(reader, algorithm="maxscore"),
                     Searcher(reader, algorithm="maxscore", prune_factor=0.5)):
        run = searcher.batch_search(queries, ids, k=9, threads=2)
        single = {qid: searcher.search(queries.select([i]), k=9) for i, qid in enumerate(ids)}
        assert run == single


def test_approximate_search_is_opt_in_and_close(tmp_path):
    rng = np.random.default_rng(12)
    batch = random_batch(rng, 600, 200, density=0.05)
    reader = build(tmp_path, batch)
    exact, approx = Searcher(reader), Searcher(reader, algorithm="blockmax", prune_factor=0.7, max_query_terms=6)
    assert exact.exact and not approx.exact
    matrix = reader.doc_matrix().astype(np.float64) / reader.quantization.scale
    recalls = []
    for _ in range(30):
        terms, weights = random_batch(rng, 1, 200, density=0.05).row(0)
        ref, _ = exact.search_vector(terms, weights, k=10)
        got, scores = approx.search_vector(terms, weights, k=10)
        q = np.zeros(200)
        q[terms] = weights
        # the returned scores are the pruned query's exact scores, never invented
        kept_terms, kept_weights = terms[np.argsort(-weights)[:6]], np.sort(weights)[::-1][:6]
        qk = np.zeros(200)
        qk[kept_terms] = kept_weights
        np.testing.assert_allclose(scores, matrix[got] @ qk, rtol=1e-9)
        recalls.append(len(set(ref.tolist()) & set(got.tolist())) / max(len(ref), 1))
    assert 0.3 < np.mean(recalls) <= 1.0
    with pytest.raises(LsrError, match="prune_factor"):
        Searcher(reader, algorithm="blockmax", prune_factor=1.5)
    with pytest.raises(LsrError, match="maxscore algorithms only"):
        Searcher(reader, prune_factor=0.5)
    pruned = Searcher(reader, max_query_terms=6)  # query-term pruning works with the exhaustive algorithm too
    terms, weights = random_batch(rng, 1, 200, density=0.05).row(0)
    keep = np.sort(np.argsort(-weights, kind="stable")[:6])
    assert pruned.search_vector(terms, weights, k=10)[0].tolist() == \
        Searcher(reader).search_vector(terms[keep], weights[keep], k=10)[0].tolist()


def test_search_ties_are_broken_by_doc_idx(tmp_path):
    rng = np.random.default_rng(1)
    base = random_batch(rng, 40, 50, density=0.2, integer=True)
    batch = SparseBatch.concat([base, base, base])  # every document three times: exact ties everywhere
    reader = build(tmp_path, batch)
    for i in range(20):
        q = random_batch(rng, 1, 50, density=0.1, integer=True)
        terms, weights = q.row(0)
        for k in (1, 5, 40, 120):
            assert_same_as_brute_force(reader, terms, weights, k)
        idx, scores = Searcher(reader).search_vector(terms, weights, k=120)
        for a, b, sa, sb in zip(idx, idx[1:], scores, scores[1:]):
            assert sa > sb or (sa == sb and a < b)


def test_search_edge_queries(tmp_path):
    rng = np.random.default_rng(2)
    batch = random_batch(rng, 30, 100, density=0.05)
    reader = build(tmp_path, batch)
    searcher = Searcher(reader)
    present = int(reader.doc_matrix().indices[0])
    absent = next(t for t in range(100) if reader.offsets[t] == reader.offsets[t + 1])
    assert_same_as_brute_force(reader, np.array([present]), np.array([1.5]), k=10)  # single term
    assert_same_as_brute_force(reader, np.array([absent, present]), np.array([2.0, 0.5]), k=10)  # one term absent
    assert_same_as_brute_force(reader, np.arange(100), np.ones(100), k=10_000)  # k larger than the corpus
    for algorithm in ALGORITHMS:
        each = Searcher(reader, algorithm=algorithm)
        assert each.search_vector(np.array([absent]), np.array([2.0]), k=10)[0].size == 0  # term absent
        assert each.search_vector(np.array([], np.int64), np.array([]), k=10)[0].size == 0  # empty query
        idx, _ = each.search_vector(np.arange(100), np.ones(100), k=10_000)  # k larger than the corpus
        assert len(idx) == len({int(d) for d in reader.postings_doc_idx()})
    with pytest.raises(LsrError, match="k must be positive"):
        searcher.search_vector(np.array([present]), np.array([1.0]), k=0)
    with pytest.raises(LsrError, match="outside the index vocabulary"):
        searcher.search_vector(np.array([100]), np.array([1.0]), k=1)
    with pytest.raises(LsrError, match="unknown search algorithm"):
        Searcher(reader, algorithm="wand")


def test_search_returns_hits_with_doc_ids(tmp_path):
    batch = SparseBatch.from_dense(np.array([[0, 1.0, 0], [0, 2.0, 1.0], [0.5, 0, 0]]))
    reader = build(tmp_path, batch)
    hits = Searcher(reader).search(SparseBatch.from_dense(np.array([[0, 1.0, 1.0]])), k=10)
    assert [h.doc_id for h in hits] == ["d1", "d0"]
    assert hits[0].score == pytest.approx(3.0, rel=1e-2)


def test_writer_rejects_bad_input(tmp_path):
    batch = SparseBatch.from_dense(np.eye(3, dtype=np.float32))
    with pytest.raises(LsrError, match="empty corpus"):
        IndexWriter(tmp_path / "a", vocab_size=3).commit()
    with pytest.raises(LsrError, match="duplicate doc_id"):
        with IndexWriter(tmp_path / "b", vocab_size=3) as w:
            w.add(batch, ["x", "y", "x"])
    with pytest.raises(LsrError, match="vocabulary"):
        IndexWriter(tmp_path / "c", vocab_size=4).add(batch, ["x", "y", "z"])
    with pytest.raises(LsrError, match="non-negative"):
        IndexWriter(tmp_path / "d", vocab_size=3).add(SparseBatch.from_dense(-np.eye(3)), ["x", "y", "z"])
    assert not any(tmp_path.iterdir()), "a failed write must leave nothing behind"


def test_writer_is_atomic_and_refuses_to_clobber(tmp_path):
    batch = SparseBatch.from_dense(np.eye(3, dtype=np.float32))
    build(tmp_path, batch)
    with pytest.raises(LsrError, match="already exists"):
        IndexWriter(tmp_path / "idx", vocab_size=3)
    bigger = SparseBatch.from_dense(np.eye(4, 3, dtype=np.float32))
    with IndexWriter(tmp_path / "idx", vocab_size=3, overwrite=True) as w:
        w.add(bigger, ["a", "b", "c", "e"])
    assert IndexReader(tmp_path / "idx").doc_ids == ["a", "b", "c", "e"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx"], "no temporary folders left behind"


def _corrupt(path, name, how):
    p = path / name
    data = bytearray(p.read_bytes())
    if how == "flip":
        data[-1] ^= 0xFF
    elif how == "truncate":
        data = data[: len(data) // 2]
    p.write_bytes(bytes(data))


FORMAT_3_FILES = data_files({"format_version": 3, "forward_index": True})


@pytest.mark.parametrize("name, version", [*((n, 3) for n in FORMAT_3_FILES), *((n, 2) for n in DATA_FILES)])
@pytest.mark.parametrize("how", ["flip", "truncate"])
def test_corrupted_index_is_refused(tmp_path, name, how, version):
    rng = np.random.default_rng(3)
    build(tmp_path, random_batch(rng, 20, 30, density=0.2), format_version=version,
          forward_index=True if version == 3 else None)
    _corrupt(tmp_path / "idx", name, how)
    with pytest.raises(IndexFormatError, match=name):
        IndexReader(tmp_path / "idx")


def test_half_written_or_foreign_index_is_refused(tmp_path):
    rng = np.random.default_rng(4)
    build(tmp_path, random_batch(rng, 20, 30, density=0.2))
    idx = tmp_path / "idx"
    meta = json.loads((idx / "meta.json").read_text())

    meta_edit = dict(meta, num_docs=21)  # a hand edit without the checksum
    (idx / "meta.json").write_text(json.dumps(meta_edit))
    with pytest.raises(IndexFormatError, match="checksum mismatch in meta.json"):
        IndexReader(idx)

    (idx / "meta.json").write_text(json.dumps(dict(meta, format_version=max(READ_VERSIONS) + 1)))
    with pytest.raises(IndexFormatError, match="format version"):
        IndexReader(idx)

    (idx / "meta.json").write_text("{not json")
    with pytest.raises(IndexFormatError, match="not valid JSON"):
        IndexReader(idx)

    (idx / "meta.json").unlink()
    with pytest.raises(IndexFormatError, match="no meta.json"):
        IndexReader(idx)
    with pytest.raises(IndexFormatError, match="no such index"):
        IndexReader(tmp_path / "missing")


def test_missing_data_file_is_refused(tmp_path):
    rng = np.random.default_rng(5)
    build(tmp_path, random_batch(rng, 20, 30, density=0.2))
    (tmp_path / "idx" / "postings_impacts.npy").unlink()
    with pytest.raises(IndexFormatError, match="missing postings_impacts.npy"):
        IndexReader(tmp_path / "idx")


def test_sparse_batch_validation():
    with pytest.raises(LsrError):
        SparseBatch(np.array([0, 1]), np.array([5], np.int32), np.array([1.0], np.float32), vocab_size=3)
    with pytest.raises(LsrError):
        SparseBatch(np.array([0, 1]), np.array([1], np.int32), np.array([np.nan], np.float32), vocab_size=3)
    b = SparseBatch.from_dense(np.array([[0, 2.0, 1.0], [0, 0, 0]]))
    assert b.row_nnz().tolist() == [2, 0] and b.row(0)[0].tolist() == [1, 2]


def test_block_max_closed_form():
    from lsr.index.storage import block_max

    # term 0 in docs 0, 1, 5 (impacts 3, 7, 2); term 1 absent; term 2 in doc 4 (impact 9); blocks of 2 docs
    offsets = np.array([0, 3, 3, 4])
    bm_offsets, blocks, impacts = block_max(offsets, np.array([0, 1, 5, 4]), np.array([3, 7, 2, 9], np.uint8), 2)
    assert bm_offsets.tolist() == [0, 2, 2, 3]
    assert blocks.tolist() == [0, 2, 2] and impacts.tolist() == [7, 2, 9]


@pytest.mark.parametrize("umask, dir_mode, file_mode", [(0o022, 0o755, 0o644), (0o027, 0o750, 0o640)])
def test_index_folder_modes_follow_the_umask(tmp_path, umask, dir_mode, file_mode):
    """Not mkdtemp's private 0700/0600: the operator's umask decides who may read an index."""
    old = os.umask(umask)
    try:
        build(tmp_path, SparseBatch.from_dense(np.eye(3, dtype=np.float32)))
    finally:
        os.umask(old)
    idx = tmp_path / "idx"
    assert stat.S_IMODE(idx.stat().st_mode) == dir_mode
    assert {stat.S_IMODE(p.stat().st_mode) for p in idx.iterdir()} == {file_mode}
