"""Evaluate a sentence-transformers SparseEncoder folder with sentence-transformers' own encoding: every
document through `encode_document`, every judged query through `encode_query`, ranked exactly (float dot
products, ties to the earlier document), scored with the metrics `lsr eval` reports. The check that a folder
`lsr model export` wrote retrieves as the model does in lsr:

    python -m lsr.eval.st_eval --model DIR --dataset scifact --split test --json eval/results/FILE.json

With `--compare` it instead encodes the first `--limit` documents and the split's first `--limit` queries
both through sentence-transformers and through lsr (which reads the folder's layout itself) and records the
largest |difference| per side, appended as a row to the JSON file.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import scipy.sparse as sp

from lsr.index import Hit
from lsr.index.files import atomic_write
from lsr.index.hits import ranking_order

from .beir import BeirDataset, load_beir
from .metrics import evaluate_run


def _csr(tensor) -> sp.csr_matrix:
    """A torch sparse COO (or dense) tensor from sentence-transformers as a scipy CSR matrix."""
    if tensor.is_sparse:
        tensor = tensor.coalesce()
        rows, cols = tensor.indices().numpy()
        return sp.csr_matrix((tensor.values().numpy(), (rows, cols)), shape=tuple(tensor.shape))
    return sp.csr_matrix(tensor.numpy())


def exact_run(queries: sp.csr_matrix, docs: sp.csr_matrix, query_ids, doc_ids, depth: int) -> dict[str, list[Hit]]:
    """Top `depth` documents per query by dot product; ties to the smaller doc_idx (lsr's ranking order)."""
    scores = (queries @ docs.T).tocsr()
    run = {}
    for i, qid in enumerate(query_ids):
        row = scores.getrow(i)
        order = ranking_order(row.indices, row.data)[:depth]
        run[qid] = [Hit(doc_ids[row.indices[j]], float(row.data[j])) for j in order]
    return run


def evaluate_sentence_transformers(model: str, dataset: BeirDataset, *, batch_size: int = 32, depth: int = 100,
                                   show_progress: bool = False) -> dict:
    import sentence_transformers
    from sentence_transformers import SparseEncoder

    encoder = SparseEncoder(model, device="cpu")
    start = time.perf_counter()
    docs = _csr(encoder.encode_document([d.contents for d in dataset.corpus.values()], batch_size=batch_size,
                                        convert_to_tensor=True, show_progress_bar=show_progress))
    encode_s = time.perf_counter() - start
    queries = _csr(encoder.encode_query(list(dataset.queries.values()), batch_size=batch_size,
                                        convert_to_tensor=True))
    run = exact_run(queries, docs, dataset.query_ids, dataset.doc_ids, depth)
    return {"dataset": dataset.name, "split": dataset.split, "model": str(model),
            "encoder": f"sentence-transformers {sentence_transformers.__version__} SparseEncoder "
                       "(encode_document / encode_query), exact float ranking",
            "metrics": evaluate_run(run, dataset.qrels), "num_queries": len(dataset.queries),
            "num_docs": len(dataset.corpus), "encode_s": encode_s, "docs_per_s": len(dataset.corpus) / encode_s,
            "avg_doc_nnz": docs.nnz / docs.shape[0], "avg_query_nnz": queries.nnz / queries.shape[0]}


def compare_encoders(model: str, dataset: BeirDataset, *, limit: int = 64, batch_size: int = 16) -> dict:
    """Max |lsr - sentence-transformers| over the first `limit` documents and queries, per side."""
    from sentence_transformers import SparseEncoder

    from lsr.encoders import SpladeEncoder

    st = SparseEncoder(model, device="cpu")
    ours = SpladeEncoder(model, batch_size=batch_size, show_progress=False, device="cpu")
    docs = [d.contents for d in list(dataset.corpus.values())[:limit]]
    queries = list(dataset.queries.values())[:limit]
    row = {"model": str(model), "layout": ours.layout.layout, "dataset": dataset.name, "split": dataset.split,
           "num_docs": len(docs), "num_queries": len(queries)}
    for side, texts, theirs, mine in (("document", docs, st.encode_document, ours.encode_documents),
                                      ("query", queries, st.encode_query, ours.encode_queries)):
        ref = _csr(theirs(texts, batch_size=batch_size, convert_to_tensor=True)).toarray()
        got = mine(texts).to_scipy().toarray()
        row[f"{side}_max_abs_diff"] = float(abs(ref - got).max())
        row[f"{side}_same_nonzeros"] = bool(((ref > 0) == (got > 0)).all())
    return row


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a sentence-transformers SparseEncoder folder or hub id")
    parser.add_argument("--dataset", required=True, help="as lsr eval takes it (name, folder, irds:<id>)")
    parser.add_argument("--split", default=None)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--compare", action="store_true", help="lsr against sentence-transformers, per vector")
    parser.add_argument("--limit", type=int, default=64, help="--compare: documents and queries")
    args = parser.parse_args(argv)
    if args.compare:
        row = compare_encoders(args.model, load_beir(args.dataset, args.split, args.data_dir), limit=args.limit)
        print(json.dumps(row))
        if args.json:
            rows = json.loads(args.json.read_text())["rows"] if args.json.is_file() else []
            rows = [r for r in rows if r["model"] != row["model"]] + [row]
            atomic_write(args.json, json.dumps({"rows": rows}, indent=2) + "\n")
        return
    result = evaluate_sentence_transformers(args.model, load_beir(args.dataset, args.split, args.data_dir),
                                            batch_size=args.batch_size, show_progress=True)
    print(json.dumps({k: result[k] for k in ("dataset", "split", "metrics", "num_docs", "encode_s")}))
    if args.json:
        atomic_write(args.json, json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
