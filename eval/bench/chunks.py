"""Exhaustive search with and without chunking, side by side: `python -m lsr.eval.bench.chunks 1M`.

Times `Searcher(chunk_docs=...)` on one corpus of `lsr bench query` (its cached vectors and kept index), one
query at a time over the real queries, every chunk size in turn, twice; `chunk_docs` = the corpus size is one
accumulator over all documents (the form before chunking). Every setting must return the same top 10.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from lsr.index import IndexReader, Searcher

from .query import CACHE, WORKDIR, LsrEngine, corpus_vectors, fingerprint, open_or_build, quantised, query_vectors
from .results import write_json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", help="scifact, nfcorpus, 100k, 1M ...")
    parser.add_argument("--chunk", type=int, action="append", help="chunk sizes [all docs, 2^14 .. 2^17]")
    parser.add_argument("--every", type=int, default=3, help="every Nth query")
    parser.add_argument("--cache", default=CACHE)
    parser.add_argument("--workdir", default=WORKDIR)
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args()
    cache = Path(args.cache)
    queries = query_vectors(None, cache)
    docs = quantised(corpus_vectors(args.corpus, None, cache))
    path, _, _ = open_or_build(LsrEngine(), docs, fingerprint(docs), Path(args.workdir), args.corpus, threads=1)
    reader = IndexReader(path, verify_checksums=False)
    chunks = args.chunk or [reader.num_docs, 1 << 14, 1 << 15, 1 << 16, 1 << 17]
    rows, reference = [], None
    for repeat in range(2):
        for chunk in chunks:
            searcher = Searcher(reader, chunk_docs=chunk)
            searcher.search_vector(*queries.row(0))
            latency, results = [], []
            for i in range(0, len(queries), args.every):
                t0 = time.perf_counter()
                idx, _ = searcher.search_vector(*queries.row(i))
                latency.append((time.perf_counter() - t0) * 1e3)
                results.append(idx.tolist())
            reference = reference or results
            row = {"corpus": args.corpus, "chunk_docs": chunk, "repeat": repeat, "mean_ms": float(np.mean(latency)),
                   "p50_ms": float(np.median(latency)), "same_top10": results == reference}
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.json:
        write_json(args.json, {"results": rows})


if __name__ == "__main__":
    main()
