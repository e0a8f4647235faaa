"""`lsr bench query` end to end on small cached vectors: rows, recall against our exact search, JSON and plot."""
from __future__ import annotations

import json

import numpy as np
import scipy.sparse as sp

from lsr.eval.bench.query import QUERY_SETS
from lsr.index import SparseBatch

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
    out, plot = tmp_path / "bench.json", tmp_path / "bench.png"
    args = ["bench", "query", "--corpus", "scifact", "--corpus", "2k", "--engine", "lsr", "--engine", "scipy",
            "--threads", "1", "--threads", "2", "--cache", cache, "--workdir", tmp_path / "indexes", "--json", out,
            "--plot", plot]
    code, stdout, err = cli(*args)
    assert code == 0, err
    rows = json.loads(out.read_text())["results"]
    assert plot.stat().st_size > 0
    keys = {"engine", "mode", "corpus", "threads", "mean_ms", "p99_ms", "qps", "recall@10", "build_s",
            "bytes_per_posting"}
    assert all(keys <= set(r) for r in rows)
    assert {r["corpus"] for r in rows} == {"scifact", "2k"}
    exact = [r for r in rows if r["mode"] == "exact"]
    assert {r["engine"] for r in exact} == {"lsr", "scipy"}
    assert all(r["recall@10"] == 1.0 for r in exact), "exact engines agree with our exact search"
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
