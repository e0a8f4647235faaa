"""Milvus through pymilvus and Milvus Lite (the `milvus` engine of `lsr bench query`).

The collection is the one `lsr index build --backend milvus` writes (`lsr.index.milvus.write_collection`: the
integer impacts as SPARSE_FLOAT_VECTOR values, doc_idx as the primary key), in a Milvus Lite file in the
workdir. Exact: `SPARSE_INVERTED_INDEX` with `drop_ratio_search` 0; approximate: a drop ratio > 0 (the
smallest query weights ignored) and/or `SPARSE_WAND` (a build option: its own collection). Float32 query
weights as given; hits ranked by (score desc, doc_idx asc).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from lsr.index import LsrError
from lsr.index.sparse import SparseBatch

from .common import Staged, dir_size, fresh_dir

DB = "milvus.db"
COLLECTION = "bench"


class MilvusEngine(Staged):
    name = "milvus"
    threaded = False  # one client call at a time; Milvus spreads the work over its own threads

    def __init__(self, index_type: str = "SPARSE_INVERTED_INDEX", drop_ratio_search: float = 0.0) -> None:
        self.index_type = index_type
        self.drop_ratio = float(drop_ratio_search)
        self.mode = "exact" if self.drop_ratio == 0.0 else "approximate"
        self._collection = None
        self._path: Path | None = None

    def build(self, docs: SparseBatch, workdir: Path, threads: int = 1) -> None:
        from lsr.index.milvus import write_collection

        out = fresh_dir(Path(workdir))
        write_collection(str(out / DB), COLLECTION, indptr=docs.indptr, term_ids=docs.term_ids,
                         impacts=np.rint(docs.weights), doc_ids=[str(i) for i in range(len(docs))],
                         sparse_index=self.index_type, batch_size=2_000, progress=True)
        self.open(out)

    def build_options(self) -> dict:
        return {"index_type": self.index_type}

    def open(self, workdir: Path) -> None:
        from lsr.index.milvus import connect

        self._path = Path(workdir)
        self._uri = str((self._path / DB).resolve())
        self._client = connect(self._uri)
        self._client.load_collection(COLLECTION)

    def prepare(self, queries: SparseBatch, k: int) -> list[dict]:
        vectors = []
        for i in range(len(queries)):
            t, w = queries.row(i)
            keep = w > 0
            vectors.append(dict(zip(t[keep].tolist(), w[keep].astype(np.float64).tolist())))
        return vectors

    def run(self, vectors: list[dict], k: int, threads: int = 1) -> list:
        if self._path is None:
            raise LsrError("milvus engine: build() first")
        todo = [i for i, v in enumerate(vectors) if v]
        answers = []
        for lo in range(0, len(todo), 256):
            chunk = todo[lo:lo + 256]
            answers.append((chunk, self._client.search(
                COLLECTION, data=[vectors[i] for i in chunk], anns_field="sparse", limit=k,
                search_params={"metric_type": "IP", "params": {"drop_ratio_search": self.drop_ratio}}, timeout=60)))
        return answers

    def collect(self, answers: list, vectors: list[dict], k: int) -> list[np.ndarray]:
        from lsr.index.hits import ranking_order

        out = [np.zeros(0, np.int64) for _ in vectors]
        for chunk, results in answers:
            for i, hits in zip(chunk, results):
                idx = np.array([h["id"] for h in hits], np.int64)
                scores = np.array([h["distance"] for h in hits], np.float64)
                out[i] = idx[ranking_order(idx, scores)][:k]
        return out

    def size_bytes(self) -> int:
        return dir_size(self._path, exclude=(f".{DB}.lock",)) if self._path else 0

    def close(self) -> None:
        from lsr.index.milvus import release

        if self._path is not None:
            release(self._uri)
            self._path = None
