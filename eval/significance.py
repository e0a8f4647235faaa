"""Two inference-free models on one dev split, query by query: the mean nDCG@10 of each, their difference and
a paired t-test over the queries (scipy `ttest_rel`), each model at its collection-IDF weight.

    python -m lsr.eval.significance --dataset nfcorpus --split dev --model lsr-ifree-tiny@0.25 \\
        --model runs/train/ifree-fit-s1/model@0 --json eval/results/significance-ifree-nfcorpus-dev.json

Each model ranks through `SearchService` on its folder under `--workdir` (built there if missing, as
`python -m lsr.eval.tune` keeps them), so the figures are the ones `lsr eval` and the tune grid report.
"""
from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from lsr.index import LsrError, SearchService
from lsr.index.files import atomic_write

from .beir import load_beir
from .metrics import per_query
from .pipeline import EncoderOptions, load_sparse_encoder
from .tune import _index

MEASURE = "nDCG@10"


def parse_model(text: str) -> tuple[str, float | None]:
    """`MODEL[@WEIGHT]`: a model and the collection-IDF weight to rank at (its recorded one without)."""
    model, sep, weight = text.rpartition("@")
    if not sep:
        return text, None
    try:
        return model, float(weight)
    except ValueError:
        raise LsrError(f"--model {text!r}: expected MODEL or MODEL@WEIGHT (a number)") from None


def query_scores(dataset, model: str, weight: float | None, workdir: Path) -> dict[str, float]:
    options = EncoderOptions(show_progress=False)
    encoder = load_sparse_encoder(model, options)
    if weight is not None:
        if not getattr(encoder, "inference_free", False):
            raise LsrError(f"{model}: the collection-IDF weight is an inference-free model's setting")
        encoder = copy.copy(encoder)
        encoder.collection_idf_weight = weight
    path = _index(dataset, model, encoder, None, workdir, options, print)
    service = SearchService(path, sparse_encoder=encoder)
    try:
        run = {qid: service.rank(query=text, k=100).hits for qid, text in dataset.queries.items()}
    finally:
        service.close()
    return per_query(run, dataset.qrels)[MEASURE]


def compare(dataset: str, split: str, models: list[str], *, workdir: Path = Path("runs/tune"),
            data_dir=None, limit: int | None = None) -> dict[str, Any]:
    if len(models) != 2:
        raise LsrError("significance compares exactly two models (--model A --model B)")
    ds = load_beir(dataset, split, data_dir, limit)
    parsed = [parse_model(m) for m in models]
    scores = [query_scores(ds, m, w, workdir) for m, w in parsed]
    qids = sorted(ds.qrels)
    a, b = (np.array([s[q] for q in qids]) for s in scores)
    test = stats.ttest_rel(b, a)
    return {"dataset": dataset, "split": split, "measure": MEASURE, "num_queries": len(qids),
            "models": [{"model": m, "collection_idf_weight": w, "mean": float(x.mean())}
                       for (m, w), x in zip(parsed, (a, b))],
            "difference": float((b - a).mean()), "t": float(test.statistic), "p": float(test.pvalue),
            "wins": int((b > a).sum()), "losses": int((b < a).sum()), "ties": int((b == a).sum())}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lsr.eval.significance", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--split", required=True)
    parser.add_argument("--model", action="append", required=True, help="MODEL[@WEIGHT], twice: A, then B")
    parser.add_argument("--workdir", type=Path, default=Path("runs/tune"))
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    try:
        result = compare(args.dataset, args.split, args.model, workdir=args.workdir, data_dir=args.data_dir)
    except LsrError as e:
        raise SystemExit(f"error: {e}") from None
    a, b = result["models"]
    print(f"{args.dataset}/{args.split} {MEASURE}: {a['model']} {a['mean']:.4f}, {b['model']} {b['mean']:.4f}, "
          f"B - A {result['difference']:+.4f} (paired t {result['t']:.2f}, p {result['p']:.3f}; "
          f"{result['wins']} wins, {result['losses']} losses)")
    if args.json:
        atomic_write(args.json, json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
