"""`lsr bench format`: index format 2 (plain arrays) against format 3 (compressed doc ids, no forward index) on
the same cached corpus and queries, in one run: build time, bytes per posting, open time, and single-query
latency of the exact algorithms (wall and thread CPU time), the formats interleaved query by query so both see
the same machine load.

Every result is checked: format 3's hits (doc_idx and score) must equal format 2's on every query, and both
must equal the brute-force reference (a scipy sparse product over the same impacts) on the first
`--reference-queries` queries; recall@10 against that reference is reported.

    python -m lsr.eval.bench.format --corpus 1M --json eval/results/bench-format-1M.json
"""
from __future__ import annotations

import argparse
import gc
import os
import platform
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np

from lsr.index import IndexReader, IndexWriter, Searcher, SparseBatch
from lsr.index.hits import ranking_order

from .query import CACHE, corpus_vectors, quantised, query_vectors
from .results import write_json

FORMATS = {"format-2": {"format_version": 2}, "format-3": {"format_version": 3},
           "format-3+forward": {"format_version": 3, "forward_index": True}}
DEFAULT_FORMATS = ("format-2", "format-3")


def build(docs: SparseBatch, path: Path, options: dict[str, Any]) -> float:
    shutil.rmtree(path, ignore_errors=True)
    gc.collect()
    start = time.perf_counter()
    with IndexWriter(path, vocab_size=docs.vocab_size, bits=8, **options) as writer:
        writer.add(docs, [str(i) for i in range(len(docs))])
    return time.perf_counter() - start


def reference_hits(docs: SparseBatch, rows: list[tuple[np.ndarray, np.ndarray]], k: int) -> list[np.ndarray]:
    """Brute force over the impacts: scores = D q, ranked by (score desc, doc_idx asc)."""
    matrix = docs.to_scipy().astype(np.float64).tocsr()
    out = []
    for terms, weights in rows:
        q = np.zeros(docs.vocab_size)
        np.add.at(q, terms, weights)
        scores = matrix @ q
        cand = np.flatnonzero(scores > 0)
        out.append(cand[ranking_order(cand, scores[cand])][:k])
    return out


