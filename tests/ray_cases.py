"""Scale-out on a real local Ray (127.0.0.1, 2 CPUs, no dashboard), shut down at the end of the module:
`--engine ray` builds equal the single-process build exactly, every query ranked the same in every mode; an
encoder worker killed mid-build is restarted and its work retried, one that keeps dying fails the build in one
line and leaves nothing; `lsr serve --engine ray` over a 4-shard index answers like the plain server; an
unreachable `--ray-address` is one line."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import httpx2 as httpx
import numpy as np
import pytest

from lsr.eval.beir import load_beir
from lsr.eval.pipeline import EncoderOptions, build_index
from lsr.index import EngineUnavailable, Ranking, SearchService
from lsr.index.shards import merge_indexes

MODEL, DENSE = "lsr-ifree-tiny", "minilm"
LIMIT = 96  # scifact documents
OPTIONS = EncoderOptions(max_length=128, batch_size=8, show_progress=False)
UNIT = 24  # documents per Ray work unit: several units, so their order is exercised
RANKINGS = [Ranking(), Ranking(prf=True), Ranking(mode="hybrid"), Ranking(mode="hybrid", prf=True),
            Ranking(mode="dense", prf=True)]


@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray")
    from lsr.index.ray_shards import start_ray

    start_ray(num_cpus=2)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def dataset(data_dir):
    return load_beir("scifact", "test", data_dir, limit=LIMIT)


@pytest.fixture(scope="module")
def plain(tmp_path_factory, dataset):
    path = tmp_path_factory.mktemp("plain") / "idx"
    build_index(dataset, MODEL, path, OPTIONS, dense=DENSE)
    return path


def _service(path, **kwargs) -> SearchService:
    from lsr.encoders.provider import ModelProvider

    return SearchService(path, encoders=ModelProvider(), **kwargs)


QUERIES = 40  # of scifact test's 300 (the slow test below ranks all of them on the whole corpus)


def _runs(service: SearchService, dataset) -> dict:
    return {(qid, r.label): service.rank(query=text, k=20, ranking=r).hits
            for qid, text in list(dataset.queries.items())[:QUERIES] for r in RANKINGS}


def test_a_ray_build_equals_the_single_process_build(ray_local, tmp_path, dataset, plain):
    from lsr.eval.distributed import build_index_ray

    figures = build_index_ray(dataset, MODEL, tmp_path / "ray", OPTIONS, workers=2, shards=3, dense=DENSE,
                              unit_docs=UNIT)
    assert figures["shards"] == 3 and figures["workers"] == 2
    ours, theirs = _service(tmp_path / "ray"), _service(plain)
    assert ours.index.num_shards == 3
    assert ours.index.meta["quantization"] == theirs.index.meta["quantization"]
    ours_runs, plain_runs = _runs(ours, dataset), _runs(theirs, dataset)
    assert len(ours_runs) == QUERIES * len(RANKINGS)
    different = [key for key in plain_runs if ours_runs[key] != plain_runs[key]]
    assert not different, f"{len(different)} runs differ, first {different[0]}"
    assert ours.document(doc_id=dataset.doc_ids[-1]) == theirs.document(doc_id=dataset.doc_ids[-1])


def test_a_killed_worker_is_retried_and_one_that_keeps_dying_fails(ray_local, tmp_path, dataset, plain,
                                                                  monkeypatch):
    from lsr.eval.distributed import build_index_ray
    from lsr.index import IndexReader

    monkeypatch.setenv("LSR_FAILPOINT", "ray-encode")
    monkeypatch.setenv("LSR_FAILPOINT_ONCE", str(tmp_path / "killed-once"))
    build_index_ray(dataset, MODEL, tmp_path / "retried", OPTIONS, workers=2, shards=2, unit_docs=UNIT)
    assert (tmp_path / "killed-once").exists()  # a worker did die
    retried = np.concatenate([IndexReader(tmp_path / f"retried/shards/0000{i}").doc_matrix().toarray()
                              for i in range(2)])
    assert np.array_equal(retried, IndexReader(plain).doc_matrix().toarray())

    monkeypatch.delenv("LSR_FAILPOINT_ONCE")  # now every attempt dies (one retry: each costs a model load)
    with pytest.raises(EngineUnavailable, match="the Ray build failed .an encoder worker died 2 times") as failed:
        build_index_ray(dataset, MODEL, tmp_path / "failed", OPTIONS, workers=1, shards=2, unit_docs=UNIT,
                        max_retries=1)
    assert "\n" not in str(failed.value)
    assert not (tmp_path / "failed").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".failed")]


def test_serve_engine_ray_answers_like_the_plain_server(ray_local, tmp_path, dataset, plain):
    merge_indexes(tmp_path / "four", [plain], shards=4)
    address = ray_local.get_runtime_context().gcs_address
    with socket_port() as port:
        env = dict(os.environ, LSR_WARM_UP="false")
        proc = subprocess.Popen([sys.executable, "-c", "from lsr.api.cli import main; main()", "serve",
                                 str(tmp_path / "four"), "--engine", "ray", "--ray-address", address,
                                 "--port", str(port)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)
    lines: list[str] = []
    threading.Thread(target=lambda: [lines.append(line) for line in proc.stdout], daemon=True).start()
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        else:
            pytest.fail("lsr serve --engine ray did not start: " + "".join(lines[-20:]))
        stats = httpx.get(f"{base}/stats", timeout=30).json()
        assert stats["shards"] == 4 and stats["engine"] == "ray"
        reference = _service(plain)
        for qid, text in list(dataset.queries.items())[:15]:
            for mode, prf in (("sparse", False), ("sparse", True), ("hybrid", True)):
                r = httpx.post(f"{base}/search", json={"query": text, "k": 10, "mode": mode, "prf": prf},
                               timeout=60)
                assert r.status_code == 200, r.text
                got = [(h["doc_id"], h["score"]) for h in r.json()["hits"]]
                expected = reference.search(query=text, k=10, mode=mode, prf=prf)
                assert got == [(h.doc_id, pytest.approx(h.score, rel=1e-12, abs=1e-12)) for h in expected], qid
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def test_search_options_reach_the_ray_shards(ray_local, tmp_path, dataset, plain):
    """An approximate mode (impact, a small budget) asked of a Ray-served sharded index is what each actor runs:
    its sparse top 10 equal the same options' on shards searched here, and the exact service differs somewhere."""
    from lsr.encoders.provider import ModelProvider
    from lsr.index import SearchOptions
    from lsr.index.shards import open_shards

    merge_indexes(tmp_path / "four", [plain], shards=4)
    options = SearchOptions(algorithm="impact", budget=10)
    on_ray = open_shards(tmp_path / "four", engine="ray", search_options=options)
    here = open_shards(tmp_path / "four", search_options=options)
    exact = open_shards(tmp_path / "four")
    encoder = ModelProvider().sparse_query_encoder(here.info)
    differs = 0
    try:
        for text in list(dataset.queries.values())[:QUERIES]:
            terms, weights = encoder.encode_queries([text]).row(0)
            got, want = on_ray.sparse(terms, weights, 10), here.sparse(terms, weights, 10)
            np.testing.assert_array_equal(got[0], want[0])
            np.testing.assert_allclose(got[1], want[1], rtol=1e-12)
            differs += not np.array_equal(got[0], exact.sparse(terms, weights, 10)[0])
    finally:
        for s in (on_ray, here, exact):
            s.close()
    assert differs > 0  # 10 postings a shard: approximate on these queries


