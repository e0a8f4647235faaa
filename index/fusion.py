"""Fusion: plain functions over hit lists and runs (never over searchers).

- `normalize`: min-max per query, `(s - min) / (max - min)`; a list whose scores are all equal carries no
  ranking information and maps to 1.0 throughout.
- `interpolate`: `alpha * norm(a) + (1 - alpha) * norm(b)`; a document missing from one list gets that list's
  minimum normalised score (0.0, or 1.0 for an all-equal list; 0.0 for an empty list).
- `rrf`: reciprocal rank fusion, `sum_i 1 / (k + rank_i)` with ranks from 1, over the lists holding the document.

Every result is sorted by score descending, ties broken by doc_id ascending, and cut to `depth` when given.
"""
from __future__ import annotations

import math
from typing import Sequence

from .errors import LsrError
from .hits import Hit, Run, ranked_hits

RRF_K = 60


def _ranked(scores: dict[str, float], depth: int | None) -> list[Hit]:
    hits = ranked_hits(Hit(d, s) for d, s in scores.items())
    return hits if depth is None else hits[:depth]


def _check_depth(depth: int | None) -> None:
    if depth is not None and depth <= 0:
        raise LsrError(f"depth must be positive, got {depth}")


def normalize(hits: Sequence[Hit]) -> list[Hit]:
    """Min-max normalised copy of one query's hits, order kept."""
    if not hits:
        return []
    scores = [h.score for h in hits]
    if not all(math.isfinite(s) for s in scores):
        raise LsrError("cannot normalise non-finite scores")
    lo, hi = min(scores), max(scores)
    if hi == lo:
        return [Hit(h.doc_id, 1.0) for h in hits]
    return [Hit(h.doc_id, (h.score - lo) / (hi - lo)) for h in hits]


def normalize_run(run: Run) -> Run:
    return {qid: normalize(hits) for qid, hits in run.items()}


def interpolate_hits(a: Sequence[Hit], b: Sequence[Hit], alpha: float = 0.5, depth: int | None = None) -> list[Hit]:
    """`alpha * norm(a) + (1 - alpha) * norm(b)` for one query; a missing document gets that list's minimum."""
    if not (0.0 <= alpha <= 1.0):
        raise LsrError(f"alpha must be in [0, 1], got {alpha}")
    _check_depth(depth)
    na = {h.doc_id: h.score for h in normalize(a)}
    nb = {h.doc_id: h.score for h in normalize(b)}
    min_a = min(na.values(), default=0.0)
    min_b = min(nb.values(), default=0.0)
    fused = {d: alpha * na.get(d, min_a) + (1.0 - alpha) * nb.get(d, min_b) for d in {**na, **nb}}
    return _ranked(fused, depth)


def interpolate(a: Run, b: Run, alpha: float = 0.5, depth: int | None = None) -> Run:
    """Per-query `interpolate_hits` over the union of the two runs' queries (a query in one run only is fused
    with an empty list)."""
    return {qid: interpolate_hits(a.get(qid, []), b.get(qid, []), alpha, depth) for qid in {**a, **b}}


def rrf_hits(lists: Sequence[Sequence[Hit]], k: int = RRF_K, depth: int | None = None) -> list[Hit]:
    """Reciprocal rank fusion of one query's ranked lists (each already in rank order)."""
    if k < 0:
        raise LsrError(f"RRF k must be non-negative, got {k}")
    _check_depth(depth)
    fused: dict[str, float] = {}
    for hits in lists:
        for rank, hit in enumerate(hits, start=1):
            fused[hit.doc_id] = fused.get(hit.doc_id, 0.0) + 1.0 / (k + rank)
    return _ranked(fused, depth)


def rrf(runs: Sequence[Run], k: int = RRF_K, depth: int | None = None) -> Run:
    """Reciprocal rank fusion of several runs, per query over the union of their queries."""
    queries: dict[str, None] = {}
    for run in runs:
        queries.update(dict.fromkeys(run))
    return {qid: rrf_hits([run.get(qid, []) for run in runs], k, depth) for qid in queries}
