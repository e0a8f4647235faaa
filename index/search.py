"""Top-k query processing over the impact index.

Every algorithm ranks by (score descending, doc_idx ascending) and returns only documents with a positive
score. Score = sum over query terms of `query_weight * impact`, divided by the quantisation scale.

- `exhaustive` (default, exact): term-at-a-time over all postings of the query terms, one chunk of
  `CHUNK_DOCS` documents at a time into a cache-sized accumulator, then one sequential scan of the chunk into
  a top-k heap. On a format-3 index (`_taat_query3`) each query term's segment of the chunk is unpacked from
  its bit-packed d-gaps straight into the accumulator (codec.py); the chunk is then the codec's 2^16
  documents, whatever `chunk_docs` says. 0.14 ms per scifact query, 0.97 ms at 100k and 12.4 ms at 1M synthetic documents through
  `lsr bench query` (README), 6x faster than PISA's MaxScore and Lucene at 1M on the unclustered synthetic
  corpus, each engine through its Python API (pyterrier-pisa, pyserini).
- `maxscore` (exact unless `prune_factor` < 1): term-at-a-time MaxScore (format 3: the query terms' lists are
  decoded whole first, one query at a time, then searched as format 2's; about 2x format 2's time at 100k). Terms go heaviest bound first; once the
  bounds of the terms left sum below the k-th best score, only the documents that can still make the top k
  are scored further. On SPLADE vectors the bound mass is spread over ~30 query terms and about half the
  documents stay candidates, so it reads ~60% of the postings but is 1.2-1.5x slower than `exhaustive`.
- `blockmax` (exact unless `prune_factor` < 1): block-max pruning in the style of BMP. Documents are grouped into
  blocks of `block_size` consecutive doc_idx; a block's upper bound is the query-weighted sum of each
  term's largest impact in it. The blocks of best bound are scored first, for a k-th best score; then one pass in
  block order scores each block whose bound can still beat the k-th best so far (with `prune_factor` < 1, whose
  `prune_factor * bound` can: faster, approximate, never on unless asked). A block is scored from the query
  terms' own postings (a galloping cursor per term), not from the documents' whole vectors. It pays off when
  similar documents share blocks: reorder the index first (`reorder.py`, `lsr index reorder`). On 1M topical
  documents, reordered, exact blockmax is faster than `exhaustive` (docs/FIGURES.md). It reads the block
  maxima (format 2 always has them; format 3 with the forward index) and, in format 3, the postings decoded when
  the Searcher opens the index (4 bytes a posting held in memory).
- `impact` (exact unless `budget` is set): score-at-a-time over the postings re-ordered by impact
  (`impact_order.py`, built when the Searcher opens the index), the largest `query_weight * impact` first;
  with `budget`, it stops after that many postings, so its work does not grow with the corpus (approximate,
  never on unless asked); with `rescore`, the best that many documents by partial score are scored exactly from
  the forward index, and ranked by that.
- `max_query_terms` (any algorithm) keeps only the heaviest query terms: approximate, never on unless asked.
- `brute_force_search` is the reference: a sparse matrix-vector product, ranked by a plain sort.
"""
from __future__ import annotations

import threading
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numba
import numpy as np

from .codec import BLOCK, CHUNK_DOCS, CHUNK_SHIFT, decode_terms
from .errors import LsrError
from .heap import _offer
from .hits import Hit, Run, ranking_order
from .impact_order import impact_batch, impact_order, impact_query, rescored_batch, rescored_query
from .sparse import SparseBatch
from .storage import IndexReader


@numba.njit(inline="always")
def _drain(acc, count, base, k, out_scores, out_docs, n):  # pragma: no cover - compiled
    """Offer the positive scores of acc[:count] (documents base + j) to the top-k heap holding n hits, zeroing
    every nonzero entry for the next query: one sequential scan, cheaper than a second walk over the postings.
    Returns the new n."""
    for j in range(count):
        s = acc[j]
        if s != 0.0:
            acc[j] = 0.0
            if s > 0.0 and (n < k or s >= out_scores[0]):
                n = _offer(out_scores, out_docs, n, k, s, base + j)
    return n


# CHUNK_DOCS (codec.py, 2^16): exhaustive search scores this many documents at a time (a 512 KB accumulator stays
# in cache); format 3 stores its postings in segments of that many documents.


@numba.njit(cache=True, nogil=True)
def _taat_query(offsets, doc_idx, impacts, num_docs, q_terms, q_weights, k, acc, out_scores,
                out_docs):  # pragma: no cover - compiled
    """Exhaustive term-at-a-time top-k of one query, one chunk of acc.shape[0] documents at a time: every term's
    postings in the chunk go into the cache-sized accumulator `acc` (zeroed, and left zeroed), which one
    sequential scan then offers to the top-k heap. A document's terms are summed in query order, as in one
    pass over whole lists; chunking only keeps the random writes in cache (1.4x at 1M documents). Returns #hits."""
    m = q_terms.shape[0]
    pos = np.empty(m, dtype=np.int64)
    for i in range(m):
        pos[i] = offsets[q_terms[i]]
    chunk = acc.shape[0]
    n = 0
    for lo in range(0, num_docs, chunk):
        hi = min(lo + chunk, num_docs)
        for i in range(m):
            t, w = q_terms[i], q_weights[i]
            start, end = pos[i], offsets[t + 1]
            if start == end:
                continue
            stop = start + np.searchsorted(doc_idx[start:end], hi)
            for p in range(start, stop):
                acc[doc_idx[p] - lo] += w * impacts[p]
            pos[i] = stop
        n = _drain(acc, hi - lo, lo, k, out_scores, out_docs, n)
    return n