class socket_port:
    """A free loopback port (closed again before the server binds it)."""

    def __enter__(self) -> int:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    def __exit__(self, *exc) -> None:
        return None


def test_bad_ray_arguments_are_one_line_errors(cli, tmp_path, data_dir):
    build = ("index", "build", "--dataset", "scifact", "--model", MODEL, "--out", tmp_path / "x", "--data-dir",
             data_dir)
    code, _, err = cli(*build, "--engine", "ray", "--workers", "0")
    assert code == 2 and "--workers must be a positive integer" in err
    code, _, err = cli(*build, "--shards", "999999")
    assert code == 2 and "more than the 5183 documents" in err
    code, _, err = cli(*build, "--workers", "3")
    assert code == 2 and "need --engine ray" in err
    code, _, err = cli(*build, "--shards", "2", "--backend", "lucene")
    assert code == 2 and "lsr backend only" in err
    env = dict(os.environ, LSR_DATA_DIR=str(data_dir))
    proc = subprocess.run([sys.executable, "-c", "from lsr.api.cli import main; main()", "index", "build",
                           "--dataset", "scifact", "--model", MODEL, "--out", str(tmp_path / "x"), "--limit", "20",
                           "--engine", "ray", "--ray-address", "127.0.0.1:1"], env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1].startswith("error: cannot reach the Ray cluster at 127.0.0.1:1")
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_the_whole_scifact_ray_build_evaluates_like_the_plain_one(ray_local, tmp_path, data_dir):
    """The issue's check: `lsr index build --engine ray --workers 2 --shards 4` and `lsr eval --index` give the
    single-process build's metrics, every query's run identical."""
    from lsr.eval.distributed import build_index_ray
    from lsr.eval.pipeline import evaluate

    full = load_beir("scifact", "test", data_dir)
    options = EncoderOptions(show_progress=False)
    build_index_ray(full, MODEL, tmp_path / "ray", options, workers=2, shards=4)
    ours = evaluate(full, MODEL, options, index_dir=tmp_path / "ray")
    theirs = evaluate(full, MODEL, options, index_dir=tmp_path / "plain")
    assert ours.metrics == theirs.metrics
    assert ours.run == theirs.run
