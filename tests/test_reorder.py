"""Document reordering (index/reorder.py): the clustering order itself, and a reordered copy of an index that
returns the same hits as its source while block-max scores fewer blocks."""
import json

import numpy as np
import pytest
import scipy.sparse as sp

from lsr.index import IndexReader, IndexWriter, LsrError, Searcher, SparseBatch
from lsr.index.reorder import BLOCK_SIZE, cluster_order, reorder_index
from lsr.index.search import _blockmax_query, brute_force_search
from lsr.index.termstats import CollectionStats, collection_stats_part, read_collection_stats


def _planted(n=3000, vocab=2000, topics=40, seed=0):
    """Documents of `topics` planted clusters (each its own 60 terms, plus a few from anywhere), in a shuffled
    order; and each document's cluster."""
    rng = np.random.default_rng(seed)
    own = [rng.choice(vocab, 60, replace=False) for _ in range(topics)]
    label = rng.integers(topics, size=n)
    rows = []
    for i in range(n):
        terms = np.unique(np.concatenate([rng.choice(own[label[i]], 25), rng.choice(vocab, 5)]))
        rows.append(sp.csr_matrix((rng.random(len(terms)).astype(np.float32) + 0.1, terms, [0, len(terms)]),
                                  shape=(1, vocab)))
    return SparseBatch.from_scipy(sp.vstack(rows).tocsr()), label