@numba.njit(cache=True, nogil=True)
def _taat_query3(segments, skips, chunks, widths, words, impacts, num_docs, q_terms, q_weights, k, acc, out_scores,
                 out_docs):  # pragma: no cover - compiled
    """`_taat_query` over format-3 postings (codec.py): per chunk of CHUNK_DOCS documents, each query term's
    segment in that chunk (if any) is unpacked block by block straight into the chunk-local accumulator `acc`
    (at least min(CHUNK_DOCS, num_docs) long; zeroed, and left zeroed). Returns #hits."""
    m = q_terms.shape[0]
    pos = np.empty(m, dtype=np.int64)
    end = np.empty(m, dtype=np.int64)
    for i in range(m):
        pos[i], end[i] = segments[q_terms[i]], segments[q_terms[i] + 1]
    n = 0
    for c in range((num_docs + CHUNK_DOCS - 1) >> CHUNK_SHIFT):
        lo = c << CHUNK_SHIFT
        for i in range(m):
            s = pos[i]
            if s == end[i] or chunks[s] != c:
                continue
            pos[i] = s + 1
            w = q_weights[i]
            p, base, blk, stop = skips[s, 0], skips[s, 1], skips[s, 2], skips[s + 1, 0]
            d = np.int64(-1)
            while p < stop:
                width = np.int64(widths[blk])
                mask = np.uint64((1 << width) - 1)
                count = min(BLOCK, stop - p)
                buf, avail = np.uint64(0), 0  # a bit buffer: one 32-bit load per 32 bits, none at width 0
                for j in range(count):
                    if avail < width:
                        buf |= np.uint64(words[base]) << np.uint64(avail)
                        base += 1
                        avail += 32
                    d += np.int64(buf & mask) + 1
                    buf >>= np.uint64(width)
                    avail -= width
                    acc[d] += w * impacts[p + j]
                p += count
                blk += 1
        n = _drain(acc, min(CHUNK_DOCS, num_docs - lo), lo, k, out_scores, out_docs, n)
    return n


@numba.njit(cache=True, parallel=True)
def _taat_batch3(segments, skips, chunks, widths, words, impacts, num_docs, q_indptr, q_terms, q_weights, k, acc,
                 out_scores, out_docs, out_n):  # pragma: no cover - compiled
    for q in numba.prange(q_indptr.shape[0] - 1):
        lo, hi = q_indptr[q], q_indptr[q + 1]
        out_n[q] = _taat_query3(segments, skips, chunks, widths, words, impacts, num_docs, q_terms[lo:hi],
                                q_weights[lo:hi], k, acc[numba.get_thread_id()], out_scores[q], out_docs[q])


@numba.njit(cache=True, parallel=True)
def _taat_batch(offsets, doc_idx, impacts, num_docs, q_indptr, q_terms, q_weights, k, acc, out_scores, out_docs,
                out_n):  # pragma: no cover - compiled
    for q in numba.prange(q_indptr.shape[0] - 1):
        lo, hi = q_indptr[q], q_indptr[q + 1]
        out_n[q] = _taat_query(offsets, doc_idx, impacts, num_docs, q_terms[lo:hi], q_weights[lo:hi], k,
                               acc[numba.get_thread_id()], out_scores[q], out_docs[q])


@numba.njit(inline="always")
def _kth_best(acc, k, heap_scores, heap_docs):  # pragma: no cover - compiled
    """The k-th best score in the accumulator (0.0 when fewer than k are positive). The k-th best of every 16th
    document is a floor that few others reach, so the full pass mostly compares (6x faster than offering
    every positive score: that branch mispredicts)."""
    n = 0
    for d in range(0, acc.shape[0], 16):
        s = acc[d]
        if s > 0.0 and (n < k or s >= heap_scores[0]):
            n = _offer(heap_scores, heap_docs, n, k, s, d)
    floor = heap_scores[0] if n == k else 0.0
    n = 0
    for d in range(acc.shape[0]):
        s = acc[d]
        if s >= floor and s > 0.0 and (n < k or s >= heap_scores[0]):
            n = _offer(heap_scores, heap_docs, n, k, s, d)
    return heap_scores[0] if n == k else 0.0


@numba.njit(inline="always")
def _seek(doc_idx, p, hi, d):  # pragma: no cover - compiled
    """The first position in [p, hi) whose doc_idx >= d (hi if none), by galloping from p."""
    if p >= hi or doc_idx[p] >= d:
        return p
    step = 1
    while p + step < hi and doc_idx[p + step] < d:
        step *= 2
    left, right = p + step // 2 + 1, min(p + step, hi)  # doc_idx[p + step // 2] < d is known
    while left < right:
        mid = (left + right) // 2
        if doc_idx[mid] < d:
            left = mid + 1
        else:
            right = mid
    return left


