"""Document reordering: similar documents given neighbouring doc_idx, so the blocks of block-max search hold
documents that share their heavy terms (tight bounds, few blocks to score) and d-gaps shrink.

`cluster_order` is a recursive spherical k-means (a clustering reorder, as the BMP and Seismic papers use one
beside recursive graph bisection, which costs O(postings x log n x iterations) and is out of reach on two cores
at 10M documents). Each group of documents (at first the whole corpus) is split into at most `branching`
clusters by cosine similarity to centroids fitted on a sample of the group, and each cluster is split again,
until groups hold at most `leaf_size` documents; the order is that of the leaves, depth first. Every level
reads each document once against `branching` centroids (`nnz x branching` multiply-adds), so the whole order
costs O(postings x branching x log_branching(n / leaf_size)), the groups of one level spread over numba's
threads. It is deterministic for a given seed and thread count-independent.

`eval.bench.synthetic.spherical_kmeans` (scipy, k-means++ seeding, one flat level) fits the topical generator's
topics; it stays apart on purpose: the cached topical corpora were drawn from its topics, and index/ takes no
dependency on eval/.

`reorder_index` writes a copy of an index with its documents in that order (doc ids travel with their
documents, so every search returns the same hits, in the same order, up to equal scores).
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

import numba
import numpy as np

from .errors import LsrError
from .search import ALGORITHMS, SEARCH_ALGORITHM, positive_int
from .sparse import SparseBatch

BRANCHING = 16  # clusters per split
# documents per block of a reordered index: exact block-max at 10M topical documents took 30.41 ms with blocks of
# 16 against 42.64 with 32, 5.00 against 5.51 at 1M, for 1-10% more bytes (eval/results/bench-query-blocksize.json)
BLOCK_SIZE = 16
LEAF_SIZE = 32  # documents a group may hold unsplit: the block of block-max search (storage.DEFAULT_BLOCK_SIZE)
SAMPLE_PER_CLUSTER = 48  # sampled documents per centroid in a split's k-means
ITERATIONS = 6  # Lloyd iterations per split, on the sample


@numba.njit(cache=True)
def _similarities(indptr, terms, weights, inv_norm, d, centroids, k, sims):  # pragma: no cover - compiled
    """sims[:k] = cosine of document d with each centroid (columns of `centroids`, vocab x k, unit length)."""
    for c in range(k):
        sims[c] = 0.0
    for p in range(indptr[d], indptr[d + 1]):
        w = weights[p] * inv_norm[d]
        row = terms[p]
        for c in range(k):
            sims[c] += w * centroids[row, c]


@numba.njit(cache=True)
def _best(sims, k):  # pragma: no cover - compiled
    best, at = -1.0, 0
    for c in range(k):
        if sims[c] > best:
            best, at = sims[c], c
    return at


@numba.njit(cache=True)
def _fit(indptr, terms, weights, inv_norm, sample, k, iterations, centroids, touched, mark, stamp, assign, sims,
         norms):  # pragma: no cover - compiled
    """Spherical k-means of the documents `sample` into k centroids (columns of `centroids`, which is zero over
    every row on entry and is left holding the centroids over the rows touched[:returned count]). The first k
    sample documents seed it; a cluster left empty keeps its centroid."""
    nt = 0
    for i in range(sample.shape[0]):  # every term of the sample, once (mark[t] == stamp once listed)
        d = sample[i]
        for p in range(indptr[d], indptr[d + 1]):
            t = terms[p]
            if mark[t] != stamp:
                mark[t] = stamp
                touched[nt] = t
                nt += 1
    for c in range(k):
        assign[c] = c
    for i in range(k, sample.shape[0]):
        assign[i] = -1
    for it in range(iterations + 1):
        if it > 0:  # assignment to the current centroids
            changed = False
            for i in range(sample.shape[0]):
                _similarities(indptr, terms, weights, inv_norm, sample[i], centroids, k, sims)
                c = _best(sims, k)
                changed |= c != assign[i]
                assign[i] = c
            if not changed:
                break
        counts = np.zeros(k, np.int64)
        for i in range(sample.shape[0]):
            if assign[i] >= 0:
                counts[assign[i]] += 1
        for j in range(nt):  # recompute the centroids of clusters that have members; keep the others
            t = touched[j]
            for c in range(k):
                if counts[c] > 0:
                    centroids[t, c] = 0.0
        for i in range(sample.shape[0]):
            c = assign[i]
            if c < 0:
                continue
            d = sample[i]
            for p in range(indptr[d], indptr[d + 1]):
                centroids[terms[p], c] += weights[p] * inv_norm[d]
        for c in range(k):
            norms[c] = 0.0
        for j in range(nt):
            t = touched[j]
            for c in range(k):
                norms[c] += centroids[t, c] * centroids[t, c]
        for c in range(k):
            norms[c] = 1.0 / np.sqrt(norms[c]) if norms[c] > 0 else 0.0
        for j in range(nt):
            t = touched[j]
            for c in range(k):
                centroids[t, c] *= norms[c]
    return nt


@numba.njit(cache=True)
def _split(indptr, terms, weights, inv_norm, perm, lo, hi, branching, leaf_size, iterations, seed, centroids, touched,
           mark, stamp, buffer, child_sizes):  # pragma: no cover - compiled
    """Split the group perm[lo:hi] into at most `branching` clusters, in place (stable within each cluster), and
    write the clusters' sizes into child_sizes (zero for unused ones). A split that puts everything into one
    cluster (identical documents) falls back to equal slices, so every split makes progress."""
    n = hi - lo
    k = min(branching, (n + leaf_size - 1) // leaf_size)
    for c in range(child_sizes.shape[0]):
        child_sizes[c] = 0
    s = min(n, k * SAMPLE_PER_CLUSTER)
    sample = np.empty(s, np.int64)
    np.random.seed(seed)
    offset = np.random.randint(0, n)
    for i in range(s):  # an even stride through the group, from a seeded offset
        sample[i] = perm[lo + (offset + (i * n) // s) % n]
    assign = np.empty(s, np.int64)
    sims = np.empty(k, np.float64)
    norms = np.empty(k, np.float64)
    nt = _fit(indptr, terms, weights, inv_norm, sample, k, iterations, centroids, touched, mark, stamp, assign, sims,
              norms)
    label = np.empty(n, np.int64)
    for i in range(n):
        _similarities(indptr, terms, weights, inv_norm, perm[lo + i], centroids, k, sims)
        label[i] = _best(sims, k)
        child_sizes[label[i]] += 1
    for j in range(nt):  # leave the centroid table zero for the next split
        t = touched[j]
        for c in range(k):
            centroids[t, c] = 0.0
    largest = 0
    for c in range(k):
        largest = max(largest, child_sizes[c])
    if largest == n:
        for c in range(k):
            child_sizes[c] = n // k + (1 if c < n % k else 0)
        return
    start = np.zeros(k, np.int64)
    for c in range(1, k):
        start[c] = start[c - 1] + child_sizes[c - 1]
    for i in range(n):
        buffer[lo + start[label[i]]] = perm[lo + i]
        start[label[i]] += 1
    for i in range(n):
        perm[lo + i] = buffer[lo + i]


@numba.njit(cache=True)
def _squared_norms(indptr, weights):  # pragma: no cover - compiled
    out = np.zeros(indptr.shape[0] - 1, np.float64)
    for d in range(out.shape[0]):
        for p in range(indptr[d], indptr[d + 1]):
            out[d] += np.float64(weights[p]) * np.float64(weights[p])
    return out


@numba.njit(cache=True)
def _gather(indptr, terms, impacts, rows):  # pragma: no cover - compiled
    """The CSR rows `rows` (in that order) of (indptr, terms, impacts)."""
    out_ptr = np.zeros(rows.shape[0] + 1, np.int64)
    for i in range(rows.shape[0]):
        out_ptr[i + 1] = out_ptr[i] + indptr[rows[i] + 1] - indptr[rows[i]]
    out_terms = np.empty(out_ptr[-1], np.int32)
    out_impacts = np.empty(out_ptr[-1], np.float64)
    for i in range(rows.shape[0]):
        q = out_ptr[i]
        for p in range(indptr[rows[i]], indptr[rows[i] + 1]):
            out_terms[q] = terms[p]
            out_impacts[q] = impacts[p]
            q += 1
    return out_ptr, out_terms, out_impacts


@numba.njit(cache=True, parallel=True)
def _split_level(indptr, terms, weights, inv_norm, perm, group_lo, group_hi, branching, leaf_size, iterations, seed,
                 centroids, touched, mark, buffer, child_sizes):  # pragma: no cover - compiled
    for g in numba.prange(group_lo.shape[0]):
        tid = numba.get_thread_id()
        # each group draws its own seed: the order does not depend on which thread splits it
        _split(indptr, terms, weights, inv_norm, perm, group_lo[g], group_hi[g], branching, leaf_size, iterations,
               (seed * 1_000_003 + group_lo[g]) % 2147483647, centroids[tid], touched[tid], mark[tid], g + 1, buffer,
               child_sizes[g])


def cluster_order(docs: SparseBatch, *, branching: int = BRANCHING, leaf_size: int = LEAF_SIZE, seed: int = 0,
                  iterations: int = ITERATIONS, log: Callable[[str], None] | None = None) -> np.ndarray:
    """The documents' new order: `order[i]` is the doc_idx that goes to position i (see the module docstring)."""
    return _cluster_order(docs.indptr, docs.term_ids, docs.weights, docs.vocab_size, branching=branching,
                          leaf_size=leaf_size, seed=seed, iterations=iterations, log=log)


