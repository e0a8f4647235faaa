"""`lsr bench query`: our query processor against PISA, BMP, Seismic, Lucene impact search and a scipy brute
force, on the same 8-bit quantised document vectors, in one run.

Corpora: the real SPLADE-tiny vectors of scifact and nfcorpus (encoded once, cached), and synthetic corpora
of any size ("100k", "1M") drawn from them by `lsr.eval.bench.synthetic.synthesize`. Queries: the real encoded
queries of scifact test and nfcorpus dev. Every row: build time, index bytes per posting, single-query mean and
p99 latency (one call per query), QPS (one batch call), recall@10 against our exact results.
"""
from __future__ import annotations

import gc
import hashlib
import io
import json
import os
import platform
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lsr.index import IndexReader, IndexWriter, LsrError, Quantization, Searcher, SparseBatch
from lsr.index.storage import FORMAT_VERSION

from lsr.eval.engines import ENGINES, make_engine

from .results import atomic_write, write_json

QUERY_SETS = (("scifact", "test"), ("nfcorpus", "dev"))
CORPORA = ("scifact", "nfcorpus")  # the default corpora: the real sets
ENGINE_NAMES = ("lsr", *ENGINES)  # the default: every engine (ours first: the recall reference)
# what --engine takes: the engines, and "milvus-inverted", Milvus without its SPARSE_WAND collection (a second
# build of every document; at 100k it answered 4x slower than the inverted index)
ENGINE_CHOICES = (*ENGINE_NAMES, "milvus-inverted")
CACHE, WORKDIR = "runs/bench-cache", "runs/bench-indexes"


def default_threads() -> list[int]:
    """1 and all cores."""
    return sorted({1, os.cpu_count() or 1})


def _encode_cached(cache: Path, name: str, texts_fn, queries: bool) -> SparseBatch:
    path = cache / f"{name}.npz"
    if path.is_file():
        return SparseBatch.load_npz(path)
    from lsr.encoders import SpladeEncoder, resolve_model

    encoder = SpladeEncoder(resolve_model("splade-tiny").source, show_progress=True)
    texts = texts_fn()
    vectors = encoder.encode_queries(texts) if queries else encoder.encode_documents(texts)
    cache.mkdir(parents=True, exist_ok=True)
    vectors.save_npz(path)
    return vectors


def real_vectors(dataset: str, data_dir: str | Path | None, cache: Path) -> SparseBatch:
    from lsr.eval.beir import load_corpus

    return _encode_cached(cache, f"{dataset}-docs", lambda: [d.contents for d in
                                                             load_corpus(dataset, data_dir).corpus.values()], False)


def query_vectors(data_dir: str | Path | None, cache: Path) -> SparseBatch:
    from lsr.eval.beir import load_beir

    return SparseBatch.concat([_encode_cached(cache, f"{d}-{s}-queries", lambda d=d, s=s: list(
        load_beir(d, s, data_dir).queries.values()), True) for d, s in QUERY_SETS])


def parse_size(name: str) -> int | None:
    """'1M' -> 1_000_000, '100k' -> 100_000; None for a dataset name."""
    units = {"k": 1_000, "K": 1_000, "M": 1_000_000}
    if name[-1:] in units and name[:-1].isdigit():
        return int(name[:-1]) * units[name[-1]]
    return None


def corpus_vectors(name: str, data_dir, cache: Path) -> SparseBatch:
    size = parse_size(name)
    if size is None:
        return real_vectors(name, data_dir, cache)
    path = cache / f"synthetic-{name}.npz"
    if path.is_file():
        return SparseBatch.load_npz(path)
    from .synthetic import synthesize

    real = SparseBatch.concat([real_vectors(d, data_dir, cache) for d, _ in QUERY_SETS])
    docs = synthesize(real, size, seed=0)
    import scipy.sparse as sp

    sp.save_npz(path, docs.to_scipy(), compressed=False)
    return docs


def quantised(docs: SparseBatch, bits: int = 8) -> SparseBatch:
    """The documents as integer impacts (stored as float32), the vectors every engine is given."""
    quant = Quantization.fit(float(docs.weights.max()), bits)
    impacts = quant.quantize(docs.weights).astype(np.float32)
    return SparseBatch.from_scipy(type(docs.to_scipy())((impacts, docs.term_ids, docs.indptr),
                                                        shape=(len(docs), docs.vocab_size)))


class LsrEngine:
    """Our index and Searcher behind the engines' interface."""

    name = "lsr"

    def __init__(self, algorithm: str = "exhaustive", max_query_terms: int | None = None, prune_factor: float = 1.0):
        self.options = {"algorithm": algorithm, "max_query_terms": max_query_terms, "prune_factor": prune_factor}
        self.mode = "exact" if max_query_terms is None and prune_factor == 1.0 else "approximate"
        self._searcher: Searcher | None = None

    def build(self, docs: SparseBatch, workdir: Path, threads: int = 1) -> None:
        shutil.rmtree(workdir, ignore_errors=True)
        with IndexWriter(workdir, vocab_size=docs.vocab_size, bits=8) as writer:
            writer.add(docs, [str(i) for i in range(len(docs))])
        self.open(workdir)

    def build_options(self) -> dict:
        return {"bits": 8, "format_version": FORMAT_VERSION}

    def open(self, workdir: Path) -> None:
        self._path = Path(workdir)
        self._searcher = Searcher(IndexReader(workdir, verify_checksums=False), **self.options)

    def search(self, queries: SparseBatch, k: int, threads: int = 1) -> list[np.ndarray]:
        assert self._searcher is not None
        return [idx for idx, _ in self._searcher.search_batch_vectors(queries, k=k, threads=threads)]

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self._path.iterdir())