@numba.njit(cache=True, nogil=True)
def _maxscore_query(offsets, doc_idx, impacts, term_max, q_terms, q_weights, k, prune_factor, acc, out_scores,
                    out_docs):  # pragma: no cover - compiled
    """Term-at-a-time top-k with MaxScore pruning (exact when prune_factor == 1). Returns (hits, postings read).

    Terms go heaviest bound first (bound = weight * the term's largest impact). Each term is read whole into
    `acc`, as `_taat_query` does, until the bounds of the terms left, summed (R), fall below the k-th best
    score so far (theta): from then on no unseen document can reach the top k, so only the candidates (seen
    documents with acc + R >= theta) are kept, and each term left adds to them alone (galloping through its
    doc-ordered postings when they are few), dropping candidates as theta rises and R falls. The switch is made
    only when the candidates would read fewer postings than the whole lists. With prune_factor < 1, R is scaled by
    prune_factor: sooner and harder pruning, approximate. `acc` is a zeroed num_docs buffer and is left zeroed."""
    m = q_terms.shape[0]
    num_docs = acc.shape[0]
    bound = np.empty(m, dtype=np.float64)
    for i in range(m):
        bound[i] = q_weights[i] * term_max[q_terms[i]]
    order = np.argsort(-bound, kind="mergesort")
    rest = np.zeros(m + 1, dtype=np.float64)  # rest[i] = summed bounds of order[i:], with a rounding margin
    for i in range(m - 1, -1, -1):
        rest[i] = rest[i + 1] + bound[order[i]]
    for i in range(m):
        rest[i] = rest[i] * (1.0 + 1e-9) * prune_factor
    heap_s = np.empty(k, dtype=np.float64)
    heap_d = np.empty(k, dtype=np.int64)
    best = np.empty(k, dtype=np.int64)  # the top k at the last pass over the accumulator
    n_best = 0
    read = 0
    since_scan = 0  # postings read since the last pass over the accumulator
    i = 0
    theta = 0.0
    n_cand = -1  # -1: every document is still a candidate
    while i < m:  # phase 1: whole posting lists
        t, w = q_terms[order[i]], q_weights[order[i]]
        for p in range(offsets[t], offsets[t + 1]):
            acc[doc_idx[p]] += w * impacts[p]
        read += offsets[t + 1] - offsets[t]
        since_scan += offsets[t + 1] - offsets[t]
        i += 1
        if i == m or rest[i] * 2.0 >= rest[0]:  # theta <= rest[0] - rest[i]: no chance yet
            continue
        # A pass over the accumulator for the exact theta costs as much as ~num_docs / 8 postings: at most one
        # per num_docs / 4 postings read. Once one has run, the k documents it found, rescored (k reads), give a
        # lower bound of theta: pass again only when that bound is near R, or after 2 * num_docs postings.
        if since_scan * 4 < num_docs:
            continue
        if n_best == k:
            n = 0
            for j in range(k):
                n = _offer(heap_s, heap_d, n, k, acc[best[j]], best[j])
            if rest[i] >= 1.25 * heap_s[0] and since_scan < 2 * num_docs:
                continue
        since_scan = 0
        theta = _kth_best(acc, k, heap_s, heap_d)
        if theta > 0.0:
            best[:] = heap_d
            n_best = k
        if rest[i] >= theta:
            continue
        n_cand = 0  # estimated from every 16th document
        for d in range(0, num_docs, 16):
            s = acc[d]
            n_cand += (s != 0.0) & (s + rest[i] >= theta)
        n_cand *= 16
        whole, estimate = 0, 0
        for j in range(i, m):
            t = q_terms[order[j]]
            length = offsets[t + 1] - offsets[t]
            whole += length
            estimate += min(length, 32 * n_cand) + 2 * n_cand
        if estimate < whole:
            break
        n_cand = -1
    if n_cand >= 0:  # phase 2: candidates only, in doc order
        n_cand = 0
        for d in range(num_docs):
            s = acc[d]
            n_cand += (s != 0.0) & (s + rest[i] >= theta)
        cand = np.empty(n_cand, dtype=np.int64)
        n_cand = 0
        for d in range(num_docs):
            s = acc[d]
            if s + rest[i] >= theta and s != 0.0:  # the rare test first: it predicts well
                cand[n_cand] = d
                n_cand += 1
        while i < m and n_cand > 0:
            t, w = q_terms[order[i]], q_weights[order[i]]
            p, hi = offsets[t], offsets[t + 1]
            if n_cand * 32 < hi - p:  # few candidates: look each up, galloping through the postings
                for j in range(n_cand):
                    d = cand[j]
                    p = _seek(doc_idx, p, hi, d)
                    if p >= hi:
                        break
                    if doc_idx[p] == d:
                        acc[d] += w * impacts[p]
                        p += 1
                    read += 1
            else:  # many: read the whole list (only candidates are ever offered; a test here would mispredict)
                for p in range(p, hi):
                    acc[doc_idx[p]] += w * impacts[p]
                read += hi - offsets[t]
            i += 1
            n = 0
            for j in range(n_cand):  # theta from the candidates' partial scores (never above their final ones)
                d = cand[j]
                if n < k or acc[d] >= heap_s[0]:
                    n = _offer(heap_s, heap_d, n, k, acc[d], d)
            if n == k:
                theta = max(theta, heap_s[0])
            kept = 0
            for j in range(n_cand):
                d = cand[j]
                if acc[d] + rest[i] >= theta:
                    cand[kept] = d
                    kept += 1
            n_cand = kept
        n = 0
        for j in range(n_cand):
            d = cand[j]
            s = acc[d]
            if s > 0.0 and (n < k or s >= out_scores[0]):
                n = _offer(out_scores, out_docs, n, k, s, d)
        acc[:] = 0.0
        return n, read
    return _drain(acc, num_docs, 0, k, out_scores, out_docs, 0), read


