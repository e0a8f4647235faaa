"""The REST endpoint against a real small index: the first 100 scifact documents, encoded once per module with
the bundled SPLADE-tiny and MiniLM (max length 128 to keep the build near 20 s on 2 cores)."""
from __future__ import annotations

import shutil

import pytest
from fastapi.testclient import TestClient

from lsr.api.app import Settings, create_app, get_service
from lsr.api.schemas import MAX_K, MAX_QUERY_CHARS
from lsr.eval.beir import load_corpus
from lsr.eval.pipeline import EncoderOptions, add_dense, build_index
from lsr.index import LsrError, SearchService, Searcher

NUM_DOCS = 100
QUERY = "microRNA expression in cancer cells"


@pytest.fixture(scope="module")
def corpus(api_corpus):
    return api_corpus


@pytest.fixture(scope="module")
def index_dir(api_index_dir):
    return api_index_dir


@pytest.fixture(scope="module")
def service(api_service):
    return api_service


@pytest.fixture(scope="module")
def client(index_dir, service):
    app = create_app(Settings(index_dir=index_dir, warm_up=False))
    app.dependency_overrides[get_service] = lambda: service
    return TestClient(app)  # not entered: the module's service stands in for the one lifespan would load


# -- happy paths -----------------------------------------------------------------------------------------
def test_health_and_stats(client, corpus):
    assert client.get("/health").json() == {"status": "ok", "num_docs": NUM_DOCS}
    stats = client.get("/stats").json()
    assert stats["num_docs"] == NUM_DOCS and stats["vocab_size"] == 30522
    assert stats["sparse_model"] == "splade-tiny" and stats["dense_model"] == "minilm"
    assert stats["dense_dim"] == 384 and stats["has_documents"] is True
    assert stats["modes"] == ["sparse", "dense", "hybrid"] and stats["dataset"] == "scifact"


@pytest.mark.parametrize("mode", ["sparse", "dense", "hybrid"])
@pytest.mark.parametrize("prf", [False, True])
def test_each_mode_returns_hits(client, mode, prf):
    r = client.post("/search", json={"query": QUERY, "k": 7, "mode": mode, "prf": prf})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["mode"] == mode and body["prf"] is prf and body["k"] == 7
    hits = body["hits"]
    assert len(hits) == 7
    assert [h["rank"] for h in hits] == list(range(1, 8))
    assert all(a["score"] >= b["score"] for a, b in zip(hits, hits[1:]))
    assert len({h["doc_id"] for h in hits}) == 7
    assert all(h["title"] and h["snippet"] for h in hits)


@pytest.mark.parametrize("placement", ["before", "after", "both"])
@pytest.mark.parametrize("fusion", ["linear", "rrf"])
def test_hybrid_fusion_and_prf_placements(client, placement, fusion):
    r = client.post("/search", json={"query": QUERY, "k": 5, "mode": "hybrid", "fusion": fusion, "alpha": 0.3,
                                     "prf": True, "prf_placement": placement})
    assert r.status_code == 200, r.text
    assert len(r.json()["hits"]) == 5


def test_search_agrees_with_the_parts(service):
    from lsr.index import DenseStore, IndexReader

    direct = Searcher(IndexReader(service.path)).search(service.sparse_encoder.encode_queries([QUERY]), k=5)
    assert service.search(query=QUERY, k=5, mode="sparse") == direct
    dense = DenseStore(service.path).search(service.dense_encoder.encode_queries([QUERY])[0], k=5)
    assert service.search(query=QUERY, k=5, mode="dense") == dense
    # alpha 1 ranks by the sparse list alone; alpha 0 by the dense list alone
    assert [h.doc_id for h in service.search(query=QUERY, k=5, mode="hybrid", alpha=1.0)] == [h.doc_id for h in direct]
    assert [h.doc_id for h in service.search(query=QUERY, k=5, mode="hybrid", alpha=0.0)] == [h.doc_id for h in dense]


def test_get_search(client):
    r = client.get("/search", params={"q": QUERY, "k": 3, "mode": "hybrid", "fusion": "rrf", "prf": "true"})
    assert r.status_code == 200, r.text
    assert len(r.json()["hits"]) == 3 and r.json()["prf"] is True


