"""The one result currency: `Hit(doc_id, score)` and `Run = dict[query_id, list[Hit]]`, and the one ranking
order: score descending, ties to the smaller doc_idx (arrays) or doc_id (hits), so equal scores always come
out in the same order whatever computed them."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, NamedTuple

import numpy as np


class Hit(NamedTuple):
    doc_id: str
    score: float


Run = dict[str, list[Hit]]


def ranking_order(ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """The permutation that ranks (id, score) pairs: score descending, ties by id ascending."""
    return np.lexsort((np.asarray(ids), -np.asarray(scores, dtype=np.float64)))


def ranked_hits(hits: Iterable[Hit]) -> list[Hit]:
    """Hits in the ranking order (ties by doc_id, the only key hits from different lists share)."""
    return sorted(hits, key=lambda h: (-h.score, h.doc_id))


def write_trec_run(run: Run, path: str | Path, tag: str = "lsr") -> None:
    """Write a run in TREC format: `qid Q0 doc_id rank score tag`, ranks from 1."""
    with open(path, "w", encoding="utf-8") as f:
        for query_id, hits in run.items():
            for rank, hit in enumerate(hits, start=1):
                f.write(f"{query_id} Q0 {hit.doc_id} {rank} {hit.score:.6f} {tag}\n")