@numba.njit(cache=True, parallel=True)
def _maxscore_batch(offsets, doc_idx, impacts, term_max, q_indptr, q_terms, q_weights, k, prune_factor, acc,
                    out_scores, out_docs, out_n):  # pragma: no cover - compiled
    for q in numba.prange(q_indptr.shape[0] - 1):
        lo, hi = q_indptr[q], q_indptr[q + 1]
        n, _ = _maxscore_query(offsets, doc_idx, impacts, term_max, q_terms[lo:hi], q_weights[lo:hi], k, prune_factor,
                               acc[numba.get_thread_id()], out_scores[q], out_docs[q])
        out_n[q] = n


FIRST_BLOCKS = 16  # blockmax: the blocks of best bound scored first, for a k-th best score to prune the rest by


@numba.njit(inline="always")
def _score_block(offsets, doc_idx, impacts, num_docs, block_size, q_terms, q_weights, pos, b, acc, k, out_scores,
                 out_docs, n):  # pragma: no cover - compiled
    """Score the documents of block b from the query terms' own postings (pos[i]: term i's cursor, moved forward
    by galloping; blocks must come in ascending order between resets), offer them to the top-k heap holding n
    hits; returns the new n. `acc` holds block_size zeros and is left zeroed."""
    lo = b * block_size
    hi = min(lo + block_size, num_docs)
    for i in range(q_terms.shape[0]):
        end = offsets[q_terms[i] + 1]
        p = _seek(doc_idx, pos[i], end, lo)
        w = q_weights[i]
        while p < end and doc_idx[p] < hi:
            acc[doc_idx[p] - lo] += w * impacts[p]
            p += 1
        pos[i] = p
    return _drain(acc, hi - lo, lo, k, out_scores, out_docs, n)


@numba.njit(cache=True, nogil=True)
def _blockmax_query(bm_offsets, bm_blocks, bm_impacts, offsets, doc_idx, impacts, num_docs, block_size, q_terms,
                    q_weights, k, prune_factor, out_scores, out_docs):  # pragma: no cover - compiled
    """Top-k of one query into out_scores/out_docs (a min-heap, worst hit at 0); returns (hits, blocks scored).

    Each block's bound is the query-weighted sum of its terms' block maxima. The FIRST_BLOCKS blocks of best
    bound are scored first (in block order), which gives a k-th best score; then one pass over the blocks in
    order scores every other block whose bound (times prune_factor) can still beat the k-th best so far. Blocks
    are scored from the query terms' postings (cursors galloping forward), as BMP does, not from the documents'
    whole vectors: the work per block is the query's postings in it."""
    num_blocks = (num_docs + block_size - 1) // block_size
    m = q_terms.shape[0]
    bound = np.zeros(num_blocks, dtype=np.float64)
    for i in range(m):
        t = q_terms[i]
        w = q_weights[i]
        for p in range(bm_offsets[t], bm_offsets[t + 1]):
            bound[bm_blocks[p]] += w * bm_impacts[p]
    first = min(FIRST_BLOCKS, num_blocks)
    best_bound = np.empty(first, np.float64)  # a min-heap of the best bounds, then the blocks in order
    best_block = np.empty(first, np.int64)
    nf = 0
    for b in range(num_blocks):
        if bound[b] > 0.0 and (nf < first or bound[b] > best_bound[0]):
            nf = _offer(best_bound, best_block, nf, first, bound[b], b)
    chosen = np.sort(best_block[:nf])
    acc = np.zeros(block_size, np.float64)
    pos = np.empty(m, np.int64)
    for i in range(m):
        pos[i] = offsets[q_terms[i]]
    n = 0
    for j in range(nf):
        n = _score_block(offsets, doc_idx, impacts, num_docs, block_size, q_terms, q_weights, pos, chosen[j], acc, k,
                         out_scores, out_docs, n)
    for i in range(m):
        pos[i] = offsets[q_terms[i]]
    scored = nf
    j = 0
    for b in range(num_blocks):
        if j < nf and chosen[j] == b:
            j += 1
            continue
        # a relative margin keeps the bound above any score despite a different summation order
        if bound[b] <= 0.0 or (n == k and prune_factor * bound[b] * (1.0 + 1e-9) < out_scores[0]):
            continue
        n = _score_block(offsets, doc_idx, impacts, num_docs, block_size, q_terms, q_weights, pos, b, acc, k,
                         out_scores, out_docs, n)
        scored += 1
    return n, scored


