"""What every engine adapter shares: the `Engine` interface and the helpers for index folders, impacts and
ranking."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from lsr.index.hits import ranking_order
from lsr.index import LsrError
from lsr.index.lucene import term_token
from lsr.index.sparse import SparseBatch


@runtime_checkable
class Engine(Protocol):
    name: str
    mode: str  # "exact" or "approximate"

    def build(self, docs: SparseBatch, workdir: Path, threads: int) -> None: ...

    def build_options(self) -> dict: ...  # what shapes the index (search-only knobs left out)

    def open(self, workdir: Path) -> None: ...  # open an index that `build` wrote into workdir

    def search(self, queries: SparseBatch, k: int, threads: int) -> list[np.ndarray]: ...

    # `search` in three steps, so a benchmark can time the engine's own call apart from the adapter's glue:
    # `prepare` turns the queries into what the engine's API takes (pandas frames, Java maps, string arrays),
    # `run` is the engine's own call on that, `collect` turns its answer into ranked doc_idx arrays.
    def prepare(self, queries: SparseBatch, k: int) -> Any: ...

    def run(self, prepared: Any, k: int, threads: int) -> Any: ...

    def collect(self, raw: Any, prepared: Any, k: int) -> list[np.ndarray]: ...

    def size_bytes(self) -> int: ...


class Staged:
    """`search` as `collect(run(prepare(...)))`, for adapters that define the three steps."""

    def search(self, queries: SparseBatch, k: int, threads: int = 1) -> list[np.ndarray]:
        prepared = self.prepare(queries, k)
        return self.collect(self.run(prepared, k, threads), prepared, k)


def dir_size(path: Path, exclude: tuple[str, ...] = ()) -> int:
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and p.name not in exclude)


def fresh_dir(path: Path) -> Path:
    path = Path(path)
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def int_impacts(docs: SparseBatch) -> np.ndarray:
    impacts = np.rint(docs.weights).astype(np.int64)
    if len(impacts) and (impacts.min() < 0 or not np.allclose(impacts, docs.weights)):
        raise LsrError("engines take integer impacts >= 0 (quantise the documents first)")
    return impacts


def rank(doc_idx: np.ndarray, scores: np.ndarray, k: int) -> np.ndarray:
    """Order hits by (score desc, doc_idx asc), keep the first k."""
    doc_idx = np.asarray(doc_idx, dtype=np.int64)
    order = ranking_order(doc_idx, scores)
    return doc_idx[order][:k]


def term_dicts(docs: SparseBatch, impacts: np.ndarray):
    """Per document, in row order: {term string: integer impact}, zero impacts left out."""
    for i in range(len(docs)):
        lo, hi = docs.indptr[i], docs.indptr[i + 1]
        yield {term_token(t): int(w) for t, w in zip(docs.term_ids[lo:hi], impacts[lo:hi]) if w > 0}
