"""The one result currency: `Hit(doc_id, score)` and `Run = dict[query_id, list[Hit]]`."""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple


class Hit(NamedTuple):
    doc_id: str
    score: float


Run = dict[str, list[Hit]]


def write_trec_run(run: Run, path: str | Path, tag: str = "lsr") -> None:
    """Write a run in TREC format: `qid Q0 doc_id rank score tag`, ranks from 1."""
    with open(path, "w", encoding="utf-8") as f:
        for query_id, hits in run.items():
            for rank, hit in enumerate(hits, start=1):
                f.write(f"{query_id} Q0 {hit.doc_id} {rank} {hit.score:.6f} {tag}\n")