@numba.njit(cache=True, parallel=True)
def _blockmax_batch(bm_offsets, bm_blocks, bm_impacts, offsets, doc_idx, impacts, num_docs, block_size, q_indptr,
                    q_terms, q_weights, k, prune_factor, out_scores, out_docs, out_n):  # pragma: no cover
    for q in numba.prange(q_indptr.shape[0] - 1):
        lo, hi = q_indptr[q], q_indptr[q + 1]
        n, _ = _blockmax_query(bm_offsets, bm_blocks, bm_impacts, offsets, doc_idx, impacts, num_docs, block_size,
                               q_terms[lo:hi], q_weights[lo:hi], k, prune_factor, out_scores[q], out_docs[q])
        out_n[q] = n


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and values of the k largest positive scores, ties broken by the smaller index."""
    cand = np.flatnonzero(scores > 0)
    values = scores[cand]
    if len(cand) > k:
        kth = np.partition(values, len(values) - k)[len(values) - k]  # the k-th largest value
        keep = values >= kth
        cand, values = cand[keep], values[keep]
    order = ranking_order(cand, values)[:k]
    return cand[order], values[order]


def _check_query(terms: np.ndarray, weights: np.ndarray, vocab_size: int, k: int) -> None:
    if k <= 0:
        raise LsrError(f"k must be positive, got {k}")
    if len(terms) and (terms.min() < 0 or terms.max() >= vocab_size):
        raise LsrError(f"query term_id outside the index vocabulary [0, {vocab_size})")


ALGORITHMS = ("blockmax", "exhaustive", "impact", "maxscore")
SEARCH_ALGORITHM = "search_algorithm"  # in an index's info: the exact algorithm it is served with (default exhaustive)
PRUNING = ("blockmax", "maxscore")  # the algorithms `prune_factor` < 1 makes approximate
POSITIVE_ONLY = (*PRUNING, "impact")  # bounds or orders that hold for non-negative query weights only


def _number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, np.integer, float, np.floating))


def positive_int(value: Any) -> bool:
    """Whether `value` is a whole number >= 1 (not a bool, not a string): the shape of every count setting."""
    return _number(value) and int(value) == value and value >= 1


def keeps_exact(prune_factor: float, budget: int | None, max_query_terms: int | None) -> bool:
    """Whether our searcher keeps the exact top k with these settings (an algorithm, or rescore alone, does)."""
    return prune_factor == 1.0 and budget is None and max_query_terms is None


def check_search_options(algorithm: str | None, *, prune_factor: float = 1.0, budget: int | None = None,
                         rescore: int | None = None, max_query_terms: int | None = None) -> None:
    """One line (LsrError) for settings `Searcher` cannot run. `algorithm` None (the one an index records, known
    only once it is open) checks what does not depend on it; `Searcher` checks again with the real one."""
    if algorithm is not None and algorithm not in ALGORITHMS:
        raise LsrError(f"unknown search algorithm {algorithm!r}; choose from {', '.join(ALGORITHMS)}")
    if not _number(prune_factor) or not 0 < prune_factor <= 1:
        raise LsrError(f"prune_factor must be in (0, 1], got {prune_factor!r}")
    if max_query_terms is not None and not positive_int(max_query_terms):
        raise LsrError(f"max_query_terms takes a positive integer, got {max_query_terms!r}")
    for name, value, what in (("budget", budget, "postings per query"), ("rescore", rescore,
                                                                            "candidates scored exactly")):
        if value is not None and not positive_int(value):
            raise LsrError(f"{name} ({what}) takes a positive integer, got {value!r}")
    if algorithm is None:
        return
    if algorithm not in PRUNING and prune_factor != 1:
        raise LsrError(f"prune_factor applies to the {' and '.join(PRUNING)} algorithms only, not {algorithm}")
    for name, value in (("budget", budget), ("rescore", rescore)):
        if value is not None and algorithm != "impact":
            raise LsrError(f"{name} applies to the impact algorithm only, not {algorithm}")


@dataclass(frozen=True)
class SearchOptions:
    """How a served index's sparse list is searched (`lsr search/serve/eval`, `SearchService`): the algorithm
    (None: the one the index records, exhaustive unless `lsr index reorder` chose another) and what makes it
    approximate, none of it on unless asked: `prune_factor` < 1 (blockmax, maxscore), a `budget` of postings
    per query (impact; `rescore` scores that many candidates exactly from the forward index),
    `max_query_terms` (the heaviest query terms only), and `drop_ratio` (a Milvus-backed index: Milvus's
    `drop_ratio_search`, the smallest query weights ignored)."""

    algorithm: str | None = None
    prune_factor: float = 1.0
    budget: int | None = None
    rescore: int | None = None
    max_query_terms: int | None = None
    drop_ratio: float = 0.0

    def __post_init__(self) -> None:
        check_search_options(self.algorithm, prune_factor=self.prune_factor, budget=self.budget,
                             rescore=self.rescore, max_query_terms=self.max_query_terms)
        if not _number(self.drop_ratio) or not 0.0 <= self.drop_ratio < 1.0:
            raise LsrError(f"drop_ratio must be in [0, 1), got {self.drop_ratio!r}")
        if self.drop_ratio and self.ours():
            raise LsrError("drop_ratio is Milvus's approximate search; algorithm, prune_factor, budget, rescore "
                           "and max_query_terms are lsr's own: not both")

    def ours(self) -> dict[str, Any]:
        """What our `Searcher` is asked for beyond its defaults: the algorithm when one is named, and each
        approximate setting given."""
        given = {"algorithm": self.algorithm, "budget": self.budget, "rescore": self.rescore,
                 "max_query_terms": self.max_query_terms,
                 "prune_factor": self.prune_factor if self.prune_factor != 1.0 else None}
        return {k: v for k, v in given.items() if v is not None}

    @property
    def exact(self) -> bool:
        """Whether every setting keeps the exact top k (ours by `keeps_exact`, and no Milvus drop ratio)."""
        return keeps_exact(self.prune_factor, self.budget, self.max_query_terms) and not self.drop_ratio

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _rank(scores: np.ndarray, docs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = ranking_order(docs, scores)
    return docs[order], scores[order]


def _prune_query(terms: np.ndarray, weights: np.ndarray, max_query_terms: int | None):
    if max_query_terms is None or len(terms) <= max_query_terms:
        return terms, weights
    keep = np.sort(np.argsort(-weights, kind="stable")[:max_query_terms])
    return terms[keep], weights[keep]


class HitsFromVectors:
    """`search` and `batch_search` (hits by doc_id) for a searcher that has `reader`, `search_vector` and
    `search_batch_vectors` ((doc_idx, score) arrays): ours and Milvus's."""

    reader: IndexReader

    def search(self, query: SparseBatch, k: int = 10) -> list[Hit]:
        if len(query) != 1:
            raise LsrError(f"search takes one query vector, got {len(query)}; use batch_search")
        return self._hits(*self.search_vector(*query.row(0), k=k))  # type: ignore[attr-defined]

    def batch_search(self, queries: SparseBatch, query_ids: Sequence[str], k: int = 10,
                     threads: int | None = None) -> Run:
        if len(queries) != len(query_ids):
            raise LsrError(f"{len(queries)} query vectors but {len(query_ids)} query ids")
        results = self.search_batch_vectors(queries, k=k, threads=threads)  # type: ignore[attr-defined]
        return {qid: self._hits(*result) for qid, result in zip(query_ids, results)}

    def _hits(self, idx: np.ndarray, scores: np.ndarray) -> list[Hit]:
        ids = self.reader.doc_ids
        return [Hit(ids[i], float(s)) for i, s in zip(idx.tolist(), scores.tolist())]


