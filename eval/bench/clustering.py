"""How clustered a corpus is, measured without any engine: `python -m lsr.eval.bench.clustering --json FILE`.

For the real sets (scifact, nfcorpus) and the unclustered and topical synthetic corpora of the same size and
source vectors (`lsr bench query`'s caches), on the real encoded queries:
- `nn_cosine`: the mean cosine similarity of a sampled document to its nearest other document;
- `blocks_to_score`: block-max's work, the share of blocks of 32 documents whose upper bound (per term, the
  block's largest weight, times the query weight, summed) reaches the query's 10th best exact score (a block
  below it is skipped), with the documents in file order and ordered by spherical k-means clusters (what a
  reordering at build time gives block-max and BMP);
- `bound_over_max`: the mean ratio of a block's upper bound to its best document's exact score.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from lsr.index import SparseBatch

from .results import write_json
from .synthetic import spherical_kmeans

BLOCK = 32


def nn_cosine(docs: SparseBatch, sample: int = 300, seed: int = 0) -> float:
    x = docs.to_scipy().astype(np.float64)
    norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=1)).ravel())
    x = sp.diags(1.0 / np.maximum(norms, 1e-12)) @ x
    rows = np.random.default_rng(seed).choice(x.shape[0], min(sample, x.shape[0]), replace=False)
    sims = (x[rows] @ x.T).toarray()
    sims[np.arange(len(rows)), rows] = -1.0
    return float(sims.max(axis=1).mean())


def block_maxima(docs: sp.csr_matrix, block: int = BLOCK) -> sp.csr_matrix:
    coo = docs.tocoo()
    blocks = coo.row // block
    num_blocks = -(-docs.shape[0] // block)
    key = blocks.astype(np.int64) * docs.shape[1] + coo.col
    order = np.lexsort((-coo.data, key))
    key, data = key[order], coo.data[order]
    first = np.r_[True, key[1:] != key[:-1]]
    return sp.csr_matrix((data[first], (key[first] // docs.shape[1], key[first] % docs.shape[1])),
                         shape=(num_blocks, docs.shape[1]))


def block_work(docs: SparseBatch, queries: SparseBatch, order: np.ndarray, k: int = 10) -> dict[str, float]:
    d = docs.to_scipy()[order].astype(np.float64).tocsr()
    bounds_m = block_maxima(d)
    q = queries.to_scipy().astype(np.float64).T.tocsc()
    scores = (d @ q).toarray()  # (docs, queries)
    bounds = (bounds_m @ q).toarray()  # (blocks, queries)
    n_blocks = bounds.shape[0]
    pad = np.full(n_blocks * BLOCK - d.shape[0], -np.inf)
    best = np.stack([np.r_[scores[:, j], pad].reshape(n_blocks, BLOCK).max(axis=1) for j in range(scores.shape[1])], 1)
    share, ratio = [], []
    for j in range(scores.shape[1]):
        if not np.any(scores[:, j] > 0):
            continue
        kth = np.sort(scores[:, j])[-k]
        share.append(np.mean(bounds[:, j] >= kth))
        live = best[:, j] > 0
        ratio.append(np.mean(bounds[live, j] / best[live, j]))
    return {"blocks_to_score": float(np.mean(share)), "bound_over_max": float(np.mean(ratio))}


def measure(name: str, docs: SparseBatch, queries: SparseBatch, clusters: int = 64) -> dict:
    assign = spherical_kmeans(docs, clusters, seed=0, iterations=15)
    by_cluster = np.argsort(assign, kind="stable")
    return {"corpus": name, "num_docs": len(docs), "nnz_per_doc": docs.nnz / len(docs), "nn_cosine": nn_cosine(docs),
            "file_order": block_work(docs, queries, np.arange(len(docs))),
            "clustered_order": block_work(docs, queries, by_cluster)}


def main(argv: list[str] | None = None) -> None:
    from .query import CACHE, _source_vectors, query_vectors, real_vectors, topical_model
    from .synthetic import synthesize, synthesize_topical

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", required=True)
    parser.add_argument("--model", default="splade-tiny")
    parser.add_argument("--cache", default=CACHE)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--max-queries", type=int, default=200)
    args = parser.parse_args(argv)
    cache = Path(args.cache)
    queries = query_vectors(args.data_dir, cache, args.model)
    queries = queries.select(list(range(min(args.max_queries, len(queries)))))
    model = topical_model(args.model, args.data_dir, cache)
    source = _source_vectors(args.model, args.data_dir, cache)
    rows = []
    for dataset in ("scifact", "nfcorpus"):
        real = real_vectors(dataset, args.data_dir, cache, args.model)
        rows.append(measure(dataset, real, queries))
        rows.append(measure(f"unclustered-{len(real)}", synthesize(source, len(real), seed=0), queries))
        rows.append(measure(f"topical-{len(real)}", synthesize_topical(model, len(real), seed=0), queries))
    for n in (20_000,):
        rows.append(measure(f"unclustered-{n}", synthesize(source, n, seed=0), queries))
        rows.append(measure(f"topical-{n}", synthesize_topical(model, n, seed=0), queries))
    for r in rows:
        print(f"{r['corpus']:18} nn_cosine {r['nn_cosine']:.3f}  blocks to score: file order "
              f"{r['file_order']['blocks_to_score']:.3f}, clustered {r['clustered_order']['blocks_to_score']:.3f}  "
              f"bound/max {r['file_order']['bound_over_max']:.2f} -> {r['clustered_order']['bound_over_max']:.2f}")
    write_json(args.json, {"model": args.model, "queries": len(queries), "block": BLOCK, "rows": rows,
                           "topics": model.settings})


if __name__ == "__main__":
    main()