def test_documents_route(client, corpus):
    doc_id, doc = next(iter(corpus.corpus.items()))
    r = client.get(f"/documents/{doc_id}")
    assert r.status_code == 200
    assert r.json() == {"doc_id": doc_id, "title": doc.title, "text": doc.text}
    for missing in ("no-such-doc", "a/b/c", "x" * 600, "%FF%FE"):
        r = client.get(f"/documents/{missing}")
        assert 400 <= r.status_code < 500, (missing, r.status_code)
    r = client.get("/documents/no-such-doc")
    assert r.status_code == 404 and "no-such-doc" in r.json()["detail"]


# -- bad input: always a 4xx with a message, never a 5xx ---------------------------------------------------
@pytest.mark.parametrize("body, where", [
    ({"query": ""}, "query"),
    ({"query": "   \t\n "}, "non-whitespace"),
    ({"query": "a\x00b"}, "NUL"),
    ({"query": "x" * (MAX_QUERY_CHARS + 1)}, "at most"),
    ({"query": "cancer", "k": 0}, "k"),
    ({"query": "cancer", "k": -3}, "k"),
    ({"query": "cancer", "k": MAX_K + 1}, "k"),
    ({"query": "cancer", "k": 10 ** 12}, "k"),
    ({"query": "cancer", "k": "10"}, "k"),
    ({"query": "cancer", "k": 2.5}, "k"),
    ({"query": "cancer", "k": True}, "k"),
    ({"query": "cancer", "mode": "bogus"}, "mode"),
    ({"query": "cancer", "mode": 1}, "mode"),
    ({"query": "cancer", "fusion": "max"}, "fusion"),
    ({"query": "cancer", "prf_placement": "during"}, "prf_placement"),
    ({"query": "cancer", "alpha": 1.5}, "alpha"),
    ({"query": "cancer", "alpha": "0.5"}, "alpha"),
    ({"query": "cancer", "prf": "yes"}, "prf"),
    ({"query": 42}, "query"),
    ({"query": ["cancer"]}, "query"),
    ({"query": None}, "query"),
    ({"query": "cancer", "extra": 1}, "extra"),
    ({}, "query"),
    ([{"query": "cancer"}], "body"),
    ("cancer", "body"),
])
def test_bad_json_bodies_are_422(client, body, where):
    r = client.post("/search", json=body)
    assert r.status_code == 422, r.text
    assert where in r.json()["detail"]
    assert "x" * 100 not in r.text  # the input is never echoed back


@pytest.mark.parametrize("raw, content_type, status, message", [
    (b'{"query": "\xff\xfe"}', "application/json", 400, "UTF-8"),
    (b'{"query": ', "application/json", 422, "not valid JSON"),
    (b'{"query": "a", "alpha": NaN}', "application/json", 422, "finite"),
    (b'{"query": "a", "alpha": 1e999}', "application/json", 422, "finite"),
    (b"query=cancer", "text/plain", 422, "body"),
    (b"", "application/json", 422, "body"),
])
def test_bad_raw_bodies(client, raw, content_type, status, message):
    r = client.post("/search", content=raw, headers={"content-type": content_type})
    assert r.status_code == status, r.text
    assert message in r.json()["detail"]


def test_megabyte_query_is_refused_without_echo(client):
    r = client.post("/search", json={"query": "x" * (1 << 20)})
    assert r.status_code == 413 and "limit" in r.json()["detail"]
    r = client.get("/search", params={"q": "x" * 20_000})
    assert r.status_code == 422 and len(r.content) < 2000


@pytest.mark.parametrize("url, message", [
    ("/search", "q"),
    ("/search?q=", "q"),
    ("/search?q=%20%20", "non-whitespace"),
    ("/search?q=%FF%FE", "UTF-8"),
    ("/search?q=cancer&k=abc", "k"),
    ("/search?q=cancer&k=0", "k"),
    (f"/search?q=cancer&k={MAX_K + 1}", "k"),
    ("/search?q=cancer&mode=nope", "mode"),
    ("/search?q=cancer&alpha=2", "alpha"),
    ("/search?q=cancer&prf=maybe", "prf"),
])
def test_bad_get_queries(client, url, message):
    r = client.get(url)
    assert 400 <= r.status_code < 500, r.text
    assert message in r.json()["detail"]


