"""`lsr bench query` end to end on small cached vectors: rows, recall against our exact search, JSON and plot;
our exact configurations against the brute-force reference; option values outside their sets."""
from __future__ import annotations

import json
import shutil

import numpy as np
import scipy.sparse as sp

from lsr.eval.bench.query import QUERY_SETS, TRAIN_QUERY_SETS, CorpusName, LsrEngine, corpus_description, \
    corpus_queries, corpus_vectors, engine_configs, fingerprint, iter_corpus_chunks, open_or_build, quantised
from lsr.eval.engines import ScipyEngine
from lsr.index import IndexReader, SparseBatch

VOCAB = 500


def _batch(rng, n, nnz, scale):
    cols = np.concatenate([np.sort(rng.choice(VOCAB, nnz, replace=False)) for _ in range(n)])
    weights = (rng.gamma(1.0, scale, n * nnz) + 0.01).astype(np.float32)
    return SparseBatch.from_scipy(sp.csr_matrix((weights, cols, np.arange(0, n * nnz + 1, nnz)), shape=(n, VOCAB)))


def test_bench_query_cli_writes_rows_json_and_plot(cli, tmp_path):
    rng = np.random.default_rng(0)
    cache = tmp_path / "cache"
    cache.mkdir()
    for dataset, split in QUERY_SETS:  # the bench's cache of encoded vectors, so nothing is encoded here
        _batch(rng, 300, 40, 0.5).save_npz(cache / f"{dataset}-docs.npz")
        _batch(rng, 12, 8, 1.0).save_npz(cache / f"{dataset}-{split}-queries.npz")
    for dataset, split in TRAIN_QUERY_SETS:  # what topical queries copy
        _batch(rng, 40, 8, 1.0).save_npz(cache / f"{dataset}-{split}-queries.npz")
    out, plot = tmp_path / "bench.json", tmp_path / "bench.png"
    args = ["bench", "query", "--corpus", "scifact", "--corpus", "2k", "--corpus", "topical-2k", "--engine", "lsr",
            "--engine", "scipy",
            "--threads", "1", "--threads", "2", "--cache", cache, "--workdir", tmp_path / "indexes", "--json", out,
            "--plot", plot]
    code, stdout, err = cli(*args)
    assert code == 0, err
    rows = json.loads(out.read_text())["results"]
    assert plot.stat().st_size > 0
    keys = {"engine", "mode", "corpus", "threads", "mean_ms", "p99_ms", "qps", "recall@10", "build_s",
            "bytes_per_posting", "engine_ms", "engine_p99_ms", "engine_qps", "queries", "num_queries"}
    assert all(keys <= set(r) for r in rows)
    assert {r["corpus"] for r in rows} == {"scifact", "2k", "topical-2k"}
    assert {r["queries"] for r in rows if r["corpus"] == "topical-2k"} == {"real", "topical"}
    assert {r["queries"] for r in rows if r["corpus"] != "topical-2k"} == {"real"}
    assert all(0 < r["engine_ms"] <= r["mean_ms"] for r in rows), "the engine's own call is part of the whole"
    # every corpus is described in the file: what generated it, with which seed, topics and source vectors
    corpora = json.loads(out.read_text())["corpora"]
    assert corpora["scifact"]["kind"] == "real" and corpora["2k"]["generator"].endswith("synthesize")
    topical = corpora["topical-2k"]
    assert topical["kind"] == "topical" and topical["seed"] == 0 and topical["num_docs"] == 2000
    assert topical["topics"]["num_topics"] > 1 and topical["source"]["model"] == "splade-tiny"
    assert {"mean_nnz", "real_mean_nnz", "df_correlation"} <= set(topical["statistics"])
    exact = [r for r in rows if r["mode"] == "exact"]
    assert {r["engine"] for r in exact} == {"lsr", "scipy"}
    # recall@10 is measured against our exhaustive search; the scipy engine is the brute-force reference
    reference = [r for r in exact if r["engine"] == "scipy"]
    assert reference and all(r["recall@10"] == 1.0 for r in reference), "our exact search misses reference hits"
    assert {r["threads"] for r in rows if r["engine"] == "lsr"} == {1, 2}
    assert {r["threads"] for r in rows if r["engine"] == "scipy"} == {1}  # one matrix-vector product per query
    assert all(0 < r["recall@10"] <= 1 and r["mean_ms"] > 0 and r["qps"] > 0 for r in rows)
    assert not any(r["index_reused"] for r in rows if r["engine"] == "scipy")
    # a second run reuses every index, with the build time on record
    code, stdout, err = cli(*args)
    assert code == 0, err
    again = json.loads(out.read_text())["results"]
    assert all(r["index_reused"] for r in again)
    assert [r["build_s"] for r in again] == [r["build_s"] for r in rows]
    # every exact configuration of ours returns the brute-force reference's ranking, hit for hit (recall@10
    # alone would not see a shorter list or another order); on the indexes the runs kept
    workdir = tmp_path / "indexes"
    for corpus in ("scifact", "2k", "topical-2k"):
        docs = quantised(corpus_vectors(corpus, None, cache))
        queries = SparseBatch.concat(list(corpus_queries(corpus, None, cache).values()))
        key = fingerprint(docs)
        brute = ScipyEngine()
        open_or_build(brute, docs, key, workdir, corpus, threads=1)
        want = brute.search(queries, k=10)
        for name, options in engine_configs(["lsr"]):
            engine = LsrEngine(**options)
            if engine.mode != "exact":
                continue
            assert open_or_build(engine, docs, key, workdir, corpus, threads=1)[2], "the run's index is reused"
            for threads in (1, 2):
                got = engine.search(queries, k=10, threads=threads)
                assert all(np.array_equal(g, w) for g, w in zip(got, want)), (corpus, options, threads)


