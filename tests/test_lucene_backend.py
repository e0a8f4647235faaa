"""The Lucene backend (`--backend lucene`): built into the index folder atomically, searched through pyserini's
LuceneImpactSearcher, ranking as our exact search does (up to integer query rounding), and clear errors."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import scipy.sparse as sp

pytest.importorskip("pyserini", reason="the Lucene backend needs pyserini")

from lsr.index.lucene import LuceneImpactBackend, open_searcher, write_lucene_index  # noqa: E402
from lsr.index import IndexFormatError, IndexReader, IndexWriter, LsrError, Searcher, SparseBatch  # noqa: E402

VOCAB = 400


def _corpus(rng, n, nnz):
    cols = np.concatenate([np.sort(rng.choice(VOCAB, nnz, replace=False)) for _ in range(n)])
    weights = rng.gamma(1.0, 0.6, n * nnz).astype(np.float32)
    return SparseBatch.from_scipy(sp.csr_matrix((weights, cols, np.arange(0, n * nnz + 1, nnz)), shape=(n, VOCAB)))


@pytest.fixture(scope="module")
def lucene_index(tmp_path_factory):
    rng = np.random.default_rng(3)
    docs = _corpus(rng, 600, 40)
    path = tmp_path_factory.mktemp("lucene") / "index"
    with IndexWriter(path, vocab_size=VOCAB, info={"backend": "lucene"}, parts=[write_lucene_index]) as writer:
        writer.add(docs, [f"doc{i}" for i in range(len(docs))])
    reader = IndexReader(path)
    return path, reader, _corpus(rng, 30, 12)


def test_lucene_backend_ranks_as_our_exact_search(lucene_index):
    path, reader, queries = lucene_index
    backend = open_searcher(reader, path)
    assert isinstance(backend, LuceneImpactBackend)
    ours = Searcher(reader)
    # two-decimal query weights: round(w * 100) is exact, so Lucene scores the very same query
    queries = SparseBatch(queries.indptr, queries.term_ids, np.round(queries.weights, 2).astype(np.float32), VOCAB)
    overlap = []
    for i in range(len(queries)):
        got, want = backend.search(queries.select([i]), k=10), ours.search(queries.select([i]), k=10)
        assert len(got) == len(want) == 10
        np.testing.assert_allclose([h.score for h in got], [h.score for h in want], rtol=1e-5)
        overlap.append(len({h.doc_id for h in got} & {h.doc_id for h in want}) / 10)
    assert np.mean(overlap) >= 0.97  # what differs is the order of exact ties at the 10th place
    ids = [f"q{i}" for i in range(len(queries))]
    run = backend.batch_search(queries, ids, k=10, threads=2)
    assert run == {qid: backend.search(queries.select([i]), k=10) for i, qid in enumerate(ids)}
    assert backend.size_bytes() > 0


def test_lucene_backend_edge_queries(lucene_index):
    path, reader, _ = lucene_index
    backend = open_searcher(reader, path)
    empty = SparseBatch(np.array([0, 0]), np.zeros(0, np.int32), np.zeros(0, np.float32), VOCAB)
    assert backend.search(empty, k=10) == []
    tiny = SparseBatch(np.array([0, 1]), np.array([5], np.int32), np.array([0.001], np.float32), VOCAB)
    assert backend.search(tiny, k=10) == []  # rounds to weight 0: dropped, as Lucene takes integers
    assert backend.batch_search(SparseBatch.concat([empty, tiny]), ["a", "b"], k=3) == {"a": [], "b": []}
    huge = SparseBatch(np.array([0, 1]), np.array([VOCAB], np.int32), np.array([1.0], np.float32), VOCAB + 1)
    with pytest.raises(LsrError, match="outside the index vocabulary"):
        backend.search(huge, k=10)
    with pytest.raises(LsrError, match="k must be positive"):
        backend.search(tiny, k=0)
    k_all = backend.search(SparseBatch(np.array([0, VOCAB]), np.arange(VOCAB, dtype=np.int32),
                                       np.ones(VOCAB, np.float32), VOCAB), k=10_000)
    assert len(k_all) == reader.num_docs  # k larger than the corpus


def test_a_failed_lucene_build_leaves_no_index(tmp_path):
    docs = _corpus(np.random.default_rng(4), 20, 5)

    def failing(folder, impacts, doc_ids):
        write_lucene_index(folder, impacts, doc_ids)
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        with IndexWriter(tmp_path / "idx", vocab_size=VOCAB, parts=[failing]) as writer:
            writer.add(docs, [str(i) for i in range(20)])
    assert not (tmp_path / "idx").exists() and not list(tmp_path.iterdir())


def test_a_missing_lucene_index_is_a_clear_error(lucene_index, tmp_path):
    path, _, _ = lucene_index
    copy = tmp_path / "copy"
    shutil.copytree(path, copy)
    shutil.rmtree(copy / "lucene")
    with pytest.raises(IndexFormatError, match="missing lucene/"):  # the folder's meta lists every Lucene file
        IndexReader(copy)
    reader = IndexReader(path)  # and the backend itself refuses a folder that has lost its Lucene index
    shutil.rmtree(copy)
    copy.mkdir()
    with pytest.raises(IndexFormatError, match="holds no Lucene index"):
        open_searcher(reader, copy)


def test_cli_builds_and_searches_a_lucene_index(cli, data_dir, tmp_path):
    out = tmp_path / "idx"
    code, stdout, err = cli("index", "build", "--dataset", "scifact", "--model", "lsr-ifree-tiny", "--out", out,
                            "--limit", "60", "--backend", "lucene", "--data-dir", data_dir)
    assert code == 0, err
    assert (out / "lucene").is_dir()
    code, stdout, err = cli("search", out, "vitamin D and bone density", "-k", "3", "--json")
    assert code == 0, err
    hits = __import__("json").loads(stdout.strip().splitlines()[-1])
    assert len(hits) == 3 and hits[0]["score"] >= hits[1]["score"] >= hits[2]["score"] > 0
    code, _, err = cli("index", "build", "--dataset", "scifact", "--model", "lsr-ifree-tiny", "--out",
                       tmp_path / "other", "--limit", "5", "--backend", "elastic", "--data-dir", data_dir)
    assert code == 2 and "'elastic' is not one of 'lsr', 'lucene'" in err  # a usage error now
    code, _, err = cli("eval", "--dataset", "scifact", "--split", "test", "--model", "lsr-ifree-tiny", "--limit", "60",
                       "--index", out, "--data-dir", data_dir)
    assert code == 2 and "was built for the lucene backend, not lsr" in err

    # the REST API over that folder: the service it loads searches Lucene, from the server's worker threads
    from concurrent.futures import ThreadPoolExecutor

    from fastapi.testclient import TestClient

    from lsr.api.app import Settings, create_app

    with TestClient(create_app(Settings(index_dir=out, warm_up=True))) as client:
        assert client.get("/stats").json()["backend"] == "lucene"
        texts = ["vitamin D and bone density", "cancer risk", "insulin", "gene expression"] * 4
        with ThreadPoolExecutor(8) as pool:
            replies = list(pool.map(lambda t: client.post("/search", json={"query": t, "k": 3}), texts))
        assert all(r.status_code == 200 for r in replies)
        assert [h["doc_id"] for h in replies[0].json()["hits"]] == [h["doc_id"] for h in hits]