def _git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def bench_format(corpus: str = "1M", formats: tuple[str, ...] = DEFAULT_FORMATS,
                 algorithms: tuple[str, ...] = ("exhaustive", "maxscore"), *, k: int = 10, rounds: int = 3,
                 max_queries: int | None = None, reference_queries: int = 50, data_dir=None,
                 cache: str | Path = CACHE, workdir: str | Path = "runs/bench-format", log=print) -> dict[str, Any]:
    cache, workdir = Path(cache), Path(workdir)
    docs = quantised(corpus_vectors(corpus, data_dir, cache))
    queries = query_vectors(data_dir, cache)
    if max_queries:
        queries = queries.select(list(range(min(max_queries, len(queries)))))
    rows = [(np.ascontiguousarray(t, np.int64), np.ascontiguousarray(w, np.float64))
            for t, w in (queries.row(i) for i in range(len(queries)))]
    log(f"{corpus}: {len(docs):,} documents, {docs.nnz:,} postings; {len(rows)} queries")
    built: dict[str, dict[str, Any]] = {}
    for name in formats:
        path = workdir / f"{corpus}-{name}"
        build_s = build(docs, path, FORMATS[name])
        start = time.perf_counter()
        reader = IndexReader(path)  # the default open: xxh3 of every file, headers
        open_s = time.perf_counter() - start
        size = reader.size_bytes()
        files = {p.name: p.stat().st_size for p in sorted(path.iterdir())}
        built[name] = {"path": path, "reader": reader, "build_s": build_s, "open_s": open_s, "bytes": size,
                       "bytes_per_posting": size / max(docs.nnz, 1), "files": files}
        log(f"  {name}: built in {build_s:.1f} s, {size / docs.nnz:.3f} B/posting, opened in {open_s:.2f} s")
    n_ref = min(reference_queries, len(rows))
    reference = reference_hits(docs, rows[:n_ref], k)
    results: list[dict[str, Any]] = []
    for algorithm in algorithms:
        searchers = {name: Searcher(b["reader"], algorithm=algorithm) for name, b in built.items()}
        hits: dict[str, list] = {}
        for name, s in searchers.items():  # warm-up (JIT), and the results every round must repeat
            hits[name] = [s.search_vector(t, w, k) for t, w in rows]
        # interleaved query by query (the formats in turn, the order alternating), so both see the same load
        latency: dict[str, list[list[float]]] = {name: [] for name in searchers}
        cpu: dict[str, list[float]] = {name: [] for name in searchers}
        names = list(searchers)
        for r in range(rounds):
            for name in names:
                latency[name].append([])
            for i, (t, w) in enumerate(rows):
                for name in (names if (i + r) % 2 == 0 else names[::-1]):
                    c0, t0 = time.thread_time(), time.perf_counter()
                    searchers[name].search_vector(t, w, k)
                    latency[name][-1].append((time.perf_counter() - t0) * 1e3)
                    cpu[name].append((time.thread_time() - c0) * 1e3)
        first = next(iter(hits))
        for name in searchers:
            identical = all(np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
                            for a, b in zip(hits[name], hits[first]))
            exact = all(np.array_equal(h[0], r) for h, r in zip(hits[name][:n_ref], reference))
            recall = float(np.mean([len(set(h[0].tolist()) & set(r.tolist())) / max(1, min(k, len(r)))
                                    for h, r in zip(hits[name][:n_ref], reference) if len(r)]))
            all_ms = np.concatenate(latency[name])
            row = {"format": name, "algorithm": algorithm, "corpus": corpus, "threads": 1,
                   "mean_ms": float(all_ms.mean()), "median_ms": float(np.median(all_ms)),
                   "p99_ms": float(np.percentile(all_ms, 99)),
                   "cpu_mean_ms": float(np.mean(cpu[name])), "cpu_median_ms": float(np.median(cpu[name])),
                   "round_means_ms": [float(np.mean(r)) for r in latency[name]],
                   "round_medians_ms": [float(np.median(r)) for r in latency[name]],
                   f"identical_to_{first}": identical, "equal_to_brute_force": exact,
                   "reference_queries": n_ref, "recall@10": recall,
                   **{key: built[name][key] for key in ("build_s", "open_s", "bytes", "bytes_per_posting")}}
            results.append(row)
            log(f"  {algorithm:10} {name:17} mean {row['mean_ms']:7.2f} ms  median {row['median_ms']:7.2f} ms  "
                f"p99 {row['p99_ms']:7.2f} ms  cpu mean {row['cpu_mean_ms']:7.2f} ms  rounds {['%.2f' % m for m in row['round_means_ms']]}  "
                f"identical {identical}  brute force {exact}  recall {recall:.3f}")
        del searchers
        gc.collect()
    base = next((r for r in results if r["format"] == "format-2" and r["algorithm"] == "exhaustive"), None)
    ratios = {}
    if base:
        for r in results:
            if r["algorithm"] == "exhaustive" and r["format"] != "format-2":
                ratios[r["format"]] = {"mean_ms": r["mean_ms"] / base["mean_ms"],
                                       "median_ms": r["median_ms"] / base["median_ms"],
                                       "cpu_mean_ms": r["cpu_mean_ms"] / base["cpu_mean_ms"],
                                       "bytes_per_posting": r["bytes_per_posting"] / base["bytes_per_posting"],
                                       "build_s": r["build_s"] / base["build_s"]}
    return {"corpus": corpus, "corpus_note": "synthetic corpora are lsr.eval.bench.synthetic's (terms drawn "
            "independently: no topical structure)" if corpus[-1:] in "kM" else "real SPLADE-tiny vectors",
            "num_docs": len(docs), "num_postings": int(docs.nnz), "num_queries": len(rows), "k": k, "rounds": rounds,
            "commit": _git_commit(), "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
            "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "files": {name: b["files"] for name, b in built.items()},
            "results": results, "ratios_to_format_2_exhaustive": ratios}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lsr.eval.bench.format", description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default="1M")
    parser.add_argument("--format", dest="formats", action="append", choices=list(FORMATS))
    parser.add_argument("--algorithm", dest="algorithms", action="append", choices=["exhaustive", "maxscore",
                                                                                    "blockmax"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-queries", type=int)
    parser.add_argument("--reference-queries", type=int, default=50)
    parser.add_argument("--data-dir")
    parser.add_argument("--workdir", default="runs/bench-format")
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    doc = bench_format(args.corpus, tuple(args.formats or DEFAULT_FORMATS),
                       tuple(args.algorithms or ("exhaustive", "maxscore")), rounds=args.rounds,
                       max_queries=args.max_queries, reference_queries=args.reference_queries,
                       data_dir=args.data_dir or os.environ.get("LSR_DATA_DIR"), workdir=args.workdir)
    if args.json:
        write_json(args.json, doc)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
