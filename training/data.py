"""Training data: BEIR train splits as (query, positive, hard negatives) with teacher scores, built once.

For each dataset (an object with `name`, `split`, `corpus` {doc_id: document with `.contents`}, `queries` and
`qrels`, such as lsr.eval.beir.BeirDataset):
  1. the sparse teacher (SPLADE-tiny) encodes the corpus and the split's queries;
  2. the project's own index (lsr.index) over those document vectors retrieves each query's top `mine_depth`:
     its candidates, from which hard negatives are drawn (judged positives excluded). With `mine_with="hybrid"`
     the candidates are instead the top `mine_depth` of the hybrid the service ranks by default: the sparse
     teacher's and the dense teacher's top 2 x `mine_depth`, fused by min-max interpolation at alpha 0.5
     (lsr.index.fusion);
  3. every teacher scores each query's pool (candidates plus any positive the index missed);
all cached under `cache_dir/<dataset>-<split>/`, keyed by the settings, so ablation runs reuse them (hybrid
pools in their own files beside the sparse ones, sharing the encoded vectors).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import scipy.sparse as sp

from lsr.encoders.base import DEFAULT_MAX_LENGTH
from lsr.index import IndexReader, IndexWriter, LsrError, Searcher, SparseBatch

from .teachers import TEACHERS, Bm25Scorer, pair_scores


@dataclass
class TrainingSet:
    """Every training query with its pool of scored documents; documents are rows of `texts`."""
    texts: list[str]
    queries: list[str]
    query_dataset: list[str]
    query_source: np.ndarray  # int: the position of each query's dataset in the list given to build_training_set
    pool_indptr: np.ndarray  # int64 (queries + 1)
    pool_docs: np.ndarray  # int64: rows of `texts`, each query's candidates in mined order, then unmined positives
    pool_positive: np.ndarray  # bool: judged relevant (> 0)
    teacher_scores: dict[str, np.ndarray] = field(default_factory=dict)  # teacher -> float32 per pool entry

    def __len__(self) -> int:
        return len(self.queries)

    def pool(self, q: int) -> slice:
        return slice(int(self.pool_indptr[q]), int(self.pool_indptr[q + 1]))


@dataclass(frozen=True)
class MiningSettings:
    sparse_teacher: str = "splade-tiny"
    dense_teacher: str = "minilm"
    mine_depth: int = 50
    mine_with: str = "sparse"  # or "hybrid" (the module docstring)
    max_length: int = DEFAULT_MAX_LENGTH
    teachers: tuple[str, ...] = ("dense", "sparse")
    device: str | None = None  # where the teachers encode (lsr.encoders.device; None: the sparse teacher on
    # auto, the dense one on the CPU, as before devices were chosen); not part of the cache key


def build_training_set(datasets: Sequence[Any], cache_dir: str | Path, settings: MiningSettings,
                       log: Callable[[str], None] = print) -> TrainingSet:
    unknown = set(settings.teachers) - set(TEACHERS)
    if unknown:
        raise LsrError(f"unknown teachers {sorted(unknown)}; choose from {', '.join(TEACHERS)}")
    texts: list[str] = []
    parts = []
    for ds in datasets:
        part = _dataset_pools(ds, Path(cache_dir) / f"{ds.name}-{ds.split}", settings, log)
        part["pool_docs"] = part["pool_docs"] + len(texts)
        texts.extend(d.contents for d in ds.corpus.values())
        parts.append(part)
    sizes = np.concatenate([np.diff(p["pool_indptr"]) for p in parts])
    return TrainingSet(
        texts=texts,
        queries=[q for p in parts for q in p["queries"]],
        query_dataset=[p["name"] for p in parts for _ in p["queries"]],
        query_source=np.concatenate([np.full(len(p["queries"]), i, dtype=np.int64) for i, p in enumerate(parts)]),
        pool_indptr=np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
        pool_docs=np.concatenate([p["pool_docs"] for p in parts]),
        pool_positive=np.concatenate([p["pool_positive"] for p in parts]),
        teacher_scores={t: np.concatenate([p[f"score_{t}"] for p in parts]) for t in settings.teachers},
    )


def _dataset_pools(ds, cache: Path, settings: MiningSettings, log) -> dict[str, Any]:
    """One dataset's pools and teacher scores, from the cache when its key matches."""
    queries = {q: text for q, text in ds.queries.items()
               if any(r > 0 and d in ds.corpus for d, r in ds.qrels.get(q, {}).items())}
    if not queries:
        raise LsrError(f"{ds.name} ({ds.split}): no query has a judged-relevant document in the corpus")
    key = {"sparse_teacher": settings.sparse_teacher, "dense_teacher": settings.dense_teacher,
           "mine_depth": settings.mine_depth, "max_length": settings.max_length, "num_docs": len(ds.corpus),
           "num_queries": len(queries), "version": 1}
    suffix = "" if settings.mine_with == "sparse" else f"-{settings.mine_with}"
    pools_file, key_file = cache / f"pools{suffix}.npz", cache / f"key{suffix}.json"
    cached = _read_key(key_file) == key and pools_file.is_file()
    if cached:
        with np.load(pools_file) as z:
            part = {k: z[k] for k in z.files}
    else:
        part = {}
    missing = [t for t in settings.teachers if f"score_{t}" not in part]
    if missing or not cached:
        cache.mkdir(parents=True, exist_ok=True)
        if not cached:
            log(f"{ds.name} ({ds.split}): mining {settings.mine_depth} candidates for {len(queries)} queries")
            part = _mine(ds, queries, cache, settings)
        for teacher in [t for t in settings.teachers if f"score_{t}" not in part]:
            log(f"{ds.name} ({ds.split}): {teacher} teacher scores")
            part[f"score_{teacher}"] = _teacher_scores(teacher, ds, queries, part, cache, settings)
        np.savez(pools_file, **part)
        key_file.write_text(json.dumps(key, indent=1))
    part["queries"] = list(queries.values())
    part["name"] = ds.name
    return part


