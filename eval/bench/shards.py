"""Scale-out figures of issue 14, in one run (the three parts never overlap, so no two timings share the cores):

1. build: the same scifact documents (the first `--build-docs`) encoded by `--model` in one process
   (`lsr index build`), and by `--engine ray` with 1 and 2 workers (4 shards), each in a fresh process so
   Ray's start and every model load are counted as a user meets them; wall time, encoding docs/s, peak RSS
   of the driver.
2. write: the synthetic 1M corpus (`lsr bench query`'s: unclustered) written as a plain index and as 1, 2 and
   4 shards by our writers, each in a fresh process: seconds and peak RSS.
3. query: those four 1M indexes opened side by side in one process; the real splade-tiny queries of scifact
   test and nfcorpus dev, top 10, one query at a time, rounds interleaved; per-query latency through the
   sharded search (`ShardSet.sparse`: the shards in parallel threads, top k merged), and the plain index's
   `Searcher` alone (the kernel without our glue). Every sharded result is checked equal to the plain one.

    python -m lsr.eval.bench.shards --json eval/results/bench-shards.json
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from .query import corpus_vectors, query_vectors
from .results import write_json

BUILD = """
import json, resource, sys, time, shutil
from pathlib import Path
from lsr.eval.beir import load_corpus
from lsr.eval.pipeline import EncoderOptions, build_index
from lsr.eval.distributed import build_index_ray
engine, workers, shards, n, out, data_dir, model = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6], sys.argv[7]
shutil.rmtree(out, ignore_errors=True)
t = time.perf_counter()
ds = load_corpus("scifact", data_dir, limit=n)
options = EncoderOptions(show_progress=False)
if engine == "ray":
    figures = build_index_ray(ds, model, out, options, workers=workers, shards=shards)
else:
    figures = build_index(ds, model, out, options)
