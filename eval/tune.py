"""Settings chosen on dev splits only. A grid of settings is scored by nDCG@10 on each dev split for each
model, the best mean over the dev splits chosen, and the report splits (test) scored for the chosen model and
setting only, after the choice. Two grids:
- `hybrid`: the fusion (min-max interpolation at each α, or RRF) and the fusion depth, beside a dense model;
- `idf`: the weight of the collection's own IDF in an inference-free query side (lsr.encoders.idf).

    python -m lsr.eval.tune hybrid --model splade-tiny --model lsr-ifree-tiny --dev scifact/train-dev \\
        --dev nfcorpus/dev --report scifact/test --json eval/results/tune-hybrid.json

Every list comes from `SearchService` (hybrid: one sparse and one dense ranking per query, to the largest
depth, and every fusion `SearchService._fuse`), so a hybrid grid point scores what `lsr eval --mode hybrid
--alpha A --depth D` ranks for a k-10 request (the service fuses to max(k, depth)). The report splits are
scored at every setting too, for the chosen model, so the cost of choosing on dev can be read; the choice is
made before they are opened. Index folders are kept under `--workdir` (one per model and dataset; a dataset's
dense vectors are encoded once for all models).
"""
from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from lsr.index import Fusion, LsrError, Mode, Ranking, SearchService
from lsr.index.dense import DENSE_VECTORS, dense_info, has_dense_store
from lsr.index.files import atomic_write
from lsr.index.folder import add_dense_store
from lsr.index.termstats import read_collection_stats

from .beir import BeirDataset, load_beir
from .metrics import evaluate_run
from .pipeline import EncoderOptions, load_sparse_encoder, open_or_build_index

IDF_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)
ALPHAS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
DEPTHS = (50, 100, 200, 400)
K = 10  # the request's k: the grid scores nDCG@10 of what a k-10 request returns


def grid(alphas=ALPHAS, depths=DEPTHS) -> list[Ranking]:
    points = [Ranking(mode=Mode.hybrid, fusion=Fusion.linear, alpha=a, depth=d) for d in depths for a in alphas]
    return points + [Ranking(mode=Mode.hybrid, fusion=Fusion.rrf, depth=d) for d in depths]


def label(r: Ranking) -> str:
    return f"rrf depth {r.depth}" if r.fusion == Fusion.rrf else f"linear α {r.alpha:g} depth {r.depth}"


def _folder_name(model: str) -> str:
    """A model's folder name: its last two path parts (`runs/train/ifree-fit-s0/model` is `ifree-fit-s0-model`,
    so the checkpoints of several runs, each in a folder `model`, do not share one index)."""
    parts = Path(model).parts
    return "-".join(parts[-2:]) if parts else model.replace("/", "_")


def _index(dataset: BeirDataset, model: str, encoder, dense: str | None, workdir: Path, options: EncoderOptions,
           log) -> Path:
    """This model's index of this dataset (with a dense store of `dense`, whose vectors of a dataset are
    encoded only once for all models)."""
    path = workdir / f"{_folder_name(model)}-{dataset.name}"
    if dense is None:
        open_or_build_index(dataset, model, encoder, path, options)
        return path
    shared = next((p for p in sorted(workdir.glob(f"*-{dataset.name}")) if p != path and has_dense_store(p)
                   and dense_info(p).get("model") == dense), None)
    if shared is None:
        log(f"{path.name}: index with a {dense} store (reused if there)")
        open_or_build_index(dataset, model, encoder, path, options, dense=dense)
        return path
    open_or_build_index(dataset, model, encoder, path, options)
    if not has_dense_store(path):
        log(f"{path.name}: dense vectors from {shared.name}")
        add_dense_store(path, np.load(shared / DENSE_VECTORS), info=dense_info(shared))
    return path


def _dense_encoder(path: Path):
    from .pipeline import load_dense_encoder

    return load_dense_encoder(dense_info(path)["model"], max_length=dense_info(path).get("max_length"))


def score_hybrid(dataset: BeirDataset, path: Path, encoder, points: list[Ranking]) -> dict[str, float]:
    """nDCG@10 of every fusion setting on one dataset: each query ranked once per list, fused per setting."""
    deepest = max(r.depth for r in points)
    service = SearchService(path, sparse_encoder=encoder, dense_encoder=_dense_encoder(path))
    runs: dict[str, dict] = {label(r): {} for r in points}
    try:
        for qid, text in dataset.queries.items():
            sparse = service.rank(query=text, k=deepest, ranking=Ranking(mode=Mode.sparse)).hits
            dense = service.rank(query=text, k=deepest, ranking=Ranking(mode=Mode.dense)).hits
            for r in points:
                depth = max(K, r.depth)
                runs[label(r)][qid] = SearchService._fuse(sparse[:depth], dense[:depth], r, depth)[:K]
    finally:
        service.close()
    return {name: evaluate_run(run, dataset.qrels)["nDCG@10"] for name, run in runs.items()}


