"""Retrieval metrics through ir_measures, averaged over every judged query (a query with no hits scores 0)."""
from __future__ import annotations

import ir_measures

from lsr.index import Run

MEASURES = {"nDCG@10": ir_measures.nDCG @ 10, "R@100": ir_measures.R @ 100, "RR@10": ir_measures.RR @ 10}


def per_query(run: Run, qrels: dict[str, dict[str, int]]) -> dict[str, dict[str, float]]:
    """Per measure, every judged query's value (0 for a query with no hits)."""
    scored = [ir_measures.ScoredDoc(qid, hit.doc_id, hit.score) for qid, hits in run.items() for hit in hits]
    judged = [ir_measures.Qrel(qid, did, rel) for qid, docs in qrels.items() for did, rel in docs.items()]
    values: dict[str, dict[str, float]] = {name: {} for name in MEASURES}
    names = {measure: name for name, measure in MEASURES.items()}
    for m in ir_measures.iter_calc(list(MEASURES.values()), judged, scored):
        values[names[m.measure]][m.query_id] = m.value
    return {name: {q: got.get(q, 0.0) for q in qrels} for name, got in values.items()}


def evaluate_run(run: Run, qrels: dict[str, dict[str, int]]) -> dict[str, float]:
    return {name: sum(values.values()) / len(qrels) for name, values in per_query(run, qrels).items()}