wall = time.perf_counter() - t
print(json.dumps({"wall_s": wall, "encode_s": figures["encode_s"], "docs_per_s": figures["docs_per_s"],
                  "ray_start_s": figures.get("ray_start_s"),
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

WRITE = """
import json, resource, sys, time, shutil
from lsr.eval.bench.query import corpus_vectors
from lsr.eval.pipeline import write_shards
from lsr.index import IndexWriter
from pathlib import Path
corpus, shards, out, cache = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4])
docs = corpus_vectors(corpus, None, cache)
ids = [str(i) for i in range(len(docs))]
shutil.rmtree(out, ignore_errors=True)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
t = time.perf_counter()
if shards == 0:
    with IndexWriter(out, vocab_size=docs.vocab_size, bits=8, info={"corpus": corpus}) as w:
        w.add(docs, ids)
else:
    write_shards(out, docs, ids, shards=shards, vocab_size=docs.vocab_size, bits=8, info={"corpus": corpus})
print(json.dumps({"seconds": time.perf_counter() - t, "vectors_rss_mb": base,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def _fresh(code: str, *args: Any) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"benchmark step failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_build(docs: int, workdir: Path, data_dir: str, model: str) -> list[dict[str, Any]]:
    rows = []
    for engine, workers, shards in (("local", 0, 1), ("ray", 1, 4), ("ray", 2, 4)):
        row = _fresh(BUILD, engine, workers, shards, docs, workdir / f"build-{engine}-{workers}", data_dir, model)
        rows.append({"engine": engine, "workers": workers or None, "shards": shards, "docs": docs, "model": model,
                     **row})
        print(f"build {engine:5} workers={workers} shards={shards}: {row['wall_s']:.1f} s wall, "
              f"{row['docs_per_s']:.1f} docs/s encoding, {row['peak_rss_mb']:.0f} MB", flush=True)
    plain = rows[0]["docs_per_s"]
    for row in rows:
        row["encode_speed_vs_single"] = row["docs_per_s"] / plain
    return rows


def bench_write(corpus: str, workdir: Path, cache: Path) -> tuple[list[dict[str, Any]], dict[str, Path]]:
    rows, paths = [], {}
    for shards in (0, 1, 2, 4):
        name = "plain" if shards == 0 else f"{shards}-shards"
        path = workdir / f"shards-{corpus}-{name}"
        row = _fresh(WRITE, corpus, shards, path, cache)
        rows.append({"index": name, "shards": shards or None, **row})
        paths[name] = path
        print(f"write {corpus} {name:9}: {row['seconds']:.1f} s, peak RSS {row['peak_rss_mb']:.0f} MB "
              f"(vectors alone {row['vectors_rss_mb']:.0f} MB)", flush=True)
    return rows, paths


def bench_query(paths: dict[str, Path], cache: Path, rounds: int, k: int = 10) -> list[dict[str, Any]]:
    from lsr.index import IndexReader, Searcher
    from lsr.index.shards import open_shards

    queries = query_vectors(None, cache)
    rows_q = [queries.row(i) for i in range(len(queries))]
    sets = {name: open_shards(path) for name, path in paths.items()}
    kernel = Searcher(IndexReader(paths["plain"]))
    reference = [kernel.search_vector(t, w, k) for t, w in rows_q]
    for name, index in sets.items():  # equal results, and first-call costs out of the timing
        for (t, w), (ri, rs) in zip(rows_q, reference):
            gi, gs = index.sparse(t, w, k)
            if not (np.array_equal(gi, ri) and np.array_equal(gs, rs)):
                raise SystemExit(f"{name}: results differ from the plain index")
    times: dict[str, list[float]] = {name: [] for name in ["plain Searcher (kernel only)", *sets]}
    for _ in range(rounds):
        for t, w in rows_q:
            s = time.perf_counter()
            kernel.search_vector(t, w, k)
            times["plain Searcher (kernel only)"].append((time.perf_counter() - s) * 1e3)
        for name, index in sets.items():
            for t, w in rows_q:
                s = time.perf_counter()
                index.sparse(t, w, k)
                times[name].append((time.perf_counter() - s) * 1e3)
    base = statistics.median(times["plain"])
    out = []
    for name, values in times.items():
        a = np.asarray(values)
        out.append({"index": name, "shards": sets[name].num_shards if name in sets else 1, "queries": len(rows_q),
                    "rounds": rounds, "p50_ms": float(np.percentile(a, 50)), "p99_ms": float(np.percentile(a, 99)),
                    "mean_ms": float(a.mean()), "p50_vs_plain": float(np.percentile(a, 50)) / base})
        print(f"query {name:30}: p50 {out[-1]['p50_ms']:.2f} ms, p99 {out[-1]['p99_ms']:.2f} ms "
              f"({out[-1]['p50_vs_plain']:.2f}x plain)", flush=True)
    for index in sets.values():
        index.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--build-docs", type=int, default=1000, help="scifact documents for the build part")
    parser.add_argument("--model", default="lsr-ifree-tiny-v1",
                        help="encoder of the build part (the README's figures: lsr-ifree-tiny-v1)")
    parser.add_argument("--corpus", default="1M", help="synthetic corpus for the write and query parts")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip-build", action="store_true")
    parser.add_argument("--workdir", type=Path, default=Path("runs/bench-indexes"))
    parser.add_argument("--cache", type=Path, default=Path("runs/bench-cache"))
    parser.add_argument("--data-dir", default=os.environ.get("LSR_DATA_DIR", "../shared/data/beir"))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    corpus_vectors(args.corpus, args.data_dir, args.cache)  # made once, outside every timing
    result: dict[str, Any] = {"cpus": os.cpu_count(), "machine": "the 2-core development machine, no GPU",
                              "command": "python -m lsr.eval.bench.shards " + " ".join(sys.argv[1:])}
    rows = [] if args.skip_build else [{"part": "build", **r} for r in bench_build(args.build_docs, args.workdir,
                                                                                   args.data_dir, args.model)]
    result["write_corpus"] = f"synthetic {args.corpus}, unclustered (lsr.eval.bench.synthetic)"
    written, paths = bench_write(args.corpus, args.workdir, args.cache)
    rows += [{"part": "write", **r} for r in written]
    rows += [{"part": "query", **r} for r in bench_query(paths, args.cache, args.rounds)]
    result["rows"] = rows
    if args.json:
        write_json(args.json, result)


if __name__ == "__main__":
    main()