def engine_configs(names: list[str]) -> list[tuple[str, dict[str, Any]]]:
    """The engines of one run: ours exact and approximate, and the others with their approximate knobs."""
    configs: list[tuple[str, dict[str, Any]]] = []
    for name in names:
        if name == "lsr":  # exact (exhaustive first: the reference), then query-term pruning at recall ~0.99, ~0.96
            configs += [("lsr", {}), ("lsr", {"algorithm": "maxscore"})]
            configs += [("lsr", {"max_query_terms": m}) for m in (64, 40)]
        elif name == "pisa":  # MaxScore measured 7x faster than block-max WAND on these vectors (1M, 20 queries)
            configs += [("pisa", {"query_algorithm": a}) for a in ("maxscore", "block_max_wand")]
        elif name == "seismic":  # the adapter's index (n_postings 3,500: recall <= 0.89 at 1M), then one that
            # reaches 0.95 at 1M (15,000 postings per list, 5% centroids; 672 s to build there)
            configs += [("seismic", {"query_cut": q, "heap_factor": h}) for q, h in ((10, 0.8), (20, 0.7))]
            configs.append(("seismic", {"n_postings": 15000, "centroid_fraction": 0.05, "query_cut": 10,
                                        "heap_factor": 0.9}))
        elif name in ("milvus", "milvus-inverted"):  # exact, then drop ratios, then SPARSE_WAND (its own collection)
            configs += [("milvus", {}), ("milvus", {"drop_ratio_search": 0.2}), ("milvus", {"drop_ratio_search": 0.4})]
            if name == "milvus":
                configs += [("milvus", {"index_type": "SPARSE_WAND"}),
                            ("milvus", {"index_type": "SPARSE_WAND", "drop_ratio_search": 0.2})]
        else:
            configs.append((name, {}))
    return configs