def test_bench_commands_refuse_values_outside_their_sets(cli, tmp_path):
    """Fixed value sets are option types: a bogus value is a usage error (exit 2), before anything runs."""
    for args, bad in ((["bench", "query", "--engine", "nope"], "nope"),
                      (["bench", "head", "--dtype", "float16"], "float16"),
                      (["bench", "head", "--head", "cuda"], "cuda"),
                      (["bench", "encode", "--head", "fast"], "fast"),
                      (["bench", "decoder", "--dtype", "fp8"], "fp8"),
                      (["bench", "serve", str(tmp_path), "--mode", "lexical"], "lexical")):
        code, _, err = cli(*args)
        assert code == 2 and bad in err, (args, code, err)


def test_corpus_names_and_topical_cache(tmp_path):
    assert CorpusName.parse("scifact") == CorpusName("scifact", "real", None, "scifact", "splade-tiny")
    assert CorpusName.parse("1M").kind == "synthetic"
    name = CorpusName.parse("topical-10M:lsr-ifree-tiny")
    assert (name.kind, name.size, name.model) == ("topical", 10_000_000, "lsr-ifree-tiny")
    rng = np.random.default_rng(1)
    for dataset, split in (*QUERY_SETS, *TRAIN_QUERY_SETS):
        _batch(rng, 20, 8, 1.0).save_npz(tmp_path / f"{dataset}-{split}-lsr-ifree-tiny-queries.npz")
    for dataset, _ in QUERY_SETS:
        _batch(rng, 200, 30, 0.5).save_npz(tmp_path / f"{dataset}-lsr-ifree-tiny-docs.npz")
    import lsr.eval.bench.query as bq

    chunk = bq.TOPICAL_CHUNK
    bq.TOPICAL_CHUNK = 700  # the corpus cached in three chunk files, read back one at a time
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    for f in tmp_path.glob("*.npz"):
        shutil.copyfile(f, fresh / f.name)
    try:
        chunks = list(iter_corpus_chunks("topical-2k:lsr-ifree-tiny", None, tmp_path))
        # a smaller corpus is cut from the larger one cached beside it, and equals one generated alone
        cut = list(iter_corpus_chunks("topical-1k:lsr-ifree-tiny", None, tmp_path))
        alone = list(iter_corpus_chunks("topical-1k:lsr-ifree-tiny", None, fresh))
    finally:
        bq.TOPICAL_CHUNK = chunk
    assert [len(c) for c in cut] == [700, 300]
    for a, b in zip(cut, alone):
        assert np.array_equal(a.indptr, b.indptr) and np.array_equal(a.term_ids, b.term_ids)
        assert np.array_equal(a.weights, b.weights)
    assert corpus_description("topical-1k:lsr-ifree-tiny", None, tmp_path)["cut_from"].startswith("topical-2k")
    assert [len(c) for c in chunks] == [700, 700, 600]
    whole = corpus_vectors("topical-2k:lsr-ifree-tiny", None, tmp_path)
    assert np.array_equal(SparseBatch.concat(chunks).term_ids, whole.term_ids)
    assert len(corpus_queries("topical-2k:lsr-ifree-tiny", None, tmp_path)["topical"]) == bq.TOPICAL_QUERIES


def test_seismic_configurations_are_the_published_ones():
    from lsr.eval.bench.query import SEISMIC_PUBLISHED

    assert [o for _, o in engine_configs(["seismic"])] == list(SEISMIC_PUBLISHED.values())
    assert engine_configs(["seismic:recall_95"]) == [("seismic", SEISMIC_PUBLISHED["recall_95"])]
    assert engine_configs(["pisa:maxscore"]) == [("pisa", {"query_algorithm": "maxscore"})]
    assert SEISMIC_PUBLISHED["recall_95"]["n_postings"] == 2000 and SEISMIC_PUBLISHED["recall_99"]["heap_factor"] == 0.7