def _cluster_order(indptr: np.ndarray, terms: np.ndarray, weights: np.ndarray, vocab_size: int, *, branching: int,
                   leaf_size: int, seed: int, iterations: int, log: Callable[[str], None] | None) -> np.ndarray:
    """`cluster_order` over CSR arrays of any integer / numeric dtypes (an index's forward arrays as they are
    mapped: no copy of the postings)."""
    if branching < 2 or leaf_size < 1 or iterations < 0:
        raise LsrError(f"cluster_order: branching must be at least 2, leaf_size positive and iterations not "
                       f"negative, got {branching}, {leaf_size}, {iterations}")
    n = len(indptr) - 1
    indptr = np.ascontiguousarray(indptr, dtype=np.int64)
    squared = _squared_norms(indptr, weights)
    inv_norm = np.where(squared > 0, 1.0 / np.sqrt(np.maximum(squared, 1e-300)), 0.0)
    perm = np.arange(n, dtype=np.int64)
    buffer = np.empty(n, np.int64)
    threads = numba.config.NUMBA_NUM_THREADS
    centroids = np.zeros((threads, vocab_size, branching), np.float32)
    touched = np.empty((threads, vocab_size), np.int64)
    groups = np.array([[0, n]], np.int64) if n > leaf_size else np.zeros((0, 2), np.int64)
    level, start = 0, time.perf_counter()
    while len(groups):
        # every group of a level gets its own stamp (g + 1); a fresh mark table per level keeps stamps unique
        mark = np.zeros((threads, vocab_size), np.int64)
        sizes = np.zeros((len(groups), branching), np.int64)
        _split_level(indptr, terms, weights, inv_norm, perm, np.ascontiguousarray(groups[:, 0]),
                     np.ascontiguousarray(groups[:, 1]), branching, leaf_size, iterations, seed, centroids, touched,
                     mark, buffer, sizes)
        ends = groups[:, :1] + np.cumsum(sizes, axis=1)
        starts = ends - sizes
        keep = sizes > leaf_size
        groups = np.stack([starts[keep], ends[keep]], axis=1)
        level += 1
        if log:
            log(f"reorder: level {level}, {len(groups):,} groups still above {leaf_size} documents "
                f"({time.perf_counter() - start:.1f} s)")
    return perm