def test_dense_modes_on_a_sparse_only_index_are_400(tmp_path, data_dir, service):
    sparse_only = tmp_path / "sparse-only"  # no dense store and no documents' text
    build_index(load_corpus("scifact", data_dir, limit=NUM_DOCS), "splade-tiny", sparse_only,
                EncoderOptions(max_length=128, show_progress=False), documents=False)
    plain = SearchService(sparse_only, sparse_encoder=service.sparse_encoder)
    app = create_app(Settings(index_dir=sparse_only, warm_up=False))
    app.dependency_overrides[get_service] = lambda: plain
    client = TestClient(app)
    assert client.get("/stats").json()["modes"] == ["sparse"]
    r = client.post("/search", json={"query": QUERY, "mode": "hybrid"})
    assert r.status_code == 400 and "dense store" in r.json()["detail"]
    hits = client.post("/search", json={"query": QUERY, "k": 2}).json()["hits"]
    assert len(hits) == 2 and hits[0]["title"] is None  # no docs.jsonl: ids and scores only
    assert client.get(f"/documents/{hits[0]['doc_id']}").json()["text"] is None


def test_a_service_given_a_sparse_encoder_alone_serves_sparse(index_dir, service):
    """Encoders passed one by one (as `lsr eval` passes them): a folder with a dense store opened with the
    sparse encoder only ranks sparse (as the full service does) and says so for the dense modes."""
    assert service.index.has_dense and "hybrid" in service.modes
    sparse = SearchService(index_dir, sparse_encoder=service.sparse_encoder)
    try:
        assert sparse.modes == ("sparse",)
        assert sparse.search(query=QUERY, k=5) == service.search(query=QUERY, k=5)
        with pytest.raises(LsrError, match="without a dense query encoder"):
            sparse.search(query=QUERY, k=5, mode="hybrid")
    finally:
        sparse.close()


# -- lifespan and building ---------------------------------------------------------------------------------
def test_lifespan_loads_the_index_from_settings(index_dir, monkeypatch):
    monkeypatch.setenv("LSR_INDEX_DIR", str(index_dir))
    monkeypatch.setenv("LSR_WARM_UP", "false")
    with TestClient(create_app()) as client:
        assert client.get("/health").json()["num_docs"] == NUM_DOCS
        assert client.get("/search", params={"q": QUERY, "mode": "dense", "k": 1}).status_code == 200


def test_search_options_from_the_environment(index_dir, monkeypatch):
    """LSR_SEARCH_ALGORITHM, LSR_BUDGET, ... choose how the served index is searched; /stats says so."""
    for name, value in (("INDEX_DIR", index_dir), ("WARM_UP", "false"), ("SEARCH_ALGORITHM", "impact"),
                        ("BUDGET", "40"), ("RESCORE", "20")):
        monkeypatch.setenv(f"LSR_{name}", str(value))
    with TestClient(create_app()) as client:
        stats = client.get("/stats").json()
        assert stats["search_algorithm"] == "impact" and stats["exact"] is False
        assert stats["search_options"] == {"algorithm": "impact", "prune_factor": 1.0, "budget": 40,
                                           "rescore": 20, "max_query_terms": None, "drop_ratio": 0.0}
        hits = client.post("/search", json={"query": QUERY, "k": 5}).json()["hits"]
        assert 0 < len(hits) <= 5


@pytest.mark.parametrize("settings, message", [
    ({"search_algorithm": "fastest"}, "unknown search algorithm 'fastest'"),
    ({"search_algorithm": "impact", "budget": 10, "drop_ratio": 0.2}, "Milvus's approximate search"),
    ({"search_algorithm": "exhaustive", "prune_factor": 0.5}, "maxscore algorithms only"),
    ({"prune_factor": 1.5}, "less than or equal to 1"),
])
def test_bad_search_options_refuse_to_start(index_dir, settings, message):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=message):
        Settings(index_dir=index_dir, **settings)


def test_options_the_index_cannot_take_fail_at_open(index_dir, service):
    """A budget without the impact algorithm is checked against the algorithm the index records."""
    options = Settings(index_dir=index_dir, budget=10).search_options()
    with pytest.raises(LsrError, match="impact algorithm only, not exhaustive"):
        SearchService(index_dir, sparse_encoder=service.sparse_encoder, search_options=options)


def test_lifespan_fails_on_a_missing_index(tmp_path):
    with pytest.raises(LsrError, match="no such index folder"):
        with TestClient(create_app(Settings(index_dir=tmp_path / "missing"))):
            pass