def _purity(label, block=32):
    blocks = label[:len(label) // block * block].reshape(-1, block)
    return float(np.mean([np.bincount(b).max() / block for b in blocks]))


def test_cluster_order_is_a_seeded_permutation_that_groups_similar_documents():
    docs, label = _planted()
    order = cluster_order(docs, seed=3)
    assert np.array_equal(np.sort(order), np.arange(len(docs)))
    assert np.array_equal(order, cluster_order(docs, seed=3))
    # blocks of 32 consecutive documents: mostly one cluster after the reorder, a mix before
    assert _purity(label[order]) > 0.8 > 0.2 > _purity(label)


def test_cluster_order_handles_identical_empty_and_tiny_inputs():
    same = SparseBatch.from_scipy(sp.csr_matrix(np.ones((500, 4), np.float32)))
    assert np.array_equal(np.sort(cluster_order(same)), np.arange(500))  # every split degenerate: equal slices
    empty_rows = SparseBatch.from_scipy(sp.csr_matrix((100, 8), dtype=np.float32))
    assert np.array_equal(np.sort(cluster_order(empty_rows)), np.arange(100))
    one = SparseBatch.from_scipy(sp.csr_matrix(np.ones((1, 4), np.float32)))
    assert cluster_order(one).tolist() == [0]
    with pytest.raises(LsrError, match="branching"):
        cluster_order(one, branching=1)


def _blocks_scored(searcher, terms, weights, k):
    scores, docs = np.empty(k), np.empty(k, np.int64)
    return _blockmax_query(*searcher._blockmax, terms.astype(np.int64), weights, k, 1.0, scores, docs)[1]


def _build(path, docs, format_version=2, stats=None):
    layout = {"forward_index": True} if format_version == 3 else {}
    with IndexWriter(path, vocab_size=docs.vocab_size, format_version=format_version, info={"model": "planted"},
                     parts=[collection_stats_part(stats)] if stats else [], **layout) as writer:
        writer.add(docs, [f"d{i}" for i in range(len(docs))])
    return path


@pytest.mark.parametrize("format_version", [2, 3])
def test_a_reordered_index_returns_the_same_hits_and_blockmax_scores_fewer_blocks(tmp_path, format_version):
    docs, _ = _planted()
    stats = CollectionStats(np.bincount(docs.term_ids, minlength=docs.vocab_size), len(docs))
    source = _build(tmp_path / "src", docs, format_version, stats)
    before = {p.name: p.read_bytes() for p in source.iterdir()}
    target = reorder_index(source, tmp_path / "dst", seed=1, block_size=32)  # the source's, to count blocks
    assert {p.name: p.read_bytes() for p in source.iterdir()} == before  # the source is only read
    a, b = IndexReader(source), IndexReader(target)  # both open with every check
    assert b.meta["info"]["model"] == "planted" and b.meta["info"]["reorder"]["leaf_size"] == a.block_size
    assert b.doc_ids != a.doc_ids and sorted(b.doc_ids) == sorted(a.doc_ids)
    assert b.quantization == a.quantization
    # every document keeps its impacts exactly, under its own id
    ma, mb = a.doc_matrix(), b.doc_matrix()
    where = {d: i for i, d in enumerate(b.doc_ids)}
    perm = np.array([where[d] for d in a.doc_ids])
    assert (ma != mb[perm]).nnz == 0
    assert np.array_equal(read_collection_stats(target).df, stats.df)
    rng = np.random.default_rng(5)
    scored = {"src": 0, "dst": 0}
    for _ in range(20):
        terms = np.sort(rng.choice(docs.vocab_size, 12, replace=False))
        weights = rng.random(12) + 0.1
        for name, reader in (("src", a), ("dst", b)):
            ref_idx, ref_scores = brute_force_search(reader, terms, weights, k=10)
            for algorithm in ("exhaustive", "blockmax"):
                idx, scores = Searcher(reader, algorithm=algorithm).search_vector(terms, weights, k=10)
                assert idx.tolist() == ref_idx.tolist()
                np.testing.assert_allclose(scores, ref_scores, rtol=1e-9)
            scored[name] += _blocks_scored(Searcher(reader, algorithm="blockmax"), terms, weights, 10)
        (ia, sa), (ib, sb) = brute_force_search(a, terms, weights, k=10), brute_force_search(b, terms, weights, k=10)
        np.testing.assert_allclose(sa, sb, rtol=1e-9)  # the same scores; the same documents above the 10th's
        assert {a.doc_ids[i] for i, s in zip(ia, sa) if s > sa[-1]} == {b.doc_ids[i] for i, s in zip(ib, sb)
                                                                          if s > sb[-1]}
    assert scored["dst"] < 0.6 * scored["src"]


def test_reorder_refuses_its_own_source_and_folders_with_other_parts(tmp_path):
    docs, _ = _planted(n=200)
    source = _build(tmp_path / "src", docs)
    with pytest.raises(LsrError, match="is the source index"):
        reorder_index(source, source)
    (tmp_path / "dst").mkdir()
    (tmp_path / "dst" / "mine.txt").write_text("keep me")
    with pytest.raises(LsrError):
        reorder_index(source, tmp_path / "dst")
    assert (tmp_path / "dst" / "mine.txt").read_text() == "keep me"

    def engine_part(folder, impacts=None, doc_ids=None):  # files of another engine, which reorder cannot carry
        (folder / "engine.bin").write_bytes(b"postings in another engine's order")
        return {}
    with IndexWriter(tmp_path / "with-engine", vocab_size=docs.vocab_size, parts=[engine_part]) as writer:
        writer.add(docs, [f"d{i}" for i in range(len(docs))])
    with pytest.raises(LsrError, match="engine.bin"):
        reorder_index(tmp_path / "with-engine", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_lsr_index_reorder_keeps_what_search_returns(cli, api_index_dir, tmp_path):
    """A real index (splade-tiny, MiniLM, the documents' text) reordered by the CLI: sparse and hybrid search give
    the same hits with the same titles; the source is left as it was; a second run refuses to replace a folder
    without --overwrite."""
    from lsr.encoders.provider import open_service
    from lsr.index.documents import DOCS_FILE

    out = tmp_path / "reordered"
    before = (api_index_dir / "meta.json").read_bytes()
    code, stdout, err = cli("index", "reorder", api_index_dir, out, "--block-size", "8")
    assert code == 0, err
    assert "reordered" in stdout and (api_index_dir / "meta.json").read_bytes() == before
    code, stdout, _ = cli("index", "verify", out)
    assert code == 0 and "ok" in stdout
    source, reordered = open_service(api_index_dir), open_service(out)
    # the reordered folder is served with exact blockmax, the source with exhaustive search
    assert (source.stats()["search_algorithm"], reordered.stats()["search_algorithm"]) == ("exhaustive", "blockmax")
    assert IndexReader(out).doc_ids != IndexReader(api_index_dir).doc_ids
    assert (out / DOCS_FILE).read_text() != (api_index_dir / DOCS_FILE).read_text()
    for query in ("cancer cell growth", "vitamin D deficiency in children", "protein folding"):
        for mode in ("sparse", "hybrid"):
            a = cli("search", api_index_dir, query, "--mode", mode, "--json")
            b = cli("search", out, query, "--mode", mode, "--json")
            assert a[0] == b[0] == 0
            hits_a, hits_b = json.loads(a[1]), json.loads(b[1])
            assert len(hits_a) == 10
            np.testing.assert_allclose([h["score"] for h in hits_a], [h["score"] for h in hits_b], rtol=1e-5)
            assert {h["doc_id"] for h in hits_a[:9]} <= {h["doc_id"] for h in hits_b}
        top = reordered.search(query=query, k=1)[0]
        assert reordered.documents.get(top.doc_id).title == source.documents.get(top.doc_id).title
    code, _, err = cli("index", "reorder", api_index_dir, out)
    assert code != 0 and "overwrite" in err.lower()


def test_reorder_records_the_algorithm_a_folder_is_served_with(tmp_path):
    """A format-3 source built without block maxima gains them (blockmax reads them); `algorithm` is checked and
    recorded; an unknown recorded algorithm is a one-line error when the folder is opened for search."""
    from lsr.index.errors import IndexFormatError
    from lsr.index.lucene import open_searcher

    docs, _ = _planted(n=400)
    with IndexWriter(tmp_path / "src", vocab_size=docs.vocab_size, format_version=3) as writer:
        writer.add(docs, [f"d{i}" for i in range(len(docs))])
    assert not IndexReader(tmp_path / "src").has_forward
    target = reorder_index(tmp_path / "src", tmp_path / "dst")
    reader = IndexReader(target)
    assert reader.has_forward and open_searcher(reader, target).algorithm == "blockmax"
    assert reader.block_size == BLOCK_SIZE == 16 != IndexReader(tmp_path / "src").block_size  # the reorder's own
    with pytest.raises(LsrError, match="block_size takes a positive integer"):
        reorder_index(tmp_path / "src", tmp_path / "bad", block_size=0)
    plain = reorder_index(tmp_path / "src", tmp_path / "plain", algorithm="exhaustive")
    assert open_searcher(IndexReader(plain), plain).algorithm == "exhaustive"
    with pytest.raises(LsrError, match="unknown search algorithm"):
        reorder_index(tmp_path / "src", tmp_path / "bad", algorithm="fastest")
    assert not (tmp_path / "bad").exists()
    reader.meta["info"]["search_algorithm"] = "fastest"  # as a damaged meta.json would say
    with pytest.raises(IndexFormatError, match="unknown search_algorithm"):
        open_searcher(reader, target)