def _read_key(key_file: Path) -> dict | None:
    try:
        return json.loads(key_file.read_text())
    except (OSError, ValueError):
        return None


def _sparse_vectors(ds, queries: dict[str, str], cache: Path, settings: MiningSettings):
    """SPLADE-tiny document and query vectors as CSR matrices, cached."""
    docs_file, queries_file = cache / "sparse-docs.npz", cache / "sparse-queries.npz"
    if not (docs_file.is_file() and queries_file.is_file()):
        from lsr.encoders import SpladeEncoder, resolve_model

        encoder = SpladeEncoder(resolve_model(settings.sparse_teacher).source, max_length=settings.max_length,
                                device=settings.device, show_progress=False)
        encoder.encode_documents([d.contents for d in ds.corpus.values()]).save_npz(docs_file)
        encoder.encode_queries(list(queries.values())).save_npz(queries_file)
    return sp.load_npz(docs_file).tocsr(), sp.load_npz(queries_file).tocsr()


def _dense_vectors(ds, queries: dict[str, str], cache: Path, settings: MiningSettings):
    """Dense-teacher (MiniLM) document and query vectors, cached."""
    docs_file, queries_file = cache / "dense-docs.npy", cache / "dense-queries.npy"
    if not (docs_file.is_file() and queries_file.is_file()):
        from lsr.encoders import DenseEncoder, resolve_model

        encoder = DenseEncoder(resolve_model(settings.dense_teacher).source, max_length=settings.max_length,
                               device=settings.device)
        np.save(docs_file, encoder.encode_documents([d.contents for d in ds.corpus.values()]))
        np.save(queries_file, encoder.encode_queries(list(queries.values())))
    return np.load(docs_file), np.load(queries_file)


def _mine(ds, queries: dict[str, str], cache: Path, settings: MiningSettings) -> dict[str, np.ndarray]:
    from lsr.index.fusion import interpolate_hits
    from lsr.index.hits import Hit

    docs, qvecs = _sparse_vectors(ds, queries, cache, settings)
    hybrid = settings.mine_with == "hybrid"
    if hybrid:
        dense_docs, dense_queries = _dense_vectors(ds, queries, cache, settings)
    depth = 2 * settings.mine_depth if hybrid else settings.mine_depth
    index_dir = cache / "index"
    with IndexWriter(index_dir, vocab_size=docs.shape[1], bits=16, overwrite=True,
                     info={"model": settings.sparse_teacher, "purpose": "hard-negative mining"}) as writer:
        writer.add(SparseBatch.from_scipy(docs), list(ds.corpus))
    searcher = Searcher(IndexReader(index_dir))
    doc_row = {d: i for i, d in enumerate(ds.corpus)}
    indptr, pool, positive = [0], [], []
    for qi, q in enumerate(queries):
        terms, weights = qvecs.indices[qvecs.indptr[qi]:qvecs.indptr[qi + 1]], qvecs.data[qvecs.indptr[qi]:qvecs.indptr[qi + 1]]
        mined, scores = searcher.search_vector(terms.astype(np.int32), weights.astype(np.float32), k=depth)
        if hybrid:
            dense = dense_docs @ dense_queries[qi]
            top = np.argsort(-dense, kind="stable")[:depth]
            fused = interpolate_hits([Hit(str(d), float(s)) for d, s in zip(mined, scores)],
                                     [Hit(str(d), float(dense[d])) for d in top], 0.5, settings.mine_depth)
            mined = np.asarray([int(h.doc_id) for h in fused], dtype=np.int64)
        relevant = {doc_row[d] for d, r in ds.qrels[q].items() if r > 0 and d in doc_row}
        rows = list(mined.astype(np.int64)) + sorted(relevant - set(mined.tolist()))
        pool.extend(rows)
        positive.extend(r in relevant for r in rows)
        indptr.append(len(pool))
    return {"pool_indptr": np.asarray(indptr, np.int64), "pool_docs": np.asarray(pool, np.int64),
            "pool_positive": np.asarray(positive, bool)}


def _teacher_scores(teacher: str, ds, queries: dict[str, str], part: dict, cache: Path,
                    settings: MiningSettings) -> np.ndarray:
    if teacher == "labels":
        return part["pool_positive"].astype(np.float32)
    query_rows = np.repeat(np.arange(len(queries)), np.diff(part["pool_indptr"]))
    doc_rows = part["pool_docs"]
    if teacher == "sparse":
        docs, qvecs = _sparse_vectors(ds, queries, cache, settings)
        return pair_scores(qvecs, docs, query_rows, doc_rows)
    if teacher == "dense":
        docs, qvecs = _dense_vectors(ds, queries, cache, settings)
        return pair_scores(qvecs, docs, query_rows, doc_rows)
    # bm25 over the sparse teacher's WordPiece tokens
    from transformers import AutoTokenizer

    from lsr.encoders import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(settings.sparse_teacher).source)
    doc_ids = tokenizer([d.contents for d in ds.corpus.values()], add_special_tokens=False, verbose=False)["input_ids"]
    query_ids = tokenizer(list(queries.values()), add_special_tokens=False, verbose=False)["input_ids"]
    scorer = Bm25Scorer(doc_ids, len(tokenizer))
    out = np.empty(len(doc_rows), dtype=np.float32)
    for q in range(len(queries)):
        lo, hi = part["pool_indptr"][q], part["pool_indptr"][q + 1]
        out[lo:hi] = scorer.score(query_ids[q], doc_rows[lo:hi])
    return out