def test_building_refuses_another_corpus(index_dir, data_dir, tmp_path):
    other = load_corpus("nfcorpus", data_dir, limit=3)
    with pytest.raises(LsrError, match="other documents"):
        add_dense(index_dir, other, "minilm")
    with pytest.raises(LsrError, match="not a dense encoder"):
        add_dense(index_dir, load_corpus("scifact", data_dir, limit=NUM_DOCS), "splade-tiny")


def test_concurrent_requests_agree_with_sequential_ones(client):
    from concurrent.futures import ThreadPoolExecutor

    bodies = [{"query": q, "k": 5, "mode": m} for q in (QUERY, "vitamin D deficiency", "stem cell niche")
              for m in ("sparse", "dense", "hybrid")]
    expected = [client.post("/search", json=b).json()["hits"] for b in bodies]
    with ThreadPoolExecutor(max_workers=6) as pool:
        responses = list(pool.map(lambda b: client.post("/search", json=b), bodies * 2))
    assert all(r.status_code == 200 for r in responses)
    assert [r.json()["hits"] for r in responses] == expected * 2


def test_search_page(client):
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "<form" in r.text and 'fetch("search"' in r.text


def test_chunked_bodies_are_capped_and_still_parsed(client):
    def chunks(total: int):
        yield b'{"query": "'
        for _ in range(total // 4096):
            yield b"x" * 4096
        yield b'"}'

    r = client.post("/search", content=chunks(1 << 20), headers={"content-type": "application/json"})
    assert r.status_code == 413 and "limit" in r.json()["detail"]
    r = client.post("/search", content=iter([b'{"query": "stem', b' cells", "k": 2}']),
                    headers={"content-type": "application/json"})
    assert r.status_code == 200 and len(r.json()["hits"]) == 2


def test_dense_encoder_gives_unit_float32_rows(service):
    import numpy as np

    vectors = service.dense_encoder.encode_documents(["stem cells", "a longer text about vitamin D " * 40])
    assert vectors.shape == (2, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    assert service.dense_encoder.encode_queries([]).shape == (0, 384)
    with pytest.raises(LsrError):
        service.dense_encoder.encode_queries([None])


def test_api_key_guards_reads_unless_opted_out(index_dir, service):
    def client_with(**settings):
        app = create_app(Settings(index_dir=index_dir, warm_up=False, **settings))
        app.dependency_overrides[get_service] = lambda: service
        return TestClient(app)

    open_client = client_with(api_key="s3cret", protect_reads=False)  # an explicit opt-out leaves reads open
    assert open_client.post("/search", json={"query": QUERY}).status_code == 200
    guarded = client_with(api_key="s3cret")  # a key alone protects the read routes
    for method, url, kw in [("post", "/search", {"json": {"query": QUERY}}), ("get", "/stats", {}),
                            ("get", "/search?q=cancer", {})]:
        r = getattr(guarded, method)(url, **kw)
        assert r.status_code == 401 and "X-API-Key" in r.json()["detail"]
        assert getattr(guarded, method)(url, headers={"X-API-Key": "wrong"}, **kw).status_code == 401
        assert getattr(guarded, method)(url, headers={"X-API-Key": "s3cret"}, **kw).status_code == 200
    assert guarded.get("/health").status_code == 200
    # the key is checked before the body: a bad body without the key is 401, not 422
    assert guarded.post("/search", json={"query": ""}).status_code == 401
    assert guarded.post("/search", json={"query": ""}, headers={"X-API-Key": "s3cret"}).status_code == 422


@pytest.mark.parametrize("settings, message", [
    ({"api_key": ""}, "empty"),                      # fail closed, not open
    ({"protect_reads": True}, "LSR_API_KEY is not set"),
    ({"api_key": "clé"}, "printable ASCII"),
])
def test_unsafe_key_settings_refuse_to_start(index_dir, settings, message):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=message):
        Settings(index_dir=index_dir, **settings)


def test_head_and_get_parameter_names(client):
    assert client.head("/health").status_code == 200 and client.head("/stats").status_code == 200
    assert client.head("/search?q=cancer").status_code == 200
    r = client.get("/search?q=%20")
    assert r.status_code == 422 and r.json()["detail"].startswith("q: ")