def reorder_index(source: str | Path, target: str | Path, *, branching: int = BRANCHING, leaf_size: int | None = None,
                  block_size: int = BLOCK_SIZE, seed: int = 0, algorithm: str = "blockmax", overwrite: bool = False,
                  batch_docs: int = 200_000, log: Callable[[str], None] | None = None) -> Path:
    """Write the index `source` again at `target` with its documents in `cluster_order` (leaf_size: the target's
    block size), same format and quantisation (the impacts are kept exactly), blocks of `block_size` documents, and
    info, the documents' text, dense vectors and collection statistics carried with them; the order's settings go
    into the info (`reorder`), and `algorithm` as the exact algorithm the folder is served with (search,
    serve and eval read it: blockmax by default, what the reorder is for). The source is only read. A folder with an engine's files (Lucene, Milvus) is
    refused: reorder the plain index, then export it again."""
    from .dense import DENSE_META, DENSE_VECTORS, dense_part, has_dense_store, read_dense_meta
    from .documents import DOCS_FILE, documents_part, read_documents
    from .files import check_writable_target
    from .folder import IndexWriter
    from .storage import META, IndexReader, data_files, is_lsr_index
    from .termstats import STATS_FILE, STATS_KEY, collection_stats_part, read_collection_stats

    source, target = Path(source), Path(target)
    if algorithm not in ALGORITHMS:
        raise LsrError(f"reorder: unknown search algorithm {algorithm!r}; choose from {', '.join(ALGORITHMS)}")
    if source.resolve() == target.resolve():
        raise LsrError(f"reorder: {target} is the source index; write the reordered copy to another folder")
    check_writable_target(target, is_lsr_index if overwrite else None)  # before minutes of clustering
    reader = IndexReader(source, verify_checksums=False, scan=False)
    meta = json.loads((source / META).read_text(encoding="utf-8"))
    carried = {*data_files(meta), STATS_FILE, DOCS_FILE, DENSE_VECTORS, DENSE_META}
    other = sorted(set(meta.get("files", {})) - carried) + list(meta.get("uncovered", []))
    if other:
        raise LsrError(f"reorder: {source} holds an engine's files ({other[0]}"
                       f"{f' and {len(other) - 1} more' if len(other) > 1 else ''}); reorder the plain lsr index, "
                       "then export it again")
    if not positive_int(block_size):
        raise LsrError(f"reorder: block_size takes a positive integer, got {block_size!r}")
    block_size = int(block_size)
    leaf_size = block_size if leaf_size is None else int(leaf_size)
    start = time.perf_counter()
    if reader.has_forward:  # the forward arrays as mapped (a copy of 1.3B postings would not fit at 10M)
        forward = (np.asarray(reader.forward_indptr), np.asarray(reader.forward_term_ids),
                   np.asarray(reader.forward_impacts))
    else:
        matrix = reader.doc_matrix()
        forward = (matrix.indptr, matrix.indices, matrix.data)
    order = _cluster_order(*forward, reader.vocab_size, branching=branching, leaf_size=leaf_size, seed=seed,
                           iterations=ITERATIONS, log=log)
    order_s = time.perf_counter() - start
    setting = {"method": "cluster", "branching": branching, "leaf_size": leaf_size, "seed": seed,
               "iterations": ITERATIONS, "sample_per_cluster": SAMPLE_PER_CLUSTER, "order_s": round(order_s, 1)}
    info = {key: value for key, value in reader.meta.get("info", {}).items() if key != STATS_KEY}
    ids = reader.doc_ids
    parts = []
    stats = read_collection_stats(source)
    if stats is not None:
        parts.append(collection_stats_part(stats))
    if (source / DOCS_FILE).is_file():
        texts = read_documents(source, ids)
        parts.append(documents_part([texts[ids[i]] for i in order.tolist()]))
    if has_dense_store(source):
        vectors = np.load(source / DENSE_VECTORS, mmap_mode="r", allow_pickle=False)
        parts.append(dense_part(vectors[order], read_dense_meta(source).get("info")))
    q = reader.quantization
    layout = {"format_version": reader.format_version, "block_size": block_size}
    if reader.format_version != 2:  # blockmax reads the block maxima, which format 3 writes with the forward index
        layout["forward_index"] = reader.has_forward or algorithm == "blockmax"
    with IndexWriter(target, vocab_size=reader.vocab_size, bits=q.bits, quantization=q, overwrite=overwrite,
                     info={**info, "reorder": setting, SEARCH_ALGORITHM: algorithm}, log=log, parts=parts,
                     **layout) as writer:
        for lo in range(0, len(order), batch_docs):
            rows = order[lo:lo + batch_docs]
            indptr, terms, impacts = _gather(*forward, rows)
            impacts /= q.scale  # the writer's fixed quantisation gives the same impacts back
            writer.add(SparseBatch(indptr, terms, impacts.astype(np.float32), reader.vocab_size),
                       [ids[i] for i in rows.tolist()])
    if log:
        log(f"reorder: {len(order):,} documents of {source} written to {target} in {time.perf_counter() - start:.1f} s "
            f"(order {order_s:.1f} s)")
    return target