class Searcher(HitsFromVectors):
    """Top-k retrieval over an `IndexReader`: exact by default (see the module docstring for the algorithms).

    `prune_factor` < 1, `budget` (postings read per query, the impact algorithm) and `max_query_terms` make it
    approximate; `rescore` (the impact algorithm) scores that many candidates exactly from the forward index;
    `threads` sets numba's threads for batch search;
    `chunk_docs` is the exhaustive algorithm's accumulator size (results do not depend on it).
    """

    def __init__(self, reader: IndexReader, *, algorithm: str = "exhaustive", prune_factor: float = 1.0,
                 max_query_terms: int | None = None, chunk_docs: int = CHUNK_DOCS, budget: int | None = None,
                 rescore: int | None = None) -> None:
        check_search_options(algorithm, prune_factor=prune_factor, budget=budget, rescore=rescore,
                             max_query_terms=max_query_terms)
        if chunk_docs < 1:
            raise LsrError(f"chunk_docs must be positive, got {chunk_docs}")
        self.budget = None if budget is None else int(budget)
        self.rescore = None if rescore is None else int(rescore)
        self.reader = reader
        self.algorithm = algorithm
        self.prune_factor = float(prune_factor)
        self.max_query_terms = max_query_terms
        self._inv_scale = 1.0 / reader.quantization.scale
        self._local = threading.local()
        r = reader
        self._format3 = r.encoded is not None
        self._chunk = max(1, min(r.num_docs, int(chunk_docs)))
        if self._format3:  # the codec's segments set the chunks: CHUNK_DOCS documents, whatever chunk_docs says
            self._postings = (*(np.asarray(a) for a in r.encoded), np.asarray(r.impacts))
            self._chunk = min(r.num_docs, CHUNK_DOCS)
        else:
            self._postings = (np.asarray(r.offsets), np.asarray(r.doc_idx), np.asarray(r.impacts))
        if rescore is not None and not r.has_forward:
            raise LsrError(f"{r.path}: rescore scores candidates from the forward index, which this format-3 index was "
                           "built without (IndexWriter(forward_index=True))")
        if algorithm == "blockmax" and not r.has_forward:
            raise LsrError(f"{r.path}: the blockmax algorithm reads the block maxima, which this format-3 index was "
                           "built without (IndexWriter(forward_index=True)); use exhaustive or maxscore")
        self._forward = (np.asarray(r.forward_indptr), np.asarray(r.forward_term_ids),
                         np.asarray(r.forward_impacts)) if r.has_forward else None
        self._blockmax = (np.asarray(r.bm_offsets), np.asarray(r.bm_blocks), np.asarray(r.bm_impacts),
                          *self._all_postings(), r.num_docs, r.block_size) if algorithm == "blockmax" else None
        self._term_max = term_max_impacts(r) if algorithm == "maxscore" else None
        self._impact = impact_order(*self._all_postings(), r.num_docs) if algorithm == "impact" else None

    def _all_postings(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(offsets, doc_idx, impacts) of every term, format 3 decoded whole (4 bytes a posting held)."""
        offsets = np.asarray(self.reader.offsets)
        if not self._format3:
            return self._postings
        docs = np.empty(int(offsets[-1]), np.int32 if self.reader.num_docs < 2 ** 31 else np.int64)
        decode_terms(*self._postings[:5], np.arange(len(offsets) - 1, dtype=np.int64), np.zeros(len(offsets), np.int64),
                     docs)
        return offsets, docs, self._postings[5]

    def _budget_buffers(self, k: int) -> tuple[np.ndarray, ...]:
        """This thread's buffers for the impact algorithm, one row per numba thread: a chunk's scores (zero, and left
        zero) and its touched documents; with rescore, the query as a dense vector (zero, left zero) and the
        candidates' heap."""
        rows = numba.config.NUMBA_NUM_THREADS
        candidates = max(k, self.rescore or 0)
        buffers = getattr(self._local, "impact", None)
        if buffers is None or buffers[3].shape[1] < candidates:
            shape = (rows, min(self.reader.num_docs, CHUNK_DOCS))
            buffers = self._local.impact = (
                np.zeros(shape, np.float64), np.empty(shape, np.int64),
                np.zeros((rows, self.reader.vocab_size if self.rescore else 1), np.float64),
                np.empty((rows, candidates), np.float64), np.empty((rows, candidates), np.int64))
        return buffers

    def _accumulator(self, size: int) -> np.ndarray:
        """This thread's zeroed score buffer of `size` documents (the search kernels leave it zeroed again)."""
        buffers = getattr(self._local, "acc", None)
        if buffers is None:
            buffers = self._local.acc = {}
        if size not in buffers:
            buffers[size] = np.zeros(size, dtype=np.float64)
        return buffers[size]

    def _decoded(self, terms: np.ndarray) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray], np.ndarray, np.ndarray]:
        """Format 3, for MaxScore: the postings of `terms` decoded into (offsets, doc_idx, impacts) over the query's
        own term numbers 0..m-1, their bounds, and those term numbers."""
        offsets = np.asarray(self.reader.offsets)
        lengths = offsets[terms + 1] - offsets[terms]
        out_offsets = np.zeros(len(terms) + 1, np.int64)
        docs = np.empty(int(lengths.sum()), np.int64)
        decode_terms(*self._postings[:5], terms, out_offsets, docs)
        impacts = np.concatenate([self._postings[5][offsets[t]:offsets[t + 1]] for t in terms.tolist()]
                                 or [self._postings[5][:0]])
        return (out_offsets, docs, impacts), self._term_max[terms], np.arange(len(terms), dtype=np.int64)

    def _kernel(self, weights: np.ndarray) -> str:
        """The algorithm for one query: the pruning algorithms' bounds hold for non-negative weights only."""
        if self.algorithm in POSITIVE_ONLY and len(weights) and weights.min() < 0:
            return "exhaustive"
        return self.algorithm

    @property
    def exact(self) -> bool:
        return keeps_exact(self.prune_factor, self.budget, self.max_query_terms)

    def search_vector(self, terms: np.ndarray, weights: np.ndarray, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """(doc_idx, score) of the top k documents for one sparse query vector."""
        terms = np.ascontiguousarray(terms, dtype=np.int64)
        weights = np.ascontiguousarray(weights, dtype=np.float64)
        _check_query(terms, weights, self.reader.vocab_size, k)
        k_eff = min(k, self.reader.num_docs)
        scores, docs = np.empty(k_eff, np.float64), np.empty(k_eff, np.int64)
        terms, weights = _prune_query(terms, weights, self.max_query_terms)
        kernel = self._kernel(weights)
        if kernel == "exhaustive":
            n = (_taat_query3 if self._format3 else _taat_query)(
                *self._postings, self.reader.num_docs, terms, weights, k_eff, self._accumulator(self._chunk), scores,
                docs)
        elif kernel == "maxscore":
            keep = weights > 0
            terms, weights = terms[keep], weights[keep]
            postings, term_max = self._postings, self._term_max
            if self._format3:  # the query's lists decoded whole, as format 2 would read them
                postings, term_max, terms = self._decoded(terms)
            n, _ = _maxscore_query(*postings, term_max, terms, weights, k_eff, self.prune_factor,
                                   self._accumulator(self.reader.num_docs), scores, docs)
        elif kernel == "impact" and self.rescore:
            buffers = (b[0] for b in self._budget_buffers(k_eff))
            n = rescored_query(*self._impact, *self._forward, self.reader.num_docs, terms, weights, k_eff,
                               self._read_limit(), max(k_eff, self.rescore), *buffers, scores, docs)
        elif kernel == "impact":
            acc, touched = self._budget_buffers(k_eff)[:2]
            n, _ = impact_query(*self._impact, self.reader.num_docs, terms, weights, k_eff, self._read_limit(), acc[0],
                                touched[0], scores, docs)
        else:
            n, _ = _blockmax_query(*self._blockmax, terms, weights, k_eff, self.prune_factor, scores, docs)
        idx, scores = _rank(scores[:n], docs[:n])
        return idx, scores * self._inv_scale

    def search_batch_vectors(self, queries: SparseBatch, k: int = 10, threads: int | None = None
                             ) -> list[tuple[np.ndarray, np.ndarray]]:
        """(doc_idx, score) per query, the queries spread over `threads` threads (default: all cores)."""
        _check_query(queries.term_ids, queries.weights, self.reader.vocab_size, k)
        if len(queries) <= 1 or threads == 1:  # no thread pool for a single query: its wake-up costs more
            return [self.search_vector(*queries.row(i), k=k) for i in range(len(queries))]
        rows = [_prune_query(*queries.row(i), self.max_query_terms) for i in range(len(queries))]
        kernel = self.algorithm
        if any(self._kernel(w) != kernel for _, w in rows):
            kernel = "exhaustive"
        if kernel == "maxscore" and self._format3:  # decoded per query: one query at a time
            return [self.search_vector(*queries.row(i), k=k) for i in range(len(queries))]
        if kernel == "maxscore":
            rows = [(t[w > 0], w[w > 0]) for t, w in rows]
        indptr = np.concatenate([[0], np.cumsum([len(t) for t, _ in rows], dtype=np.int64)])
        terms = np.concatenate([t for t, _ in rows] or [np.zeros(0)]).astype(np.int64)
        weights = np.concatenate([w for _, w in rows] or [np.zeros(0)]).astype(np.float64)
        k_eff = min(k, self.reader.num_docs)
        scores = np.empty((len(queries), k_eff), np.float64)
        docs = np.empty((len(queries), k_eff), np.int64)
        counts = np.zeros(len(queries), np.int64)
        previous = numba.get_num_threads()
        threads = min(threads or numba.config.NUMBA_NUM_THREADS, numba.config.NUMBA_NUM_THREADS)
        numba.set_num_threads(threads)
        try:
            n_buffers = numba.config.NUMBA_NUM_THREADS
            if kernel == "exhaustive":
                acc = np.zeros((n_buffers, self._chunk), np.float64)
                (_taat_batch3 if self._format3 else _taat_batch)(
                    *self._postings, self.reader.num_docs, indptr, terms, weights, k_eff, acc, scores, docs, counts)
            elif kernel == "impact" and self.rescore:
                rescored_batch(*self._impact, *self._forward, self.reader.num_docs, indptr, terms, weights, k_eff,
                               self._read_limit(), max(k_eff, self.rescore), *self._budget_buffers(k_eff), scores, docs,
                               counts)
            elif kernel == "impact":
                acc, touched = self._budget_buffers(k_eff)[:2]
                impact_batch(*self._impact, self.reader.num_docs, indptr, terms, weights, k_eff, self._read_limit(),
                             acc, touched, scores, docs, counts)
            elif kernel == "maxscore":
                acc = np.zeros((n_buffers, self.reader.num_docs), np.float64)
                _maxscore_batch(*self._postings, self._term_max, indptr, terms, weights, k_eff, self.prune_factor, acc,
                                scores, docs, counts)
            else:
                _blockmax_batch(*self._blockmax, indptr, terms, weights, k_eff, self.prune_factor, scores, docs, counts)
        finally:
            numba.set_num_threads(previous)
        out = []
        for q in range(len(queries)):
            idx, s = _rank(scores[q, :counts[q]], docs[q, :counts[q]])
            out.append((idx, s * self._inv_scale))
        return out

    def _read_limit(self) -> int:
        return self.budget if self.budget is not None else int(np.asarray(self.reader.offsets)[-1])

    def size_bytes(self) -> int:
        """The bytes of the index files this searcher reads."""
        return self.reader.size_bytes()


def term_max_impacts(reader: IndexReader) -> np.ndarray:
    """Per term id, its largest impact in the index (0 for terms with no postings): format 3 stores them, format
    2 derives them from the block-max table."""
    if reader.term_max is not None:
        return np.asarray(reader.term_max, dtype=np.float64)
    out = np.zeros(reader.vocab_size, dtype=np.float64)
    offsets, impacts = np.asarray(reader.bm_offsets), np.asarray(reader.bm_impacts)
    has = np.flatnonzero(offsets[1:] > offsets[:-1])
    if len(has):
        out[has] = np.maximum.reduceat(impacts, offsets[has])
    return out


def brute_force_search(reader: IndexReader, terms: np.ndarray, weights: np.ndarray, k: int = 10
                       ) -> tuple[np.ndarray, np.ndarray]:
    """The reference: score every document with a sparse dot product, rank all positive scores with a full sort
    (score descending, ties to the smaller doc_idx)."""
    _check_query(np.asarray(terms), np.asarray(weights), reader.vocab_size, k)
    q = np.zeros(reader.vocab_size, dtype=np.float64)
    np.add.at(q, np.asarray(terms, dtype=np.int64), np.asarray(weights, dtype=np.float64))
    scores = reader.doc_matrix().astype(np.float64) @ q
    positive = np.flatnonzero(scores > 0)
    idx = positive[np.lexsort((positive, -scores[positive]))][:k].astype(np.int64)
    return idx, scores[idx] / reader.quantization.scale