def score_idf(dataset: BeirDataset, path: Path, encoder, weights: list[float]) -> dict[str, float]:
    """nDCG@10 of sparse search at every collection-IDF weight (the collection's statistics the folder holds)."""
    if not getattr(encoder, "inference_free", False):
        raise LsrError("the collection-IDF weight is an inference-free model's setting")
    if read_collection_stats(path) is None:
        raise LsrError(f"{path} holds no collection statistics (built before they were stored): rebuild it")
    scores = {}
    for weight in weights:
        weighted = copy.copy(encoder)
        weighted.collection_idf_weight = weight
        service = SearchService(path, sparse_encoder=weighted)
        try:
            run = {qid: service.rank(query=text, k=100).hits for qid, text in dataset.queries.items()}
        finally:
            service.close()
        scores[f"collection IDF weight {weight:g}"] = evaluate_run(run, dataset.qrels)["nDCG@10"]
    return scores


GRIDS = {"hybrid": (lambda: grid(), label, score_hybrid, True),
         "idf": (lambda: list(IDF_WEIGHTS), lambda w: f"collection IDF weight {w:g}", score_idf, False)}


def tune(kind: str, models: list[str], dev: list[tuple[str, str]], report: list[tuple[str, str]], *,
         dense: str = "minilm", workdir: Path = Path("runs/tune"), data_dir=None, limit: int | None = None,
         log=print) -> dict[str, Any]:
    """Score every setting of grid `kind` (hybrid: fusion and depth; idf: the collection-IDF weight) for every
    model on the dev splits, choose the best mean nDCG@10 over them, and score the report splits for the
    chosen model and setting only."""
    if not dev:
        raise LsrError("tune needs at least one dev split to choose on")
    make_points, name_of, score, needs_dense = GRIDS[kind]
    workdir.mkdir(parents=True, exist_ok=True)
    options = EncoderOptions(show_progress=False)
    points = make_points()
    rows: dict[str, dict[str, dict[str, float]]] = {}
    for model in models:
        encoder = load_sparse_encoder(model, options)
        for name, split in dev:
            ds = load_beir(name, split, data_dir, limit)
            start = time.perf_counter()
            path = _index(ds, model, encoder, dense if needs_dense else None, workdir, options, log)
            rows.setdefault(model, {})[f"{name}/{split}"] = score(ds, path, encoder, points)
            log(f"{model} on {name}/{split}: {len(points)} settings in {time.perf_counter() - start:.0f} s")
    labels = [name_of(p) for p in points]
    means = {(m, lab): float(np.mean([rows[m][d][lab] for d in rows[m]])) for m in models for lab in labels}
    (best_model, best_label), best = max(means.items(), key=lambda kv: kv[1])
    chosen = points[labels.index(best_label)]
    encoder = load_sparse_encoder(best_model, options)
    reported = {}
    for name, split in report:  # opened only now, after the choice
        ds = load_beir(name, split, data_dir, limit)
        path = _index(ds, best_model, encoder, dense if needs_dense else None, workdir, options, log)
        every = score(ds, path, encoder, points)
        reported[f"{name}/{split}"] = {"chosen": every[best_label], "every_setting": every}
    setting = ({"fusion": chosen.fusion.value, "alpha": chosen.alpha, "depth": chosen.depth} if kind == "hybrid"
               else {"collection_idf_weight": chosen})
    return {"grid": kind, "models": models, "dense": dense if needs_dense else None,
            "dev": [f"{n}/{s}" for n, s in dev], "k": K, "data": "nDCG@10 per dev split and their mean",
            "scores": {m: {lab: {**{d: rows[m][d][lab] for d in rows[m]}, "mean": means[(m, lab)]} for lab in labels}
                       for m in models},
            "chosen": {"model": best_model, "setting": best_label, **setting, "dev_mean_nDCG@10": best},
            "report_nDCG@10": reported}


def _split(text: str) -> tuple[str, str]:
    name, _, split = text.rpartition("/")
    if not name or not split:
        raise argparse.ArgumentTypeError(f"expected DATASET/SPLIT, got {text!r}")
    return name, split


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lsr.eval.tune", description=__doc__.split("\n\n")[0])
    parser.add_argument("grid", choices=sorted(GRIDS), help="hybrid: fusion, α and depth beside a dense model; idf: "
                        "the collection-IDF weight of an inference-free model")
    parser.add_argument("--model", action="append", required=True, help="sparse model (repeat)")
    parser.add_argument("--dense", default="minilm")
    parser.add_argument("--dev", action="append", type=_split, required=True, help="DATASET/SPLIT to choose on")
    parser.add_argument("--report", action="append", type=_split, default=[], help="DATASET/SPLIT to report")
    parser.add_argument("--workdir", type=Path, default=Path("runs/tune"))
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args(argv)
    result = tune(args.grid, args.model, args.dev, args.report, dense=args.dense, workdir=args.workdir)
    atomic_write(args.json, json.dumps(result, indent=2, ensure_ascii=False))
    c = result["chosen"]
    print(f"chosen on {', '.join(result['dev'])}: {c['model']}, {c['setting']} "
          f"(dev mean nDCG@10 {c['dev_mean_nDCG@10']:.4f}); reported: "
          + ", ".join(f"{k} {v['chosen']:.4f}" for k, v in result["report_nDCG@10"].items()))


if __name__ == "__main__":
    main()