@dataclass
class Row:
    engine: str
    mode: str
    corpus: str
    threads: int
    mean_ms: float
    p99_ms: float
    qps: float
    recall_at_10: float
    build_s: float
    bytes_per_posting: float
    options: dict[str, Any] = field(default_factory=dict)
    index_reused: bool = False  # True: build_s was measured when an earlier run (or configuration) built it

    def to_json(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["recall@10"] = d.pop("recall_at_10")
        return d


def _recall(got: list[np.ndarray], ref: list[np.ndarray], k: int) -> float:
    return float(np.mean([len(set(g[:k].tolist()) & set(r[:k].tolist())) / max(1, min(k, len(r)))
                          for g, r in zip(got, ref) if len(r)]))


def fingerprint(docs: SparseBatch) -> str:
    h = hashlib.sha1()
    for a in (docs.indptr, docs.term_ids, docs.weights):
        h.update(np.ascontiguousarray(a).data)
    return f"{len(docs)}:{docs.nnz}:{h.hexdigest()}"


BUILD_RECORD = "lsr-bench-build.json"


def open_or_build(engine, docs: SparseBatch, docs_key: str, workdir: Path, corpus: str, threads: int,
                  rebuild: bool = False, fresh: set[Path] | None = None) -> tuple[Path, float, bool]:
    """Open the index an earlier build of the same engine, build options and documents left in workdir (its
    build time is on record beside it, in FOLDER.lsr-bench-build.json: an index folder holds only the engine's
    files), else build it and record that. `rebuild` builds anew unless the folder is in `fresh` (built earlier
    in this run), which gains the folder. Returns (folder, build seconds, reused)."""
    options = engine.build_options()
    key = hashlib.sha1(json.dumps([engine.name, options], sort_keys=True).encode()).hexdigest()[:8]
    path = workdir / f"{corpus}-{engine.name}-{key}"
    record_path = workdir / f"{path.name}.{BUILD_RECORD}"
    fresh = set() if fresh is None else fresh
    if (not rebuild or path in fresh) and record_path.is_file():
        record = json.loads(record_path.read_text())
        if record.get("docs") == docs_key and record.get("options") == options:
            engine.open(path)
            return path, float(record["build_s"]), True
    start = time.perf_counter()
    engine.build(docs, path, threads=threads)
    build_s = time.perf_counter() - start
    atomic_write(record_path, json.dumps({"docs": docs_key, "options": options, "build_s": build_s, "threads": threads,
                                          "time": time.strftime("%Y-%m-%dT%H:%M:%S")}).encode())
    fresh.add(path)
    return path, build_s, False


def bench_query(corpora: list[str] | None = None, engines: list[str] | None = None, threads: list[int] | None = None,
                *, k: int = 10, data_dir: str | Path | None = None, cache: str | Path = CACHE,
                workdir: str | Path = WORKDIR, max_queries: int | None = None,
                rebuild: bool = False, build_only: bool = False, log=print) -> list[Row]:
    """One row per engine configuration and thread count (defaults: CORPORA, ENGINE_NAMES, default_threads()).
    Indexes are kept in workdir and reused by later runs on the same documents (with the build time measured
    when they were built) unless `rebuild`."""
    corpora, engines = list(corpora or CORPORA), list(engines or ENGINE_NAMES)
    threads = list(threads or default_threads())
    cache, workdir = Path(cache), Path(workdir)
    queries = query_vectors(data_dir, cache)
    if max_queries:
        queries = queries.select(list(range(min(max_queries, len(queries)))))
    rows: list[Row] = []
    for corpus in corpora:
        docs = quantised(corpus_vectors(corpus, data_dir, cache))
        log(f"{corpus}: {len(docs):,} documents, {docs.nnz:,} postings; {len(queries)} queries")
        reference: list[np.ndarray] | None = None
        docs_key = fingerprint(docs)
        fresh: set[Path] = set()  # built in this run: later configurations reuse them
        for name, options in engine_configs(engines):
            engine = LsrEngine(**options) if name == "lsr" else make_engine(name, **options)
            try:
                path, build_s, reused = open_or_build(engine, docs, docs_key, workdir, corpus, max(threads),
                                                      rebuild, fresh)
            except (ImportError, LsrError) as e:
                log(f"  {name}: not run ({e})")
                continue
            bytes_per_posting = engine.size_bytes() / max(docs.nnz, 1)
            log(f"  {name}: index {'reused' if reused else 'built'} at {path} (build {build_s:.1f} s, "
                f"{bytes_per_posting:.2f} B/posting)")
            if build_only:
                if hasattr(engine, "close"):
                    engine.close()
                continue
            # an engine whose Python API runs queries one after another on one thread gets one row
            for n_threads in threads if getattr(engine, "threaded", True) else sorted(threads)[:1]:
                engine.search(queries.select([0]), k=k, threads=n_threads)  # warm-up (JIT, JVM, caches)
                latency, results = [], []
                for i in range(len(queries)):
                    t0 = time.perf_counter()
                    results.append(engine.search(queries.select([i]), k=k, threads=n_threads)[0])
                    latency.append((time.perf_counter() - t0) * 1e3)
                t0 = time.perf_counter()
                engine.search(queries, k=k, threads=n_threads)
                qps = len(queries) / (time.perf_counter() - t0)
                if reference is None:  # the first config is ours, exact
                    reference = results
                row = Row(name, engine.mode, corpus, n_threads, float(np.mean(latency)),
                          float(np.percentile(latency, 99)), qps, _recall(results, reference, k), build_s,
                          bytes_per_posting, {k_: v for k_, v in options.items()}, reused)
                rows.append(row)
                log(format_row(row))
            if hasattr(engine, "close"):
                engine.close()
            del engine
            gc.collect()  # at 1M documents an engine holds gigabytes: free it before the next one loads
    return rows


def format_row(row: Row) -> str:
    return (f"  {row.engine:8} {row.mode:11} threads={row.threads} mean {row.mean_ms:8.2f} ms  p99 "
            f"{row.p99_ms:8.2f} ms  {row.qps:8.1f} QPS  recall@10 {row.recall_at_10:.3f}  build "
            f"{row.build_s:6.1f} s  {row.bytes_per_posting:5.2f} B/posting  {row.options or ''}")


def write_results(rows: list[Row], json_path: str | Path, plot_path: str | Path | None = None) -> None:
    """The rows as one JSON file (replaced whole), with the machine, and a latency-recall plot if asked."""
    doc = {"machine": {"platform": platform.platform(), "processor": platform.processor(),
                       "cpus": os.cpu_count()},
           "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "results": [r.to_json() for r in rows]}
    write_json(json_path, doc)
    if plot_path:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, len({r.corpus for r in rows}) or 1, figsize=(6 * len({r.corpus for r in rows}), 4),
                                 squeeze=False)
        for ax, corpus in zip(axes[0], sorted({r.corpus for r in rows})):
            for engine in sorted({r.engine for r in rows}):
                pts = [(r.recall_at_10, r.mean_ms) for r in rows if r.corpus == corpus and r.engine == engine
                       and r.threads == 1]
                if pts:
                    ax.scatter(*zip(*pts), label=engine)
            ax.set(title=f"{corpus}, 1 thread", xlabel="recall@10 vs exact", ylabel="mean latency (ms)",
                   yscale="log")
            ax.legend()
        fig.tight_layout()
        image = io.BytesIO()
        fig.savefig(image, format=Path(plot_path).suffix.lstrip(".") or "png", dpi=120)
        plt.close(fig)
        atomic_write(plot_path, image.getvalue())