def test_a_corpus_too_large_to_hold_whole_is_indexed_chunk_by_chunk(tmp_path, monkeypatch):
    """Past WHOLE_POSTINGS a topical corpus is read a chunk at a time and indexed by our writer spilling runs,
    into format 3 with the forward index; the other engines say they were not run. Its exact search is the
    brute force over the same corpus held whole (one scale for every chunk)."""
    import lsr.eval.bench.query as bq
    import lsr.index.runs as runs

    rng = np.random.default_rng(2)
    for dataset, split in (*QUERY_SETS, *TRAIN_QUERY_SETS):
        _batch(rng, 20, 8, 1.0).save_npz(tmp_path / f"{dataset}-{split}-queries.npz")
    for dataset, _ in QUERY_SETS:
        _batch(rng, 200, 30, 0.5).save_npz(tmp_path / f"{dataset}-docs.npz")
    monkeypatch.setattr(bq, "TOPICAL_CHUNK", 700)
    monkeypatch.setattr(bq, "WHOLE_POSTINGS", 0)
    monkeypatch.setattr(runs, "RUN_POSTINGS", 20_000)  # a run spilled every chunk or so
    said: list[str] = []
    rows = bq.bench_query(["topical-2k"], ["lsr:impact", "scipy"], [1], cache=tmp_path, workdir=tmp_path / "idx",
                          log=said.append)
    assert any("scipy: not run" in line for line in said), said
    assert {r.engine for r in rows} == {"lsr"} and len({json.dumps(r.options) for r in rows}) == 1 + len(bq.IMPACT_CONFIGS)
    assert all(r.build_options == {"bits": 8, **bq.SCALE_FORMAT} for r in rows)
    whole = quantised(corpus_vectors("topical-2k", None, tmp_path))
    queries = SparseBatch.concat(list(corpus_queries("topical-2k", None, tmp_path).values()))
    brute = ScipyEngine()
    open_or_build(brute, whole, fingerprint(whole), tmp_path / "idx", "whole", threads=1)
    engine = LsrEngine(layout=bq.SCALE_FORMAT)
    engine.open(next(p for p in (tmp_path / "idx").iterdir() if p.name.startswith("topical-2k-lsr") and p.is_dir()))
    got, want = engine.search(queries, k=10), brute.search(queries, k=10)
    assert all(np.array_equal(g, w) for g, w in zip(got, want))


def test_blockmax_over_a_reordered_index_maps_its_hits_back(tmp_path):
    """`lsr:blockmax` builds its index reordered (its own folder, the file-order copy removed); at prune factor 1
    it finds the exact top 10 of the corpus' own doc_idx, below 1 a subset."""
    import lsr.eval.bench.query as bq

    rng = np.random.default_rng(4)
    for dataset, split in (*QUERY_SETS, *TRAIN_QUERY_SETS):
        _batch(rng, 20, 8, 1.0).save_npz(tmp_path / f"{dataset}-{split}-queries.npz")
    for dataset, _ in QUERY_SETS:
        _batch(rng, 200, 30, 0.5).save_npz(tmp_path / f"{dataset}-docs.npz")
    rows = bq.bench_query(["topical-2k"], ["lsr:blockmax"], [1], cache=tmp_path, workdir=tmp_path / "idx",
                          log=lambda _: None)
    by_options = {json.dumps(r.options, sort_keys=True): r for r in rows if r.queries == "real"}
    assert len(by_options) == 1 + len(bq.BLOCKMAX_CONFIGS)
    for block_size in (16, 32):  # each block size its own reordered index
        exact = by_options[json.dumps({"algorithm": "blockmax", "prune_factor": 1.0, "reorder": True,
                                       "block_size": block_size}, sort_keys=True)]
        # ties at the 10th score may pick other documents than file order does: recall just under 1 (checked below)
        assert exact.mode == "exact" and exact.recall_at_10 >= 0.95
        assert exact.build_options["reorder"] == "cluster" and exact.build_options["block_size"] == block_size
    assert all(0.0 < r.recall_at_10 <= 1.0 for r in rows)
    assert not list((tmp_path / "idx").glob("*.file-order"))
    folders = [p for p in (tmp_path / "idx").iterdir() if p.is_dir() and "reorder" in
               json.loads((p / "meta.json").read_text())["info"]]
    assert sorted(IndexReader(p, verify_checksums=False).block_size for p in folders) == [16, 32]
    folder = folders[0]
    engine = LsrEngine(algorithm="blockmax", reorder=True)
    engine.open(folder)
    whole = quantised(corpus_vectors("topical-2k", None, tmp_path)).to_scipy()
    queries = corpus_queries("topical-2k", None, tmp_path)["topical"]
    scores = np.asarray((whole @ queries.to_scipy().T).todense()).T  # per query, every document's exact score
    found = engine.search(queries, k=10)
    assert sum(len(hits) for hits in found) >= 8 * len(found)
    for row, hits in zip(scores, found):  # the corpus' doc_idx, with the exact top scores
        np.testing.assert_allclose(np.sort(row[hits])[::-1], np.sort(row)[::-1][:len(hits)], rtol=1e-6)
